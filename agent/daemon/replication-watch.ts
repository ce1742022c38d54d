import type { HealthCheck, UnitSummary } from '../api/types.ts';
import { log } from '../log.ts';
import { replicaCaughtUp, type LitestreamPosition } from '../replication/litestream.ts';
import type { Clock, LitestreamPort } from './ports.ts';

/** Litestream's monitor interval (1 s, set in litestream.yml) plus slack. */
export const SHADOW_LAG_MS = 2000;
/** WAL bigger than this fails health: Litestream normally keeps it checkpointed small. */
export const WAL_WARN_BYTES = 512 * 1048576;
/**
 * While nothing is written (the database's -wal as it was when the replica was last seen
 * holding everything), Litestream's /metrics is read at most this often; each poll in
 * between is one stat().
 */
export const IDLE_METRICS_MS = 10_000;

/** What an idle poll compares: the database's own -wal file, and which Litestream run answered. */
interface LocalMark { wal: { size: number; mtimeMs: number }; startedMs: number | undefined }

/**
 * The replication watch: Litestream's position, the last time the replica was confirmed
 * to hold everything written locally, and the sync-error edge (one notification when
 * replication goes bad, one line when it recovers).
 */
export class ReplicationWatch {
  position: LitestreamPosition | null = null;
  lastDbSync: Date | null = null;
  syncErrors = 0;
  /** A sync_error notification went out and replication has not recovered since. */
  private errorReported = false;
  /** When Litestream was (last) started by this run; undefined before. */
  startedMs: number | undefined;
  private readonly port: LitestreamPort;
  private readonly clock: Clock;
  private readonly maxAgeMs: number;
  private readonly onError: (text: string) => void;
  /** The local state at the last poll that read /metrics and found the replica caught up; null otherwise. */
  private caughtAt: LocalMark | null = null;
  private lastMetricsMs = -Infinity;
  /** Polls that read Litestream's /metrics, and those an unchanged local state answered (tests, bench). */
  readonly polls = { metrics: 0, idle: 0 };

  constructor(opts: { litestream: LitestreamPort; clock: Clock; maxSyncAgeMs: number; lastDbSync?: string; onError: (text: string) => void }) {
    this.port = opts.litestream;
    this.clock = opts.clock;
    this.maxAgeMs = opts.maxSyncAgeMs;
    this.onError = opts.onError;
    if (opts.lastDbSync) this.lastDbSync = new Date(opts.lastDbSync);
  }

  /** Reports a replication problem once until replication recovers (used by suspension too). */
  reportError(text: string): void {
    if (this.errorReported) return;
    this.errorReported = true;
    this.onError(text);
  }

  /** The replica holds everything up to now − SHADOW_LAG_MS. */
  private confirmed(now: number): void {
    const confirmed = new Date(now - SHADOW_LAG_MS);
    if (!this.lastDbSync) log.info('database replica confirmed in sync');
    if (!this.lastDbSync || confirmed > this.lastDbSync) this.lastDbSync = confirmed;
  }

  async poll(): Promise<void> {
    try {
      // Nothing written since the replica was seen holding everything: it still does (a
      // replica does not go back), so /metrics is not asked again until IDLE_METRICS_MS.
      // Every write moves the database's -wal (size or mtime; so do checkpoints); the mark
      // is only kept when its last write was older than SHADOW_LAG_MS then, i.e. one that
      // the shadow (equal to the replica) already held, as the confirmation below assumes.
      const wal = await this.port.localWal?.();
      // A wall clock stepped back since the last read is no reason to skip /metrics longer.
      const sinceMetrics = this.clock.now() - this.lastMetricsMs;
      const idle = wal && this.caughtAt && wal.size === this.caughtAt.wal.size && wal.mtimeMs === this.caughtAt.wal.mtimeMs
        && this.caughtAt.startedMs === this.startedMs && sinceMetrics >= 0 && sinceMetrics < IDLE_METRICS_MS;
      if (idle) {
        this.polls.idle++;
        this.confirmed(this.clock.now());
        return;
      }
      this.caughtAt = null;
      const { position } = await this.port.metrics();
      this.polls.metrics++;
      this.lastMetricsMs = this.clock.now();
      this.position = position;
      const newErrors = position.syncErrors > this.syncErrors;
      this.syncErrors = position.syncErrors;
      const caught = replicaCaughtUp(position, await this.port.shadow(), this.startedMs);
      const now = this.clock.now();
      const stale = !caught && this.lastDbSync !== null && now - this.lastDbSync.getTime() > this.maxAgeMs;
      if (newErrors || stale) {
        this.reportError(newErrors ? `litestream reports sync errors (${position.syncErrors})` : `database replica not in sync for more than ${this.maxAgeMs / 1000}s`);
      } else if (caught && this.errorReported) {
        this.errorReported = false;
        log.info('database replica back in sync');
      }
      if (caught && !newErrors) {
        // The shadow WAL trails the real WAL by up to one monitor tick (1 s): the replica
        // equalling the shadow now proves only what was written a tick (plus slack) ago.
        this.confirmed(now);
        if (wal && now - wal.mtimeMs > SHADOW_LAG_MS) this.caughtAt = { wal, startedMs: this.startedMs };
      } else if (newErrors) {
        log.warn({ syncErrors: position.syncErrors }, 'litestream reports sync errors');
      }
    } catch {
      this.position = null;
      this.caughtAt = null;
    }
  }

  confirm(timeoutMs: number): Promise<boolean> {
    return this.port.confirm(timeoutMs, this.startedMs);
  }

  healthChecks(unit: UnitSummary | undefined, suspended: string | null): HealthCheck[] {
    const age = this.lastDbSync ? this.clock.now() - this.lastDbSync.getTime() : Infinity;
    const wal = this.position?.walSize ?? null;
    return [
      { name: 'litestream', ok: unit?.activeState === 'active' && !suspended, detail: suspended ? `suspended: ${suspended}` : unit ? `${unit.activeState} (${unit.subState})` : 'unknown' },
      { name: 'db_sync_age', ok: age <= this.maxAgeMs, detail: Number.isFinite(age) ? `replica confirmed in sync ${Math.round(age / 1000)}s ago (max ${this.maxAgeMs / 1000}s)` : 'replica confirmed in sync: never' },
      { name: 'wal_size', ok: wal === null || wal <= WAL_WARN_BYTES, detail: wal === null ? 'unknown (Litestream does not answer)' : `${Math.round(wal / 1024)} KiB (max ${WAL_WARN_BYTES / 1048576} MiB)` },
    ];
  }
}
