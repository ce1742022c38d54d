import type { Config, Role } from '../config/config.ts';
import { replicaMissingWarning, replicaUrl } from '../config/config.ts';
import type { DrainBudget } from '../config/budget.ts';
import { nextRun } from '../config/cron.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { UNITS } from '../paths.ts';
import type { Ids } from '../safe-fs.ts';
import type { RestoreOutcome } from '../replication/restore.ts';
import { Drain } from './drain.ts';
import { Fencing } from './fencing.ts';
import { StateMachine } from './machine.ts';
import type { Clock, CopyPort, LeaseEvents, LeasePort, LitestreamPort, MirrorPort, NotifierPort, StartupPort, StatePort, SystemdPort } from './ports.ts';
import { ReplicationWatch } from './replication-watch.ts';
import { Secondary } from './secondary.ts';
import { UnitSupervisor } from './units.ts';
import type { DrainRecord } from '../state-file.ts';

/** Extras the daemon starts and reports on but does not depend on for its transitions. */
export interface Extras {
  /** TAILSCALE_ENABLED: joins the tailnet once Vaultwarden serves (bounded; retries in the background). */
  startTailscale(signal: AbortSignal): Promise<void>;
  /** Aside retention: started with the daemon, pruned after keeping local changes. */
  startAside(): void;
  stopAside(): void;
  pruneAside(why: string): Promise<void>;
  notify(kind: 'sync_error', text: string): void;
}

export interface DaemonDeps {
  cfg: Config;
  role: Role;
  systemd: SystemdPort;
  notifier: NotifierPort;
  clock: Clock;
  lease: LeasePort;
  /** Routes the lease keeper's callbacks to the daemon's fencing. */
  bindLease(events: LeaseEvents): void;
  mirror: MirrorPort;
  litestream: LitestreamPort;
  startup: StartupPort;
  copy: CopyPort;
  state: StatePort;
  alive(): Promise<boolean>;
  aliveUrl: string;
  budget: DrainBudget;
  ids: Ids;
  extras: Extras;
  machine?: StateMachine;
}

/** How long the main loop may go without a round before the watchdog ping is withheld. */
export const HEARTBEAT_MAX_MS = 60_000;

/**
 * The daemon as a short phase runner over modules that each own one concern: unit
 * supervision (units.ts), fencing (fencing.ts), the replication watch
 * (replication-watch.ts), the secondary (secondary.ts), the drain (drain.ts); state
 * changes go through the state machine (machine.ts); reporting reads a snapshot of them
 * (report.ts). Stopping is an AbortSignal handed to every phase.
 */
export class Daemon {
  readonly machine: StateMachine;
  readonly units: UnitSupervisor;
  readonly fencing: Fencing;
  readonly watch: ReplicationWatch;
  readonly secondary: Secondary;
  readonly drain: Drain;
  readonly deps: DaemonDeps;
  restore: RestoreOutcome | null = null;
  lastDrain: DrainRecord | undefined;
  /** Litestream was started for this run: the drain has something to confirm and upload. */
  private replicating = false;
  private readonly stopCtl = new AbortController();
  /** Aborted when the run must end: a stop was requested, or the host was fenced. */
  private readonly runCtl = new AbortController();
  private heartbeat: number;
  /** A bounded step that keeps the loop from going round (a long restore); the watchdog allows it. */
  private busy: { what: string; since: number; boundMs: number } | null = null;

