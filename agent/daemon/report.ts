import { readFile, statfs, stat } from 'node:fs/promises';
import type { AsideSummary, HealthCheck, HealthReport, StatusReport } from '../api/types.ts';
import { PROFILES, replicaUrl } from '../config/config.ts';
import { nextRun } from '../config/cron.ts';
import { formatHuman } from '../config/duration.ts';
import { errorMessage } from '../errors.ts';
import { PATHS, UNITS } from '../paths.ts';
import type { TailscaleReport } from '../tailscale/tailscale.ts';
import { VERSION } from '../version.ts';
import type { Daemon } from './daemon.ts';
import { processStats, renderMetrics } from './metrics.ts';
import { logStats } from '../log.ts';
import type { VaultwardenReport } from '../vaultwarden/lifecycle.ts';

/** What reporting reads beside the daemon's modules (host-wide facts). */
export interface ReportSources {
  roleOverride: string | null;
  tailscale(): TailscaleReport;
  asideSummary(): Promise<AsideSummary | null>;
  asideCheck(): Promise<HealthCheck>;
  restorable(): Promise<NonNullable<StatusReport['litestream']['restorable']> | null>;
  diskCheck(dbBytes: number): Promise<HealthCheck>;
  /** Litestream's own /metrics text, or null. */
  litestreamText(): Promise<string | null>;
  /** Which Vaultwarden runs, where it came from, the rollback point. */
  vaultwarden?(): VaultwardenReport;
}

/**
 * Status, health and metrics, read from the daemon's modules without changing them; each
 * module contributes its own health checks.
 */
export class Reporter {
  private readonly d: Daemon;
  private readonly src: ReportSources;

  constructor(daemon: Daemon, sources: ReportSources) {
    this.d = daemon;
    this.src = sources;
  }

  async status(): Promise<StatusReport> {
    const d = this.d;
    const { cfg, mirror, lease, state } = d.deps;
    if (!d.stopping) await d.units.refresh([UNITS.litestream, UNITS.vaultwarden]);
    const p = d.watch.position;
    const st = state.read();
    const now = d.deps.clock.now();
    const age = (t: Date | null) => (t ? Math.round((now - t.getTime()) / 1000) : null);
    const sec = d.secondary;
    return {
      version: VERSION,
      role: d.role,
      state: d.machine.state,
      detail: d.machine.detail,
      since: new Date(d.machine.since).toISOString(),
      pid: process.pid,
      replica: replicaUrl(cfg),
      lastDbSync: d.watch.lastDbSync?.toISOString() ?? null,
      lastDbSyncAgeSeconds: age(d.watch.lastDbSync),
      lastFileSync: mirror.lastSync?.toISOString() ?? null,
      replicaPosition: p && p.replicaIndex !== undefined ? { generation: null, index: p.replicaIndex, offset: p.replicaOffset ?? null } : null,
      walBytes: p?.walSize ?? null,
      dbBytes: p?.dbSize ?? null,
      restore: d.restore ? { action: d.restore.decision.action, reason: 'reason' in d.restore.decision ? d.restore.decision.reason : '', at: new Date(d.machine.since).toISOString(), ms: d.restore.ms } : null,
      files: {
        remote: mirror.store.url,
        lastReport: mirror.lastReport ? { at: mirror.lastReport.at, uploaded: mirror.lastReport.uploaded, deleted: mirror.lastReport.deleted, unchanged: mirror.lastReport.unchanged, conflicts: mirror.lastReport.conflicts, errors: mirror.lastReport.errors.length } : null,
        unreadable: mirror.unreadable.map((e) => `${PATHS.dataFolder}/${e.rel} (${e.code})`),
        stopped: mirror.fenced,
      },
      lease: lease.seen ? { holder: lease.seen.holder, instance: lease.seen.instance ?? null, machineId: lease.seen.machineId, bootId: lease.seen.bootId, self: lease.me.instance, expiresAt: lease.seen.expiresAt, ours: lease.held, url: lease.url, suspended: lease.suspended } : null,
      leaseStore: { url: lease.url, conditionalWrites: lease.conditional ?? null },
      replicationSuspended: d.fencing.suspended,
      fenced: d.fencing.fenced ? { reason: d.fencing.fenced.reason, at: new Date(d.fencing.fenced.at).toISOString() } : null,
      unitRestarts: d.units.restartCounts,
      unitEvents: d.units.events,
      lastRefresh: sec.lastRefresh?.toISOString() ?? null,
      lastRefreshAgeSeconds: age(sec.lastRefresh),
      lastRefreshDowntimeMs: sec.lastDowntimeMs,
      lastRefreshAttempt: sec.lastAttempt ? { at: new Date(sec.lastAttempt.at).toISOString(), ok: sec.lastAttempt.ok, detail: sec.lastAttempt.detail } : null,
      refreshes: sec.counts,
      roleOverride: this.src.roleOverride,
      backup: {
        enabled: cfg.backup.enabled,
        cron: cfg.backup.cron,
        nextRun: cfg.backup.enabled ? nextRun(cfg.backup.cron)?.toISOString() ?? null : null,
        last: st.lastBackup ?? null,
      },
      lastDrain: d.lastDrain ? { complete: d.lastDrain.complete, at: d.lastDrain.at, detail: d.lastDrain.detail } : null,
      units: d.units.units,
      vaultwarden: { url: d.units.aliveUrl.replace(/\/alive$/, ''), alive: d.units.vaultwardenAlive, ...this.src.vaultwarden?.() },
      litestream: {
        profile: cfg.litestream.profile,
        syncInterval: formatHuman(cfg.litestream.syncIntervalMs),
        snapshotInterval: formatHuman(cfg.litestream.snapshotIntervalMs),
        retention: formatHuman(cfg.litestream.retentionMs),
        overrides: [
          ...(cfg.litestream.snapshotIntervalMs !== PROFILES[cfg.litestream.profile].snapshotIntervalMs ? ['LITESTREAM_SNAPSHOT_INTERVAL'] : []),
          ...(cfg.litestream.retentionMs !== PROFILES[cfg.litestream.profile].retentionMs ? ['LITESTREAM_RETENTION'] : []),
        ],
        restorable: await this.src.restorable(),
      },
      verify: { cron: cfg.verifyCron, nextRun: nextRun(cfg.verifyCron)?.toISOString() ?? null, last: st.lastVerify ?? null },
      aside: await this.src.asideSummary(),
      warnings: this.d.secondary.replicaMissing ? [...cfg.warnings, this.d.secondary.replicaMissing] : cfg.warnings,
      tailscale: this.src.tailscale(),
    };
  }

