import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { replicaUrl, type Config } from '../config/config.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { removeDbCopy, type Runtime } from './runtime.ts';
import { readState, updateState } from '../state-file.ts';
import { decideRestore, type RestoreDecision, type RestoreInputs, type ReplicaPosition } from './decision.ts';
import { contentDigest, inspectDb, type DbFacts } from './inspect.ts';
import { dbReplicaPath, listGenerations, listWalSegments, restoreTo, shadowPosition, type Generation, type RestoreProgress, type RestoreTarget } from './litestream.ts';
import { isRecordedCopy, performRestoreOp, recoverRestoreOp, RESTORE_OP_FILE, type OpHooks, type OpPaths, type Recovery } from './restore-op.ts';
import { parseIndex, parseTimestamp, requireGeneration, resolvePointInTime } from './pitr.ts';
import { ExecError } from '../exec.ts';
import { PATHS } from '../paths.ts';
import { FileMirror } from '../files/mirror.ts';
import { scopeOf } from '../files/scope.ts';
import { DirStore, S3Store, s3Client } from '../files/store.ts';
import { lz4DecodedLength } from './lz4.ts';

/** NODE_ROLE, or the role `promote` persisted over it. */
export function effectiveRole(cfg: Config, overridePath: string = PATHS.roleOverride): string {
  try {
    const v = readFileSync(overridePath, 'utf8').trim();
    if (v === 'primary' || v === 'secondary') return v;
  } catch { /* no override */ }
  return cfg.role;
}

/**
 * The file mirror as the daemon builds it, for commands that run beside or without it.
 * `client`: an S3 client to share (the daemon's lease uses the same one).
 */
export function fileMirrorFor(cfg: Config, dataFolder: string = PATHS.dataFolder, manifestPath: string = PATHS.filesManifest, client?: S3Client): FileMirror {
  return new FileMirror({
    dataFolder,
    scope: scopeOf(cfg.syncInclude),
    store: cfg.s3 ? new S3Store(cfg.s3, client) : new DirStore(`${cfg.localReplicaPath}/files`),
    manifestPath,
    ...(manifestPath === PATHS.filesManifest ? { pendingPath: PATHS.filesRestore, stagingDir: PATHS.tmpDir } : {}),
  });
}

export interface RestoreOutcome { decision: RestoreDecision; ms: number; setAsideTo?: string; generation?: string; recovered?: Recovery }

const binOf = (rt: Runtime) => rt.litestreamBin ?? PATHS.litestreamBin;

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
    return await listGenerations(rt.litestreamConfig, rt.dbPath, binOf(rt));
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
    await restoreTo(rt.litestreamConfig, rt.dbPath, out, point.target, binOf(rt), onProgress);
  } catch (err) {
    const reason = litestreamReason(err);
    if (point.endFallback && /no matching backups/.test(reason)) {
      await restoreTo(rt.litestreamConfig, rt.dbPath, out, point.endFallback, binOf(rt), onProgress);
      return;
    }
    throw new AgentError(`restore from ${replicaUrl(cfg)} failed: ${reason}`, { hint: 'nothing live was changed' });
  }
}

/** Restores into a temporary file next to the database and checks it before anything moves. */
export async function restoreChecked(rt: Runtime, target: RestoreTarget = {}, opts: { cfg?: Config; endFallback?: RestoreTarget; onProgress?: (p: RestoreProgress) => void } = {}): Promise<{ tmp: string; facts: DbFacts }> {
  const tmp = tmpPathFor(rt.dbPath);
  if (opts.cfg) await restorePointTo(opts.cfg, rt, { target, ...(opts.endFallback ? { endFallback: opts.endFallback } : {}) }, tmp, opts.onProgress);
  else await restoreTo(rt.litestreamConfig, rt.dbPath, tmp, target, binOf(rt), opts.onProgress);
  const facts = inspectDb(tmp);
  if (!facts.intact) {
    await removeDbCopy(tmp);
    throw new AgentError(`the restored copy fails integrity_check (${facts.integrityMessage}); the live data was not touched`);
  }
  return { tmp, facts };
}

/** The bytes of one replica object under the database's replica path (directory or S3). */
async function readReplicaObject(cfg: Config, rel: string): Promise<Uint8Array> {
  const key = `${dbReplicaPath(cfg)}/${rel}`;
  if (!cfg.s3) return readFile(key);
  const client = s3Client(cfg.s3);
  try {
    const r = await client.send(new GetObjectCommand({ Bucket: cfg.s3.bucket, Key: key }), { abortSignal: AbortSignal.timeout(60_000) });
    return await r.Body!.transformToByteArray();
  } finally {
    client.destroy();
  }
}

/**
 * The replica's position in a generation: its newest WAL segment, and where that segment
 * ends (its offset plus its decoded length, as Litestream computes it). Without the end
 * (the segment unreadable) the comparison falls back to the segment's start.
 */
