import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/config.ts';
import { errorMessage } from '../errors.ts';
import { scopeOf, type Scope } from '../files/scope.ts';
import { log } from '../log.ts';
import { notify, type NotifyResult } from '../notify/notify.ts';
import { PATHS } from '../paths.ts';
import { createBackupArchive, type ArchiveReport } from './archive.ts';
import { applyRetention, openUpload, rcloneContext } from './destinations.ts';
import { FanOut } from './fanout.ts';
import { archiveName } from './retention.ts';

export interface BackupOptions {
  dbPath?: string;
  dataFolder?: string;
  /** Where the DB snapshot is staged (default /var/lib/vwstream/tmp); the archive is streamed. */
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
 * The archive is produced once and streamed to every destination at the same time
 * (rclone rcat each; nothing staged but the DB snapshot). A destination that fails is
 * dropped and named, the others go on; retention runs on each that received it.
 */
async function produceAndShip(cfg: Config, opts: BackupOptions, name: string, tmpDir: string, report: BackupReport, progress: (line: string) => void): Promise<void> {
  const b = cfg.backup;
  const ctx = rcloneContext(cfg, opts.rcloneBin);
  const uploads = b.remotes.map((dest) => openUpload(ctx, dest, name));
  const fan = new FanOut(uploads.map((u) => ({ name: u.destination, stream: u.stdin, gone: u.exited })));
  progress(`backup ${name}: snapshot, then streaming to ${b.remotes.join(', ')}`);
  // Abandoned (shutdown budget spent): rclone stops at once; what landed is removed below.
  const stopUploads = (): void => { for (const u of uploads) u.kill(); };
  opts.signal?.addEventListener('abort', stopUploads, { once: true });
  try {
    await shipAll();
  } finally {
    opts.signal?.removeEventListener('abort', stopUploads);
  }
  if (opts.signal?.aborted && !report.ok) {
    report.error = `abandoned: ${errorMessage(opts.signal.reason)}`;
  }

  async function shipAll(): Promise<void> {
    try {
      report.archive = await createBackupArchive({
        dbPath: opts.dbPath ?? PATHS.dbFile,
        dataFolder: opts.dataFolder ?? PATHS.dataFolder,
        scope: backupScope(cfg),
        format: b.format,
        ...(b.password ? { password: b.password } : {}),
        out: fan,
        tmpDir,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      progress(`backup ${name}: ${report.archive.files} files, ${report.archive.bytes} bytes`);
      if (report.archive.skipped.length) progress(`backup ${name}: left out ${report.archive.skipped.length} links or special files (see the journal)`);
    } catch (err) {
      await Promise.all(uploads.map((u) => u.abort()));
      const dropped = fan.failures;
      report.error = dropped.length === uploads.length
        ? `every destination failed: ${dropped.map((f) => `${f.name}: ${f.error}`).join('; ')}`
        : `archive: ${errorMessage(err)}`;
      for (const u of uploads) {
        const f = dropped.find((x) => x.name === u.destination);
        report.destinations.push({ destination: u.destination, ok: false, error: f ? `${u.destination}: ${f.error}` : 'not sent (the archive failed)' });
      }
      return;
    }
    for (const u of uploads) {
      const dest = u.destination;
      const d: DestinationReport = { destination: dest, ok: false };
      report.destinations.push(d);
      try {
        const shipped = await u.finish(report.archive.bytes);
        Object.assign(d, { ok: true, bytes: shipped.bytes, ms: shipped.ms });
        progress(`backup ${name}: ${dest} holds it`);
        // An incomplete archive never makes an older complete one expire.
        if (report.archive.unreadable.length) continue;
      } catch (err) {
        d.error = errorMessage(err);
        log.error({ destination: dest, err: d.error }, `backup ${name}: ${d.error}`);
        await u.abort();
        continue;
      }
      try {
        const r = await applyRetention(ctx, dest, { now: new Date(Date.parse(report.startedAt)), retentionDays: b.retentionDays, minKeep: b.minKeep }, opts.signal ? { signal: opts.signal } : {});
        d.retention = { deleted: r.delete, kept: r.keep.length, errors: r.errors };
        if (r.delete.length) log.info({ destination: dest, deleted: r.delete }, `backup retention: ${r.delete.length} old archives deleted from ${dest}`);
        for (const e of r.errors) log.warn({ destination: dest }, `backup retention: ${e}`);
      } catch (err) {
        d.retention = { deleted: [], kept: 0, errors: [errorMessage(err)] };
        log.warn({ destination: dest, err: errorMessage(err) }, `backup retention on ${dest} failed: ${errorMessage(err)}`);
      }
    }
    const failed = report.destinations.filter((d) => !d.ok);
    const unreadable = report.archive.unreadable;
    if (failed.length) report.error = `${failed.length} of ${b.remotes.length} destinations failed: ${failed.map((d) => d.error).join('; ')}`;
    else if (unreadable.length) {
      report.error = `incomplete: ${unreadable.length} paths of the data folder could not be read (${unreadable.slice(0, 3).map((u) => u.rel).join(', ')}${unreadable.length > 3 ? ', …' : ''}); shipped without them, retention not applied`;
    } else report.ok = true;
  }
}

/**
 * A backup run (contract behaviour 7): snapshot + files → archive streamed to
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
  const report: BackupReport = { ok: false, name, startedAt: at.toISOString(), ms: 0, archive: null, destinations: [], notification: { sent: false, event: 'backup_failure', ms: 0 } };
  try {
    log.info({ name, destinations: b.remotes.length }, `backup ${name}: started`);
    if (b.remotes.length === 0) {
      report.error = 'no destinations (BACKUP_REMOTES is empty)';
    } else {
      await produceAndShip(cfg, opts, name, tmpDir, report, progress);
    }
  } finally {
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