  constructor(deps: DaemonDeps) {
    this.deps = deps;
    const { cfg, clock } = deps;
    this.machine = deps.machine ?? new StateMachine(deps.notifier, () => clock.now());
    this.heartbeat = clock.now();
    this.units = new UnitSupervisor({ systemd: deps.systemd, clock, alive: deps.alive, aliveUrl: deps.aliveUrl });
    this.watch = new ReplicationWatch({
      litestream: deps.litestream, clock, maxSyncAgeMs: cfg.healthcheckMaxSyncAgeMs, ...(deps.state.read().lastDbSync ? { lastDbSync: deps.state.read().lastDbSync! } : {}),
      onError: (text) => deps.extras.notify('sync_error', text),
    });
    this.fencing = new Fencing({
      lease: deps.lease, machine: this.machine, units: this.units, mirror: deps.mirror, clock, leaseTtlMs: cfg.leaseTtlMs,
      hooks: {
        endRun: (reason) => this.runCtl.abort(new DOMException(`fenced: ${reason}`, 'AbortError')),
        stopping: () => this.stopCtl.signal.aborted,
        replicationStarted: () => this.replicating,
        litestreamRestarted: async () => { this.watch.startedMs = clock.now(); await deps.startup.writeDrainInfo(this.watch.startedMs); },
        notify: (text) => this.watch.reportError(text),
        servingDetail: () => `replicating to ${replicaUrl(cfg)}`,
        beat: () => this.beat(),
      },
    });
    deps.bindLease(this.fencing);
    this.secondary = new Secondary({
      machine: this.machine, notifier: deps.notifier, units: this.units, systemd: deps.systemd, copy: deps.copy, state: deps.state, lease: deps.lease, clock,
      settings: { serve: cfg.secondaryServe, serverless: cfg.deploymentMode === 'serverless', intervalMs: cfg.secondarySyncIntervalMs, maxSyncAgeMs: cfg.healthcheckMaxSyncAgeMs, leaseTtlMs: cfg.leaseTtlMs, replica: replicaUrl(cfg), replicaMissing: replicaMissingWarning({ ...cfg, role: 'secondary' }, false) ?? '' },
      notifyLocalChanges: (text) => deps.extras.notify('sync_error', text),
      pruneAside: () => deps.extras.pruneAside('after keeping local changes aside'),
      beat: () => this.beat(),
      startExtras: (signal) => deps.extras.startTailscale(signal),
      step: (what, boundMs, fn) => this.step(what, boundMs, fn),
    });
    this.drain = new Drain({ machine: this.machine, notifier: deps.notifier, units: this.units, mirror: deps.mirror, fencing: this.fencing, startup: deps.startup, state: deps.state, watch: this.watch, budget: deps.budget, clock });
  }

  get role(): Role { return this.deps.role; }
  get stopping(): boolean { return this.stopCtl.signal.aborted; }

  requestStop(signal: string): void {
    if (this.stopCtl.signal.aborted) return;
    log.info({ signal }, `received ${signal}: draining`);
    this.stopCtl.abort(stopReason(signal));
    this.runCtl.abort(stopReason(signal));
  }

  private beat(): void { this.heartbeat = this.deps.clock.now(); }

  /** For the watchdog: whichever loop runs must have gone round recently, unless a bounded step is in progress. */
  isResponsive(): boolean {
    const now = this.deps.clock.now();
    if (this.busy && now - this.busy.since < this.busy.boundMs) return true;
    const looping = ['serving', 'degraded', 'waiting', 'restoring'].includes(this.machine.state);
    return !looping || now - this.heartbeat < HEARTBEAT_MAX_MS;
  }

  private async step<T>(what: string, boundMs: number, fn: () => Promise<T>): Promise<T> {
    this.busy = { what, since: this.deps.clock.now(), boundMs };
    try { return await fn(); } finally { this.busy = null; this.beat(); }
  }

  /** Runs until stopped or fenced; returns the exit status. */
  async run(): Promise<number> {
    const signal = this.runCtl.signal;
    try {
      await this.machine.enter('begin', this.role === 'secondary' ? `secondary of ${replicaUrl(this.deps.cfg)}` : `primary: taking the lease at ${this.deps.lease.url}`);
      this.lastDrain = this.deps.state.read().lastDrain;
      this.deps.extras.startAside();
      if (this.role === 'secondary') {
        await this.secondary.run(signal);
      } else if (await this.primary(signal)) {
        await this.monitor(signal);
      }
      return await this.drain.run({ role: this.role, replicating: this.replicating });
    } catch (err) {
      const e = err instanceof AgentError ? err : new AgentError(errorMessage(err), { cause: err });
      if (this.fencing.fenced || (this.stopping && signal.aborted && isAbort(err))) return this.drain.run({ role: this.role, replicating: this.replicating });
      await this.machine.enter(e.exitCode === EXIT.REFUSED ? 'refuse' : 'fail', e.message, e.hint ? { hint: e.hint } : {});
      // One plain line for `systemctl status` and the journal, with the way out.
      process.stderr.write(`vwstream-agent: ${e.message}${e.hint ? `; ${e.hint}` : ''}\n`);
      await this.drain.run({ role: this.role, replicating: this.replicating }).catch(() => undefined);
      return e.exitCode;
    } finally {
      this.deps.extras.stopAside();
    }
  }

