import type { VaultwardenReport } from '../vaultwarden/lifecycle.ts';
import type { TailscaleReport } from '../tailscale/tailscale.ts';

/** The daemon's state, as `status` prints it and as STATUS= carries it. */
export type DaemonState =
  | 'starting'
  | 'restoring'
  | 'replicating'
  | 'serving'
  | 'degraded'
  | 'refused'
  | 'waiting'
  | 'fenced'
  | 'draining'
  | 'stopped'
  | 'failed';

export interface UnitSummary { activeState: string; subState: string; result: string }

export interface StatusReport {
  version: string;
  role: 'primary' | 'secondary';
  state: DaemonState;
  detail: string;
  since: string;
  pid: number;
  replica: string;
  /** ISO time at which the replica last held everything written locally; null = never confirmed. */
  lastDbSync: string | null;
  lastDbSyncAgeSeconds: number | null;
  lastFileSync: string | null;
  replicaPosition: { generation: string | null; index: number | null; offset: number | null } | null;
  walBytes: number | null;
  dbBytes: number | null;
  restore: { action: string; reason: string; at: string; ms: number } | null;
  /** `stopped`: why the mirror uploads nothing now (replication suspended or fenced); null = running. */
  files: { remote: string; lastReport: { at: string; uploaded: number; deleted: number; unchanged: number; conflicts: number; errors: number } | null; unreadable: string[]; stopped: string | null };
  lastDrain: { complete: boolean; at: string; detail: string } | null;
  /**
   * The lease as last read. `instance` identifies its holder (null: written by an agent
   * before instance ids); `self` is this agent's instance; holder (hostname), machineId
   * and bootId are information only (clones share them).
   */
  lease: { holder: string; instance: string | null; machineId: string; bootId: string; self: string; expiresAt: string; ours: boolean; url: string; suspended: string | null } | null;
  /** Where the lease lives and whether that store enforces If-Match/If-None-Match (probed at start; null before or on a secondary). */
  leaseStore: { url: string; conditionalWrites: { enforced: boolean; detail: string } | null };
  /** The lease was lost to another holder: why and when (the agent exits). */
  fenced: { reason: string; at: string } | null;
  /** Why Litestream is stopped on purpose (lease not renewable: store unreachable); null = replicating. */
  replicationSuspended: string | null;
  /** Restarts of Vaultwarden/Litestream by the agent since it started, and the last event per unit. */
  unitRestarts: Record<string, number>;
  unitEvents: Record<string, { at: string; what: string }>;
  /** Secondary: when the replica was last restored and checked, and what the swaps cost. */
  lastRefresh: string | null;
  lastRefreshAgeSeconds: number | null;
  lastRefreshDowntimeMs: number | null;
  /** The last refresh attempt, successful or not. */
  lastRefreshAttempt: { at: string; ok: boolean; detail: string } | null;
  refreshes: { swapped: number; skipped: number; localChangesKept: number; failed: number };
  roleOverride: string | null;
  backup: { enabled: boolean; cron: string; nextRun: string | null; last: { at: string; ok: boolean; name: string; detail: string } | null };
  units: Record<string, UnitSummary>;
  vaultwarden: { url: string; alive: boolean } & Partial<VaultwardenReport>;
  litestream: {
    snapshotInterval: string; retention: string; syncInterval: string; profile: string;
    /** Effective values set explicitly (LITESTREAM_SNAPSHOT_INTERVAL / LITESTREAM_RETENTION) instead of by the profile. */
    overrides?: string[];
    /** What the replica can restore: oldest point in time to the newest write (read at most every 10 minutes). */
    restorable?: { oldest: string | null; newest: string | null; generations: number; checkedAt: string; error: string | null } | null;
  };
  /** The restore drill: schedule and last verdict. */
  verify?: { cron: string; nextRun: string | null; last: { at: string; ok: boolean; summary: string; ms: number } | null };
  /** Kept-aside data: total and retention (null before the daemon read it). */
  aside?: AsideSummary | null;
  warnings: string[];
  /** TAILSCALE_ENABLED: the tailnet address and what is served there. */
  tailscale?: TailscaleReport;
}

/** Kept-aside data under /var/lib/vwstream/aside (`vwstream-agent aside` lists it). */
export interface AsideSummary {
  dir: string;
  /** Folders the agent set aside, and the bytes of their files. */
  count: number;
  bytes: number;
  /** Names under the folder that the agent did not make (listed, never touched). */
  foreign: string[];
  rule: { minKeep: number; retentionDays: number };
  lastPrune: { at: string; removed: number; bytes: number; errors: number } | null;
  /** The folder could not be read. */
  error: string | null;
}

export interface HealthCheck { name: string; ok: boolean; detail: string }
export interface HealthReport { ok: boolean; checks: HealthCheck[] }
