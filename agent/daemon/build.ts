import { existsSync, readFileSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import type { Server } from 'node:http';
import { startApiServers, type ApiServers } from '../api/server.ts';
import type { Config, Role } from '../config/config.ts';
import { drainBudgetOf } from '../config/budget.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { fileMirrorFor, restoreChecked, restoreOnStart } from '../replication/restore.ts';
import { writeFileDurable, writePrivateFile } from '../fs.ts';
import { httpGetText } from '../http-get.ts';
import { loadJournalAddon, log } from '../log.ts';
import { notify } from '../notify/notify.ts';
import { PATHS, SERVICE_USER } from '../paths.ts';
import { contentDigest, inspectDb } from '../replication/inspect.ts';
import { LeaseKeeper } from '../replication/lease-keeper.ts';
import { FileLeaseStore, S3LeaseStore, myIdentity } from '../replication/lease.ts';
import { fetchMetrics, listGenerations, shadowPosition, verifyLoadedConfig } from '../replication/litestream.ts';
import { waitReplicaConfirmed } from '../replication/confirm.ts';
import { asideFolder, createDbFile, installRestored, lookupUser, prepareRuntime, removeDbCopy, setAside } from '../replication/runtime.ts';
import { RestorableWindow } from '../replication/window.ts';
import { s3Client } from '../files/store.ts';
import { bumpCounter, readState, updateState, updateVaultwardenState } from '../state-file.ts';
import { Systemd } from '../systemd/dbus.ts';
import { backupLocalPaths, renderDropins, writeDropins } from '../systemd/dropins.ts';
import { Notifier } from '../systemd/notify.ts';
import { Tailscale } from '../tailscale/tailscale.ts';
import { AsideKeeper } from './aside.ts';
import { Daemon } from './daemon.ts';
import { StateMachine } from './machine.ts';
import { startMetricsListener, Watchdog } from './observe.ts';
import { realClock, type LeaseEvents } from './ports.ts';
import { Reporter, diskCheck } from './report.ts';
import { installVaultwarden } from '../vaultwarden/install.ts';
import { VaultwardenLifecycle, vaultwardenReport } from '../vaultwarden/lifecycle.ts';
import { binInEnvFile, realInstallDeps, versionOf } from '../vaultwarden/source.ts';
import { chosenBinProblem, prepareVaultwarden, webVaultProblem } from '../vaultwarden/start.ts';
import { VersionStore } from '../vaultwarden/versions.ts';
import { recoverRollback } from '../vaultwarden/rollback.ts';
import { recoverRestoreOp } from '../replication/restore-op.ts';

/**
 * The composition root: checks what must hold before anything starts, prepares the
 * runtime files, connects to systemd, builds the daemon from real parts (D-Bus, the lease
 * store, the file mirror, Litestream, the state file), serves the API, and runs it.
 */
export async function runAgent(cfg: Config, notifySocket: string | undefined, onDaemon: (d: { requestStop(signal: string): void }) => void): Promise<number> {
  const notifier = new Notifier(notifySocket, loadJournalAddon());
  const machine = new StateMachine(notifier);
  let stopEarly: string | null = null;
  const early = new AbortController(); // a stop while Vaultwarden is being installed at start
  onDaemon({ requestStop: (s) => { stopEarly = s; early.abort(new DOMException(`stop requested (${s})`, 'AbortError')); } });
  const roleOverride = readRoleOverride();
  const role: Role = (roleOverride as Role | null) ?? cfg.role;
  let systemd: Systemd | undefined;
  let api: ApiServers | undefined;
  let metricsServer: Server | undefined;
  let watchdog: Watchdog | undefined;
  let daemon: Daemon | undefined;
  try {
    await machine.enter('begin', 'checking the Vaultwarden binary');
    const store = new VersionStore();
    // A rollback interrupted by a crash: finished (or dropped) before a version is chosen.
    await recoverRollback(readState().vaultwarden ?? {}, {
      store, dbPath: PATHS.dbFile, updateState: (change) => updateVaultwardenState(change), now: () => new Date(),
      finishRestore: () => recoverRestoreOp(lookupUser(SERVICE_USER)),
    });
    const vw = await prepareVaultwarden(cfg, {
      store,
      install: (req) => installVaultwarden(req, realInstallDeps(cfg, store)),
      readState: () => readState().vaultwarden ?? {},
      updateState: (change) => updateVaultwardenState(change),
      extendTimeout: (ms, text) => { void notifier.extendTimeout(ms, text); },
      sleep: (ms, signal) => sleepAbortable(ms, signal),
      now: () => Date.now(),
      signal: early.signal,
    });
    const binProblem = chosenBinProblem(cfg, vw); // the check check-config makes
    if (binProblem) {
      throw new AgentError(`${binProblem.key}=${binProblem.value}: ${binProblem.message}`, { hint: `${binProblem.hint}, then systemctl restart vwstream-agent`, exitCode: EXIT.CONFIG });
    }
    const webProblem = webVaultProblem(cfg, store, undefined, vw);
    if (webProblem) {
      throw new AgentError(webProblem, {
        hint: `put the web vault there, set WEB_VAULT_FOLDER in ${cfg.source} to where it is, WEB_VAULT_ENABLED=false to run without it, or vwstream-agent vaultwarden install (it brings its web vault)`,
        exitCode: EXIT.CONFIG,
      });
    }
    if (roleOverride) log.warn({ override: PATHS.roleOverride }, `role ${role} from ${PATHS.roleOverride} (written by promote) overrides NODE_ROLE=${cfg.role}; delete the file to undo`);
    const me = myIdentity(PATHS.instanceFile);
    log.info({ instance: me.instance, machineId: me.machineId, bootId: me.bootId, file: PATHS.instanceFile }, `agent instance ${me.instance} (${me.instanceCreated ? 'new in this boot' : 'kept from an earlier run in this boot'})`);
    const budget = drainBudgetOf(cfg);
    systemd = await Systemd.connect();
    // What the unit ran last (before this start rewrites its environment): a running
    // Vaultwarden of another binary is not adopted (the switch goes through the snapshot).
    const ranBin = binInEnvFile();
    const rt = await prepareRuntime(cfg, vw);
    if (await writeDropins(renderDropins(budget, cfg.primarySyncIntervalMs, cfg.backup.enabled ? cfg.backup.cron : undefined, cfg.verifyCron, cfg.s3 ? undefined : cfg.localReplicaPath, cfg.backup.enabled ? backupLocalPaths(cfg.backup.remotes, cfg.rcloneEnv) : []))) await systemd.reload();
    if (budget.scaled) log.warn({ budget }, `drain step timeouts add up to more than STOP_GRACE_PERIOD; scaled down to vaultwarden ${budget.vaultwardenMs} ms, litestream ${budget.litestreamMs} ms, files ${budget.filesMs} ms`);

    const relay: { to: LeaseEvents | null } = { to: null };
    // One S3 client (its middleware, endpoint rules and connection pool) for the lease and the file mirror.
    const client = cfg.s3 ? s3Client(cfg.s3) : undefined;
    const lease = new LeaseKeeper({
      store: cfg.s3 ? new S3LeaseStore(cfg.s3, client!) : new FileLeaseStore(cfg.localReplicaPath),
      me,
      ttlMs: cfg.leaseTtlMs,
      onLost: (reason, stolen) => relay.to?.onLost(reason, stolen),
      onSuspended: (reason) => relay.to?.onSuspended(reason),
      onRegained: () => relay.to?.onRegained(),
    });
    const mirror = fileMirrorFor(cfg, undefined, undefined, client);
    const lifecycle = new VaultwardenLifecycle({
      prepared: vw, probe: versionOf, dbPath: rt.dbPath, asideRoot: PATHS.asideDir,
      readState: () => readState().vaultwarden ?? {}, updateState: (change) => updateVaultwardenState(change), now: () => new Date(),
    });
    const aside = new AsideKeeper(PATHS.asideDir, cfg.aside);
    const tailscale = new Tailscale(cfg);
    const sd = systemd;
    daemon = new Daemon({
      cfg, role, machine, notifier, clock: realClock, lease, mirror, budget, ids: rt.ids,
      systemd: sd,
      bindLease: (events) => { relay.to = events; },
      aliveUrl: aliveUrl(cfg),
      alive: () => checkAlive(aliveUrl(cfg)),
      litestream: {
        metrics: () => fetchMetrics(rt.metricsAddr),
        shadow: () => shadowPosition(rt.dbPath),
        localWal: () => stat(`${rt.dbPath}-wal`).then((st) => ({ size: st.size, mtimeMs: st.mtimeMs }), () => undefined),
        verifyLoaded: () => verifyLoadedConfig(cfg, rt.litestreamConfig, rt.dbPath),
        confirm: async (timeoutMs, startedMs) => (await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: rt.dbPath, timeoutMs, ...(startedMs ? { litestreamStartedMs: startedMs } : {}) })).confirmed,
      },
      startup: {
        litestreamConfigChanged: rt.litestreamConfigChanged,
        restoreOnStart: (onProgress, _signal, onRestoreDecided) => restoreOnStart(cfg, rt, { onProgress, ...(onRestoreDecided ? { onRestoreDecided } : {}) }),
        createDbFile: () => createDbFile(rt.dbPath, rt.ids),
        writeDrainInfo: async (startedMs) => {
          await rm(PATHS.finalSync, { force: true });
          await writePrivateFile(PATHS.drainInfo, JSON.stringify({ metricsAddr: rt.metricsAddr, dbPath: rt.dbPath, confirmMs: budget.confirmMs, litestreamStartedMs: startedMs }) + '\n');
        },
        readFinalSync: async () => {
          try { return JSON.parse(await readFile(PATHS.finalSync, 'utf8')) as { confirmed: boolean; detail: string }; } catch { return undefined; }
        },
        asideFolder: (why) => asideFolder(why),
        vaultwardenChanged: ranBin !== undefined && ranBin !== vw.bin,
        afterDatabaseRestore: () => lifecycle.afterRestore(),
        beforeVaultwarden: () => lifecycle.beforeStart(),
        vaultwardenStarted: (opts) => lifecycle.started(opts),
        afterReady: () => lifecycle.writeDeferredMarker(),
      },
      copy: {
        fetch: async () => {
          const { tmp, facts } = await restoreChecked(rt);
          try {
            return { tmp, digest: contentDigest(tmp), users: facts.users };
          } catch (err) {
            await removeDbCopy(tmp);
            throw err;
          }
        },
        replicaExists: async () => (await listGenerations(rt.litestreamConfig, rt.dbPath)).length > 0,
        local: () => {
          const l = inspectDb(rt.dbPath);
          return { exists: l.exists, intact: l.exists && l.intact, ...(l.exists && l.intact ? { digest: contentDigest(rt.dbPath) } : {}) };
        },
        keepAside: (why) => setAside(rt.dbPath, why),
        install: (tmp) => installRestored(tmp, rt.dbPath, rt.ids),
        discard: (tmp) => removeDbCopy(tmp),
        restoreFiles: async (signal) => { await mirror.restore(rt.ids, undefined, undefined, signal); },
        persistPrimary: async () => { await writeFileDurable(PATHS.roleOverride, 'primary\n', { mode: 0o644 }); return PATHS.roleOverride; },
      },
      state: { read: () => readState(), update: async (p) => { await updateState(p); }, bump: (c, k) => bumpCounter(c, k) },
      extras: {
        startTailscale: (signal) => tailscale.start(new Promise<void>((resolve) => signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true }))),
        startAside: () => aside.start(),
        stopAside: () => aside.stop(),
        pruneAside: (why) => aside.prune(why),
        notify: (kind, text) => void notify(cfg.notification, kind, text),
      },
    });
    const d = daemon;
    onDaemon(d);
    if (stopEarly) d.requestStop(stopEarly);
    const restorable = new RestorableWindow(() => listGenerations(rt.litestreamConfig, rt.dbPath));
    const report = new Reporter(d, {
      roleOverride: roleOverride ? PATHS.roleOverride : null,
      tailscale: () => tailscale.status(),
      asideSummary: () => aside.summary(),
      asideCheck: () => aside.check(),
      restorable: () => restorable.current(),
      diskCheck: (dbBytes) => diskCheck(PATHS.dataFolder, dbBytes),
      litestreamText: () => fetchMetrics(rt.metricsAddr).then((m) => m.text, () => null),
      vaultwarden: () => vaultwardenReport(vw, store, readState().vaultwarden ?? {}, cfg.vaultwarden, role),
    });
    watchdog = Watchdog.fromEnv(notifier, () => d.isResponsive());
    // Reads for group vwstream on agent.sock; promote and sync on the root-only control.sock.
    api = await startApiServers({ readPath: PATHS.socket, controlPath: PATHS.controlSocket }, {
      'POST /sync': () => d.sync(),
      'POST /promote': async (req) => d.promote(new URL(req.url ?? '/', 'http://agent').searchParams.get('force') === '1'),
      'GET /status': async () => ({ status: 200, body: await report.status() }),
      'GET /health': async () => {
        const h = await report.health();
        return { status: h.ok ? 200 : 503, body: h };
      },
      'GET /metrics': async () => ({ status: 200, body: await report.metrics(), contentType: 'text/plain; version=0.0.4; charset=utf-8' }),
    }, rt.apiGroup);
    if (cfg.metricsListen !== 'off') {
      metricsServer = await startMetricsListener(cfg.metricsListen, () => report.metrics())
        .catch((err) => { throw new AgentError(`METRICS_LISTEN=${cfg.metricsListen}: cannot listen (${errorMessage(err)})`, { exitCode: EXIT.CONFIG, hint: `choose a free host:port in ${cfg.source}` }); });
      log.info({ listen: cfg.metricsListen }, `serving /metrics on http://${cfg.metricsListen}/metrics`);
    }
    for (const w of cfg.warnings) log.warn(w);
    return await d.run();
  } catch (err) {
    // Before the daemon ran: nothing was started by this run.
    if (early.signal.aborted && !daemon) {
      log.info(`stopped (${stopEarly}) before anything was started`);
      return EXIT.OK;
    }
    const e = err instanceof AgentError ? err : new AgentError(errorMessage(err), { cause: err });
    await machine.enter(e.exitCode === EXIT.REFUSED ? 'refuse' : 'fail', e.message, e.hint ? { hint: e.hint } : {});
    process.stderr.write(`vwstream-agent: ${e.message}${e.hint ? `; ${e.hint}` : ''}\n`);
    // Writers left running by an earlier run stop with this one (the lease is not renewed).
    if (daemon) await daemon.drain.run({ role, replicating: false }).catch(() => undefined);
    return e.exitCode;
  } finally {
    watchdog?.stop();
    api?.close();
    metricsServer?.close();
    systemd?.disconnect();
  }
}

function sleepAbortable(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function aliveUrl(cfg: Config): string {
  const a = cfg.rocketAddress;
  const host = a === '0.0.0.0' ? '127.0.0.1' : a === '::' ? '[::1]' : a.includes(':') ? `[${a}]` : a;
  return `http://${host}:${cfg.rocketPort}/alive`;
}

/**
 * Vaultwarden answers /alive. A new connection per check: Rocket closes idle connections
 * after 5 s (its keep_alive), about the interval of these checks, and a kept-alive socket
 * closed under a request would read as "not alive".
 */
export async function checkAlive(url: string, timeoutMs = 3000): Promise<boolean> {
  try {
    const { status } = await httpGetText(url, timeoutMs);
    return status >= 200 && status < 300;
  } catch {
    return false;
  }
}

function readRoleOverride(): string | null {
  if (!existsSync(PATHS.roleOverride)) return null;
  const v = readFileSync(PATHS.roleOverride, 'utf8').trim();
  return v === 'primary' || v === 'secondary' ? v : null;
}