  /** The primary's phases up to READY; false when stopped (or fenced) on the way. */
  private async primary(signal: AbortSignal): Promise<boolean> {
    const { cfg, notifier, mirror, startup } = this.deps;
    if (!(await this.fencing.take(signal, (detail) => notifier.ready(`waiting: ${detail}`)))) return false;
    this.fencing.startRenewing();
    this.beat();
    if (signal.aborted) return false;

    const vwUp = await this.units.isActive(UNITS.vaultwarden);
    const lsUp = await this.units.isActive(UNITS.litestream);
    if (vwUp && lsUp) {
      // The agent restarted while both kept running: the live database is in use and replicated.
      this.restore = { decision: { action: 'keep', reason: 'Vaultwarden and Litestream were already running; adopted them' }, ms: 0 };
      log.info('Vaultwarden and Litestream already running: adopting them (no restore decision on a live database)');
      if (startup.vaultwardenChanged) {
        // Another binary is to run: it starts below, after the check (and snapshot) an upgrade needs.
        log.info('the running Vaultwarden was started with another binary than this start chose: stopping it to start the chosen one');
        await this.units.stop(UNITS.vaultwarden, 60_000);
      }
      if (startup.litestreamConfigChanged) {
        log.info('litestream.yml changed: restarting Litestream to load it');
        await this.units.stop(UNITS.litestream, cfg.litestream.shutdownTimeoutMs);
      }
    } else {
      if (vwUp) await this.units.stop(UNITS.vaultwarden, 60_000);
      if (lsUp) await this.units.stop(UNITS.litestream, cfg.litestream.shutdownTimeoutMs);
      await this.machine.enter('restore', `checking the local vault against ${replicaUrl(cfg)}`);
      await this.step('restoring the database', 30 * 60_000, () => this.restoreDatabase(signal));
      if (signal.aborted) return false;
    }

    await this.fencing.untilWritable(signal);
    if (signal.aborted) return false;
    await this.machine.enter('replicate', 'starting Litestream');
    if (!(await this.units.isActive(UNITS.litestream))) {
      if (await startup.createDbFile()) log.info('created an empty database file (mode 0660) for the new vault');
      this.watch.startedMs = this.deps.clock.now();
      this.replicating = true;
      await this.units.start(UNITS.litestream);
    } else this.watch.startedMs = this.deps.clock.now() - 1; // adopted: its start time is older still
    await this.fencing.enforce(); // suspended or lost while it started: it does not replicate
    await this.deps.litestream.verifyLoaded();
    await startup.writeDrainInfo(this.watch.startedMs);
    this.replicating = true;
    if (this.lastDrain && !this.lastDrain.complete) {
      log.warn({ lastDrain: this.lastDrain }, `last drain incomplete: ${this.lastDrain.detail}; re-syncing before serving`);
      await this.machine.enter('replicate', `last drain incomplete (${this.lastDrain.detail}); re-syncing before serving`);
      const ok = await this.step('confirming the replica', 90_000, () => this.watch.confirm(60_000));
      log[ok ? 'info' : 'warn'](ok ? 'database replica confirmed in sync after the incomplete drain' : 'database replica not confirmed in sync within 60 s; serving anyway, Litestream keeps trying');
    }
    if (signal.aborted) return false;
    await this.fencing.untilWritable(signal);
    if (signal.aborted) return false;
    await this.machine.enter('replicate', `mirroring files to ${mirror.store.url}`);
    await this.step('the first file pass', 12 * 60_000, async () => {
      try {
        await mirror.checkRemote(AbortSignal.any([signal, AbortSignal.timeout(120_000)]));
        const r = await mirror.sync('start', AbortSignal.any([signal, AbortSignal.timeout(600_000)]));
        log.info({ uploaded: r.uploaded, unchanged: r.unchanged, conflicts: r.conflicts, errors: r.errors.length, ms: r.ms }, `file mirror ${r.errors.length ? 'NOT ' : ''}in sync (${r.uploaded} uploaded, ${r.unchanged} unchanged${r.conflicts ? `, ${r.conflicts} kept under a conflict name` : ''}${r.errors.length ? `, ${r.errors.length} errors: ${r.errors[0]}` : ''})`);
      } catch (err) {
        if (!signal.aborted) log.warn({ err: errorMessage(err) }, 'file mirror could not sync at start; retrying on changes and on the timer');
      }
    });
    if (signal.aborted) return false;

    await this.machine.enter('replicate', 'starting Vaultwarden');
    let startedHere = false;
    if (!(await this.units.isActive(UNITS.vaultwarden))) {
      if (startup.beforeVaultwarden) await this.step('the snapshot before a Vaultwarden upgrade', 30 * 60_000, () => startup.beforeVaultwarden!());
      if (signal.aborted) return false;
      await this.units.start(UNITS.vaultwarden);
      startedHere = true;
    }
    await this.units.waitAlive(120_000, signal);
    if (signal.aborted) return false;
    if (startedHere && startup.vaultwardenStarted) {
      // The row marker's rows are fixed here; it is hashed and written after READY (below).
      await this.step('recording the Vaultwarden that runs', 10 * 60_000, () => startup.vaultwardenStarted!({ deferMarker: true }))
        .catch((err) => log.warn({ err: errorMessage(err) }, `could not record the Vaultwarden version that runs: ${errorMessage(err)}`));
    }
    await this.deps.extras.startTailscale(signal);

    const detail = this.restore?.decision.action === 'new-vault' ? `new vault: no replica at ${replicaUrl(cfg)}` : `replicating to ${replicaUrl(cfg)}`;
    // Timers and the watcher first: when READY arrives, all of it is in place.
    await this.deps.state.update({ lastDrain: { complete: false, at: new Date(this.deps.clock.now()).toISOString(), detail: 'the agent did not drain (crash, power loss or kill)', steps: [] } });
    mirror.watch((err) => { if (!this.stopping) log.warn({ err: err.message }, 'file mirror pass failed; the timer retries'); });
    await this.units.start(UNITS.syncTimer).catch((err) => log.warn({ err: errorMessage(err) }, 'could not start vwstream-sync.timer'));
    await this.scheduleBackups();
    await this.units.start(UNITS.verifyTimer).catch((err) => log.warn({ err: errorMessage(err) }, 'could not start vwstream-verify.timer'));
    await this.machine.enter('serve', detail, { restore: this.restore?.decision.action, restoreMs: this.restore?.ms });
    await notifier.ready(`serving: ${detail}`);
    if (startup.afterReady) {
      await this.step('marking the rows for the rollback check', 10 * 60_000, () => startup.afterReady!())
        .catch((err) => log.warn({ err: errorMessage(err) }, `could not write the row marker for the rollback check: ${errorMessage(err)}`));
    }
    if (this.fencing.suspended) await this.machine.enter('degrade', `replication suspended: ${this.fencing.suspended}`);
    return !signal.aborted;
  }

