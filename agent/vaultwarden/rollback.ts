/**
 * The end of `vaultwarden rollback`, made crash-safe. The command writes a record
 * (state.vaultwarden.rollingBack) before the live database is replaced by the snapshot
 * (itself a recorded restore operation); once the database is the snapshot, the version
 * links and the state are switched. A crash anywhere in between is finished by the next
 * start, before it chooses which Vaultwarden to run — so the newer binary never starts on
 * the restored older database, and a rollback whose replacement never began is dropped.
 */
import { existsSync } from 'node:fs';
import { log } from '../log.ts';
import { AgentError, EXIT } from '../errors.ts';
import { contentDigest } from '../replication/inspect.ts';
import type { RollbackRecord, VaultwardenState } from '../state-file.ts';
import { migrationsFingerprint } from './upgrade.ts';
import type { VersionStore } from './versions.ts';

export interface RollbackDeps {
  store: VersionStore;
  dbPath: string;
  updateState(change: (v: VaultwardenState) => VaultwardenState): Promise<unknown>;
  now(): Date;
  /** The caller holds the store's lock already. */
  locked?: boolean;
}

/**
 * The live database is the snapshot. Decided from the database alone: the start first
 * finishes (or undoes) a recorded restore operation the rollback left behind.
 */
export function rollbackReplacedDb(rec: RollbackRecord, deps: Pick<RollbackDeps, 'dbPath'>): boolean {
  try {
    return existsSync(deps.dbPath) && contentDigest(deps.dbPath) === rec.snapshotDigest;
  } catch {
    return false;
  }
}

/** Switches to the older version and records the rollback (the database is the snapshot already). */
export async function finishRollback(rec: RollbackRecord, deps: RollbackDeps): Promise<void> {
  const release = deps.locked ? () => undefined : deps.store.lock();
  try {
    await deps.store.switchTo(rec.to);
  } finally {
    release();
  }
  const at = deps.now().toISOString();
  let migrations: string | null = null;
  try { migrations = existsSync(deps.dbPath) ? migrationsFingerprint(deps.dbPath) : null; } catch { /* finished by the restore at start */ }
  await deps.updateState((v) => {
    const { upgrade: _u, rollingBack: _r, ...rest } = v;
    return {
      ...rest,
      lastRan: { version: rec.to, at, bin: deps.store.get(rec.to)?.bin ?? '', migrations },
      ...(rec.hold ? { hold: { version: rec.from, since: at, runs: rec.to } } : {}),
      lastRollback: { at, from: rec.from, to: rec.to, newerKeptAt: rec.newerKeptAt ?? '', forced: rec.forced, changedRows: rec.changedRows },
    };
  });
}

/** At the agent's start: an interrupted rollback is finished, or dropped when it had not replaced the database. */
export async function recoverRollback(st: VaultwardenState, deps: RollbackDeps & { finishRestore(): Promise<unknown> }): Promise<'none' | 'finished' | 'dropped'> {
  const rec = st.rollingBack;
  if (!rec) return 'none';
  // A restore operation it left (the crash came while the database was being replaced): finished or undone first.
  await deps.finishRestore();
  const replaced = rollbackReplacedDb(rec, deps);
  if (replaced && !deps.store.get(rec.to)) {
    throw new AgentError(`an interrupted rollback put the database of before Vaultwarden ${rec.from} in place, but Vaultwarden ${rec.to} is no longer installed: ${rec.from} must not start on it`, {
      hint: `vwstream-agent vaultwarden install --version ${rec.to}, then systemctl restart vwstream-agent (the start then finishes the rollback)`, exitCode: EXIT.CONFIG,
    });
  }
  if (replaced) {
    log.warn({ from: rec.from, to: rec.to, at: rec.at }, `finishing the rollback of Vaultwarden ${rec.from} → ${rec.to} started at ${rec.at} (interrupted after the database was replaced)`);
    await finishRollback(rec, deps);
    return 'finished';
  }
  log.warn({ from: rec.from, to: rec.to, at: rec.at, snapshot: rec.snapshot }, `the rollback of Vaultwarden ${rec.from} → ${rec.to} started at ${rec.at} had not replaced the database: nothing changed; run vwstream-agent vaultwarden rollback again if it is still wanted`);
  await deps.updateState((v) => { const { rollingBack: _, ...rest } = v; return rest; });
  return 'dropped';
}