export async function replicaPosition(cfg: Config, rt: Runtime, generation: string): Promise<ReplicaPosition | undefined> {
  const segs = (await listWalSegments(rt.litestreamConfig, rt.dbPath, binOf(rt))).filter((w) => w.generation === generation);
  let best: ReplicaPosition | undefined;
  for (const w of segs) {
    if (!best || w.index > best.index || (w.index === best.index && w.offset > best.offset)) best = { generation, index: w.index, offset: w.offset };
  }
  if (!best) return undefined;
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  try {
    const seg = await readReplicaObject(cfg, `generations/${generation}/wal/${hex(best.index)}_${hex(best.offset)}.wal.lz4`);
    best.end = best.offset + lz4DecodedLength(seg);
  } catch (err) {
    log.warn({ err: errorMessage(err), generation, index: best.index, offset: best.offset }, 'could not read the replica\'s last WAL segment; comparing positions by its start');
  }
  return best;
}

export interface StartOptions {
  /** Where the restore record and the state file are (tests). */
  paths?: OpPaths;
  hooks?: OpHooks;
  /** Litestream's restore steps (snapshot, each WAL segment), for STATUS= and the start timeout. */
  onProgress?: (p: RestoreProgress) => void;
  /**
   * The rule chose to restore onto a host with no local database: called once, before the
   * copy is installed (the data folder holds no vault the decision could still keep); the
   * install waits for what it returns (the files' restore recorded on disk: a crash after
   * the install must not leave a database whose files nobody restores).
   */
  onRestoreDecided?: (d: Extract<RestoreDecision, { action: 'restore' }>) => void | Promise<void>;
}

/**
 * Startup restore (contract behaviour 2): first finish a restore recorded and not
 * completed (a crash between its steps), then decide from the local file and the
 * replica, and restore only when the rule says so. Never overwrites data silently: a
 * replaced local database is set aside under /var/lib/vwstream/aside. A database that
 * cannot be read (locked, permissions) stops the start without touching anything.
 */
export async function restoreOnStart(cfg: Config, rt: Runtime, opts: StartOptions = {}): Promise<RestoreOutcome> {
  const started = Date.now();
  const url = replicaUrl(cfg);
  const paths = opts.paths ?? {};
  const recovered = await recoverRestoreOp(rt.ids, paths);
  const local = inspectDb(rt.dbPath);
  // No local database (a new host): whatever the replica holds, the rule restores its
  // latest state (Litestream picks the generation, as it does below when asked for {}), or
  // starts a new vault when it holds nothing. So the restore starts at once, beside the
  // listing, instead of after it; its copy is used only once the listing says restore.
  const early = local.exists ? undefined : earlyRestore(rt, paths.opFile ?? RESTORE_OP_FILE, opts.onProgress);
  let generations: Generation[];
  try {
    generations = await listGenerations(rt.litestreamConfig, rt.dbPath, binOf(rt));
  } catch (err) {
    await early?.discard();
    if (local.exists && local.intact && local.users > 0 && local.generation) {
      log.warn({ err: (err as Error).message, replica: url }, 'replica unreachable; keeping the local vault, Litestream will catch up when it is back');
      return { decision: { action: 'keep', reason: `replica ${url} unreachable; local vault kept` }, ms: Date.now() - started, ...(recovered ? { recovered } : {}) };
    }
    throw new AgentError(`cannot read the replica at ${url}: ${(err as Error).message}`, { hint: 'check S3_* settings and that the bucket is reachable; the agent retries on restart' });
  }
  const state = readState(paths.stateFile);
  const inputs: RestoreInputs = {
    local, generations, replicaUrl: url, dbPath: rt.dbPath,
    ...(state.acceptedLocalDigest ? { acceptedLocalDigest: state.acceptedLocalDigest } : {}),
    ...(local.intact && local.users > 0 ? { localDigest: contentDigest(rt.dbPath) } : {}),
  };
  let tmp: string | undefined;
  try {
    let decision = decideRestore(inputs);
    if (early && decision.action !== 'restore') await early.discard();
    // The rule asks for what it needs, one thing at a time: positions, then the replica's content.
    for (let asked = 0; asked < 3 && (decision.action === 'compare-positions' || decision.action === 'inspect-replica'); asked++) {
      if (decision.action === 'compare-positions') {
        const latest = generations.at(-1)!.generation;
        const lp = await shadowPosition(rt.dbPath);
        inputs.positions = {
          local: lp && lp.generation === latest ? { generation: lp.generation, index: lp.index, size: lp.size } : undefined,
          replica: await replicaPosition(cfg, rt, latest),
          lastDrainConfirmed: state.lastDrain?.complete === true,
        };
      } else {
        const copy = await restoreChecked(rt, {}, { onProgress: opts.onProgress });
        tmp = copy.tmp;
        inputs.replicaCopy = { users: copy.facts.users, digest: contentDigest(tmp) };
      }
      decision = decideRestore(inputs);
    }
    const outcome: RestoreOutcome = { decision, ms: 0, generation: generations.at(-1)?.generation, ...(recovered ? { recovered } : {}) };
    if (decision.action === 'inspect-replica' || decision.action === 'compare-positions') throw new AgentError(`internal: restore decision still asks for ${decision.action}`);
    if (decision.action === 'refuse') {
      throw new AgentError(decision.reason, { hint: decision.hint, exitCode: EXIT.REFUSED });
    }
    if (decision.action === 'restore') {
      // Told before the copy is ready: the files of a new host can come meanwhile.
      if (!local.exists && !recovered) await opts.onRestoreDecided?.(decision);
      let checked: { intact: true; users: number } | undefined;
      if (!tmp) {
        const copy = early ? await early.copy : await restoreChecked(rt, {}, { onProgress: opts.onProgress });
        tmp = copy.tmp;
        // restoreChecked ran integrity_check on it as Litestream left it, and nothing opened it since.
        checked = { intact: true, users: copy.facts.users };
      }
      const op = await performRestoreOp({
        kind: 'startup', describe: 'the latest state', source: url, target: {}, dbPath: rt.dbPath, prepared: tmp,
        operatorChoice: false, reason: decision.reason, asideReason: decision.setAside === 'none' ? 'before-restore' : decision.setAside,
      }, rt.ids, paths, opts.hooks, checked);
      if (op.asideDir) outcome.setAsideTo = op.asideDir;
      tmp = undefined;
    }
    outcome.ms = Date.now() - started;
    if (decision.action === 'new-vault') {
      await updateState({ lastRestore: { at: new Date().toISOString(), action: decision.action, reason: decision.reason } }, paths.stateFile);
    }
    return outcome;
  } finally {
    if (tmp && !isRecordedCopy(tmp, paths.opFile ?? RESTORE_OP_FILE)) await removeDbCopy(tmp);
    await early?.discard(); // used (then recorded or installed: left alone) or not: never left behind
  }
}

