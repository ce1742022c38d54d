import { STATES } from './machine.ts';
/**
 * GET /metrics: Prometheus text exposition (format 0.0.4) of the agent's own state plus
 * Litestream's metric families passed through unchanged.
 */
export interface MetricsInput {
  version: string;
  role: string;
  state: string;
  stateSince?: Date;
  /** Transitions into each state since the agent started. */
  transitions?: Partial<Record<string, number>>;
  lastDbSync: Date | null;
  lastFileSync: Date | null;
  /** Litestream's sync error counter as last read, and failed file-mirror passes. */
  syncErrors: { litestream: number; files: number };
  lease: { held: boolean; suspended: boolean; expiresAt: string | null; conditionalWrites?: boolean | null } | null;
  fenced?: boolean;
  /** The file mirror uploads nothing (suspended or fenced). */
  mirrorStopped?: boolean;
  secondary?: { lastRefresh: Date | null; ageSeconds: number | null; lastOk: boolean | null; counts: { swapped: number; skipped: number; localChangesKept: number; failed: number }; lastDowntimeMs: number | null } | null;
  backup: { lastAt?: string; lastOk?: boolean; lastSuccessAt?: string; lastMs?: number; lastBytes?: number };
  restores: Record<string, number>;
  drain: { lastAt?: string; lastComplete?: boolean; lastMs?: number; complete: number; incomplete: number };
  unitRestarts: Record<string, number>;
  verify: { at: string; ok: boolean } | null;
  walBytes: number | null;
  dbBytes: number | null;
  /** Litestream's own /metrics text (null when it does not answer). */
  litestreamText: string | null;
  /** How the log reaches journald, and lines that could not take the native path. */
  log?: { mode: string; sent: number; fallbacks: number };
  /** The agent process itself (processStats()). */
  process?: ProcessStats;
}

/** What the agent process costs: resident memory (anonymous and file-backed), V8 heap, CPU, start. */
export interface ProcessStats { rssBytes: number; rssAnonBytes?: number; rssFileBytes?: number; heapUsedBytes: number; heapTotalBytes: number; externalBytes: number; cpuSeconds: number; startSeconds: number }

/** This process's figures: /proc/self/status for the resident split (Linux), process.* for the rest. */
export function processStats(status: string | undefined): ProcessStats {
  const kib = (k: string) => { const m = status && new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(status); return m ? Number(m[1]) * 1024 : undefined; };
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  const anon = kib('RssAnon'), file = kib('RssFile'), shmem = kib('RssShmem');
  return {
    rssBytes: kib('VmRSS') ?? mem.rss,
    ...(anon !== undefined ? { rssAnonBytes: anon } : {}),
    ...(file !== undefined ? { rssFileBytes: file + (shmem ?? 0) } : {}),
    heapUsedBytes: mem.heapUsed, heapTotalBytes: mem.heapTotal, externalBytes: mem.external + mem.arrayBuffers,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    startSeconds: Math.round((Date.now() - process.uptime() * 1000) / 1000),
  };
}

type Labels = Record<string, string>;
type Sample = number | [Labels, number][];

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function fmt(n: number): string {
  return Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN';
}

const seconds = (iso: string | Date | null | undefined): number | undefined => {
  if (!iso) return undefined;
  const t = typeof iso === 'string' ? Date.parse(iso) : iso.getTime();
  return Number.isFinite(t) ? t / 1000 : undefined;
};

class Exposition {
  readonly lines: string[] = [];

  add(type: 'gauge' | 'counter', name: string, help: string, sample: Sample | undefined): void {
    if (sample === undefined) return;
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    if (typeof sample === 'number') {
      this.lines.push(`${name} ${fmt(sample)}`);
      return;
    }
    for (const [labels, v] of sample) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${escapeLabel(x)}"`).join(',');
      this.lines.push(`${name}${l ? `{${l}}` : ''} ${fmt(v)}`);
    }
  }
}

/** Litestream's families (litestream_*), HELP/TYPE lines included; Go runtime metrics left out. */
export function litestreamFamilies(text: string): string[] {
  return text.split('\n').filter((line) => {
    const m = /^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    return m !== null && m[1]!.startsWith('litestream_');
  });
}


