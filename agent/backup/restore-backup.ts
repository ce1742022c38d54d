import { existsSync } from 'node:fs';
import { chown, cp, lstat, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../config/config.ts';
import { removeDbCopy, type Runtime } from '../daemon/runtime.ts';
import { AgentError } from '../errors.ts';
import { moveDurable } from '../fs.ts';
import { PATHS } from '../paths.ts';
import { inspectDb } from '../replication/inspect.ts';
import { isRecordedCopy, performRestoreOp } from '../replication/restore-op.ts';
import { rcloneContext } from './destinations.ts';
import { extractArchive, fetchArchive } from './extract.ts';

export interface BackupRestoreReport { source: string; users: number; files: number; setAsideTo?: string; ms: number }

async function move(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true, mode: 0o700 });
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await cp(from, to, { preserveTimestamps: true });
    await rm(from, { force: true });
  }
}

/**
 * `restore --backup FILE|remote:path`: the archive (fetched with rclone when remote,
 * decrypted with BACKUP_PASSWORD, gunzipped) is unpacked into a staging folder and
 * checked before anything live moves; the current database and any file it replaces are
 * kept aside. The caller enforces the safety rule (agent stopped; --force over data).
 * The restored vault is marked as the operator's choice, so the next start keeps it and
 * replicates it as a new generation instead of refusing because it differs from the replica.
 */
export async function restoreFromBackup(cfg: Config, rt: Runtime, source: string, onProgress: (line: string) => void = () => undefined): Promise<BackupRestoreReport> {
  const started = Date.now();
  const tmpRoot = join(PATHS.stateDir, 'tmp');
  await mkdir(tmpRoot, { recursive: true, mode: 0o700 });
  const work = await mkdtemp(join(tmpRoot, 'restore-'));
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
    onProgress(`archive checked: ${facts.users} users, ${entries.length - 1} files`);

    // The database goes in as a recorded operation (a crash in between is finished by the
    // next start with this copy): first the copy moves next to the live database, out of
    // the staging folder that is removed below.
    const prepared = join(dirname(rt.dbPath), `.vwstream-restore-backup-${process.pid}.sqlite3`);
    await moveDurable(db, prepared);
    let op;
    try {
      op = await performRestoreOp({
        kind: 'backup', describe: `backup ${source}`, source, dbPath: rt.dbPath, prepared,
        operatorChoice: true, reason: `restored from backup ${source} by the operator`, asideReason: 'before-backup-restore',
      }, rt.ids);
    } finally {
      if (!isRecordedCopy(prepared)) await removeDbCopy(prepared);
    }
    const setAsideTo = op.asideDir ?? undefined;
    let files = 0;
    for (const rel of entries) {
      if (rel === 'db.sqlite3') continue;
      const dest = join(PATHS.dataFolder, rel);
      if (await lstat(dest).catch(() => undefined)) await move(dest, join(setAsideTo ?? join(PATHS.asideDir, `${Date.now()}-before-backup-restore`), 'files', rel));
      for (let d = dirname(rel); d !== '.'; d = dirname(d)) {
        await mkdir(join(PATHS.dataFolder, d), { recursive: true, mode: 0o700 });
        await chown(join(PATHS.dataFolder, d), rt.ids.uid, rt.ids.gid);
      }
      await move(join(staging, rel), dest);
      await chown(dest, rt.ids.uid, rt.ids.gid);
      files++;
    }
    return { source, users: facts.users, files, ...(setAsideTo ? { setAsideTo } : {}), ms: Date.now() - started };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