/**
 * A restore of the latest state started before the decision: `copy` is the checked copy
 * (its failure surfaces only when it is awaited); `discard` waits for it to end and
 * removes it unless a recorded restore holds it.
 */
function earlyRestore(rt: Runtime, opFile: string, onProgress?: (p: RestoreProgress) => void): { copy: Promise<{ tmp: string; facts: DbFacts }>; discard: () => Promise<void> } {
  const copy = restoreChecked(rt, {}, { onProgress });
  copy.catch(() => undefined); // awaited (and its error seen) where it is used
  let discarded: Promise<void> | undefined;
  return {
    copy,
    discard: () => (discarded ??= copy.then(
      async ({ tmp }) => { if (existsSync(tmp) && !isRecordedCopy(tmp, opFile)) await removeDbCopy(tmp); },
      () => undefined,
    )),
  };
}

/**
 * `vwstream-agent restore --force` with the agent stopped: install a checked copy (from
 * restoreChecked) as a recorded operation, keeping the current local database aside.
 * The restored vault is marked as the operator's choice, so the next start keeps it even
 * when it differs from the replica's newest generation (a point in time) and Litestream
 * replicates it as a new generation: the replica continues from the restored point. A
 * crash in between is finished by the next start with this very copy.
 */
export async function installForced(cfg: Config, rt: Runtime, tmp: string, describe: string, target: RestoreTarget = {}, opts: StartOptions = {}): Promise<{ setAsideTo?: string }> {
  const op = await performRestoreOp({
    kind: 'operator', describe, source: replicaUrl(cfg), target, dbPath: rt.dbPath, prepared: tmp,
    operatorChoice: true, reason: `restored ${describe} from ${replicaUrl(cfg)} by the operator`, asideReason: 'before-restore',
  }, rt.ids, opts.paths ?? {}, opts.hooks);
  return op.asideDir ? { setAsideTo: op.asideDir } : {};
}

/** The latest replica over the local database (agent stopped), keeping the local one aside. */
export async function forceRestore(cfg: Config, rt: Runtime, target: RestoreTarget = {}, opts: StartOptions = {}): Promise<RestoreOutcome> {
  const started = Date.now();
  const { tmp } = await restoreChecked(rt, target, { cfg });
  try {
    const { setAsideTo } = await installForced(cfg, rt, tmp, 'the latest state', target, opts);
    return { decision: { action: 'restore', setAside: 'none', reason: `restored from ${replicaUrl(cfg)} by the operator` }, ms: Date.now() - started, ...(setAsideTo ? { setAsideTo } : {}) };
  } finally {
    if (!isRecordedCopy(tmp, opts.paths?.opFile ?? RESTORE_OP_FILE)) await removeDbCopy(tmp);
  }
}
