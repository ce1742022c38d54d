import type { DbFacts } from './inspect.ts';
import type { Generation } from './litestream.ts';

/**
 * The restore rule (contract, behaviour 2) as a pure function. Some cases need the
 * replica's content: the function then asks for it (`inspect-replica`) and is called
 * again with `replicaCopy` (the replica restored into a temporary file).
 */
export interface RestoreInputs {
  local: DbFacts;
  generations: Generation[];
  replicaCopy?: { users: number; digest: string };
  localDigest?: string;
  /** A local digest the operator accepted with `vwstream-agent keep-local`. */
  acceptedLocalDigest?: string;
  replicaUrl: string;
  dbPath: string;
  /**
   * Where the local copy and the replica stand in the generation they share, asked for
   * (`compare-positions`) before a local database that continues the replica's
   * generation would be replaced.
   */
  positions?: { local: LocalPosition | undefined; replica: ReplicaPosition | undefined; lastDrainConfirmed: boolean };
}

/** The local shadow WAL's newest file (Litestream's metadata beside the database). */
export interface LocalPosition { generation: string; index: number; size: number }
/**
 * The replica's newest WAL segment in a generation: its index, the offset it starts at,
 * and where it ends (offset + decoded length) when the segment could be read.
 */
export interface ReplicaPosition { generation: string; index: number; offset: number; end?: number }

/**
 * Is the local copy ahead of the replica in their shared generation? 'ahead' is proven
 * (a WAL index or bytes the replica has no segment for); 'not-ahead' is proven (the
 * replica has a later index, a segment starting at or past the local end, or the last
 * drain confirmed the replica equal to the local WAL); otherwise 'unknown'.
 */
export function compareToReplica(local: LocalPosition | undefined, replica: ReplicaPosition | undefined, lastDrainConfirmed: boolean): 'ahead' | 'not-ahead' | 'unknown' {
  if (local && replica && local.generation === replica.generation) {
    if (local.index > replica.index) return 'ahead';
    if (local.index < replica.index) return 'not-ahead';
    if (replica.end !== undefined) return local.size > replica.end ? 'ahead' : 'not-ahead';
    if (local.size <= replica.offset) return 'not-ahead';
  }
  return lastDrainConfirmed ? 'not-ahead' : 'unknown';
}

const pos = (p: { index: number } & ({ size: number } | { offset: number; end?: number }) | undefined) =>
  p ? `WAL index ${p.index}${'size' in p ? `, ${p.size} bytes` : 'end' in p && p.end !== undefined ? `, ${p.end} bytes` : `, segment at ${p.offset}`}` : 'no WAL';

export type RestoreDecision =
  | { action: 'new-vault'; reason: string }
  | { action: 'keep'; reason: string }
  | { action: 'restore'; reason: string; setAside: 'none' | 'corrupt' | 'untouched' }
  | { action: 'inspect-replica' }
  | { action: 'compare-positions' }
  | { action: 'refuse'; reason: string; hint: string };

export function decideRestore(i: RestoreInputs): RestoreDecision {
  const latest = i.generations.at(-1);
  const hasReplica = latest !== undefined;
  const { local } = i;

  if (!local.exists) {
    return hasReplica
      ? { action: 'restore', setAside: 'none', reason: `no local database; restoring generation ${latest.generation} from ${i.replicaUrl}` }
      : { action: 'new-vault', reason: `new vault: no replica at ${i.replicaUrl}` };
  }
  // A local copy continuing the replica's newest generation is never older than it unless
  // positions say so: check them before replacing it.
  const continues = local.generation !== null && local.generation === latest?.generation;
  if (!local.intact) {
    let caveat = '';
    if (hasReplica && continues) {
      if (!i.positions) return { action: 'compare-positions' };
      const cmp = compareToReplica(i.positions.local, i.positions.replica, i.positions.lastDrainConfirmed);
      if (cmp === 'ahead') {
        return {
          action: 'refuse',
          reason: `local database ${i.dbPath} fails integrity_check (${local.integrityMessage ?? 'unreadable'}) but holds writes the replica at ${i.replicaUrl} lacks (local ${pos(i.positions.local)}; replica ${pos(i.positions.replica)} of generation ${latest.generation}); refusing to replace it with the older replica`,
          hint: `recover it by hand (sqlite3 ${i.dbPath} .recover), or take the replica with vwstream-agent restore --force (the local copy is kept aside)`,
        };
      }
      if (cmp === 'unknown') caveat = ` (the last drain was not confirmed: writes of its last seconds may exist only in the copy set aside, local ${pos(i.positions.local)}, replica ${pos(i.positions.replica)})`;
    }
    return hasReplica
      ? { action: 'restore', setAside: 'corrupt', reason: `local database fails integrity_check (${local.integrityMessage ?? 'unreadable'}); setting it aside and restoring from ${i.replicaUrl}${caveat}` }
      : {
          action: 'refuse',
          reason: `local database ${i.dbPath} fails integrity_check (${local.integrityMessage ?? 'unreadable'}) and there is no replica at ${i.replicaUrl} to restore from`,
          hint: `recover it by hand (sqlite3 ${i.dbPath} .recover) or move it away to start a new vault`,
        };
  }
  if (!hasReplica) return { action: 'keep', reason: `local vault kept; replica at ${i.replicaUrl} is empty and will be seeded from it` };

  if (local.users === 0) {
    if (continues) {
      // No users, but the same stream as the replica: the users were removed here, later.
      if (!i.positions) return { action: 'compare-positions' };
      if (compareToReplica(i.positions.local, i.positions.replica, i.positions.lastDrainConfirmed) !== 'not-ahead') {
        return { action: 'keep', reason: `local vault has no users but continues replica generation ${latest.generation} and is not behind it (local ${pos(i.positions.local)}, replica ${pos(i.positions.replica)}); keeping it` };
      }
    }
    if (!i.replicaCopy) return { action: 'inspect-replica' };
    return i.replicaCopy.users > 0
      ? { action: 'restore', setAside: 'untouched', reason: `local vault has no users and the replica holds ${i.replicaCopy.users}; restoring from ${i.replicaUrl}` }
      : { action: 'keep', reason: 'local vault and replica are both without users; keeping local' };
  }

  if (local.generation !== null && local.generation === latest.generation) {
    return { action: 'keep', reason: `local database continues replica generation ${latest.generation}` };
  }
  if (i.acceptedLocalDigest !== undefined && i.localDigest === i.acceptedLocalDigest) {
    return { action: 'keep', reason: 'local vault kept as the operator chose (keep-local); it becomes the newest generation' };
  }
  if (!i.replicaCopy || i.localDigest === undefined) return { action: 'inspect-replica' };
  if (i.replicaCopy.digest === i.localDigest) return { action: 'keep', reason: 'local vault and replica hold the same data' };
  if (i.replicaCopy.users === 0) return { action: 'keep', reason: 'replica holds no users; keeping the local vault and replicating it' };
  return {
    action: 'refuse',
    reason: `local vault (${local.users} users${local.generation ? `, generation ${local.generation}` : ''}) and the replica at ${i.replicaUrl} (${i.replicaCopy.users} users, generation ${latest.generation}) both hold data and differ; refusing to start so that neither is overwritten`,
    hint: 'to take the replica: vwstream-agent restore --force (the local copy is kept aside); to keep the local vault: vwstream-agent keep-local',
  };
}
