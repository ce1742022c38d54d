import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, open, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { AgentError, errorMessage } from '../errors.ts';
import type { Scope } from '../files/scope.ts';
import { log } from '../log.ts';
import { openReadNoFollow, UnsafePathError, walkNoFollow, type SkipKind, type WalkEntry } from '../safe-fs.ts';
import { createEncryptStream } from './encrypt.ts';
import type { ArchiveFormat } from './retention.ts';

/** The database's name inside the archive (as in Vaultwarden's data folder). */
export const ARCHIVE_DB_NAME = 'db.sqlite3';

/**
 * A consistent copy of a live database with VACUUM INTO, on a read-only connection: it
 * works while Vaultwarden writes and Litestream holds its read transaction (WAL mode),
 * includes the WAL's committed pages, and never checkpoints or truncates the WAL (a
 * read-only connection cannot), so Litestream's position is untouched.
 * `outPath` must not exist.
 */
export function snapshotDatabase(dbPath: string, outPath: string, busyTimeoutMs = 30_000): void {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
    db.prepare('VACUUM INTO ?').run(outPath);
  } finally {
    db.close();
  }
}

/** PRAGMA integrity_check of a database file: 'ok' or the first problems found. */
export function integrityCheck(path: string): string {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { readOnly: true });
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join('; ').slice(0, 500);
  } catch (err) {
    return (err as Error).message || 'integrity_check failed';
  } finally {
    db?.close();
  }
}

export interface ArchiveOptions {
  /** The live database (Vaultwarden's db.sqlite3). */
  dbPath: string;
  /** Vaultwarden's data folder; the files of `scope` are read from here. */
  dataFolder: string;
  scope: Scope;
  format: ArchiveFormat;
  /** Non-empty: encrypt (openssl enc -aes-256-cbc -pbkdf2 compatible). */
  password?: string;
  /** Where the archive bytes go (a file, rclone rcat's stdin, …). Ended when done. */
  out: Writable;
  /** Where the DB snapshot is staged (the only temporary copy); 0700 subdirectory. */
  tmpDir: string;
  signal?: AbortSignal;
  /**
   * The service user's uid: a file with several hard links owned by someone else is
   * left out (it may be a protected file linked in). Default: the data folder's owner.
   */
  ownerUid?: number;
}

/** What a backup left out of the data folder, and why. */
export interface ArchiveSkip { rel: string; kind: SkipKind }
export interface ArchiveUnreadable { rel: string; error: string }

export interface ArchiveReport {
  /** Bytes written to `out`. */
  bytes: number;
  /** Entries in the archive, the database included. */
  files: number;
  /** Size of the database snapshot. */
  dbBytes: number;
  /** Sum of the data folder files' sizes. */
  fileBytes: number;
  /** sha256 of the bytes written to `out`. */
  sha256: string;
  encrypted: boolean;
  /** Links and special files that were not followed nor archived (one warning each). */
  skipped: ArchiveSkip[];
  /** Folders or files that could not be read: the archive is incomplete. */
  unreadable: ArchiveUnreadable[];
}

/** Counts and hashes what passes through. */
function meter(): Transform & { bytes: number; hash: ReturnType<typeof createHash> } {
  const hash = createHash('sha256');
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      hash.update(chunk);
      (t as Transform & { bytes: number }).bytes += chunk.length;
      cb(null, chunk);
    },
  }) as Transform & { bytes: number; hash: ReturnType<typeof createHash> };
  t.bytes = 0;
  t.hash = hash;
  return t;
}

type Entry = ReturnType<ReturnType<typeof tar.pack>['entry']>;

/**
 * Writes an open file's first `size` bytes into a tar entry, honouring backpressure. A
 * file that shrank meanwhile is padded with zeros (tar needs exactly `size` bytes).
 */
async function streamInto(entry: Entry, fh: FileHandle, size: number, signal?: AbortSignal): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    entry.on('error', reject);
    entry.on('close', () => resolve());
    entry.on('finish', () => resolve());
  });
  done.catch(() => undefined); // a failure while still writing is thrown by the loop below
  let written = 0;
  if (size > 0) {
    for await (const chunk of fh.createReadStream({ start: 0, end: size - 1, autoClose: false })) {
      signal?.throwIfAborted();
      written += (chunk as Buffer).length;
      if (!entry.write(chunk as Buffer)) await once(entry as unknown as NodeJS.EventEmitter, 'drain');
    }
    if (written < size) entry.write(Buffer.alloc(size - written));
  }
  (entry as unknown as { end(): void }).end();
  await done;
}

const SKIP_WHY: Record<SkipKind, string> = {
  symlink: 'a symbolic link',
  fifo: 'a FIFO',
  socket: 'a socket',
  'block-device': 'a block device',
  'char-device': 'a character device',
  hardlink: 'a hard link to a file of another owner',
  other: 'not a regular file',
};

