import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/config.ts';
import { errorMessage } from '../errors.ts';
import { scopeOf, type Scope } from '../files/scope.ts';
import { log } from '../log.ts';
import { notify, type NotifyResult } from '../notify/notify.ts';
import { PATHS } from '../paths.ts';
import { createBackupArchive, type ArchiveReport } from './archive.ts';
import { applyRetention, rcloneContext, shipArchive } from './destinations.ts';
import { archiveName } from './retention.ts';

export interface BackupOptions {
  dbPath?: string;
  dataFolder?: string;
  /** Where the archive and the DB snapshot are staged (default /var/lib/vwstream/tmp). */
  tmpDir?: string;
  now?: () => Date;
  rcloneBin?: string;
  signal?: AbortSignal;
  /** Progress lines for a terminal. */
  onProgress?: (line: string) => void;
}

export interface DestinationReport {
  destination: string;
  ok: boolean;
  error?: string;
  bytes?: number;
  ms?: number;
  retention?: { deleted: string[]; kept: number; errors: string[] };
}

export interface BackupReport {
  ok: boolean;
  name: string;
  startedAt: string;
  ms: number;
  archive: ArchiveReport | null;
  destinations: DestinationReport[];
  /** Why the run failed (archive or the destinations that failed, named). */
  error?: string;
  notification: NotifyResult;
}

/** What a backup holds: every vault file; icon_cache only when SYNC_INCLUDE_ICON_CACHE. */
export function backupScope(cfg: Pick<Config, 'syncInclude'>): Scope {
  return scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: cfg.syncInclude.iconCache });
}

export class BackupBusyError extends Error {}

/** One backup at a time on this host (timer, CLI, startup): a pid lock file. */
async function lock(path: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return () => unlink(path).catch(() => undefined);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (pid > 0 && pid !== process.pid) {
        try { process.kill(pid, 0); alive = true; } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; }
      }
      if (alive) throw new BackupBusyError(`another backup is running (pid ${pid})`);
      await unlink(path).catch(() => undefined); // stale
    }
  }
  throw new BackupBusyError(`cannot take the backup lock ${path}`);
}

/**
 * A backup run (contract behaviour 7): snapshot + files → archive staged in tmpDir →
 * every destination (any failure fails the run, named) → retention on each destination
 * that received the archive → notification. Never throws for a failed run: the report
 * says ok=false (the CLI exits 1). Throws BackupBusyError when one is already running.
 */
export async function runBackup(cfg: Config, opts: BackupOptions = {}): Promise<BackupReport> {
  const started = Date.now();
  const now = opts.now ?? (() => new Date());
  const at = now();
  const progress = opts.onProgress ?? (() => undefined);
  const tmpDir = opts.tmpDir ?? join(PATHS.stateDir, 'tmp');
  await mkdir(tmpDir, { recursive: true, mode: 0o700 });
  const unlock = await lock(join(tmpDir, 'backup.lock'));
  const b = cfg.backup;
  const name = archiveName(at, b.format, b.password !== '');
  const staged = join(tmpDir, `${name}.partial`);
  const report: BackupReport = { ok: false, name, startedAt: at.toISOString(), ms: 0, archive: null, destinations: [], notification: { sent: false, event: 'backup_failure', ms: 0 } };
  try {
    log.info({ name, destinations: b.remotes.length }, `backup ${name}: started`);
    progress(`backup ${name}: snapshot and archive`);
    try {
      report.archive = await createBackupArchive({
        dbPath: opts.dbPath ?? PATHS.dbFile,
        dataFolder: opts.dataFolder ?? PATHS.dataFolder,
        scope: backupScope(cfg),
        format: b.format,
        ...(b.password ? { password: b.password } : {}),
        out: createWriteStream(staged, { mode: 0o600 }),
        tmpDir,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      progress(`backup ${name}: ${report.archive.files} files, ${report.archive.bytes} bytes`);
    } catch (err) {
      report.error = `archive: ${errorMessage(err)}`;
    }
    if (report.archive) {
      const ctx = rcloneContext(cfg, opts.rcloneBin);
      for (const dest of b.remotes) {
        const d: DestinationReport = { destination: dest, ok: false };
        report.destinations.push(d);
        try {
          progress(`backup ${name}: uploading to ${dest}`);
          const shipped = await shipArchive(ctx, staged, dest, name, opts.signal ? { signal: opts.signal } : {});
          Object.assign(d, { ok: true, bytes: shipped.bytes, ms: shipped.ms });
        } catch (err) {
          d.error = errorMessage(err);
          log.error({ destination: dest, err: d.error }, `backup ${name}: ${d.error}`);
          continue;
        }
        try {
          const r = await applyRetention(ctx, dest, { now: at, retentionDays: b.retentionDays, minKeep: b.minKeep }, opts.signal ? { signal: opts.signal } : {});
          d.retention = { deleted: r.delete, kept: r.keep.length, errors: r.errors };
          if (r.delete.length) log.info({ destination: dest, deleted: r.delete }, `backup retention: ${r.delete.length} old archives deleted from ${dest}`);
          for (const e of r.errors) log.warn({ destination: dest }, `backup retention: ${e}`);
        } catch (err) {
          d.retention = { deleted: [], kept: 0, errors: [errorMessage(err)] };
          log.warn({ destination: dest, err: errorMessage(err) }, `backup retention on ${dest} failed: ${errorMessage(err)}`);
        }
      }
      const failed = report.destinations.filter((d) => !d.ok);
      if (failed.length) report.error = `${failed.length} of ${b.remotes.length} destinations failed: ${failed.map((d) => d.error).join('; ')}`;
      else if (b.remotes.length === 0) report.error = 'no destinations (BACKUP_REMOTES is empty)';
      else report.ok = true;
    }
  } finally {
    await rm(staged, { force: true });
    await unlock();
  }
  report.ms = Date.now() - started;
  const summary = report.ok
    ? `${name}: ${report.archive!.bytes} bytes to ${report.destinations.length} destinations in ${Math.round(report.ms / 1000)} s`
    : `${name}: ${report.error}`;
  if (report.ok) log.info({ name, bytes: report.archive!.bytes, ms: report.ms }, `backup ${summary}`);
  else log.error({ name, ms: report.ms }, `backup failed: ${summary}`);
  report.notification = await notify(cfg.notification, report.ok ? 'backup_success' : 'backup_failure', summary);
  return report;
}