  /** The restore decision on the live database, then the files it calls for. */
  private async restoreDatabase(signal: AbortSignal): Promise<void> {
    const { notifier, mirror, startup, state, clock } = this.deps;
    let shown = 0;
    // A new host (no local database, nothing recovered): once the rule has said restore,
    // the files come beside the database's copy instead of after it. There is no local
    // vault whose files the decision could still keep, and Vaultwarden starts only after
    // both are in place (this function returns after both). Local files that differ go
    // aside as in the sequential order.
    // The database is installed only once the files' restore is recorded (or has ended):
    // a crash after the install then finds the record and completes the files. A failed
    // database restore stops the download (filesAbort) instead of waiting for all of it.
    let files: Promise<void> | undefined;
    const filesAbort = new AbortController();
    signal.addEventListener('abort', () => filesAbort.abort(signal.reason), { once: true });
    const early = (): Promise<void> => {
      const pending = mirror.pendingRestore();
      let recorded!: () => void;
      const isRecorded = new Promise<void>((r) => { recorded = r; });
      files = this.restoreFiles(pending?.asideDir ?? startup.asideFolder('files-replaced-by-restore'), filesAbort.signal, recorded);
      files.catch(() => undefined); // awaited below; its error is the start's
      // Recorded, or finished: the install may go on. Failed before its record: so does the start.
      return Promise.race([isRecorded, files.then(() => undefined)]);
    };
    try {
      this.restore = await startup.restoreOnStart((p) => {
        // Each step Litestream takes (snapshot, WAL segment) pushes the start timeout out.
        this.beat();
        if (clock.now() - shown < 1000 && p.phase !== 'done') return;
        shown = clock.now();
        void notifier.extendTimeout(120_000, `restoring: database ${p.phase === 'wal' && p.walIndex !== undefined ? `WAL segment ${p.walIndex}${p.walMax !== undefined ? ` of ${p.walMax}` : ''}` : p.phase}`);
      }, signal, early);
    } catch (err) {
      filesAbort.abort(new Error('the database restore failed'));
      await files?.catch(() => undefined); // no download left running behind a failed start
      throw err;
    }
    const d = this.restore.decision;
    // Litestream starts only after this function returns: the restored copy is still closed,
    // so the snapshot an upgrade needs can be its bytes, taken beside the files' download.
    const snapshot = d.action === 'restore' ? startup.afterDatabaseRestore?.() : undefined;
    await state.bump('restores', d.action).catch(() => undefined);
    // A restore finished now after an interruption fetches the files as its run would have
    // (a backup's files come from its archive, not the mirror: the operator runs it again).
    const rec = this.restore.recovered;
    const pending = mirror.pendingRestore();
    try {
      if (files) await files;
      else if (d.action === 'restore' || pending || (rec?.outcome === 'completed' && rec.op.kind !== 'backup')) {
        if (pending && d.action !== 'restore') log.warn({ startedAt: pending.startedAt, from: mirror.store.url }, `a file restore from ${mirror.store.url} started at ${pending.startedAt} did not finish; completing it before Vaultwarden starts`);
        await this.restoreFiles(this.restore.setAsideTo ?? rec?.op.asideDir ?? pending?.asideDir ?? startup.asideFolder('files-replaced-by-restore'), signal);
      }
    } finally {
      await snapshot; // never left copying behind a failed start
    }
    if (rec?.outcome === 'completed' && rec.op.kind === 'backup') {
      log.warn({ source: rec.op.source }, `the database of backup ${rec.op.source} was installed after an interruption, its files perhaps not all: run vwstream-agent restore --backup ${rec.op.source} --force again to bring them`);
    }
    const cfg = this.deps.cfg;
    if (d.action === 'new-vault') log.warn({ replica: replicaUrl(cfg) }, `NEW VAULT: ${d.reason}; if you expected existing data, check S3_BUCKET/S3_PREFIX`);
    else log.info({ action: d.action, ms: this.restore.ms, setAsideTo: this.restore.setAsideTo }, `restore decision: ${d.action}: ${'reason' in d ? d.reason : ''}`);
  }