/** One warning per entry a backup leaves out: the journal names it and says why. */
export function warnSkipped(what: string, rel: string, kind: SkipKind): void {
  log.warn({ path: rel, kind }, `${what}: left out ${rel}: ${SKIP_WHY[kind]} in the data folder (not followed)`);
}

/**
 * Streams a backup archive to `opts.out`: a VACUUM INTO snapshot of the database (checked
 * with PRAGMA integrity_check first; a failing snapshot throws and nothing is shipped
 * beyond what was already streamed — callers write to a temp file or abort the upload)
 * plus the data folder's files in `scope`, as tar → gzip (tar.gz) → encryption (password).
 * Only the database snapshot is staged on disk. The data folder is walked and read
 * without following links (safe-fs): links and special files are left out with one
 * warning each (`skipped`); folders or files that cannot be read are listed in
 * `unreadable` (logged as errors) and the archive is still produced from the rest.
 */
export async function createBackupArchive(opts: ArchiveOptions): Promise<ArchiveReport> {
  const stage = await mkdtemp(join(opts.tmpDir, 'backup-'));
  try {
    const snap = join(stage, ARCHIVE_DB_NAME);
    try {
      snapshotDatabase(opts.dbPath, snap);
    } catch (err) {
      throw new AgentError(`backup: snapshot of ${opts.dbPath} failed: ${(err as Error).message}`, { cause: err });
    }
    const integrity = integrityCheck(snap);
    if (integrity !== 'ok') {
      throw new AgentError(`backup: the database snapshot fails PRAGMA integrity_check (${integrity}); nothing shipped`, {
        hint: `check ${opts.dbPath} with sqlite3 "PRAGMA integrity_check"`,
      });
    }
    opts.signal?.throwIfAborted();
    const dbSt = await stat(snap);
    const skipped: ArchiveSkip[] = [];
    const unreadable: ArchiveUnreadable[] = [];
    const skip = (rel: string, kind: SkipKind): void => {
      skipped.push({ rel, kind });
      warnSkipped('backup', rel, kind);
    };
    const cannotRead = (rel: string, err: unknown): void => {
      const code = (err as NodeJS.ErrnoException).code;
      const error = err instanceof UnsafePathError ? err.message : `${code ?? 'error'}: ${errorMessage(err)}`;
      unreadable.push({ rel, error });
      log.error({ path: rel, errno: code }, `backup: cannot read ${rel} (${error}); this backup is incomplete`);
    };
    const ownerUid = opts.ownerUid ?? (await stat(opts.dataFolder)).uid;
    const files: WalkEntry[] = [];
    for await (const e of walkNoFollow(opts.dataFolder, opts.scope.dirs, { rootFiles: opts.scope.rootFiles, onSkip: skip, onError: cannotRead, ownerUid })) files.push(e);
    files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));

    const pack = tar.pack();
    const m = meter();
    const stages: NodeJS.ReadWriteStream[] = [];
    if (opts.format === 'tar.gz') stages.push(createGzip());
    const encrypted = Boolean(opts.password);
    if (opts.password) stages.push(createEncryptStream(opts.password));

    let fileBytes = 0;
    let count = 0;
    const produce = async () => {
      const mtime = new Date();
      const dbFh = await open(snap, 'r');
      try {
        await streamInto(pack.entry({ name: ARCHIVE_DB_NAME, size: dbSt.size, mode: 0o600, mtime, type: 'file' }), dbFh, dbSt.size, opts.signal);
      } finally {
        await dbFh.close();
      }
      count++;
      for (const f of files) {
        opts.signal?.throwIfAborted();
        let fh: FileHandle;
        try {
          // Reached again without following a link (it may have been replaced since the walk).
          fh = await openReadNoFollow(opts.dataFolder, f.rel);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed since the walk: not part of this backup
          if (err instanceof UnsafePathError && err.reason === 'symlink') { skip(f.rel, 'symlink'); continue; }
          cannotRead(f.rel, err);
          continue;
        }
        try {
          const st = await fh.stat();
          if (st.nlink > 1 && st.uid !== ownerUid) { skip(f.rel, 'hardlink'); continue; }
          await streamInto(pack.entry({ name: f.rel, size: st.size, mode: st.mode & 0o7777, mtime: st.mtime, type: 'file' }), fh, st.size, opts.signal);
          fileBytes += st.size;
          count++;
        } finally {
          await fh.close();
        }
      }
      pack.finalize();
    };
    const producing = produce().catch((err: Error) => { pack.destroy(err); throw err; });
    const piping = (pipeline as (...s: unknown[]) => Promise<void>)(pack, ...stages, m, opts.out, ...(opts.signal ? [{ signal: opts.signal }] : []))
      .catch((err: Error) => { pack.destroy(err); throw err; });
    await Promise.all([producing, piping]);
    return { bytes: m.bytes, files: count, dbBytes: dbSt.size, fileBytes, sha256: m.hash.digest('hex'), encrypted, skipped, unreadable };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
