import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../config/config.ts';
import { asideFolder, removeDbCopy, type Runtime } from '../replication/runtime.ts';
import { AgentError } from '../errors.ts';
import { inScope, scopeOf } from '../files/scope.ts';
import { moveDurable } from '../fs.ts';
import { log } from '../log.ts';
import { PATHS } from '../paths.ts';
import { inspectDb } from '../replication/inspect.ts';
import { isRecordedCopy, performRestoreOp } from '../replication/restore-op.ts';
import { moveOut, openDirNoFollow, UnsafePathError, writeFileInto, type Ids } from '../safe-fs.ts';
import { rcloneContext } from './destinations.ts';
import { extractArchive, fetchArchive } from './extract.ts';

export interface BackupRestoreReport { source: string; users: number; files: number; ignored: string[]; setAsideTo?: string; ms: number }

/** Where a backup restore reads and writes; the contract's paths unless a test says otherwise. */
export interface BackupRestorePaths { dataFolder: string; stateDir: string; asideDir: string; stateFile: string }

/** True when a failed backup restore changed nothing live (the previous vault may be served again). */
export function leftUnchanged(err: unknown): boolean {
  return err instanceof Error && (err as Error & { unchanged?: boolean }).unchanged === true;
}

/** Everything of the data folder a backup may put back (the database aside). */
const RESTORABLE = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: true });

/**
 * Before anything live moves: every existing directory on the way to each restored file
 * must be a real directory (not a link) owned by the service user or root. A planted
 * link (e.g. `attachments` -> a root-owned folder) refuses the whole restore, naming it.
 */
export async function checkRestoreTargets(dataFolder: string, rels: string[], ids: Ids): Promise<void> {
  const dirs = [...new Set(rels.map((r) => dirname(r)))].sort();
  for (const d of ['.', ...dirs]) {
    try {
      const fh = await openDirNoFollow(dataFolder, d === '.' ? '' : d, { owners: [...new Set([ids.uid, 0])] });
      await fh.close();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // created (verified) later
      if (err instanceof UnsafePathError) {
        throw new AgentError(`restore refused: ${err.message}; nothing was changed`, {
          hint: `look at ${err.path} (something may have planted it); remove it or make it a real directory owned by the service user (a folder on another disk must be a bind mount, not a symlink), then run the restore again`,
          cause: err,
        });
      }
      throw err;
    }
  }
}

/**
 * `restore --backup FILE|remote:path`: the archive (fetched with rclone when remote,
 * decrypted with BACKUP_PASSWORD, gunzipped) is unpacked into a staging folder and
 * checked before anything live moves; the current database and any file it replaces are
 * kept aside. The caller enforces the safety rule (agent stopped; --force over data).
 * The restored vault is marked as the operator's choice, so the next start keeps it and
 * replicates it as a new generation instead of refusing because it differs from the replica.
 *
 * Files go into the data folder without following a link (safe-fs): each is written to
 * a temporary name inside a directory verified to be real and owned by the service user,
 * then renamed; a link where a file goes is moved aside as the link. Archive entries
 * outside the vault's files (attachments/, sends/, icon_cache/, config.json, rsa_key*)
 * are ignored with a warning. An error thrown before anything live changed carries
 * `unchanged: true` (see {@link leftUnchanged}).
 */
export async function restoreFromBackup(
  cfg: Config, rt: Runtime, source: string, onProgress: (line: string) => void = () => undefined,
  paths: BackupRestorePaths = { dataFolder: PATHS.dataFolder, stateDir: PATHS.stateDir, asideDir: PATHS.asideDir, stateFile: PATHS.stateFile },
): Promise<BackupRestoreReport> {
  const started = Date.now();
  const tmpRoot = join(paths.stateDir, 'tmp');
  await mkdir(tmpRoot, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(join(tmpRoot, 'restore-'));
  let changed = false;
  try {
    onProgress(`fetching ${source}`);
    const file = await fetchArchive(source, work, rcloneContext(cfg), existsSync(source));
    const staging = join(work, 'stage');
    onProgress('decrypting and unpacking');
    const entries = await extractArchive(file, staging, cfg.backup.password, onProgress);
    const db = join(staging, 'db.sqlite3');
    const facts = inspectDb(db);
    if (!facts.exists) throw new AgentError(`${source} holds no db.sqlite3: not a vwstream backup`);
    if (!facts.intact) throw new AgentError(`the database in ${source} fails integrity_check (${facts.integrityMessage}); nothing was changed`);
    const rels: string[] = [];
    const ignored: string[] = [];
    for (const rel of entries) {
      if (rel === 'db.sqlite3') continue;
      if (inScope(RESTORABLE, rel)) rels.push(rel);
      else {
        ignored.push(rel);
        log.warn({ entry: rel }, `restore: ignored archive entry ${rel}: not one of the vault's files (attachments/, sends/, icon_cache/, config.json, rsa_key*)`);
      }
    }
    onProgress(`archive checked: ${facts.users} users, ${rels.length} files`);
    await checkRestoreTargets(paths.dataFolder, rels, rt.ids);

    // The database goes in as a recorded operation (a crash in between is finished by the
    // next start with this copy): first the copy moves next to the live database, out of
    // the staging folder that is removed below.
    const prepared = join(dirname(rt.dbPath), `.vwstream-restore-backup-${process.pid}.sqlite3`);
    await moveDurable(db, prepared);
    const opPaths = { opFile: join(paths.stateDir, 'restore-op.json'), stateFile: paths.stateFile, asideRoot: paths.asideDir };
    changed = true;
    let op;
    try {
      op = await performRestoreOp({
        kind: 'backup', describe: `backup ${source}`, source, dbPath: rt.dbPath, prepared,
        operatorChoice: true, reason: `restored from backup ${source} by the operator`, asideReason: 'before-backup-restore',
      }, rt.ids, opPaths);
    } finally {
      if (!isRecordedCopy(prepared, opPaths.opFile)) await removeDbCopy(prepared);
    }
    const setAsideTo = op.asideDir ?? undefined;
    const filesAside = join(setAsideTo ?? asideFolder('before-backup-restore', paths.asideDir), 'files');
    let files = 0;
    for (const rel of rels) {
      const asidePath = join(filesAside, rel);
      await mkdir(dirname(asidePath), { recursive: true, mode: 0o700 });
      if (await moveOut(paths.dataFolder, rel, asidePath)) log.info({ path: rel, aside: asidePath }, `restore: kept the replaced ${rel} aside at ${asidePath}`);
      const staged = join(staging, rel);
      const st = await stat(staged);
      await writeFileInto(paths.dataFolder, rel, { fromPath: staged }, rt.ids, { mode: 0o600, dirMode: 0o700, mtime: st.mtime });
      files++;
      if (files % 200 === 0) onProgress(`restored ${files}/${rels.length} files`);
    }
    return { source, users: facts.users, files, ignored, ...(setAsideTo ? { setAsideTo } : {}), ms: Date.now() - started };
  } catch (err) {
    // Failed before the live data was touched (fetch, decrypt, check, refusal): the caller may serve it again.
    if (!changed && err instanceof Error) Object.assign(err, { unchanged: true });
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
