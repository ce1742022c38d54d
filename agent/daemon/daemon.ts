import { accessSync, constants } from 'node:fs';
import type { Server } from 'node:http';
import { replicaUrl, type Config } from '../config/config.ts';
import { formatHuman } from '../config/duration.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { PATHS, UNITS } from '../paths.ts';
import { startApiServers, type ApiServers } from '../api/server.ts';
import type { DaemonState, HealthCheck, HealthReport, StatusReport, UnitSummary } from '../api/types.ts';
import { Systemd, describeUnit } from '../systemd/dbus.ts';
import { Notifier } from '../systemd/notify.ts';
import { fetchMetrics, listGenerations, replicaCaughtUp, shadowPosition, verifyLoadedConfig, type LitestreamPosition } from '../replication/litestream.ts';
import { RestorableWindow } from '../replication/window.ts';
import { PROFILES } from '../config/config.ts';
import type { FileMirror } from '../files/mirror.ts';
import { drainBudgetOf, type DrainBudget } from '../config/budget.ts';
import { backupLocalPaths, renderDropins, writeDropins } from '../systemd/dropins.ts';
import { readFile, rm } from 'node:fs/promises';
import { writeFileDurable, writePrivateFile } from '../fs.ts';
import { existsSync, readFileSync } from 'node:fs';
import { LeaseKeeper } from '../replication/lease-keeper.ts';
import { FileLeaseStore, S3LeaseStore, describeHolder, myIdentity, safetyMargin } from '../replication/lease.ts';
import { s3Client } from '../files/store.ts';
import { asideFolder, createDbFile, installRestored, removeDbCopy, setAside } from '../replication/runtime.ts';
import { restoreChecked } from '../replication/restore.ts';
import { contentDigest, inspectDb } from '../replication/inspect.ts';
import type { Role } from '../config/config.ts';
import { nextRun } from '../config/cron.ts';
import { notify } from '../notify/notify.ts';
import { fileMirrorFor, restoreOnStart, type RestoreOutcome } from '../replication/restore.ts';
import { prepareRuntime, type Runtime } from '../replication/runtime.ts';
import { bumpCounter, readState, updateState, type DrainRecord, type DrainStep } from '../state-file.ts';
import { renderMetrics } from './metrics.ts';
import { startMetricsListener, Watchdog } from './observe.ts';
import { statfs, stat } from 'node:fs/promises';
import { waitReplicaConfirmed } from '../replication/confirm.ts';
import { VERSION } from '../version.ts';
import { Tailscale } from '../tailscale/tailscale.ts';
import { AsideKeeper } from './aside.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Litestream's monitor interval (1 s, set in litestream.yml) plus slack. */
const SHADOW_LAG_MS = 2000;

/**
 * The daemon: an explicit state machine (starting → restoring → replicating → serving →
 * draining → stopped). Each transition is logged once and sent as STATUS=; READY=1 only
 * when Vaultwarden answers /alive and Litestream replicates.
 */
export class Daemon {
  private state: DaemonState = 'starting';
  private detail = 'starting';
  private since = new Date();
  private systemd!: Systemd;
  private rt!: Runtime;
  private api: ApiServers | undefined;
  private readonly notifier: Notifier;
  private lastDbSync: Date | null = null;
  private position: LitestreamPosition | null = null;
  private lastSyncErrors = 0;
  private restore: RestoreOutcome | null = null;
  private units: Record<string, UnitSummary> = {};
  private vaultwardenAlive = false;
  private stopRequested = false;
  private stopSignal: () => void = () => undefined;
  private readonly stopped: Promise<void>;
  private restarts: number[] = [];
  private readonly cfg: Config;
  private mirror!: FileMirror;
  private budget!: DrainBudget;
  private litestreamStartedMs: number | undefined;
  private lastDrain: DrainRecord | undefined;
  /** Litestream was started for this run: the drain has something to confirm and upload. */
  private servingStarted = false;
  private readonly role: Role;
  private readonly roleOverride: string | null;
  private readonly lease: LeaseKeeper;
  private fenced: { reason: string; exitCode: number } | null = null;
  private readySent = false;
  private lastRefresh: Date | null = null;
  private lastRefreshDowntimeMs: number | null = null;
  private refreshes = { swapped: 0, skipped: 0, localChangesKept: 0 };
  private promoting = false;
  /** A sync_error notification went out and replication has not recovered since. */
  private syncErrorReported = false;
  /** Litestream stopped because the lease could not be renewed (store unreachable). */
  private replicationSuspended: string | null = null;
  private unitRestarts: Record<string, number> = {};
  private unitEvents: Record<string, { at: string; what: string }> = {};
  private metricsServer: Server | undefined;
  private watchdog: Watchdog | undefined;
  /** Last time the monitor loop went round (the watchdog checks it while serving). */
  private heartbeat = Date.now();
  /** The replica's restorable range for status (cached). */
  private readonly restorable = new RestorableWindow(() => listGenerations(this.rt.litestreamConfig, this.rt.dbPath));
  /** TAILSCALE_ENABLED: joins the tailnet and publishes Vaultwarden once it serves. */
  private readonly tailscale: Tailscale;
  /** /var/lib/vwstream/aside: retention (ASIDE_MIN_KEEP, ASIDE_RETENTION_DAYS), totals for status and health. */
  private readonly aside: AsideKeeper;

  constructor(cfg: Config, notifySocket: string | undefined) {
    this.cfg = cfg;
    this.aside = new AsideKeeper(PATHS.asideDir, cfg.aside);
    this.tailscale = new Tailscale(cfg);
    this.notifier = new Notifier(notifySocket);
    this.stopped = new Promise((resolve) => (this.stopSignal = resolve));
    this.budget = drainBudgetOf(cfg);
    this.mirror = fileMirrorFor(cfg);
    this.roleOverride = readRoleOverride();
    this.role = (this.roleOverride as Role | null) ?? cfg.role;
    const me = myIdentity(PATHS.instanceFile);
    log.info({ instance: me.instance, machineId: me.machineId, bootId: me.bootId, file: PATHS.instanceFile }, `agent instance ${me.instance} (${me.instanceCreated ? 'new in this boot' : 'kept from an earlier run in this boot'})`);
    this.lease = new LeaseKeeper({
      store: cfg.s3 ? new S3LeaseStore(cfg.s3, s3Client(cfg.s3)) : new FileLeaseStore(cfg.localReplicaPath),
      me,
      ttlMs: cfg.leaseTtlMs,
      onLost: (reason, stolen) => void this.fence(reason, stolen),
      onSuspended: (reason) => void this.suspendReplication(reason),
      onRegained: () => void this.resumeReplication(),
    });
  }

  private async setState(state: DaemonState, detail: string, fields: Record<string, unknown> = {}): Promise<void> {
    const changed = state !== this.state || detail !== this.detail;
    this.state = state;
    this.detail = detail;
    if (!changed) return;
    this.since = new Date();
    const level = state === 'failed' || state === 'refused' ? 'error' : state === 'degraded' ? 'warn' : 'info';
    log[level]({ state, ...fields }, `${state}: ${detail}`);
    await this.notifier.status(`${state}: ${detail}`);
  }

