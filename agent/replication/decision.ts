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
}

export type RestoreDecision =
  | { action: 'new-vault'; reason: string }
  | { action: 'keep'; reason: string }
  | { action: 'restore'; reason: string; setAside: 'none' | 'corrupt' | 'untouched' }
  | { action: 'inspect-replica' }
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
  if (!local.intact) {
    return hasReplica
      ? { action: 'restore', setAside: 'corrupt', reason: `local database fails integrity_check (${local.integrityMessage ?? 'unreadable'}); setting it aside and restoring from ${i.replicaUrl}` }
      : {
          action: 'refuse',
          reason: `local database ${i.dbPath} fails integrity_check (${local.integrityMessage ?? 'unreadable'}) and there is no replica at ${i.replicaUrl} to restore from`,
          hint: `recover it by hand (sqlite3 ${i.dbPath} .recover) or move it away to start a new vault`,
        };
  }
  if (!hasReplica) return { action: 'keep', reason: `local vault kept; replica at ${i.replicaUrl} is empty and will be seeded from it` };

  if (local.users === 0) {
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
