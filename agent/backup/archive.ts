import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { AgentError } from '../errors.ts';
import { scanLocal } from '../files/mirror.ts';
import type { Scope } from '../files/scope.ts';
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
}

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

/** Writes a file's first `size` bytes into a tar entry, honouring backpressure. */
async function streamInto(entry: Entry, path: string, size: number, signal?: AbortSignal): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    entry.on('error', reject);
    entry.on('close', () => resolve());
    entry.on('finish', () => resolve());
  });
  done.catch(() => undefined); // a failure while still writing is thrown by the loop below
  if (size > 0) {
    const fh = await open(path, 'r');
    try {
      for await (const chunk of fh.createReadStream({ start: 0, end: size - 1, autoClose: false })) {
        signal?.throwIfAborted();
        if (!entry.write(chunk as Buffer)) await once(entry as unknown as NodeJS.EventEmitter, 'drain');
      }
    } finally {
      await fh.close();
    }
  }
  (entry as unknown as { end(): void }).end();
  await done;
}

/**
 * Streams a backup archive to `opts.out`: a VACUUM INTO snapshot of the database (checked
 * with PRAGMA integrity_check first; a failing snapshot throws and nothing is shipped
 * beyond what was already streamed — callers write to a temp file or abort the upload)
 * plus the data folder's files in `scope`, as tar → gzip (tar.gz) → encryption (password).
 * Only the database snapshot is staged on disk.
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
    const files = [...(await scanLocal(opts.dataFolder, opts.scope))].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

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
      await streamInto(pack.entry({ name: ARCHIVE_DB_NAME, size: dbSt.size, mode: 0o600, mtime, type: 'file' }), snap, dbSt.size, opts.signal);
      count++;
      for (const [rel] of files) {
        opts.signal?.throwIfAborted();
        const path = join(opts.dataFolder, rel);
        const st = await stat(path).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return undefined; throw err; });
        if (!st?.isFile()) continue; // removed since the scan: not part of this backup
        await streamInto(pack.entry({ name: rel, size: st.size, mode: st.mode & 0o7777, mtime: st.mtime, type: 'file' }), path, st.size, opts.signal);
        fileBytes += st.size;
        count++;
      }
      pack.finalize();
    };
    const producing = produce().catch((err: Error) => { pack.destroy(err); throw err; });
    const piping = (pipeline as (...s: unknown[]) => Promise<void>)(pack, ...stages, m, opts.out, ...(opts.signal ? [{ signal: opts.signal }] : []))
      .catch((err: Error) => { pack.destroy(err); throw err; });
    await Promise.all([producing, piping]);
    return { bytes: m.bytes, files: count, dbBytes: dbSt.size, fileBytes, sha256: m.hash.digest('hex'), encrypted };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
