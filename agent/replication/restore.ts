import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { replicaUrl, type Config } from '../config/config.ts';
import { AgentError, EXIT } from '../errors.ts';
import { log } from '../log.ts';
import { installRestored, setAside, type Runtime } from '../daemon/runtime.ts';
import { readState, updateState } from '../daemon/state-file.ts';
import { decideRestore, type RestoreDecision } from './decision.ts';
import { contentDigest, inspectDb, type DbFacts } from './inspect.ts';
import { listGenerations, restoreTo, type Generation, type RestoreTarget } from './litestream.ts';

export interface RestoreOutcome { decision: RestoreDecision; ms: number; setAsideTo?: string; generation?: string }

function tmpPathFor(dbPath: string): string {
  return `${dbPath.slice(0, dbPath.lastIndexOf('/'))}/.vwstream-restore-${process.pid}.sqlite3`;
}

/** Restores into a temporary file next to the database and checks it before anything moves. */
export async function restoreChecked(rt: Runtime, target: RestoreTarget = {}): Promise<{ tmp: string; facts: DbFacts }> {
  const tmp = tmpPathFor(rt.dbPath);
  await restoreTo(rt.litestreamConfig, rt.dbPath, tmp, target);
  const facts = inspectDb(tmp);
  if (!facts.intact) {
    await rm(tmp, { force: true });
    throw new AgentError(`the restored copy fails integrity_check (${facts.integrityMessage}); the live data was not touched`);
  }
  return { tmp, facts };
}

/**
 * Startup restore (contract behaviour 2): decide from the local file and the replica,
 * and restore only when the rule says so. Never overwrites data silently: a replaced
 * local database is set aside under /var/lib/vwstream/aside.
 */
export async function restoreOnStart(cfg: Config, rt: Runtime): Promise<RestoreOutcome> {
  const started = Date.now();
  const url = replicaUrl(cfg);
  const local = inspectDb(rt.dbPath);
  let generations: Generation[];
  try {
    generations = await listGenerations(rt.litestreamConfig, rt.dbPath);
  } catch (err) {
    if (local.exists && local.intact && local.users > 0 && local.generation) {
      log.warn({ err: (err as Error).message, replica: url }, 'replica unreachable; keeping the local vault, Litestream will catch up when it is back');
      return { decision: { action: 'keep', reason: `replica ${url} unreachable; local vault kept` }, ms: Date.now() - started };
    }
    throw new AgentError(`cannot read the replica at ${url}: ${(err as Error).message}`, { hint: 'check S3_* settings and that the bucket is reachable; the agent retries on restart' });
  }
  const state = readState();
  const inputs = {
    local, generations, replicaUrl: url, dbPath: rt.dbPath,
    ...(state.acceptedLocalDigest ? { acceptedLocalDigest: state.acceptedLocalDigest } : {}),
  };
  let tmp: string | undefined;
  try {
    let decision = decideRestore({ ...inputs, ...(local.intact && local.users > 0 ? { localDigest: contentDigest(rt.dbPath) } : {}) });
    if (decision.action === 'inspect-replica') {
      const copy = await restoreChecked(rt);
      tmp = copy.tmp;
      decision = decideRestore({
        ...inputs,
        ...(local.users > 0 ? { localDigest: contentDigest(rt.dbPath) } : {}),
        replicaCopy: { users: copy.facts.users, digest: contentDigest(tmp) },
      });
    }
    const outcome: RestoreOutcome = { decision, ms: 0, generation: generations.at(-1)?.generation };
    if (decision.action === 'inspect-replica') throw new AgentError('internal: restore decision needs the replica twice');
    if (decision.action === 'refuse') {
      throw new AgentError(decision.reason, { hint: decision.hint, exitCode: EXIT.REFUSED });
    }
    if (decision.action === 'restore') {
      if (!tmp) tmp = (await restoreChecked(rt)).tmp;
      if (decision.setAside !== 'none' && existsSync(rt.dbPath)) outcome.setAsideTo = await setAside(rt.dbPath, decision.setAside);
      await installRestored(tmp, rt.dbPath, rt.ids);
      tmp = undefined;
    }
    outcome.ms = Date.now() - started;
    if (decision.action !== 'keep' || outcome.setAsideTo) {
      await updateState({ lastRestore: { at: new Date().toISOString(), action: decision.action, reason: decision.reason, ...(outcome.setAsideTo ? { setAsideTo: outcome.setAsideTo } : {}) } });
    }
    return outcome;
  } finally {
    if (tmp) await rm(tmp, { force: true });
  }
}

/**
 * `vwstream-agent restore --force` with the agent stopped: take the replica (at a point
 * when given), keeping the current local database aside.
 */
export async function forceRestore(cfg: Config, rt: Runtime, target: RestoreTarget = {}): Promise<RestoreOutcome> {
  const started = Date.now();
  const { tmp } = await restoreChecked(rt, target);
  try {
    const setAsideTo = existsSync(rt.dbPath) ? await setAside(rt.dbPath, 'before-restore') : undefined;
    await installRestored(tmp, rt.dbPath, rt.ids);
    const reason = `restored from ${replicaUrl(cfg)} by the operator`;
    await updateState({ lastRestore: { at: new Date().toISOString(), action: 'restore', reason, ...(setAsideTo ? { setAsideTo } : {}) }, acceptedLocalDigest: undefined });
    return { decision: { action: 'restore', setAside: 'none', reason }, ms: Date.now() - started, ...(setAsideTo ? { setAsideTo } : {}) };
  } finally {
    await rm(tmp, { force: true });
  }
}