  requestStop(signal: string): void {
    if (this.stopRequested) return;
    log.info({ signal }, `received ${signal}: draining`);
    this.stopRequested = true;
    this.stopSignal();
  }

  /** Runs until stopped; returns the exit status. */
  async run(): Promise<number> {
    try {
      await this.setState('starting', 'checking the Vaultwarden binary');
      try {
        accessSync(this.cfg.vaultwardenBin, constants.X_OK);
      } catch {
        throw new AgentError(`VAULTWARDEN_BIN=${this.cfg.vaultwardenBin}: no executable Vaultwarden there`, {
          hint: `install Vaultwarden at ${this.cfg.vaultwardenBin} or set VAULTWARDEN_BIN in ${this.cfg.source}, then systemctl restart vwstream-agent`,
          exitCode: EXIT.CONFIG,
        });
      }
      if (this.roleOverride) log.warn({ override: PATHS.roleOverride }, `role ${this.role} from ${PATHS.roleOverride} (written by promote) overrides NODE_ROLE=${this.cfg.role}; delete the file to undo`);
      this.watchdog = Watchdog.fromEnv(this.notifier, () => this.isResponsive());
      this.systemd = await Systemd.connect();
      this.rt = await prepareRuntime(this.cfg);
      if (await writeDropins(renderDropins(this.budget, this.cfg.primarySyncIntervalMs, this.cfg.backup.enabled ? this.cfg.backup.cron : undefined, this.cfg.verifyCron, this.cfg.s3 ? undefined : this.cfg.localReplicaPath, this.cfg.backup.enabled ? backupLocalPaths(this.cfg.backup.remotes, this.cfg.rcloneEnv) : []))) await this.systemd.reload();
      if (this.budget.scaled) log.warn({ budget: this.budget }, `drain step timeouts add up to more than STOP_GRACE_PERIOD; scaled down to vaultwarden ${this.budget.vaultwardenMs} ms, litestream ${this.budget.litestreamMs} ms, files ${this.budget.filesMs} ms`);
      this.lastDrain = readState().lastDrain;
      // Reads for group vwstream on agent.sock; promote and sync on the root-only control.sock.
      this.api = await startApiServers({ readPath: PATHS.socket, controlPath: PATHS.controlSocket }, {
        'POST /sync': async () => {
          if (this.state !== 'serving' && this.state !== 'degraded') return { status: 409, body: { error: `not serving (${this.state})` } };
          const report = await this.mirror.syncInBackground('timer');
          return { status: report.errors.length ? 500 : 200, body: report };
        },
        'POST /promote': async (req) => this.promote(new URL(req.url ?? '/', 'http://agent').searchParams.get('force') === '1'),
        'GET /status': async () => ({ status: 200, body: await this.status() }),
        'GET /health': async () => {
          const h = await this.health();
          return { status: h.ok ? 200 : 503, body: h };
        },
        'GET /metrics': async () => ({ status: 200, body: await this.metrics(), contentType: 'text/plain; version=0.0.4; charset=utf-8' }),
      }, this.rt.apiGroup);
      if (this.cfg.metricsListen !== 'off') {
        this.metricsServer = await startMetricsListener(this.cfg.metricsListen, () => this.metrics())
          .catch((err) => { throw new AgentError(`METRICS_LISTEN=${this.cfg.metricsListen}: cannot listen (${errorMessage(err)})`, { exitCode: EXIT.CONFIG, hint: `choose a free host:port in ${this.cfg.source}` }); });
        log.info({ listen: this.cfg.metricsListen }, `serving /metrics on http://${this.cfg.metricsListen}/metrics`);
      }
      for (const w of this.cfg.warnings) log.warn(w);
      this.aside.start();
      if (this.role === 'secondary') return await this.runSecondary();
      if (!(await this.takeLease())) return await this.drain();

      const vwState = await this.systemd.state(UNITS.vaultwarden);
      const lsState = await this.systemd.state(UNITS.litestream);
      if (vwState.activeState === 'active' && lsState.activeState === 'active') {
        // The agent restarted while both kept running: the live database is in use and replicated.
        this.restore = { decision: { action: 'keep', reason: 'Vaultwarden and Litestream were already running; adopted them' }, ms: 0 };
        log.info('Vaultwarden and Litestream already running: adopting them (no restore decision on a live database)');
        if (this.rt.litestreamConfigChanged) {
          log.info('litestream.yml changed: restarting Litestream to load it');
          await this.stopUnit(UNITS.litestream, this.cfg.litestream.shutdownTimeoutMs);
        }
      } else {
        if (vwState.activeState === 'active') await this.stopUnit(UNITS.vaultwarden, 60_000);
        if (lsState.activeState === 'active') await this.stopUnit(UNITS.litestream, this.cfg.litestream.shutdownTimeoutMs);
        await this.setState('restoring', `checking the local vault against ${replicaUrl(this.cfg)}`);
        let shown = 0;
        this.restore = await restoreOnStart(this.cfg, this.rt, {
          // Each step Litestream takes (snapshot, WAL segment) pushes the start timeout out.
          onProgress: (p) => {
            if (Date.now() - shown < 1000 && p.phase !== 'done') return;
            shown = Date.now();
            void this.notifier.extendTimeout(120_000, `restoring: database ${p.phase === 'wal' && p.walIndex !== undefined ? `WAL segment ${p.walIndex}${p.walMax !== undefined ? ` of ${p.walMax}` : ''}` : p.phase}`);
          },
        });
        const d = this.restore.decision;
        await bumpCounter('restores', d.action).catch(() => undefined);
        // A restore finished now after an interruption fetches the files as its run would have
        // (a backup's files come from its archive, not the mirror: the operator runs it again).
        const rec = this.restore.recovered;
        const pendingFiles = this.mirror.pendingRestore();
        if (d.action === 'restore' || pendingFiles || (rec?.outcome === 'completed' && rec.op.kind !== 'backup')) {
          if (pendingFiles && d.action !== 'restore') log.warn({ startedAt: pendingFiles.startedAt, from: this.mirror.store.url }, `a file restore from ${this.mirror.store.url} started at ${pendingFiles.startedAt} did not finish; completing it before Vaultwarden starts`);
          await this.restoreFiles(this.restore.setAsideTo ?? rec?.op.asideDir ?? pendingFiles?.asideDir ?? asideFolder('files-replaced-by-restore'));
        }
        if (rec?.outcome === 'completed' && rec.op.kind === 'backup') {
          log.warn({ source: rec.op.source }, `the database of backup ${rec.op.source} was installed after an interruption, its files perhaps not all: run vwstream-agent restore --backup ${rec.op.source} --force again to bring them`);
        }
        if (d.action === 'new-vault') log.warn({ replica: replicaUrl(this.cfg) }, `NEW VAULT: ${d.reason}; if you expected existing data, check S3_BUCKET/S3_PREFIX`);
        else log.info({ action: d.action, ms: this.restore.ms, setAsideTo: this.restore.setAsideTo }, `restore decision: ${d.action}: ${'reason' in d ? d.reason : ''}`);
        if (this.stopRequested) return await this.drain();
      }

      await this.setState('replicating', 'starting Litestream');
      const lsBefore = await this.systemd.state(UNITS.litestream);
      if (lsBefore.activeState !== 'active') {
        // A new vault's database file, made shareable with Litestream's user before either opens it.
        if (await createDbFile(this.rt.dbPath, this.rt.ids)) log.info({ db: this.rt.dbPath }, `created an empty ${this.rt.dbPath} (mode 0660) for the new vault`);
        this.litestreamStartedMs = Date.now();
        await this.startUnit(UNITS.litestream);
      } else this.litestreamStartedMs = Date.now() - 1; // adopted: its start time is older still
      await verifyLoadedConfig(this.cfg, this.rt.litestreamConfig, this.rt.dbPath);
      await this.writeDrainInfo();
      if (this.lastDrain && !this.lastDrain.complete) {
        log.warn({ lastDrain: this.lastDrain }, `last drain incomplete: ${this.lastDrain.detail}; re-syncing before serving`);
        await this.setState('replicating', `last drain incomplete (${this.lastDrain.detail}); re-syncing before serving`);
        const ok = await this.waitReplicaCaughtUp(60_000);
        log[ok ? 'info' : 'warn'](ok ? 'database replica confirmed in sync after the incomplete drain' : 'database replica not confirmed in sync within 60 s; serving anyway, Litestream keeps trying');
      }
      await this.setState('replicating', `mirroring files to ${this.mirror.store.url}`);
      try {
        await this.mirror.checkRemote(AbortSignal.timeout(120_000));
        const r = await this.mirror.sync('start', AbortSignal.timeout(600_000));
        log.info({ uploaded: r.uploaded, unchanged: r.unchanged, conflicts: r.conflicts, errors: r.errors.length, ms: r.ms }, `file mirror ${r.errors.length ? 'NOT ' : ''}in sync (${r.uploaded} uploaded, ${r.unchanged} unchanged${r.conflicts ? `, ${r.conflicts} kept under a conflict name` : ''}${r.errors.length ? `, ${r.errors.length} errors: ${r.errors[0]}` : ''})`);
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'file mirror could not sync at start; retrying on changes and on the timer');
      }
      if (this.stopRequested) return await this.drain();

      await this.setState('replicating', 'starting Vaultwarden');
      if ((await this.systemd.state(UNITS.vaultwarden)).activeState !== 'active') await this.startUnit(UNITS.vaultwarden);
      await this.waitAlive(120_000);
      if (this.stopRequested) return await this.drain();
      await this.tailscale.start(this.stopped); // bounded; on failure it retries in the background

      const newVault = this.restore?.decision.action === 'new-vault';
      const servingDetail = newVault ? `new vault: no replica at ${replicaUrl(this.cfg)}` : `replicating to ${replicaUrl(this.cfg)}`;
      this.state = 'serving';
      this.detail = servingDetail;
      this.since = new Date();
      log.info({ state: 'serving', restore: this.restore?.decision.action, restoreMs: this.restore?.ms }, `serving: ${servingDetail}`);
      // Timers and the watcher first: when READY arrives, all of it is in place.
      await updateState({ lastDrain: { complete: false, at: new Date().toISOString(), detail: 'the agent did not drain (crash, power loss or kill)', steps: [] } });
      this.mirror.watch((err) => { if (!this.stopRequested) log.warn({ err: err.message }, 'file mirror pass failed; the timer retries'); });
      await this.startUnit(UNITS.syncTimer).catch((err) => log.warn({ err: errorMessage(err) }, 'could not start vwstream-sync.timer'));
      await this.scheduleBackups();
      await this.startUnit(UNITS.verifyTimer).catch((err) => log.warn({ err: errorMessage(err) }, 'could not start vwstream-verify.timer'));
      await this.notifier.ready(`serving: ${servingDetail}`);

      this.lease.startRenewing();
      await this.monitor();
      return await this.drain();
    } catch (err) {
      const e = err instanceof AgentError ? err : new AgentError(errorMessage(err), { cause: err });
      const refused = e.exitCode === EXIT.REFUSED;
      await this.setState(refused ? 'refused' : 'failed', e.message, e.hint ? { hint: e.hint } : {});
      // One plain line for `systemctl status` and the journal, with the way out.
      process.stderr.write(`vwstream-agent: ${e.message}${e.hint ? `; ${e.hint}` : ''}\n`);
      if (this.systemd) await this.drain().catch(() => undefined);
      return e.exitCode;
    } finally {
      this.aside.stop();
      this.watchdog?.stop();
      this.api?.close();
      this.metricsServer?.close();
      this.systemd?.disconnect();
    }
  }

  /**
   * The mirrored files into the data folder before Vaultwarden starts; local files that
   * differ go to `asideDir`. Progress goes to STATUS= and, as it advances, pushes the
   * start timeout out (EXTEND_TIMEOUT_USEC), so a long restore is not killed mid-way
   * while a stalled one still is. A failure fails the start: the next start finishes it.
   */
  private async restoreFiles(asideDir: string): Promise<void> {
    await this.setState('restoring', `restoring files from ${this.mirror.store.url}`);
    let last = 0;
    const f = await this.mirror.restore(this.rt.ids, asideDir, (p) => {
      if (Date.now() - last < 1000 && p.done < p.total) return;
      last = Date.now();
      const text = `restoring: files ${p.done}/${p.total}, ${(p.bytes / 1048576).toFixed(0)} of ${(p.totalBytes / 1048576).toFixed(0)} MiB`;
      void this.notifier.extendTimeout(120_000, text);
    });
    log.info({ files: f.files, replaced: f.replaced, unchanged: f.unchanged, ignored: f.ignored, bytes: f.bytes, from: this.mirror.store.url, ...(f.replaced ? { keptAt: `${asideDir}/files` } : {}) },
      `restored ${f.files} files (${f.bytes} bytes) from ${this.mirror.store.url}; ${f.unchanged} already here${f.replaced ? `; ${f.replaced} local files that differed kept at ${asideDir}/files` : ''}${f.ignored ? `; ${f.ignored} skipped (links in the data folder)` : ''}`);
  }

  private async startUnit(unit: string): Promise<void> {
    const result = await this.systemd.start(unit);
    if (result !== 'done') {
      const s = await this.systemd.state(unit).catch(() => undefined);
      throw new AgentError(`${unit} did not start (job ${result}${s ? `; ${describeUnit(unit, s)}` : ''})`, { hint: `journalctl -u ${unit}` });
    }
  }

  private async stopUnit(unit: string, timeoutMs: number): Promise<{ result: string; ms: number }> {
    const started = Date.now();
    const result = await this.systemd.stop(unit, timeoutMs);
    return { result, ms: Date.now() - started };
  }

  private aliveUrl(): string {
    const a = this.cfg.rocketAddress;
    const host = a === '0.0.0.0' ? '127.0.0.1' : a === '::' ? '[::1]' : a.includes(':') ? `[${a}]` : a;
    return `http://${host}:${this.cfg.rocketPort}/alive`;
  }

  private async checkAlive(): Promise<boolean> {
    try {
      const res = await fetch(this.aliveUrl(), { signal: AbortSignal.timeout(3000) });
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  }

  private async waitAlive(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline && !this.stopRequested) {
      if (await this.checkAlive()) { this.vaultwardenAlive = true; return; }
      const s = await this.systemd.state(UNITS.vaultwarden);
      if (s.activeState !== 'active' && s.activeState !== 'activating') {
        throw new AgentError(`Vaultwarden exited during start (${describeUnit(UNITS.vaultwarden, s)})`, { hint: `journalctl -u ${UNITS.vaultwarden}` });
      }
      await sleep(250);
    }
    if (!this.stopRequested) throw new AgentError(`Vaultwarden did not answer ${this.aliveUrl()} within ${timeoutMs / 1000}s`, { hint: `journalctl -u ${UNITS.vaultwarden}` });
  }

  /** Watches replication and both units until a stop is requested. */
  private async monitor(): Promise<void> {
    let tick = 0;
    const persisted = readState().lastDbSync;
    if (persisted) this.lastDbSync = new Date(persisted);
    while (!this.stopRequested) {
      this.heartbeat = Date.now();
      await Promise.race([sleep(1000), this.stopped]);
      if (this.stopRequested) break;
      tick++;
      await this.pollLitestream();
      if (tick % 2 === 0) await this.pollUnits();
      if (tick % 5 === 0) this.vaultwardenAlive = await this.checkAlive();
      if (tick % 60 === 0 && this.lastDbSync) await updateState({ lastDbSync: this.lastDbSync.toISOString() }).catch(() => undefined);
    }
  }

  private async pollLitestream(): Promise<void> {
    try {
      const { position } = await fetchMetrics(this.rt.metricsAddr);
      this.position = position;
      const newErrors = position.syncErrors > this.lastSyncErrors;
      this.lastSyncErrors = position.syncErrors;
      const caught = replicaCaughtUp(position, await shadowPosition(this.rt.dbPath), this.litestreamStartedMs);
      const stale = !caught && this.lastDbSync !== null && Date.now() - this.lastDbSync.getTime() > this.cfg.healthcheckMaxSyncAgeMs;
      if ((newErrors || stale) && !this.syncErrorReported) {
        this.syncErrorReported = true;
        void notify(this.cfg.notification, 'sync_error', newErrors ? `litestream reports sync errors (${position.syncErrors})` : `database replica not in sync for more than ${this.cfg.healthcheckMaxSyncAgeMs / 1000}s`);
      } else if (caught && !newErrors && this.syncErrorReported) {
        this.syncErrorReported = false;
        log.info('database replica back in sync');
      }
      if (caught && !newErrors) {
        // The shadow WAL trails the real WAL by up to one monitor tick (1 s): the replica
        // equalling the shadow now proves only what was written a tick (plus slack) ago.
        const confirmed = new Date(Date.now() - SHADOW_LAG_MS);
        if (!this.lastDbSync) log.info('database replica confirmed in sync');
        if (!this.lastDbSync || confirmed > this.lastDbSync) this.lastDbSync = confirmed;
      } else if (newErrors) {
        log.warn({ syncErrors: position.syncErrors }, 'litestream reports sync errors');
      }
    } catch {
      this.position = null;
    }
  }

  private async pollUnits(): Promise<void> {
    for (const unit of [UNITS.litestream, UNITS.vaultwarden]) {
      const s = await this.systemd.state(unit).catch(() => undefined);
      if (!s) continue;
      this.units[unit] = { activeState: s.activeState, subState: s.subState, result: s.result };
      if (this.stopRequested || s.activeState === 'active' || s.activeState === 'activating' || s.activeState === 'reloading') continue;
      if (unit === UNITS.litestream && this.replicationSuspended) continue; // stopped on purpose
      const what = describeUnit(unit, s);
      this.unitRestarts[unit] = (this.unitRestarts[unit] ?? 0) + 1;
      this.unitEvents[unit] = { at: new Date().toISOString(), what: `${what}; restarted by the agent` };
      await this.setState('degraded', `${what}; restarting it`, { unit });
      this.restarts = this.restarts.filter((t) => Date.now() - t < 600_000);
      if (this.restarts.length >= 5) {
        throw new AgentError(`${unit} keeps dying (5 restarts in 10 minutes)`, { hint: `journalctl -u ${unit}` });
      }
      this.restarts.push(Date.now());
      await sleep(1000 * this.restarts.length);
      try {
        await this.startUnit(unit);
        if (unit === UNITS.vaultwarden) await this.waitAlive(120_000);
        await this.setState('serving', `${unit} restarted; replicating to ${replicaUrl(this.cfg)}`);
      } catch (err) {
        log.error({ unit, err: errorMessage(err) }, `restart of ${unit} failed`);
      }
    }
  }

  /** What Litestream's ExecStop (confirm-sync) needs; a stale verdict is removed. */
  private async writeDrainInfo(): Promise<void> {
    await rm(PATHS.finalSync, { force: true });
    await writePrivateFile(PATHS.drainInfo, JSON.stringify({ metricsAddr: this.rt.metricsAddr, dbPath: this.rt.dbPath, confirmMs: this.budget.confirmMs, litestreamStartedMs: this.litestreamStartedMs }) + '\n');
    this.servingStarted = true;
  }

  private async waitReplicaCaughtUp(timeoutMs: number): Promise<boolean> {
    const r = await waitReplicaConfirmed({ metricsAddr: this.rt.metricsAddr, dbPath: this.rt.dbPath, timeoutMs, ...(this.litestreamStartedMs ? { litestreamStartedMs: this.litestreamStartedMs } : {}) });
    return r.confirmed;
  }

  /**
   * The stop path (contract behaviour 4): Vaultwarden first (no new writes) → Litestream's
   * final sync, confirmed by its ExecStop against the local WAL position → the final
   * file upload. Each step is bounded by its share of STOP_GRACE_PERIOD; systemd's unit
   * ordering enforces the same order at poweroff, where the agent waits for it.
   */
  private async drain(): Promise<number> {
    if (this.fenced) {
      this.lease.stop();
      await this.stopUnit(UNITS.vaultwarden, this.budget.vaultwardenMs).catch(() => undefined);
      await this.setState('fenced', this.fenced.reason);
      return this.fenced.exitCode;
    }
    if (this.role === 'secondary') {
      await this.setState('draining', 'stopping Vaultwarden');
      await this.notifier.stopping('draining: stopping Vaultwarden');
      const vw = await this.stopUnit(UNITS.vaultwarden, this.budget.vaultwardenMs + 2_000);
      log.info({ step: 'vaultwarden', ms: vw.ms }, `drain: vaultwarden ${vw.result} in ${vw.ms} ms (secondary: nothing to upload)`);
      await this.setState('stopped', 'drained');
      return EXIT.OK;
    }
    const prev = this.state;
    const started = Date.now();
    const steps: DrainStep[] = [];
    const step = (s: DrainStep) => {
      steps.push(s);
      log[s.ok ? 'info' : 'warn']({ step: s.step, ok: s.ok, ms: s.ms }, `drain: ${s.step} ${s.ok ? 'done' : 'FAILED'} in ${s.ms} ms: ${s.detail}`);
    };
    await this.setState('draining', 'stopping Vaultwarden');
    await this.notifier.stopping('draining: stopping Vaultwarden');
    this.mirror.stopWatching();
    await this.systemd.stop(UNITS.syncTimer, 5_000).catch(() => undefined);

    const vw = await this.stopUnit(UNITS.vaultwarden, this.budget.vaultwardenMs + 2_000);
    step({ step: 'vaultwarden', ok: vw.result === 'done', ms: vw.ms, detail: vw.result === 'done' ? 'stopped, no new writes' : `stop job ${vw.result}` });

    await this.setState('draining', 'Litestream final sync');
    const ls = await this.stopUnit(UNITS.litestream, this.budget.litestreamMs + 2_000);
    let verdict: { confirmed: boolean; detail: string } | undefined;
    try { verdict = JSON.parse(await readFile(PATHS.finalSync, 'utf8')) as { confirmed: boolean; detail: string }; } catch { /* none */ }
    if (this.servingStarted) {
      const ok = ls.result === 'done' && verdict?.confirmed === true;
      step({ step: 'litestream', ok, ms: ls.ms, detail: this.replicationSuspended && !verdict ? `replication suspended (${this.replicationSuspended}); the replica lacks the writes made since` : verdict ? `final sync ${verdict.confirmed ? 'confirmed' : 'NOT confirmed'}: ${verdict.detail}${ls.result === 'done' ? '' : `; stop job ${ls.result}`}` : `no final-sync verdict (Litestream was not running or its ExecStop was killed); stop job ${ls.result}` });

      await this.setState('draining', 'final file upload');
      const t = Date.now();
      try {
        const r = await this.mirror.sync('shutdown', AbortSignal.timeout(this.budget.filesMs));
        step({ step: 'files', ok: r.errors.length === 0, ms: Date.now() - t, detail: `${r.uploaded} uploaded, ${r.deleted} deleted${r.errors.length ? `, ${r.errors.length} errors: ${r.errors[0]}` : ''}` });
      } catch (err) {
        step({ step: 'files', ok: false, ms: Date.now() - t, detail: (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError' ? `timed out after ${this.budget.filesMs} ms` : errorMessage(err) });
      }
      const failed = steps.filter((s) => !s.ok).map((s) => s.step);
      const complete = failed.length === 0;
      const detail = complete ? `complete in ${Date.now() - started} ms` : `incomplete: ${failed.join(', ')} did not finish (${steps.filter((s) => !s.ok).map((s) => s.detail).join('; ')})`;
      log[complete ? 'info' : 'error']({ complete, ms: Date.now() - started, steps }, `drain ${detail}`);
      await bumpCounter('drains', complete ? 'complete' : 'incomplete').catch(() => undefined);
      // A replacement may start at once after a complete drain; after an incomplete one the
      // lease expires by itself (LEASE_TTL), so nobody starts from a replica missing our tail.
      if (complete && this.lease.held && (await this.lease.release())) log.info({ lease: this.lease.url }, 'lease released');
      await updateState({ lastDrain: { complete, at: new Date().toISOString(), detail, steps, ms: Date.now() - started }, ...(this.lastDbSync ? { lastDbSync: this.lastDbSync.toISOString() } : {}) }).catch(() => undefined);
    }
    this.lease.stop();
    if (prev !== 'failed' && prev !== 'refused') await this.setState('stopped', 'drained');
    return EXIT.OK;
  }

  /** BACKUP_ENABLED: vwstream-backup.timer on BACKUP_CRON (Persistent); BACKUP_ON_STARTUP: one run now. */
  private async scheduleBackups(): Promise<void> {
    if (!this.cfg.backup.enabled) {
      await this.systemd.stop(UNITS.backupTimer, 10_000).catch(() => undefined);
      return;
    }
    try {
      await this.startUnit(UNITS.backupTimer);
      const next = nextRun(this.cfg.backup.cron);
      log.info({ cron: this.cfg.backup.cron, next: next?.toISOString() }, `backups scheduled (${this.cfg.backup.cron}); next ${next?.toISOString() ?? 'never'}`);
      if (this.cfg.backup.onStartup) {
        // As a unit, not inside the daemon: its shutdown ordering and timeout apply.
        await this.systemd.startNoWait(UNITS.backup);
        log.info('BACKUP_ON_STARTUP: backup started');
      }
    } catch (err) {
      log.error({ err: errorMessage(err) }, `backups could not be scheduled: ${errorMessage(err)}`);
    }
  }

  /** Takes the lease, waiting (READY sent, state "waiting") while another live primary holds it. */
  private async takeLease(): Promise<boolean> {
    for (;;) {
      try {
        const d = await this.lease.tryAcquire();
        if (d.action !== 'wait') {
          log.info({ lease: this.lease.url, reason: d.action === 'acquire' ? d.reason : 'renew' }, `lease taken (${this.lease.url})`);
          return true;
        }
        const detail = `lease held by ${describeHolder({ holder: d.holder, instance: d.instance ?? undefined })} until ${d.until.toISOString()}; taking over when it expires`;
        await this.setState('waiting', detail);
        if (!this.readySent) {
          this.readySent = true;
          await this.notifier.ready(`waiting: ${detail}`);
        }
      } catch (err) {
        await this.setState('waiting', `cannot read the lease at ${this.lease.url}: ${errorMessage(err)}`);
      }
      await Promise.race([sleep(Math.min(5_000, Math.max(1_000, this.cfg.leaseTtlMs / 4))), this.stopped]);
      if (this.stopRequested) return false;
    }
  }

  /**
   * The lease expired unrenewed because the store does not answer (S3 outage). Nobody
   * else can have taken it while nobody can reach the store, but someone may once it
   * answers: Litestream is stopped now so it can never upload over a new holder, and
   * Vaultwarden keeps serving from the local database (its writes wait in the WAL and
   * database). The keeper retries every 5 s: resumeReplication or fence follows.
   */
  private async suspendReplication(reason: string): Promise<void> {
    if (this.fenced || this.stopRequested || this.replicationSuspended) return;
    this.replicationSuspended = reason;
    log.error({ reason }, `REPLICATION SUSPENDED: ${reason}; Litestream stopped so it cannot write over another holder; Vaultwarden keeps serving; resuming when the lease can be renewed`);
    if (!this.syncErrorReported) {
      this.syncErrorReported = true;
      void notify(this.cfg.notification, 'sync_error', `replication suspended: ${reason}`);
    }
    await this.systemd.kill(UNITS.litestream).catch(() => undefined);
    await this.setState('degraded', `replication suspended: ${reason}`);
  }

  /** The store answers again and the lease was still ours: Litestream catches up. */
  private async resumeReplication(): Promise<void> {
    if (!this.replicationSuspended || this.fenced || this.stopRequested) return;
    log.info({ was: this.replicationSuspended }, 'lease renewed: restarting Litestream to catch up');
    try {
      this.litestreamStartedMs = Date.now();
      await this.systemd.start(UNITS.litestream);
      await this.writeDrainInfo();
      this.replicationSuspended = null;
      await this.setState('serving', `replication resumed; replicating to ${replicaUrl(this.cfg)}`);
    } catch (err) {
      log.error({ err: errorMessage(err) }, `could not restart Litestream after the outage: ${errorMessage(err)}`);
      this.replicationSuspended = null; // pollUnits restarts it
    }
  }

  /** For the watchdog: while the monitor loop runs it must have gone round recently. */
  private isResponsive(): boolean {
    const looping = this.state === 'serving' || this.state === 'degraded';
    return !looping || Date.now() - this.heartbeat < 60_000;
  }

  /**
   * The lease was taken by another host, or could not be renewed before its expiry: stop
   * writing at once. Litestream is killed (no final upload over the new holder's
   * replica), Vaultwarden stopped; local data stays. Stolen → exit 65 (an operator
   * decides); not renewed → exit 1 and systemd restarts the agent, which waits for the lease.
   */
  private async fence(reason: string, stolen: boolean): Promise<void> {
    if (this.fenced || this.stopRequested) return;
    this.fenced = { reason, exitCode: stolen ? EXIT.REFUSED : EXIT.FAILED };
    log.error({ reason, stolen }, `FENCED: ${reason}; stopping Vaultwarden and Litestream, local data kept`);
    void notify(this.cfg.notification, 'sync_error', `fenced: ${reason}`);
    this.mirror.stopWatching();
    await this.systemd.kill(UNITS.litestream).catch(() => undefined);
    await this.systemd.stop(UNITS.syncTimer, 5_000).catch(() => undefined);
    await this.setState('fenced', reason);
    this.stopRequested = true;
    this.stopSignal();
  }

  /**
   * Secondary (contract behaviour 6): restore database and files, serve (unless
   * SECONDARY_SERVE=false), refresh every SECONDARY_SYNC_INTERVAL. Never uploads, never
   * takes the lease.
   */
  private async runSecondary(): Promise<number> {
    for (const u of [UNITS.litestream, UNITS.vaultwarden]) {
      if ((await this.systemd.state(u)).activeState === 'active') await this.stopUnit(u, 60_000);
    }
    await this.setState('restoring', `restoring from ${replicaUrl(this.cfg)} (secondary)`);
    for (;;) {
      try {
        await this.refresh('start');
        break;
      } catch (err) {
        await this.setState('restoring', `secondary cannot restore yet: ${errorMessage(err)}; retrying`);
        if (!this.readySent) { this.readySent = true; await this.notifier.ready(`restoring: ${this.detail}`); }
        await Promise.race([sleep(10_000), this.stopped]);
        if (this.stopRequested) return this.drain();
      }
    }
    const serve = this.cfg.secondaryServe;
    if (serve) {
      await this.startUnit(UNITS.vaultwarden);
      await this.waitAlive(120_000);
      await this.tailscale.start(this.stopped);
    }
    const detail = `${serve ? 'serving' : 'warm standby (not serving)'} a copy of ${replicaUrl(this.cfg)}${this.cfg.deploymentMode === 'serverless' ? ', restored once (serverless)' : `, refreshed every ${formatHuman(this.cfg.secondarySyncIntervalMs)}`}`;
    await this.setState('serving', detail);
    await this.notifier.ready(`serving: ${detail}`);
    let tick = 0;
    while (!this.stopRequested) {
      this.heartbeat = Date.now(); // the watchdog checks it while serving, on a secondary too
      await Promise.race([sleep(1000), this.stopped]);
      if (this.stopRequested) break;
      tick++;
      if (tick % 5 === 0 && serve) this.vaultwardenAlive = await this.checkAlive();
      if (this.cfg.deploymentMode === 'serverless' || this.promoting) continue;
      if (Date.now() - (this.lastRefresh?.getTime() ?? 0) >= this.cfg.secondarySyncIntervalMs) {
        await this.refresh('interval').catch((err) => log.warn({ err: errorMessage(err) }, `secondary refresh failed: ${errorMessage(err)}; serving the previous copy`));
      }
    }
    return this.drain();
  }

  /**
   * One refresh: restore into a temporary file, check it, swap it in only when it
   * differs, with Vaultwarden stopped for just the swap. Local changes made on the
   * secondary since the last refresh are set aside, never dropped.
   */
  private async refresh(why: string): Promise<void> {
    const state = readState();
    const { tmp, facts } = await restoreChecked(this.rt);
    try {
      const replicaDigest = contentDigest(tmp);
      const local = inspectDb(this.rt.dbPath);
      const localDigest = local.exists && local.intact ? contentDigest(this.rt.dbPath) : undefined;
      const unchanged = localDigest === replicaDigest;
      if (unchanged) {
        this.refreshes.skipped++;
        this.lastRefresh = new Date();
        await this.mirror.restore(this.rt.ids);
        return;
      }
      let localChanged = local.exists && (!local.intact || localDigest !== state.secondaryDigest);
      const serving = (await this.systemd.state(UNITS.vaultwarden)).activeState === 'active';
      const t = Date.now();
      if (serving) await this.stopUnit(UNITS.vaultwarden, 60_000);
      // Decided again now that Vaultwarden is stopped: a write that landed between the check
      // above and the stop is in the file too, and must be kept, not replaced.
      let lateWrite = false;
      if (!localChanged && local.exists) {
        const after = inspectDb(this.rt.dbPath);
        lateWrite = after.exists && (!after.intact || contentDigest(this.rt.dbPath) !== state.secondaryDigest);
        localChanged = lateWrite;
      }
      if (localChanged) {
        const kept = await setAside(this.rt.dbPath, 'secondary-local-changes');
        this.refreshes.localChangesKept++;
        log.warn({ keptAt: kept, lateWrite }, `local changes on the secondary kept at ${kept} (a secondary's writes are not replicated${lateWrite ? '; written while the refresh stopped Vaultwarden' : ''})`);
        void notify(this.cfg.notification, 'sync_error', `local changes on the secondary kept at ${kept}`);
      }
      await installRestored(tmp, this.rt.dbPath, this.rt.ids);
      await this.mirror.restore(this.rt.ids);
      if (serving) {
        await this.startUnit(UNITS.vaultwarden);
        await this.waitAlive(120_000);
        this.lastRefreshDowntimeMs = Date.now() - t;
      }
      await updateState({ secondaryDigest: replicaDigest });
      this.refreshes.swapped++;
      this.lastRefresh = new Date();
      log.info({ why, users: facts.users, downtimeMs: this.lastRefreshDowntimeMs }, `secondary refreshed from ${replicaUrl(this.cfg)} (${facts.users} users${serving ? `, Vaultwarden down ${this.lastRefreshDowntimeMs} ms` : ''})`);
      if (localChanged) await this.aside.prune('after keeping local changes aside');
    } finally {
      await removeDbCopy(tmp);
    }
  }

  /**
   * `promote`: refused while a live primary holds the lease (unless forced); a last
   * refresh when the replica is reachable; the lease taken; the role persisted in
   * /var/lib/vwstream/role-override; then the agent restarts itself as primary.
   */
  private async promote(force: boolean): Promise<{ status: number; body: unknown }> {
    if (this.role !== 'secondary') return { status: 409, body: { error: `this host is already ${this.role}` } };
    const cur = await this.lease.peek().catch(() => null);
    if (cur && !force && Date.now() <= Date.parse(cur.expiresAt) + safetyMargin(this.cfg.leaseTtlMs)) {
      return { status: 409, body: { error: `primary ${describeHolder(cur)} holds the lease until ${cur.expiresAt}; if that host is dead: vwstream-agent promote --force` } };
    }
    this.promoting = true;
    try {
      await this.refresh('promote');
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'promote: last refresh failed; promoting with the copy this host has');
    }
    await this.lease.seize();
    await writeFileDurable(PATHS.roleOverride, 'primary\n', { mode: 0o644 });
    log.warn({ previousHolder: cur?.holder ?? null }, `PROMOTED to primary${cur ? ` (lease taken from ${cur.holder})` : ''}; role persisted in ${PATHS.roleOverride}; restarting as primary`);
    setTimeout(() => void this.systemd.restartNoWait(UNITS.agent).catch((err) => log.error({ err: errorMessage(err) }, 'self-restart failed')), 200);
    return { status: 200, body: { promoted: true, previousHolder: cur?.holder ?? null, override: PATHS.roleOverride } };
  }

  async status(): Promise<StatusReport> {
    if (this.systemd && !this.stopRequested) {
      for (const unit of [UNITS.litestream, UNITS.vaultwarden]) {
        const s = await this.systemd.state(unit).catch(() => undefined);
        if (s) this.units[unit] = { activeState: s.activeState, subState: s.subState, result: s.result };
      }
    }
    const p = this.position;
    return {
      version: VERSION,
      role: this.role,
      state: this.state,
      detail: this.detail,
      since: this.since.toISOString(),
      pid: process.pid,
      replica: replicaUrl(this.cfg),
      lastDbSync: this.lastDbSync?.toISOString() ?? null,
      lastDbSyncAgeSeconds: this.lastDbSync ? Math.round((Date.now() - this.lastDbSync.getTime()) / 1000) : null,
      lastFileSync: this.mirror.lastSync?.toISOString() ?? null,
      replicaPosition: p && p.replicaIndex !== undefined ? { generation: null, index: p.replicaIndex, offset: p.replicaOffset ?? null } : null,
      walBytes: p?.walSize ?? null,
      dbBytes: p?.dbSize ?? null,
      restore: this.restore ? { action: this.restore.decision.action, reason: 'reason' in this.restore.decision ? this.restore.decision.reason : '', at: this.since.toISOString(), ms: this.restore.ms } : null,
      files: {
        remote: this.mirror.store.url,
        lastReport: this.mirror.lastReport ? { at: this.mirror.lastReport.at, uploaded: this.mirror.lastReport.uploaded, deleted: this.mirror.lastReport.deleted, unchanged: this.mirror.lastReport.unchanged, conflicts: this.mirror.lastReport.conflicts, errors: this.mirror.lastReport.errors.length } : null,
        unreadable: this.mirror.unreadable.map((e) => `${PATHS.dataFolder}/${e.rel} (${e.code})`),
      },
      lease: this.lease.seen ? { holder: this.lease.seen.holder, instance: this.lease.seen.instance ?? null, machineId: this.lease.seen.machineId, bootId: this.lease.seen.bootId, self: this.lease.me.instance, expiresAt: this.lease.seen.expiresAt, ours: this.lease.held, url: this.lease.url, suspended: this.lease.suspended } : null,
      replicationSuspended: this.replicationSuspended,
      unitRestarts: this.unitRestarts,
      unitEvents: this.unitEvents,
      lastRefresh: this.lastRefresh?.toISOString() ?? null,
      lastRefreshAgeSeconds: this.lastRefresh ? Math.round((Date.now() - this.lastRefresh.getTime()) / 1000) : null,
      lastRefreshDowntimeMs: this.lastRefreshDowntimeMs,
      refreshes: this.refreshes,
      roleOverride: this.roleOverride ? PATHS.roleOverride : null,
      backup: {
        enabled: this.cfg.backup.enabled,
        cron: this.cfg.backup.cron,
        nextRun: this.cfg.backup.enabled ? nextRun(this.cfg.backup.cron)?.toISOString() ?? null : null,
        last: readState().lastBackup ?? null,
      },
      lastDrain: this.lastDrain ? { complete: this.lastDrain.complete, at: this.lastDrain.at, detail: this.lastDrain.detail } : null,
      units: this.units,
      vaultwarden: { url: this.aliveUrl().replace(/\/alive$/, ''), alive: this.vaultwardenAlive },
      litestream: {
        profile: this.cfg.litestream.profile,
        syncInterval: formatHuman(this.cfg.litestream.syncIntervalMs),
        snapshotInterval: formatHuman(this.cfg.litestream.snapshotIntervalMs),
        retention: formatHuman(this.cfg.litestream.retentionMs),
        overrides: [
          ...(this.cfg.litestream.snapshotIntervalMs !== PROFILES[this.cfg.litestream.profile].snapshotIntervalMs ? ['LITESTREAM_SNAPSHOT_INTERVAL'] : []),
          ...(this.cfg.litestream.retentionMs !== PROFILES[this.cfg.litestream.profile].retentionMs ? ['LITESTREAM_RETENTION'] : []),
        ],
        restorable: this.rt ? await this.restorable.current() : null,
      },
      verify: { cron: this.cfg.verifyCron, nextRun: nextRun(this.cfg.verifyCron)?.toISOString() ?? null, last: readState().lastVerify ?? null },
      aside: await this.aside.summary(),
      warnings: this.cfg.warnings,
      tailscale: this.tailscale.status(),
    };
  }

  async health(): Promise<HealthReport> {
    const maxAge = this.cfg.healthcheckMaxSyncAgeMs;
    const ageCheck = (name: string, at: Date | null, what: string) => {
      const age = at ? Date.now() - at.getTime() : Infinity;
      return { name, ok: age <= maxAge, detail: Number.isFinite(age) ? `${what} ${Math.round(age / 1000)}s ago (max ${maxAge / 1000}s)` : `${what}: never` };
    };
    const checks = [
      { name: 'state', ok: this.state === 'serving', detail: `${this.state}: ${this.detail}` },
    ];
    const serves = this.role === 'primary' || this.cfg.secondaryServe;
    if (serves) checks.push({ name: 'vaultwarden', ok: this.vaultwardenAlive, detail: this.vaultwardenAlive ? `${this.aliveUrl()} answers` : `${this.aliveUrl()} does not answer` });
    if (this.role === 'primary') {
      const ls = this.units[UNITS.litestream];
      checks.push({ name: 'litestream', ok: ls?.activeState === 'active' && !this.replicationSuspended, detail: this.replicationSuspended ? `suspended: ${this.replicationSuspended}` : ls ? `${ls.activeState} (${ls.subState})` : 'unknown' });
      checks.push(ageCheck('db_sync_age', this.lastDbSync, 'replica confirmed in sync'));
      const lag = this.mirror.lagMs;
      const unreadable = this.mirror.unreadable;
      const lastPass = this.mirror.lastSync ? `last clean pass ${Math.round((Date.now() - this.mirror.lastSync.getTime()) / 1000)}s ago` : 'no clean pass yet';
      if (unreadable.length) {
        // A failing disk or a wrong permission: the remote copies are what is left; say so now.
        checks.push({ name: 'file_mirror_lag', ok: false, detail: `cannot read ${unreadable.slice(0, 3).map((e) => `${PATHS.dataFolder}/${e.rel} (${e.code})`).join(', ')}${unreadable.length > 3 ? ` and ${unreadable.length - 3} more` : ''}; remote deletions held back; ${lastPass}` });
      } else if (lag === null) {
        // No watcher: only the timer's passes tell; allow two intervals.
        const allowed = Math.max(maxAge, 2 * this.cfg.primarySyncIntervalMs);
        const age = this.mirror.lastSync ? Date.now() - this.mirror.lastSync.getTime() : Infinity;
        checks.push({ name: 'file_mirror_lag', ok: age <= allowed, detail: `no change watcher; ${lastPass} (max ${allowed / 1000}s)` });
      } else {
        checks.push({ name: 'file_mirror_lag', ok: lag <= maxAge && this.mirror.lastSync !== null, detail: lag === 0 ? `in sync; ${lastPass}` : `changes waiting ${Math.round(lag / 1000)}s (max ${maxAge / 1000}s); ${lastPass}` });
      }
      const l = this.lease.seen;
      const leaseOk = this.lease.held && !this.lease.suspended;
      checks.push({ name: 'lease', ok: leaseOk, detail: this.lease.suspended ? `not renewed: ${this.lease.suspended}` : l ? `${leaseOk ? 'held' : `held by ${describeHolder(l)}`} until ${l.expiresAt}` : 'not held' });
      const wal = this.position?.walSize ?? null;
      checks.push({ name: 'wal_size', ok: wal === null || wal <= WAL_WARN_BYTES, detail: wal === null ? 'unknown (Litestream does not answer)' : `${Math.round(wal / 1024)} KiB (max ${WAL_WARN_BYTES / 1048576} MiB)` });
    } else {
      checks.push(ageCheck('refresh_age', this.lastRefresh, 'copy refreshed from the replica'));
    }
    checks.push(await diskCheck(PATHS.dataFolder, this.position?.dbSize ?? 0));
    checks.push(await this.aside.check());
    if (this.cfg.tailscale.enabled) {
      const t = this.tailscale.status();
      checks.push({ name: 'tailscale', ok: t.up, detail: t.up ? `${t.address ?? '?'} ${t.url ?? ''} (${t.serve ?? 'serve'})`.trim() : `not up: ${t.error ?? t.backendState ?? 'starting'}` });
    }
    return { ok: checks.every((c) => c.ok), checks };
  }

  async metrics(): Promise<string> {
    const st = readState();
    let litestreamText: string | null = null;
    if (this.rt && this.role === 'primary' && !this.replicationSuspended) {
      litestreamText = await fetchMetrics(this.rt.metricsAddr).then((m) => m.text, () => null);
    }
    const lb = st.lastBackup;
    const lv = st.lastVerify;
    return renderMetrics({
      version: VERSION,
      role: this.role,
      state: this.state,
      lastDbSync: this.lastDbSync,
      lastFileSync: this.mirror.lastSync,
      syncErrors: { litestream: this.lastSyncErrors, files: this.mirror.failedPasses },
      lease: this.role === 'primary' ? { held: this.lease.held, suspended: this.lease.suspended !== null, expiresAt: this.lease.seen?.expiresAt ?? null } : null,
      backup: {
        ...(lb ? { lastAt: lb.at, lastOk: lb.ok } : {}),
        ...(st.lastBackupSuccess ? { lastSuccessAt: st.lastBackupSuccess.at, lastMs: st.lastBackupSuccess.ms, lastBytes: st.lastBackupSuccess.bytes } : {}),
      },
      restores: st.counters?.restores ?? {},
      drain: {
        complete: st.counters?.drains?.complete ?? 0,
        incomplete: st.counters?.drains?.incomplete ?? 0,
        ...(this.lastDrain ? { lastAt: this.lastDrain.at, lastComplete: this.lastDrain.complete, ...(this.lastDrain.ms !== undefined ? { lastMs: this.lastDrain.ms } : {}) } : {}),
      },
      unitRestarts: Object.fromEntries([UNITS.litestream, UNITS.vaultwarden].map((u) => [u, this.unitRestarts[u] ?? 0])),
      verify: lv ? { at: lv.at, ok: lv.ok } : null,
      walBytes: this.position?.walSize ?? null,
      dbBytes: this.position?.dbSize ?? null,
      litestreamText,
    });
  }
}

/** WAL bigger than this fails health: Litestream normally keeps it checkpointed small. */
const WAL_WARN_BYTES = 512 * 1048576;

/** Free space under the data folder: at least 1 GiB and twice the database (a restore or VACUUM INTO needs room). */
async function diskCheck(dir: string, dbBytes: number): Promise<HealthCheck> {
  try {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    const db = dbBytes || (await stat(`${dir}/db.sqlite3`).then((x) => x.size, () => 0));
    const need = Math.max(1 << 30, 2 * db);
    return { name: 'disk_free', ok: free >= need, detail: `${(free / 1073741824).toFixed(1)} GiB free under ${dir} (need ${(need / 1073741824).toFixed(1)} GiB)` };
  } catch (err) {
    return { name: 'disk_free', ok: false, detail: `cannot stat ${dir}: ${errorMessage(err)}` };
  }
}

function readRoleOverride(): string | null {
  if (!existsSync(PATHS.roleOverride)) return null;
  const v = readFileSync(PATHS.roleOverride, 'utf8').trim();
  return v === 'primary' || v === 'secondary' ? v : null;
}
