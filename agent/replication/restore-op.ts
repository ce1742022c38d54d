/**
 * A restore over live data as a recorded operation. Replacing the live database takes
 * two moves (the old one aside, the prepared copy in); a crash between them used to
 * leave no database, and the next start silently restored the replica's latest point,
 * dropping the operator's choice (a point in time, a backup). Now the intent is written
 * durably before the first move, and the next start finishes it with the prepared copy
 * when that is there and intact, or else puts the old database back: never something
 * else.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fsyncFile, unlinkDurable, writePrivateFile } from '../fs.ts';
import { asideFolder, dbFileSet, installRestored, moveBack, removeDbCopy, setAside, type Ids } from './runtime.ts';
import { updateState } from '../state-file.ts';
import { AgentError } from '../errors.ts';
import { log } from '../log.ts';
import { PATHS } from '../paths.ts';
import { contentDigest, inspectDb } from './inspect.ts';
import type { RestoreTarget } from './litestream.ts';

/** Where the record lives (agent state, beside state.json). */
export const RESTORE_OP_FILE = `${PATHS.stateDir}/restore-op.json`;

export interface RestoreOp {
  version: 1;
  /** Who asked: the start's restore rule, `restore --force`, `restore --backup`. */
  kind: 'startup' | 'operator' | 'backup';
  /** What was chosen, in words ("generation … up to …", "backup …"). */
  describe: string;
  /** The replica URL or backup source. */
  source: string;
  target?: RestoreTarget;
  dbPath: string;
  /** The checked copy to install (in the database's directory). */
  prepared: string;
  /**
   * contentDigest of the prepared copy; null when there was no live database to replace
   * (a new host): then nothing but this copy can be in place, and `preparedIno` tells it.
   */
  preparedDigest: string | null;
  /** The prepared copy's inode: the install renames it, so the installed file keeps it. */
  preparedIno?: number;
  preparedUsers: number;
  /** Where the live database goes; null when there is none to keep. */
  asideDir: string | null;
  /** Mark the installed vault as the operator's choice (the next start keeps it). */
  operatorChoice: boolean;
  /** lastRestore.reason in the state file. */
  reason: string;
  startedAt: string;
}

export interface OpPaths { opFile?: string; stateFile?: string; asideRoot?: string }

export interface OpHooks {
  /** Called after the live database was set aside and before the copy is installed (tests inject a crash here). */
  afterSetAside?: () => void | Promise<void>;
}