  /** The file mirror's lag: a read error fails at once (the remote copies are what is left). */
  private mirrorCheck(): HealthCheck {
    const { cfg, mirror, clock } = this.d.deps;
    const maxAge = cfg.healthcheckMaxSyncAgeMs;
    const now = clock.now();
    const lag = mirror.lagMs;
    const unreadable = mirror.unreadable;
    const lastPass = mirror.lastSync ? `last clean pass ${Math.round((now - mirror.lastSync.getTime()) / 1000)}s ago` : 'no clean pass yet';
    if (mirror.fenced) return { name: 'file_mirror_lag', ok: false, detail: `stopped: ${mirror.fenced}; ${lastPass}` };
    if (unreadable.length) {
      return { name: 'file_mirror_lag', ok: false, detail: `cannot read ${unreadable.slice(0, 3).map((e) => `${PATHS.dataFolder}/${e.rel} (${e.code})`).join(', ')}${unreadable.length > 3 ? ` and ${unreadable.length - 3} more` : ''}; remote deletions held back; ${lastPass}` };
    }
    if (lag === null) {
      // No watcher: only the timer's passes tell; allow two intervals.
      const allowed = Math.max(maxAge, 2 * cfg.primarySyncIntervalMs);
      const age = mirror.lastSync ? now - mirror.lastSync.getTime() : Infinity;
      return { name: 'file_mirror_lag', ok: age <= allowed, detail: `no change watcher; ${lastPass} (max ${allowed / 1000}s)` };
    }
    return { name: 'file_mirror_lag', ok: lag <= maxAge && mirror.lastSync !== null, detail: lag === 0 ? `in sync; ${lastPass}` : `changes waiting ${Math.round(lag / 1000)}s (max ${maxAge / 1000}s); ${lastPass}` };
  }

