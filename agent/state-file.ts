import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { withFileLock, writeFileDurableSync } from './fs.ts';
import { PATHS } from './paths.ts';

/** What the agent remembers across restarts (in /var/lib/vwstream, never in the data folder). */
export interface DrainStep { step: string; ok: boolean; ms: number; detail: string }
export interface DrainRecord { complete: boolean; at: string; detail: string; steps: DrainStep[]; ms?: number }

export interface PersistentState {
  lastDrain?: DrainRecord;
  lastRestore?: { at: string; action: string; reason: string; setAsideTo?: string };
  acceptedLocalDigest?: string;
  lastBackup?: { at: string; ok: boolean; name: string; detail: string; bytes?: number; ms?: number };
  lastBackupSuccess?: { at: string; name: string; bytes: number; ms: number };
  /** Counters for /metrics that survive restarts. */
  counters?: { restores?: Record<string, number>; drains?: { complete: number; incomplete: number } };
  /** Secondary: digest of the copy it installed last (local changes are detected against it). */
  secondaryDigest?: string;
  lastDbSync?: string;
  /** The last restore drill (`vwstream-agent verify`): its one-line verdict. */
  lastVerify?: { at: string; ok: boolean; summary: string; ms: number };
  vaultwarden?: VaultwardenState;
}

/** Which Vaultwarden ran on this database, and the way back from its last upgrade. */
export interface VaultwardenState {
  /** The version the agent last started on this host's database (what answered /alive). */
  /**
   * `migrations`: the database's migrations fingerprint once it answered (null: not yet);
   * `before`: the migrations it started on (a start that died while migrating added to them).
   */
  lastRan?: { version: string; at: string; bin: string; migrations?: string | null; before?: string[] | null };
  /** Per migrations fingerprint, the newest version seen answering on a database with it (an older one is refused on it). */
  ranOn?: Record<string, string>;
  /** The last upgrade: the snapshot taken before `to` first started, and the row marker taken once it answered. */
  upgrade?: { from: string | null; to: string; at: string; snapshot: string; bytes: number; ms: number; marker?: string };
  /** A rollback under way (written before the database is replaced): a start finishes it. */
  rollingBack?: RollbackRecord;
  /** After a rollback: VAULTWARDEN_VERSION still naming `version` does not upgrade again until the pin changes. */
  hold?: { version: string; since: string; runs: string };
  lastRollback?: { at: string; from: string; to: string; newerKeptAt: string; forced: boolean; changedRows: number | null };
  /** The last failed install at start (VAULTWARDEN_VERSION), for its back-off. */
  pullFailure?: { image: string; at: string; failures: number; error: string };
}

export interface RollbackRecord {
  /** The newer version rolled back from, and the one that runs after. */
  from: string;
  to: string;
  at: string;
  snapshot: string;
  /** contentDigest of the snapshot: the live database equals it once the replacement is done. */
  snapshotDigest: string;
  hold: boolean;
  forced: boolean;
  changedRows: number | null;
  newerKeptAt?: string;
}

/** Changes the `vaultwarden` part of the state (read-modify-write under the state's lock). */
export async function updateVaultwardenState(change: (v: VaultwardenState) => VaultwardenState, path: string = PATHS.stateFile): Promise<VaultwardenState> {
  const next = await mutateState((s) => ({ ...s, vaultwarden: change({ ...s.vaultwarden }) }), path);
  return next.vaultwarden ?? {};
}

export function readState(path: string = PATHS.stateFile): PersistentState {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as PersistentState;
  } catch {
    return {};
  }
}

/** For a read-modify-write: only a missing file is empty; an unreadable one is an error, not a reset. */
function readStateStrict(path: string): PersistentState {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  try {
    return JSON.parse(text) as PersistentState;
  } catch {
    return {}; // a torn file from a version before durable writes: start over rather than never write again
  }
}

/**
 * Read-modify-write of the state file under an exclusive lock (`<state>.lock`): the
 * daemon, backup, verify and restore write it from separate processes, and no update
 * may be lost. The new file replaces the old one durably (fsync, rename, fsync dir).
 */
export async function mutateState(change: (s: PersistentState) => PersistentState, path: string = PATHS.stateFile): Promise<PersistentState> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  return withFileLock(`${path}.lock`, () => {
    const next = change(readStateStrict(path));
    writeFileDurableSync(path, JSON.stringify(next, null, 2) + '\n', { mode: 0o600 });
    return next;
  });
}

export async function updateState(patch: Partial<PersistentState>, path: string = PATHS.stateFile): Promise<PersistentState> {
  return mutateState((s) => ({ ...s, ...patch }), path);
}

/** Adds one to a persistent counter (restores by action, drains by outcome). */
export async function bumpCounter(kind: 'restores' | 'drains', key: string, path: string = PATHS.stateFile): Promise<void> {
  await mutateState((s) => {
    const counters = { ...s.counters };
    if (kind === 'restores') counters.restores = { ...counters.restores, [key]: (counters.restores?.[key] ?? 0) + 1 };
    else {
      const d = counters.drains ?? { complete: 0, incomplete: 0 };
      counters.drains = { ...d, [key]: ((d as Record<string, number>)[key] ?? 0) + 1 };
    }
    return { ...s, counters };
  }, path);
}