export function readRestoreOp(opFile: string = RESTORE_OP_FILE): RestoreOp | undefined {
  let text: string;
  try {
    text = readFileSync(opFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AgentError(`cannot read the recorded restore ${opFile}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text) as RestoreOp;
  } catch (err) {
    // Written durably by rename: a torn record cannot happen; an edited one is the operator's to fix.
    throw new AgentError(`the recorded restore ${opFile} is not valid JSON (${(err as Error).message}); nothing was changed`, {
      hint: `look at it and the folders under ${PATHS.asideDir}; remove it to start without finishing that restore`,
    });
  }
}

/** Whether `path` is the prepared copy of a recorded restore (then it must not be removed). */
export function isRecordedCopy(path: string, opFile: string = RESTORE_OP_FILE): boolean {
  try {
    return readRestoreOp(opFile)?.prepared === path;
  } catch {
    return true; // unsure: keep it
  }
}

/**
 * The live database holds exactly the prepared copy's data. Without a recorded digest
 * (nothing was there to replace) it is the prepared file itself, renamed into place:
 * the copy is gone from its path and the live file has its inode.
 */
function liveIsPrepared(op: RestoreOp): boolean {
  const live = inspectDb(op.dbPath); // a lock or EACCES throws: nothing is decided from it
  if (!live.exists || !live.intact) return false;
  if (op.preparedDigest === null) return !existsSync(op.prepared) && op.preparedIno !== undefined && statSync(op.dbPath).ino === op.preparedIno;
  return contentDigest(op.dbPath) === op.preparedDigest;
}

function preparedIntact(op: RestoreOp): boolean {
  if (!existsSync(op.prepared)) return false;
  const f = inspectDb(op.prepared);
  if (!f.intact) return false;
  // No digest recorded: integrity_check is the test (a damaged copy is dropped, the next restore fetches it again).
  return op.preparedDigest === null ? statSync(op.prepared).ino === op.preparedIno : contentDigest(op.prepared) === op.preparedDigest;
}

async function finish(op: RestoreOp, p: OpPaths): Promise<void> {
  await updateState({
    lastRestore: { at: new Date().toISOString(), action: 'restore', reason: op.reason, ...(op.asideDir ? { setAsideTo: op.asideDir } : {}) },
    ...(op.operatorChoice && op.preparedDigest !== null ? { acceptedLocalDigest: op.preparedDigest } : {}),
  }, p.stateFile);
  await unlinkDurable(p.opFile ?? RESTORE_OP_FILE);
}

/** Sets aside whatever of the live database is still in place (all of it, or what a crash left). */
async function setAsideRest(op: RestoreOp, p: OpPaths): Promise<string | null> {
  if (!dbFileSet(op.dbPath).some((f) => existsSync(f))) return op.asideDir;
  return setAside(op.dbPath, 'before-restore', p.asideRoot ?? PATHS.asideDir, op.asideDir ?? undefined);
}

/** What the caller already knows of the prepared copy: it ran integrity_check on it and nothing wrote to it since. */
export interface CheckedCopy { intact: true; users: number }

/**
 * Replaces the live database with a checked, prepared copy as a recorded operation:
 * record → set the live one aside → install → state → remove the record. A restore
 * recorded earlier and not finished is finished first. On an error after the record is
 * written, the record and the prepared copy stay: the next start (or restore) finishes
 * the operation.
 *
 * `checked`: the caller's own integrity_check of this very copy, just done (the start's
 * restore checks it as it comes out of Litestream): not run a second time. The content
 * digest only serves a recovery, to recognise the copy (installed or not) and, for an
 * operator's choice, to accept it at the next start; when no live database exists and
 * the operation is not the operator's, there is nothing the copy could be confused
 * with, and the recorded inode of the renamed file tells the same (a full read of every
 * row less).
 */
export async function performRestoreOp(fields: Omit<RestoreOp, 'version' | 'preparedDigest' | 'preparedIno' | 'preparedUsers' | 'asideDir' | 'startedAt'> & { asideReason: string }, ids: Ids, p: OpPaths = {}, hooks: OpHooks = {}, checked?: CheckedCopy): Promise<RestoreOp> {
  await recoverRestoreOp(ids, p);
  const facts = checked ?? inspectDb(fields.prepared);
  if (!facts.intact) throw new AgentError(`the prepared copy ${fields.prepared} fails integrity_check (${facts.integrityMessage}); the live data was not touched`);
  await fsyncFile(fields.prepared); // its bytes are durable before anything depends on them
  const { asideReason, ...rest } = fields;
  const liveExists = dbFileSet(fields.dbPath).some((f) => existsSync(f));
  const op: RestoreOp = {
    version: 1, ...rest,
    // Chosen and recorded before the first move, so a recovery knows where to look.
    asideDir: liveExists ? asideFolder(asideReason, p.asideRoot ?? PATHS.asideDir) : null,
    preparedDigest: liveExists || fields.operatorChoice ? contentDigest(fields.prepared) : null,
    preparedIno: statSync(fields.prepared).ino,
    preparedUsers: facts.users, startedAt: new Date().toISOString(),
  };
  await writePrivateFile(p.opFile ?? RESTORE_OP_FILE, JSON.stringify(op, null, 2) + '\n');
  log.info({ kind: op.kind, source: op.source, target: op.target, asideDir: op.asideDir }, `restore recorded: ${op.describe} from ${op.source}`);
  try {
    op.asideDir = await setAsideRest(op, p);
    await hooks.afterSetAside?.();
    await installRestored(op.prepared, op.dbPath, ids);
    await finish(op, p);
  } catch (err) {
    throw new AgentError(`restore of ${op.describe} interrupted: ${(err as Error).message}`, {
      hint: `it is recorded in ${p.opFile ?? RESTORE_OP_FILE}; the next start of vwstream-agent finishes it (or puts the previous database back)`,
      cause: err,
    });
  }
  return op;
}

export type Recovery =
  | { outcome: 'completed'; op: RestoreOp }
  | { outcome: 'rolled-back'; op: RestoreOp; movedBack: string[] };

/**
 * Finishes a restore recorded and not completed (crash, power loss, kill): when the
 * prepared copy is there and intact (same digest as recorded), the rest of the live
 * database is set aside and the copy installed, as the operator chose; when it is
 * gone or damaged, the database set aside goes back to its place. Either way the
 * record is removed and the outcome logged once. Returns undefined when nothing was
 * recorded.
 */
export async function recoverRestoreOp(ids: Ids, p: OpPaths = {}): Promise<Recovery | undefined> {
  const opFile = p.opFile ?? RESTORE_OP_FILE;
  const op = readRestoreOp(opFile);
  if (!op) return undefined;
  if (liveIsPrepared(op)) {
    // Installed; only the bookkeeping after it was cut off.
    await removeDbCopy(op.prepared);
    await finish(op, p);
    log.warn({ kind: op.kind, source: op.source, asideDir: op.asideDir }, `an interrupted restore of ${op.describe} from ${op.source} was already installed; its record is now complete`);
    return { outcome: 'completed', op };
  }
  if (preparedIntact(op)) {
    op.asideDir = await setAsideRest(op, p);
    await installRestored(op.prepared, op.dbPath, ids);
    await finish(op, p);
    log.warn({ kind: op.kind, source: op.source, asideDir: op.asideDir, users: op.preparedUsers }, `completed the interrupted restore of ${op.describe} from ${op.source} (${op.preparedUsers} users); the previous database is kept at ${op.asideDir ?? '(there was none)'}`);
    return { outcome: 'completed', op };
  }
  const movedBack = op.asideDir ? await moveBack(op.asideDir, op.dbPath) : [];
  await removeDbCopy(op.prepared);
  await unlinkDurable(opFile);
  log.error({ kind: op.kind, source: op.source, asideDir: op.asideDir, movedBack }, `an interrupted restore of ${op.describe} from ${op.source} could not be completed (its prepared copy ${op.prepared} is missing or damaged); the previous database was put back${movedBack.length ? '' : ' (it was still in place)'}; run the restore again`);
  return { outcome: 'rolled-back', op, movedBack };
}