  async health(): Promise<HealthReport> {
    const d = this.d;
    const { cfg } = d.deps;
    const checks: HealthCheck[] = [{ name: 'state', ok: d.machine.state === 'serving', detail: `${d.machine.state}: ${d.machine.detail}` }];
    if (d.role === 'primary' || cfg.secondaryServe) checks.push(d.units.healthCheck());
    if (d.role === 'primary') {
      const [litestream, dbSyncAge, walSize] = d.watch.healthChecks(d.units.units[UNITS.litestream], d.fencing.suspended);
      checks.push(litestream!, dbSyncAge!, this.mirrorCheck(), d.fencing.healthCheck(), walSize!);
    } else {
      checks.push(d.secondary.healthCheck());
    }
    checks.push(await this.src.diskCheck(d.watch.position?.dbSize ?? 0));
    checks.push(await this.src.asideCheck());
    if (cfg.tailscale.enabled) {
      const t = this.src.tailscale();
      checks.push({ name: 'tailscale', ok: t.up, detail: t.up ? `${t.address ?? '?'} ${t.url ?? ''} (${t.serve ?? 'serve'})`.trim() : `not up: ${t.error ?? t.backendState ?? 'starting'}` });
    }
    return { ok: checks.every((c) => c.ok), checks };
  }

  async metrics(): Promise<string> {
    const d = this.d;
    const { mirror, lease, state, clock } = d.deps;
    const st = state.read();
    const litestreamText = d.role === 'primary' && !d.fencing.suspended && !d.fencing.fenced ? await this.src.litestreamText() : null;
    const lb = st.lastBackup;
    const lv = st.lastVerify;
    const sec = d.secondary;
    return renderMetrics({
      version: VERSION,
      role: d.role,
      state: d.machine.state,
      stateSince: new Date(d.machine.since),
      transitions: d.machine.entered,
      lastDbSync: d.watch.lastDbSync,
      lastFileSync: mirror.lastSync,
      syncErrors: { litestream: d.watch.syncErrors, files: mirror.failedPasses },
      lease: d.role === 'primary' ? { held: lease.held, suspended: lease.suspended !== null || d.fencing.suspended !== null, expiresAt: lease.seen?.expiresAt ?? null, conditionalWrites: lease.conditional && lease.conditional.applicable !== false ? lease.conditional.enforced : null } : null,
      fenced: d.fencing.fenced !== null,
      mirrorStopped: mirror.fenced !== null,
      secondary: d.role === 'secondary' ? {
        lastRefresh: sec.lastRefresh, ageSeconds: sec.lastRefresh ? (clock.now() - sec.lastRefresh.getTime()) / 1000 : null,
        lastOk: sec.lastAttempt ? sec.lastAttempt.ok : null, counts: sec.counts, lastDowntimeMs: sec.lastDowntimeMs,
      } : null,
      backup: {
        ...(lb ? { lastAt: lb.at, lastOk: lb.ok } : {}),
        ...(st.lastBackupSuccess ? { lastSuccessAt: st.lastBackupSuccess.at, lastMs: st.lastBackupSuccess.ms, lastBytes: st.lastBackupSuccess.bytes } : {}),
      },
      restores: st.counters?.restores ?? {},
      drain: {
        complete: st.counters?.drains?.complete ?? 0,
        incomplete: st.counters?.drains?.incomplete ?? 0,
        ...(d.lastDrain ? { lastAt: d.lastDrain.at, lastComplete: d.lastDrain.complete, ...(d.lastDrain.ms !== undefined ? { lastMs: d.lastDrain.ms } : {}) } : {}),
      },
      unitRestarts: Object.fromEntries([UNITS.litestream, UNITS.vaultwarden].map((u) => [u, d.units.restartCounts[u] ?? 0])),
      verify: lv ? { at: lv.at, ok: lv.ok } : null,
      walBytes: d.watch.position?.walSize ?? null,
      dbBytes: d.watch.position?.dbSize ?? null,
      log: logStats(),
      process: processStats(await readFile('/proc/self/status', 'utf8').catch(() => undefined)),
      litestreamText,
    });
  }
}

/** Free space under the data folder: at least 1 GiB and twice the database (a restore or VACUUM INTO needs room). */
export async function diskCheck(dir: string, dbBytes: number): Promise<HealthCheck> {
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
