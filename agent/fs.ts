/**
 * Durable file replacement. A rename is atomic but not durable: after a power loss the
 * directory may still name the old file, or name a new file whose data never reached
 * the disk. Every replace here is write temporary → fsync(file) → rename →
 * fsync(directory), and every move syncs the directories it changed.
 *
 * Ground floor: imports nothing of the agent's own.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { chmod, chown, copyFile, lstat, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

export interface Owner { uid: number; gid: number }
export interface WriteOptions {
  /** File mode of the result (default 0600: private). */
  mode?: number;
  /** chown the result (before it becomes visible under its name). */
  owner?: Owner;
}

/** fsync a directory, so that the entries created, renamed or removed in it survive a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsync a regular file's data and metadata (it must exist). */
export async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A name beside `path` for its temporary copy: hidden, unique per process and call. */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** mkdir -p that syncs the parent of every directory it creates. */
export async function mkdirDurable(dir: string, mode = 0o700): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode });
  if (created === undefined) return;
  // `created` is the first directory made; sync it and everything below, then its parent.
  for (let d = dir; ; d = dirname(d)) {
    await fsyncDir(dirname(d));
    if (d === created || d === dirname(d)) break;
  }
}

/**
 * Replaces `path` with `content` durably: a temporary file in the same directory (mode
 * `mode`, default 0600, owned by `owner` when given) is written and fsynced, renamed over
 * `path`, and the directory is fsynced. Readers see the old or the new file, never a part.
 */
export async function writeFileDurable(path: string, content: string | Uint8Array, opts: WriteOptions = {}): Promise<void> {
  const mode = opts.mode ?? 0o600;
  await mkdirDurable(dirname(path), 0o777); // a missing parent as mkdir -p makes it (umask applies)
  const tmp = tempNameFor(path);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      await fh.writeFile(content);
      await fh.chmod(mode); // the umask may have narrowed or the caller may want wider
      if (opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** The same, synchronously (for short critical sections under a lock). */
export function writeFileDurableSync(path: string, content: string, opts: WriteOptions = {}): void {
  const mode = opts.mode ?? 0o600;
  const tmp = tempNameFor(path);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      const buf = Buffer.from(content);
      for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try { unlinkSync(tmp); } catch { /* not created or already renamed */ }
    throw err;
  }
  fsyncDirSync(dirname(path));
}

/** `writeFileDurable` with mode 0600: the agent's generated configs, state and records. */
export async function writePrivateFile(path: string, content: string, owner?: Owner): Promise<void> {
  await writeFileDurable(path, content, owner ? { mode: 0o600, owner } : { mode: 0o600 });
}

/** Removes a file (missing is fine) and syncs its directory. */
export async function unlinkDurable(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** Copies a file or a directory tree, fsyncing every file and directory written. */
async function copyDurable(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  if (st.isDirectory()) {
    await mkdir(to, { mode: st.mode & 0o7777 });
    for (const name of await readdir(from)) await copyDurable(join(from, name), join(to, name));
    await fsyncDir(to);
  } else if (st.isFile()) {
    await copyFile(from, to, constants.COPYFILE_EXCL);
    await chmod(to, st.mode & 0o7777);
    await fsyncFile(to);
  } else {
    throw Object.assign(new Error(`not a regular file or directory: ${from}`), { code: 'EINVAL' });
  }
  await chown(to, st.uid, st.gid).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EPERM') throw err; });
}

/**
 * Moves a file or directory durably. A regular file's data is fsynced first (a file
 * another program wrote, e.g. Litestream's restore, may still be in the page cache), then
 * it is renamed and both directories are fsynced. Across filesystems (EXDEV) it is
 * copied under a temporary name with every file synced, renamed into place, the target
 * directory synced, and only then the source removed.
 */
export async function moveDurable(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  if (st.isFile()) await fsyncFile(from);
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    const tmp = tempNameFor(to);
    try {
      await copyDurable(from, tmp);
      await rename(tmp, to);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    await fsyncDir(dirname(to));
    await rm(from, { recursive: true, force: true });
    await fsyncDir(dirname(from));
    return;
  }
  await fsyncDir(dirname(to));
  if (dirname(from) !== dirname(to)) await fsyncDir(dirname(from));
}

/** Reads a file, or undefined when it does not exist (any other error is thrown). */
export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const inProcess = new Map<string, Promise<unknown>>();

/**
 * Runs `fn` holding an exclusive lock on `lockPath` against other processes (a POSIX
 * record lock, taken through SQLite's `BEGIN EXCLUSIVE` on an empty lock file: the kernel
 * releases it when its holder exits or dies, so there is no stale lock to detect) and
 * against other callers in this process (a queue: POSIX locks are per process).
 * `fn` runs synchronously while the lock is held, so a short read-modify-write cannot
 * interleave with anything. Waits up to `timeoutMs` for the lock.
 */
export async function withFileLock<T>(lockPath: string, fn: () => T, timeoutMs = 30_000): Promise<T> {
  const prev = inProcess.get(lockPath) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => withFileLockSync(lockPath, fn, timeoutMs));
  const tail = run.catch(() => undefined);
  inProcess.set(lockPath, tail);
  void tail.then(() => { if (inProcess.get(lockPath) === tail) inProcess.delete(lockPath); });
  return run;
}

function withFileLockSync<T>(lockPath: string, fn: () => T, timeoutMs: number): T {
  const db = new DatabaseSync(lockPath);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(timeoutMs))}`);
    try {
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      throw new Error(`could not lock ${lockPath} within ${timeoutMs} ms: ${(err as Error).message}`, { cause: err });
    }
    try {
      return fn();
    } finally {
      db.exec('ROLLBACK');
    }
  } finally {
    db.close();
  }
}