export function renderMetrics(m: MetricsInput): string {
  const e = new Exposition();
  e.add('gauge', 'vwstream_info', 'Agent version and role (always 1).', [[{ version: m.version, role: m.role }, 1]]);
  e.add('gauge', 'vwstream_state', 'Current daemon state (1 for the current one).', STATES.map((s) => [{ state: s }, s === m.state ? 1 : 0]));
  if (m.stateSince) e.add('gauge', 'vwstream_state_since_timestamp_seconds', 'When the daemon entered its current state.', seconds(m.stateSince));
  if (m.transitions) e.add('counter', 'vwstream_state_transitions_total', 'Transitions into each state since the agent started.', STATES.map((s) => [{ state: s }, m.transitions![s] ?? 0]));
  e.add('gauge', 'vwstream_last_db_sync_timestamp_seconds', 'When the replica last held everything written locally.', seconds(m.lastDbSync) ?? 0);
  e.add('gauge', 'vwstream_last_file_sync_timestamp_seconds', 'When the file mirror last completed a pass without errors.', seconds(m.lastFileSync) ?? 0);
  e.add('counter', 'vwstream_sync_errors_total', 'Replication errors: Litestream sync errors (since it started) and failed file-mirror passes.', [[{ kind: 'database' }, m.syncErrors.litestream], [{ kind: 'files' }, m.syncErrors.files]]);
  if (m.lease) {
    e.add('gauge', 'vwstream_lease_held', '1 while this host holds a valid single-writer lease.', m.lease.held && !m.lease.suspended ? 1 : 0);
    e.add('gauge', 'vwstream_lease_suspended', '1 while the lease could not be renewed (store unreachable) and replication is suspended.', m.lease.suspended ? 1 : 0);
    e.add('gauge', 'vwstream_lease_expiry_timestamp_seconds', 'Expiry of the lease as last seen.', seconds(m.lease.expiresAt));
    e.add('gauge', 'vwstream_lease_store_conditional_writes', '1 if the lease store enforces If-Match/If-None-Match (probed at start), 0 if not (read-back only).', m.lease.conditionalWrites === undefined || m.lease.conditionalWrites === null ? undefined : m.lease.conditionalWrites ? 1 : 0);
  }
  if (m.log) {
    e.add('gauge', 'vwstream_log_mode', 'How log lines reach journald (1 for the current one): journal = native protocol with fields, prefix = stdout with <N> priorities, plain = stdout.', ['journal', 'prefix', 'plain'].map((x) => [{ mode: x }, x === m.log!.mode ? 1 : 0]));
    e.add('counter', 'vwstream_log_journal_fallbacks_total', 'Log lines written to stdout because journald did not take them in time (kept, but without their fields).', m.log.fallbacks);
  }
  if (m.fenced !== undefined) e.add('gauge', 'vwstream_fenced', '1 once this host lost the lease to another holder and stopped writing.', m.fenced ? 1 : 0);
  if (m.mirrorStopped !== undefined) e.add('gauge', 'vwstream_file_mirror_stopped', '1 while the file mirror uploads nothing (replication suspended or fenced).', m.mirrorStopped ? 1 : 0);
  if (m.secondary) {
    const s = m.secondary;
    e.add('gauge', 'vwstream_secondary_last_refresh_timestamp_seconds', 'When the secondary last refreshed its copy from the replica.', seconds(s.lastRefresh) ?? 0);
    e.add('gauge', 'vwstream_secondary_refresh_age_seconds', 'Age of the secondary\'s copy (since its last successful refresh).', s.ageSeconds ?? undefined);
    e.add('gauge', 'vwstream_secondary_last_refresh_success', '1 if the last refresh attempt succeeded.', s.lastOk === null ? undefined : s.lastOk ? 1 : 0);
    e.add('counter', 'vwstream_secondary_refreshes_total', 'Refresh attempts by result.', [[{ result: 'swapped' }, s.counts.swapped], [{ result: 'unchanged' }, s.counts.skipped], [{ result: 'failed' }, s.counts.failed]]);
    e.add('gauge', 'vwstream_secondary_last_swap_downtime_seconds', 'How long Vaultwarden was down for the last swap.', s.lastDowntimeMs === null ? undefined : s.lastDowntimeMs / 1000);
  }
  e.add('gauge', 'vwstream_backup_last_run_timestamp_seconds', 'Start of the last backup run.', seconds(m.backup.lastAt));
  e.add('gauge', 'vwstream_backup_last_run_success', '1 if the last backup run succeeded.', m.backup.lastOk === undefined ? undefined : m.backup.lastOk ? 1 : 0);
  e.add('gauge', 'vwstream_backup_last_success_timestamp_seconds', 'Start of the last successful backup.', seconds(m.backup.lastSuccessAt) ?? 0);
  e.add('gauge', 'vwstream_backup_last_duration_seconds', 'Duration of the last successful backup.', m.backup.lastMs === undefined ? undefined : m.backup.lastMs / 1000);
  e.add('gauge', 'vwstream_backup_last_size_bytes', 'Archive size of the last successful backup.', m.backup.lastBytes);
  e.add('counter', 'vwstream_restores_total', 'Start-up restore decisions taken, by action.', Object.entries(m.restores).sort().map(([action, n]) => [{ action }, n]));
  e.add('counter', 'vwstream_drains_total', 'Drains at stop, by outcome.', [[{ outcome: 'complete' }, m.drain.complete], [{ outcome: 'incomplete' }, m.drain.incomplete]]);
  e.add('gauge', 'vwstream_drain_last_duration_seconds', 'Duration of the last drain.', m.drain.lastMs === undefined ? undefined : m.drain.lastMs / 1000);
  e.add('gauge', 'vwstream_drain_last_complete', '1 if the last drain completed every step.', m.drain.lastComplete === undefined ? undefined : m.drain.lastComplete ? 1 : 0);
  e.add('counter', 'vwstream_unit_restarts_total', 'Restarts of Vaultwarden and Litestream by the agent after they died.', Object.entries(m.unitRestarts).sort().map(([unit, n]) => [{ unit }, n]));
  if (m.verify) {
    e.add('gauge', 'vwstream_verify_last_timestamp_seconds', 'When the last restore drill (verify) ran.', seconds(m.verify.at));
    e.add('gauge', 'vwstream_verify_last_success', '1 if the last restore drill passed.', m.verify.ok ? 1 : 0);
  }
  e.add('gauge', 'vwstream_wal_size_bytes', 'Size of the live WAL file.', m.walBytes ?? undefined);
  e.add('gauge', 'vwstream_db_size_bytes', 'Size of the live database file.', m.dbBytes ?? undefined);
  e.add('gauge', 'vwstream_litestream_up', '1 if Litestream answered its metrics endpoint.', m.litestreamText === null ? 0 : 1);
  if (m.process) {
    const p = m.process;
    e.add('gauge', 'process_resident_memory_bytes', 'Resident memory of the agent process (VmRSS).', p.rssBytes);
    if (p.rssAnonBytes !== undefined && p.rssFileBytes !== undefined) {
      e.add('gauge', 'vwstream_process_resident_memory_bytes', 'The agent\'s resident memory by kind: anonymous (its own) and file-backed (mapped pages of the Node binary and libraries, shared and reclaimable).', [[{ kind: 'anon' }, p.rssAnonBytes], [{ kind: 'file' }, p.rssFileBytes]]);
    }
    e.add('counter', 'process_cpu_seconds_total', 'User and system CPU time of the agent process.', p.cpuSeconds);
    e.add('gauge', 'process_start_time_seconds', 'Start of the agent process, seconds since the epoch.', p.startSeconds);
    e.add('gauge', 'nodejs_heap_size_used_bytes', 'V8 heap in use.', p.heapUsedBytes);
    e.add('gauge', 'nodejs_heap_size_total_bytes', 'V8 heap reserved.', p.heapTotalBytes);
    e.add('gauge', 'nodejs_external_memory_bytes', 'Memory of buffers and other objects outside the V8 heap.', p.externalBytes);
  }
  const lines = [...e.lines, ...(m.litestreamText ? litestreamFamilies(m.litestreamText) : [])];
  return `${lines.join('\n')}\n`;
}