  /**
   * The mirrored files into the data folder before Vaultwarden starts; local files that
   * differ go to `asideDir`. Progress goes to STATUS= and, as it advances, pushes the
   * start timeout out (EXTEND_TIMEOUT_USEC), so a long restore is not killed mid-way
   * while a stalled one still is. A failure fails the start: the next start finishes it.
   */
  private async restoreFiles(asideDir: string, signal: AbortSignal, onRecorded?: () => void): Promise<void> {
    const { mirror, notifier, clock, ids } = this.deps;
    await this.machine.enter('restore', `restoring files from ${mirror.store.url}`);
    let last = 0;
    const f = await mirror.restore(ids, asideDir, (p) => {
      this.beat();
      if (clock.now() - last < 1000 && p.done < p.total) return;
      last = clock.now();
      void notifier.extendTimeout(120_000, `restoring: files ${p.done}/${p.total}, ${(p.bytes / 1048576).toFixed(0)} of ${(p.totalBytes / 1048576).toFixed(0)} MiB`);
    }, signal, onRecorded);
    log.info({ files: f.files, replaced: f.replaced, unchanged: f.unchanged, ignored: f.ignored, bytes: f.bytes, from: mirror.store.url, ...(f.replaced ? { keptAt: `${asideDir}/files` } : {}) },
      `restored ${f.files} files (${f.bytes} bytes) from ${mirror.store.url}; ${f.unchanged} already here${f.replaced ? `; ${f.replaced} local files that differed kept at ${asideDir}/files` : ''}${f.ignored ? `; ${f.ignored} skipped (links in the data folder)` : ''}`);
  }

