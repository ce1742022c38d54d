import { existsSync, readFileSync } from 'node:fs';
import { replicaUrl, type Config } from '../config/config.ts';
import { AgentError, EXIT } from '../errors.ts';
import { log } from '../log.ts';
import { installRestored, removeDbCopy, setAside, type Runtime } from '../daemon/runtime.ts';
import { readState, updateState } from '../daemon/state-file.ts';
import { decideRestore, type RestoreDecision } from './decision.ts';
import { contentDigest, inspectDb, type DbFacts } from './inspect.ts';
import { listGenerations, restoreTo, type Generation, type RestoreProgress, type RestoreTarget } from './litestream.ts';
import { parseIndex, parseTimestamp, requireGeneration, resolvePointInTime } from './pitr.ts';
import { ExecError } from '../exec.ts';
import { PATHS } from '../paths.ts';
import { FileMirror } from '../files/mirror.ts';
import { scopeOf } from '../files/scope.ts';
import { DirStore, S3Store } from '../files/store.ts';

/** NODE_ROLE, or the role `promote` persisted over it. */
export function effectiveRole(cfg: Config, overridePath: string = PATHS.roleOverride): string {
  try {
    const v = readFileSync(overridePath, 'utf8').trim();
    if (v === 'primary' || v === 'secondary') return v;
  } catch { /* no override */ }
  return cfg.role;
}

/** The file mirror as the daemon builds it, for commands that run beside or without it. */
export function fileMirrorFor(cfg: Config, dataFolder: string = PATHS.dataFolder, manifestPath: string = PATHS.filesManifest): FileMirror {
  return new FileMirror({
    dataFolder,
    scope: scopeOf(cfg.syncInclude),
    store: cfg.s3 ? new S3Store(cfg.s3) : new DirStore(`${cfg.localReplicaPath}/files`),
    manifestPath,
    ...(manifestPath === PATHS.filesManifest ? { pendingPath: PATHS.filesRestore, stagingDir: PATHS.tmpDir } : {}),
  });
}

export interface RestoreOutcome { decision: RestoreDecision; ms: number; setAsideTo?: string; generation?: string }

function tmpPathFor(dbPath: string): string {
  return `${dbPath.slice(0, dbPath.lastIndexOf('/'))}/.vwstream-restore-${process.pid}.sqlite3`;
}

/** What the operator asked to restore, resolved against the replica's generations. */
export interface RestorePoint {
  target: RestoreTarget;
  /** Litestream finds nothing for a moment within the last second of a generation: take its end. */
  endFallback?: RestoreTarget;
  describe: string;
  /** A point before now was asked for (the files cannot follow it). */
  pointInTime: boolean;
  generations: Generation[];
}

export interface RestoreRequest { timestamp?: string; generation?: string; index?: string }

/** Lists generations; an unreachable replica becomes one clear line. */
export async function generationsOrFail(cfg: Config, rt: Runtime): Promise<Generation[]> {
  try {
    return await listGenerations(rt.litestreamConfig, rt.dbPath);
  } catch (err) {
    throw new AgentError(`cannot reach the replica at ${replicaUrl(cfg)}: ${litestreamReason(err)}`, { hint: 'check S3_* settings and that the bucket is reachable; nothing was changed' });
  }
}

