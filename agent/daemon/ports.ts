import type { UnitState } from '../systemd/dbus.ts';
import type { Lease, LeaseDecision, Identity } from '../replication/lease.ts';
import type { SyncReport, RestoreProgress as FilesProgress, RestoreResult, PendingRestore, ScanProblem } from '../files/mirror.ts';
import type { LitestreamPosition, RestoreProgress, ShadowPosition } from '../replication/litestream.ts';
import type { RestoreOutcome } from '../replication/restore.ts';
import type { PersistentState as State } from '../state-file.ts';

/**
 * What the daemon needs from the world, as interfaces: the composition root (build.ts)
 * passes the real ones (D-Bus, S3, Litestream, the state file); the unit tests pass fakes.
 */
export interface SystemdPort {
  start(unit: string, timeoutMs?: number): Promise<string>;
  stop(unit: string, timeoutMs?: number): Promise<string>;
  state(unit: string): Promise<UnitState>;
  /** Several at once (one D-Bus call); without it, state() per unit. */
  states?(units: readonly string[]): Promise<Map<string, UnitState>>;
  /** SIGKILL to every process of the unit: no ExecStop, no final upload. */
  kill(unit: string): Promise<void>;
  startNoWait(unit: string): Promise<void>;
  restartNoWait(unit: string): Promise<void>;
}

export interface NotifierPort {
  status(text: string): Promise<void>;
  ready(text: string): Promise<void>;
  stopping(text: string): Promise<void>;
  extendTimeout(ms: number, text: string): Promise<void>;
}

export interface Clock {
  now(): number;
  /** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  }),
};

/** The lease keeper (replication/lease-keeper.ts). */
export interface LeasePort {
  readonly url: string;
  readonly me: Identity;
  readonly held: boolean;
  readonly seen: Lease | null;
  readonly suspended: string | null;
  /** Whether the store enforces If-Match/If-None-Match (the keeper probes it at its first acquire and says so once); null before. */
  readonly conditional?: { enforced: boolean; applicable?: boolean; detail: string; message?: string } | null;
  tryAcquire(): Promise<LeaseDecision>;
  startRenewing(): void;
  stop(): void;
  release(): Promise<boolean>;
  peek(): Promise<Lease | null>;
  seize(): Promise<void>;
}

/** What the keeper reports, delivered to the fencing module. */
export interface LeaseEvents {
  onLost(reason: string, stolen: boolean): void;
  onSuspended(reason: string): void;
  onRegained(): void;
}

/** The file mirror (files/mirror.ts). */
export interface MirrorPort {
  readonly store: { url: string };
  readonly lastSync: Date | null;
  readonly lastReport: SyncReport | null;
  readonly unreadable: ScanProblem[];
  readonly lagMs: number | null;
  readonly failedPasses: number;
  readonly fenced: string | null;
  sync(reason: string, signal?: AbortSignal): Promise<SyncReport>;
  syncInBackground(reason: string, timeoutMs?: number): Promise<SyncReport>;
  checkRemote(signal?: AbortSignal): Promise<number>;
  watch(onError: (err: Error) => void): void;
  stopWatching(): void;
  /** No upload or deletion from now on; a pass in flight is aborted. */
  fence(reason: string): void;
  unfence(): void;
  pendingRestore(): PendingRestore | null;
  /** `onRecorded`: the pending-restore record is durable (a crash from now on completes the restore at the next start). */
  restore(ids: { uid: number; gid: number }, asideDir?: string, onProgress?: (p: FilesProgress) => void, signal?: AbortSignal, onRecorded?: () => void): Promise<RestoreResult>;
}

/** Litestream as the daemon watches it (its /metrics, the shadow WAL, its loaded config). */
export interface LitestreamPort {
  metrics(): Promise<{ text: string; position: LitestreamPosition }>;
  shadow(): Promise<ShadowPosition | undefined>;
  /** The database's -wal file (size, mtime), undefined when absent; without it every poll reads /metrics. */
  localWal?(): Promise<{ size: number; mtimeMs: number } | undefined>;
  verifyLoaded(): Promise<void>;
  /** Waits until the replica is confirmed at the local WAL position (bounded). */
  confirm(timeoutMs: number, startedMs: number | undefined): Promise<boolean>;
}

/** The primary's start: the restore decision and the files around it (replication/restore.ts). */
export interface StartupPort {
  /** litestream.yml differs from the one a running Litestream loaded. */
  readonly litestreamConfigChanged: boolean;
  /** `onRestoreDecided`: a restore onto a host without a local database was decided, before its copy is installed. */
  restoreOnStart(onProgress: (p: RestoreProgress) => void, signal: AbortSignal, onRestoreDecided?: () => void): Promise<RestoreOutcome>;
  /** A new vault's empty database file, shareable with Litestream's user; true when created. */
  createDbFile(): Promise<boolean>;
  /** What Litestream's ExecStop (confirm-sync) needs; a stale verdict is removed. */
  writeDrainInfo(litestreamStartedMs: number | undefined): Promise<void>;
  /** The final-sync verdict Litestream's ExecStop wrote, if any. */
  readFinalSync(): Promise<{ confirmed: boolean; detail: string } | undefined>;
  asideFolder(why: string): string;
  /** A running Vaultwarden was started with another binary than the one this start chose (not adopted: restarted through beforeVaultwarden). */
  readonly vaultwardenChanged?: boolean;
  /**
   * Right after restoreOnStart installed a restored (integrity-checked) copy, before
   * Litestream opens it: the snapshot an upgrade will need, taken now beside the files'
   * download (beforeVaultwarden then does not take it again). Never throws.
   */
  afterDatabaseRestore?(): Promise<void>;
  /** Before Vaultwarden's unit starts on the live database (the snapshot before an upgrade); throws to refuse the start. */
  beforeVaultwarden?(): Promise<void>;
  /** Once Vaultwarden answers on the live database (what ran; the marker after an upgrade). */
  vaultwardenStarted?(opts?: { deferMarker?: boolean }): Promise<void>;
  /** After READY: the row marker vaultwardenStarted({ deferMarker }) fixed, written now. */
  afterReady?(): Promise<void>;
}

/** The secondary's copy of the replica (restore into a temporary file, compare, swap). */
export interface CopyPort {
  /** Restores the replica into a temporary file and checks it. */
  fetch(signal: AbortSignal): Promise<{ tmp: string; digest: string; users: number }>;
  /** True when the replica holds at least one generation (throws when it cannot be read). */
  replicaExists(): Promise<boolean>;
  /** The live database: absent, unreadable/corrupt (digest undefined), or its content digest. */
  local(): { exists: boolean; intact: boolean; digest?: string };
  keepAside(why: string): Promise<string>;
  install(tmp: string): Promise<void>;
  discard(tmp: string): Promise<void>;
  restoreFiles(signal: AbortSignal): Promise<void>;
  /** Makes this host primary from the next start (role override). */
  persistPrimary(): Promise<string>;
}

export interface StatePort {
  read(): State;
  update(patch: Partial<State>): Promise<void>;
  bump(counter: 'restores' | 'drains', key: string): Promise<void>;
}