  /** Watches replication and both units until the run ends. */
  private async monitor(signal: AbortSignal): Promise<void> {
    const { clock, state } = this.deps;
    let tick = 0;
    while (!signal.aborted) {
      this.beat();
      await clock.sleep(1000, signal);
      if (signal.aborted) break;
      tick++;
      await this.watch.poll();
      if (tick % 2 === 0) {
        await this.units.poll([UNITS.litestream, UNITS.vaultwarden], {
          signal,
          excused: (unit) => unit === UNITS.litestream && this.fencing.suspended !== null, // stopped on purpose
          onDown: async (unit, what) => { await this.machine.enter('degrade', `${what}; restarting it`, { unit }); },
          onBack: async (unit) => {
            await this.machine.enter('serve', `${unit} restarted; replicating to ${replicaUrl(this.deps.cfg)}`);
            if (unit === UNITS.vaultwarden) await this.deps.startup.vaultwardenStarted?.().catch((err) => log.warn({ err: errorMessage(err) }, `could not record the Vaultwarden version that runs: ${errorMessage(err)}`));
          },
          // A restart runs the version check (and the snapshot if the binary changed in place).
          beforeStart: async (unit) => { if (unit === UNITS.vaultwarden) await this.deps.startup.beforeVaultwarden?.(); },
        });
      }
      if (tick % 5 === 0) await this.units.checkAlive();
      if (tick % 60 === 0 && this.watch.lastDbSync) await state.update({ lastDbSync: this.watch.lastDbSync.toISOString() }).catch(() => undefined);
    }
  }

  /** BACKUP_ENABLED: vwstream-backup.timer on BACKUP_CRON (Persistent); BACKUP_ON_STARTUP: one run now. */
  private async scheduleBackups(): Promise<void> {
    const { cfg, systemd } = this.deps;
    if (!cfg.backup.enabled) {
      await systemd.stop(UNITS.backupTimer, 10_000).catch(() => undefined);
      return;
    }
    try {
      await this.units.start(UNITS.backupTimer);
      const next = nextRun(cfg.backup.cron);
      log.info({ cron: cfg.backup.cron, next: next?.toISOString() }, `backups scheduled (${cfg.backup.cron}); next ${next?.toISOString() ?? 'never'}`);
      if (cfg.backup.onStartup) {
        // As a unit, not inside the daemon: its shutdown ordering and timeout apply.
        await systemd.startNoWait(UNITS.backup);
        log.info('BACKUP_ON_STARTUP: backup started');
      }
    } catch (err) {
      log.error({ err: errorMessage(err) }, `backups could not be scheduled: ${errorMessage(err)}`);
    }
  }

  // --- what the API asks -------------------------------------------------------------

  async sync(): Promise<{ status: number; body: unknown }> {
    const s = this.machine.state;
    if (s !== 'serving' && s !== 'degraded') return { status: 409, body: { error: `not serving (${s})` } };
    if (this.role !== 'primary') return { status: 409, body: { error: 'this host is a secondary: it does not upload' } };
    if (this.deps.mirror.fenced) return { status: 409, body: { error: `file mirror stopped: ${this.deps.mirror.fenced}` } };
    const report = await this.deps.mirror.syncInBackground('timer');
    return { status: report.errors.length ? 500 : 200, body: report };
  }

  async promote(force: boolean): Promise<{ status: number; body: unknown }> {
    if (this.role !== 'secondary') return { status: 409, body: { error: `this host is already ${this.role}` } };
    return this.secondary.promote(force, this.runCtl.signal);
  }
}

/** An abort reason that reads as an abort wherever it is rethrown (AbortError). */
function stopReason(signal: string): DOMException {
  return new DOMException(`stop requested (${signal})`, 'AbortError');
}

function isAbort(err: unknown): boolean {
  const name = (err as Error | undefined)?.name;
  return name === 'AbortError' || name === 'TimeoutError';
}