/** The part of a litestream failure worth one line: its `error=` text when it logged one. */
export function litestreamReason(err: unknown): string {
  const text = err instanceof ExecError ? `${err.result.stderr}\n${err.result.stdout}` : (err as Error).message;
  const errs = [...text.matchAll(/error="((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\"/g, '"'));
  return errs.at(-1) ?? (err as Error).message;
}

/**
 * --timestamp / --generation / --index → a Litestream target, checked against the
 * replica first: an unknown generation, a time before the oldest restorable point or an
 * unreachable replica is an error before anything is touched.
 */
export async function resolveRestorePoint(cfg: Config, rt: Runtime, req: RestoreRequest, now: Date = new Date()): Promise<RestorePoint> {
  if (req.timestamp && req.index) throw new AgentError('--timestamp and --index together are not possible: choose one');
  const t = req.timestamp ? parseTimestamp(req.timestamp, now) : undefined;
  const index = req.index ? parseIndex(req.index) : undefined;
  if (t && t.getTime() > now.getTime() + 60_000) throw new AgentError(`--timestamp ${req.timestamp} is in the future`);
  const generations = await generationsOrFail(cfg, rt);
  if (generations.length === 0) throw new AgentError(`the replica at ${replicaUrl(cfg)} holds no generations: nothing to restore`);
  const scope = req.generation ? [requireGeneration(generations, req.generation)] : generations;
  if (t) {
    const r = resolvePointInTime(scope, t);
    return { ...r, pointInTime: true, generations };
  }
  const g = scope.at(-1)!;
  if (index) {
    return { target: { generation: g.generation, index }, describe: `generation ${g.generation} up to WAL index ${parseInt(index, 16)}`, pointInTime: true, generations };
  }
  if (req.generation) return { target: { generation: g.generation }, describe: `generation ${g.generation} at its last write ${g.end.toISOString()}`, pointInTime: g !== generations.at(-1), generations };
  return { target: {}, describe: `the latest state (generation ${g.generation})`, pointInTime: false, generations };
}

/** Runs the restore for a resolved point; Litestream's failure becomes one line. */
export async function restorePointTo(cfg: Config, rt: Runtime, point: Pick<RestorePoint, 'target' | 'endFallback'>, out: string, onProgress?: (p: RestoreProgress) => void): Promise<void> {
  try {
    await restoreTo(rt.litestreamConfig, rt.dbPath, out, point.target, PATHS.litestreamBin, onProgress);
  } catch (err) {
    const reason = litestreamReason(err);
    if (point.endFallback && /no matching backups/.test(reason)) {
      await restoreTo(rt.litestreamConfig, rt.dbPath, out, point.endFallback, PATHS.litestreamBin, onProgress);
      return;
    }
    throw new AgentError(`restore from ${replicaUrl(cfg)} failed: ${reason}`, { hint: 'nothing live was changed' });
  }
}

/** Restores into a temporary file next to the database and checks it before anything moves. */
export async function restoreChecked(rt: Runtime, target: RestoreTarget = {}, opts: { cfg?: Config; endFallback?: RestoreTarget; onProgress?: (p: RestoreProgress) => void } = {}): Promise<{ tmp: string; facts: DbFacts }> {
  const tmp = tmpPathFor(rt.dbPath);
  if (opts.cfg) await restorePointTo(opts.cfg, rt, { target, ...(opts.endFallback ? { endFallback: opts.endFallback } : {}) }, tmp, opts.onProgress);
  else await restoreTo(rt.litestreamConfig, rt.dbPath, tmp, target);
  const facts = inspectDb(tmp);
  if (!facts.intact) {
    await removeDbCopy(tmp);
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
    if (tmp) await removeDbCopy(tmp);
  }
}

/**
 * `vwstream-agent restore --force` with the agent stopped: install a checked copy (from
 * restoreChecked), keeping the current local database aside. The restored vault is
 * marked as the operator's choice, so the next start keeps it even when it differs from
 * the replica's newest generation (a point in time) and Litestream replicates it as a
 * new generation: the replica continues from the restored point.
 */
export async function installForced(cfg: Config, rt: Runtime, tmp: string, describe: string): Promise<{ setAsideTo?: string }> {
  const setAsideTo = existsSync(rt.dbPath) ? await setAside(rt.dbPath, 'before-restore') : undefined;
  await installRestored(tmp, rt.dbPath, rt.ids);
  const reason = `restored ${describe} from ${replicaUrl(cfg)} by the operator`;
  await updateState({ lastRestore: { at: new Date().toISOString(), action: 'restore', reason, ...(setAsideTo ? { setAsideTo } : {}) }, acceptedLocalDigest: contentDigest(rt.dbPath) });
  return setAsideTo ? { setAsideTo } : {};
}

/** The latest replica over the local database (agent stopped), keeping the local one aside. */
export async function forceRestore(cfg: Config, rt: Runtime, target: RestoreTarget = {}): Promise<RestoreOutcome> {
  const started = Date.now();
  const { tmp } = await restoreChecked(rt, target, { cfg });
  try {
    const { setAsideTo } = await installForced(cfg, rt, tmp, 'the latest state');
    return { decision: { action: 'restore', setAside: 'none', reason: `restored from ${replicaUrl(cfg)} by the operator` }, ms: Date.now() - started, ...(setAsideTo ? { setAsideTo } : {}) };
  } finally {
    await removeDbCopy(tmp);
  }
}
