import { randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/**
 * File access inside a folder that belongs to a less trusted user (Vaultwarden's data
 * folder: its network-facing process may plant symlinks, FIFOs or hard links there).
 * Nothing here follows a symlink below `root`:
 *
 * - directories are opened one by one, each relative to the descriptor of its parent
 *   (through /proc/self/fd/N, Linux's path form of openat), with O_NOFOLLOW|O_DIRECTORY,
 *   so a component swapped for a link after a check is refused by the kernel (ELOOP or
 *   ENOTDIR), not followed;
 * - files are opened with O_NOFOLLOW|O_NONBLOCK (a FIFO never blocks) and fstat'd: only
 *   regular files are read;
 * - writes go to a new temporary name (O_CREAT|O_EXCL|O_NOFOLLOW) inside a directory
 *   checked to be a real directory owned by the service user (or root), are chowned and
 *   chmod'ed on the descriptor, fsynced, renamed into place, and the directory fsynced
 *   (or, with a {@link SyncBatch}, all made durable at once by its flush()).
 *
 * `root` itself and its ancestors are trusted (e.g. /var/lib, owned by root). Relative
 * paths use '/' and must be clean (see {@link checkRel}).
 */

export interface Ids { uid: number; gid: number }

/** What a walk skipped, reported once per entry. */
export type SkipKind = 'symlink' | 'fifo' | 'socket' | 'block-device' | 'char-device' | 'hardlink' | 'other';

/** Prefix of the temporary names written here; walks never report them. */
export const TMP_PREFIX = '.vws-';

export type UnsafeReason = 'bad-path' | 'symlink' | 'not-a-directory' | 'not-a-file' | 'owner';

/** Refused: a path below the root is a link, of the wrong type, or owned by someone else. */
export class UnsafePathError extends Error {
  readonly code = 'EUNSAFE';
  /** The path (root joined with the relative path) that was refused. */
  readonly path: string;
  readonly reason: UnsafeReason;
  constructor(path: string, reason: UnsafeReason, detail: string) {
    super(`${path}: ${detail}; refusing to follow or write through it`);
    this.name = 'UnsafePathError';
    this.path = path;
    this.reason = reason;
  }
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK } = constants;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;

/** The path of an entry of an open directory, resolved by the kernel from the descriptor. */
function at(dir: FileHandle, name: string): string {
  return `/proc/self/fd/${dir.fd}/${name}`;
}

function join(root: string, rel: string): string {
  return rel === '' ? root : `${root.replace(/\/+$/, '')}/${rel}`;
}

/**
 * Splits a relative path into its names; throws UnsafePathError for '', absolute paths,
 * empty, '.' or '..' segments, a trailing '/', backslashes and NUL.
 */
export function checkRel(root: string, rel: string, allowEmpty = false): string[] {
  if (rel === '' && allowEmpty) return [];
  if (!isSafeKey(rel)) throw new UnsafePathError(join(root, JSON.stringify(rel)), 'bad-path', 'not a clean relative path');
  return rel.split('/');
}

/**
 * True when an object key (or archive entry name) is a clean relative path: not empty,
 * not absolute, no empty/'.'/'..' segments, no trailing '/' (a folder marker as S3
 * consoles create), no backslash, NUL or other control character.
 */
export function isSafeKey(key: string): boolean {
  if (key === '' || key.startsWith('/') || key.endsWith('/')) return false;
  // eslint-disable-next-line no-control-regex
  if (/[\\\u0000-\u001f\u007f]/.test(key)) return false;
  return key.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

function kindOf(st: { isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean }): SkipKind {
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isBlockDevice()) return 'block-device';
  if (st.isCharacterDevice()) return 'char-device';
  return 'other';
}

/**
 * Opens `path` as a directory without following a link at its last component. The kernel
 * refuses a link (O_NOFOLLOW|O_DIRECTORY gives ENOTDIR or ELOOP); lstat only names why.
 */
async function openDirAt(path: string, shown: string): Promise<FileHandle> {
  try {
    return await open(path, DIR_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
    const st = await lstat(path).catch(() => undefined);
    if (code === 'ELOOP' || st?.isSymbolicLink()) throw new UnsafePathError(shown, 'symlink', 'is a symbolic link');
    throw new UnsafePathError(shown, 'not-a-directory', `is not a directory${st ? ` (${st.isFile() ? 'a file' : kindOf(st)})` : ''}`);
  }
}

/** Opens `name` in `parent` as a directory without following a link; refusals are typed. */
function openChildDir(parent: FileHandle, name: string, shown: string): Promise<FileHandle> {
  return openDirAt(at(parent, name), shown);
}

function openRoot(root: string): Promise<FileHandle> {
  return openDirAt(root, root);
}

export interface OpenDirOptions {
  /** Create missing directories, owned by these ids (requires root for another uid). */
  create?: { ids: Ids; mode: number };
  /** Every directory from root down must be owned by one of these uids. */
  owners?: number[];
  /** A directory created here is made durable by this batch's flush(), not by an fsync of its parent now. */
  batch?: SyncBatch;
}

/**
 * Durability settled at one point instead of at every write. A restore that writes
 * hundreds of files passes one batch to each {@link writeFileInto}: each file is still
 * written under a temporary name and renamed into place, but neither the file nor its
 * directory is fsynced then (three fsyncs per file in a new directory: most of a file
 * restore's time). flush() then runs one syncfs(2) on the file system of every root
 * written to (`sync -f ROOT`, coreutils: Node has no syncfs), which writes back every
 * dirty page and inode of that file system and commits its journal: every file's data,
 * every rename and every mkdir of the batch included, and it reports a writeback error
 * of any of them (Linux >= 5.8). Measured on a new host's restore (300 files, each in a
 * folder of its own): the file phase went from 4.5 s to 3.2-3.5 s; one fsync per file
 * and folder at flush instead (each reopened through the checks above) was slower than
 * the one syncfs. Its cost: it also writes back whatever else on that file system is
 * dirty (the database just restored beside it, mostly). The caller must call flush() before it records the
 * writes as done; until then a crash may leave a renamed file empty or short, so a
 * restore keeps its pending marker (and the manifest that would vouch for the files)
 * until after the flush, and compares every file by content when it runs again.
 */
export class SyncBatch {
  private readonly roots = new Set<string>();
  private readonly syncfs: (root: string) => Promise<void>;

  /** `syncfs`: runs syncfs(2) on the file system holding `root` (injected: this module spawns nothing). */
  constructor(syncfs: (root: string) => Promise<void>) {
    this.syncfs = syncfs;
  }

  /** Something below `root` was written and awaits the flush. */
  note(root: string): void {
    this.roots.add(root);
  }

  /** Roots written to since the last flush. */
  get pending(): number {
    return this.roots.size;
  }

  /** Makes every write noted so far durable; throws (and keeps them pending) when that fails. */
  async flush(): Promise<void> {
    for (const root of [...this.roots]) {
      await this.syncfs(root);
      this.roots.delete(root);
    }
  }
}

/**
 * Opens `root/relDir` directory by directory (see the module comment) and returns the
 * last one's handle; the caller closes it. Throws UnsafePathError when a component is a
 * link, not a directory, or (with `owners`) owned by another uid; ENOENT when one is
 * missing and `create` is not given.
 */
export async function openDirNoFollow(root: string, relDir: string, opts: OpenDirOptions = {}): Promise<FileHandle> {
  const names = checkRel(root, relDir, true);
  let dir = await openRoot(root);
  try {
    await checkOwner(dir, root, opts.owners);
    let shown = root;
    for (const name of names) {
      shown = `${shown}/${name}`;
      let child: FileHandle;
      try {
        child = await openChildDir(dir, name, shown);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !opts.create) throw err;
        let made = false;
        await mkdir(at(dir, name), { mode: 0o700 }).then(() => { made = true; }, (e: NodeJS.ErrnoException) => { if (e.code !== 'EEXIST') throw e; });
        child = await openChildDir(dir, name, shown);
        if (made) {
          try {
            // Ours: hand it to the service user (on the descriptor: a swap in between is refused above).
            await child.chown(opts.create.ids.uid, opts.create.ids.gid);
            await child.chmod(opts.create.mode);
            if (opts.batch) opts.batch.note(root);
            else await dir.sync();
          } catch (e) {
            await child.close().catch(() => undefined);
            throw e;
          }
        }
      }
      const parent = dir;
      dir = child;
      await parent.close();
      await checkOwner(dir, shown, opts.owners);
    }
    return dir;
  } catch (err) {
    await dir.close().catch(() => undefined);
    throw err;
  }
}

async function checkOwner(dir: FileHandle, shown: string, owners: number[] | undefined): Promise<void> {
  if (!owners) return;
  const st = await dir.stat();
  if (!owners.includes(st.uid)) throw new UnsafePathError(shown, 'owner', `is owned by uid ${st.uid}, expected ${owners.join(' or ')}`);
}

/** The uids a written-to directory may belong to: the service user, or root. */
function writeOwners(ids: Ids): number[] {
  return [...new Set([ids.uid, 0])];
}

/**
 * Creates the missing directories of `root/relDir` as real directories owned by `ids`
 * with `mode`; refuses (UnsafePathError naming the path) when a component is a symlink,
 * not a directory, or owned by someone other than `ids.uid` or root.
 */
export async function ensureDirs(root: string, relDir: string, ids: Ids, mode = 0o700): Promise<void> {
  const dir = await openDirNoFollow(root, relDir, { create: { ids, mode }, owners: writeOwners(ids) });
  await dir.close();
}

export interface WalkEntry {
  /** Relative to the root, '/'-separated. */
  rel: string;
  size: number;
  mtimeMs: number;
  ino: number;
  dev: number;
  mode: number;
  uid: number;
}

export interface WalkOptions {
  /** A link, special file or foreign hard link that was not reported. */
  onSkip?: (rel: string, kind: SkipKind) => void;
  /**
   * A directory or entry that could not be read (EACCES, EIO, EMFILE, ENOTDIR for a
   * scanned folder that is a file, …). The walk goes on; the caller must treat its
   * listing as incomplete. An entry that vanished meanwhile (ENOENT) is not an error.
   */
  onError?: (rel: string, err: Error) => void;
  /** Regular files directly in the root whose names this accepts are reported too. */
  rootFiles?: (name: string) => boolean;
  /**
   * When set, a regular file with more than one hard link owned by another uid is
   * skipped ('hardlink'): it may be a protected file linked in.
   */
  ownerUid?: number;
}

/**
 * Regular files below `root/<each of relDirs>` (recursively) and, with `rootFiles`,
 * directly in root; never follows a link. A relDir that does not exist is empty; one
 * that is a link is skipped (onSkip); any other failure goes to onError, never
 * silently dropped. Temporary names ({@link TMP_PREFIX}) are not reported.
 */
export async function* walkNoFollow(root: string, relDirs: string[], opts: WalkOptions = {}): AsyncGenerator<WalkEntry> {
  const onError = opts.onError ?? ((rel: string, err: Error) => { throw Object.assign(err, { rel }); });
  const onSkip = opts.onSkip ?? (() => undefined);
  let top: FileHandle;
  try {
    top = await openRoot(root);
  } catch (err) {
    onError('', err as Error);
    return;
  }
  try {
    if (opts.rootFiles) yield* scanDir(top, '', opts.rootFiles, false, opts, onSkip, onError);
    for (const relDir of relDirs) {
      let names: string[];
      try {
        names = checkRel(root, relDir);
      } catch (err) {
        onError(relDir, err as Error);
        continue;
      }
      let dir: FileHandle | undefined = top;
      let rel = '';
      for (const name of names) {
        rel = rel ? `${rel}/${name}` : name;
        const parent: FileHandle = dir!;
        try {
          dir = await openChildDir(parent, name, join(root, rel));
        } catch (err) {
          dir = undefined;
          if (err instanceof UnsafePathError && err.reason === 'symlink') onSkip(rel, 'symlink');
          else if ((err as NodeJS.ErrnoException).code !== 'ENOENT') onError(rel, err as Error); // ENOENT: not there yet, empty
        } finally {
          if (parent !== top) await parent.close();
        }
        if (!dir) break;
      }
      if (!dir) continue;
      try {
        yield* scanDir(dir, relDir, () => true, true, opts, onSkip, onError);
      } finally {
        if (dir !== top) await dir.close();
      }
    }
  } finally {
    await top.close();
  }
}

async function* scanDir(
  dir: FileHandle, rel: string, accept: (name: string) => boolean, recurse: boolean, opts: WalkOptions,
  onSkip: (rel: string, kind: SkipKind) => void, onError: (rel: string, err: Error) => void,
): AsyncGenerator<WalkEntry> {
  let names: string[];
  try {
    names = (await readdir(`/proc/self/fd/${dir.fd}`)).sort();
  } catch (err) {
    onError(rel, err as Error);
    return;
  }
  for (const name of names) {
    if (name.startsWith(TMP_PREFIX)) continue;
    const r = rel ? `${rel}/${name}` : name;
    let st;
    try {
      st = await lstat(at(dir, name), { bigint: false });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') onError(r, err as Error);
      continue;
    }
    if (st.isDirectory()) {
      if (!recurse) continue;
      let child: FileHandle;
      try {
        child = await openChildDir(dir, name, r);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'ENOENT') continue;
        // Swapped for a link between lstat and open: the kernel refused it.
        if (e instanceof UnsafePathError && e.reason === 'symlink') onSkip(r, 'symlink');
        else onError(r, e);
        continue;
      }
      try {
        yield* scanDir(child, r, accept, true, opts, onSkip, onError);
      } finally {
        await child.close();
      }
    } else if (st.isFile()) {
      if (!accept(name)) continue;
      if (opts.ownerUid !== undefined && st.nlink > 1 && st.uid !== opts.ownerUid) { onSkip(r, 'hardlink'); continue; }
      yield { rel: r, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev, mode: st.mode, uid: st.uid };
    } else if (accept(name)) {
      onSkip(r, kindOf(st));
    }
  }
}

/**
 * Opens `root/rel` for reading: each directory opened without following links, the file
 * with O_NOFOLLOW|O_NONBLOCK, then fstat'd: a regular file (and, with `expect`, the same
 * dev/ino a walk reported). Throws UnsafePathError otherwise; the caller closes the handle.
 */
export async function openReadNoFollow(root: string, rel: string, expect?: { dev: number; ino: number }): Promise<FileHandle> {
  const names = checkRel(root, rel);
  const dir = await openDirNoFollow(root, names.slice(0, -1).join('/'));
  let fh: FileHandle;
  try {
    fh = await open(at(dir, names[names.length - 1]!), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafePathError(join(root, rel), 'symlink', 'is a symbolic link');
    throw err;
  } finally {
    await dir.close();
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new UnsafePathError(join(root, rel), 'not-a-file', `is not a regular file (${kindOf(st)})`);
    if (expect && (st.dev !== expect.dev || st.ino !== expect.ino)) throw new UnsafePathError(join(root, rel), 'not-a-file', 'was replaced since it was listed');
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

export type WriteSource = Buffer | string | Readable | { fromPath: string };

export interface WriteOptions {
  /** File mode, set on the descriptor (umask does not apply). */
  mode?: number;
  /** Mode of directories created on the way (default 0700). */
  dirMode?: number;
  mtime?: Date;
  /** No fsync of the file nor of its directory now: `batch.flush()` makes the write durable. */
  batch?: SyncBatch;
}

/** Stream chunks are gathered up to this many bytes into one writev (a download comes in 16-64 KiB pieces). */
const WRITE_GATHER = 1024 * 1024;

/** Writes all of `bufs` at the descriptor's position (one writev; a short write goes on with the rest). */
async function writeAll(fh: FileHandle, bufs: Buffer[]): Promise<void> {
  let { bytesWritten } = await fh.writev(bufs);
  for (const b of bufs) {
    if (bytesWritten >= b.length) { bytesWritten -= b.length; continue; }
    for (let off = bytesWritten; off < b.length;) off += (await fh.write(b, off, b.length - off)).bytesWritten;
    bytesWritten = 0;
  }
}

/**
 * Writes `root/rel` safely: the parent directories are verified (and created) as by
 * {@link ensureDirs}; the content goes to a new temporary name in that directory
 * (O_CREAT|O_EXCL|O_NOFOLLOW), is chowned to `ids` and chmod'ed on the descriptor,
 * fsynced, renamed over `rel` (a link there is replaced, never followed), and the
 * directory is fsynced; with `batch`, both fsyncs are left to its flush(). `{ fromPath }`
 * reads a file of the caller's (outside root). Returns the bytes written.
 */
export async function writeFileInto(root: string, rel: string, source: WriteSource, ids: Ids, opts: WriteOptions = {}): Promise<number> {
  const names = checkRel(root, rel);
  const name = names[names.length - 1]!;
  const batch = opts.batch;
  const dir = await openDirNoFollow(root, names.slice(0, -1).join('/'), { create: { ids, mode: opts.dirMode ?? 0o700 }, owners: writeOwners(ids), ...(batch ? { batch } : {}) });
  try {
    const tmp = `${TMP_PREFIX}${randomBytes(6).toString('hex')}-${name}`.slice(0, 255);
    const fh = await open(at(dir, tmp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    let bytes = 0;
    try {
      await fh.chown(ids.uid, ids.gid);
      await fh.chmod(opts.mode ?? 0o600);
      if (Buffer.isBuffer(source) || typeof source === 'string') {
        const buf = Buffer.isBuffer(source) ? source : Buffer.from(source);
        await fh.writeFile(buf);
        bytes = buf.length;
      } else {
        const input = source instanceof Readable ? source : createReadStream(source.fromPath, { highWaterMark: WRITE_GATHER });
        let gathered: Buffer[] = [];
        let size = 0;
        for await (const chunk of input as AsyncIterable<Buffer | string>) {
          const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          gathered.push(buf);
          size += buf.length;
          bytes += buf.length;
          if (size >= WRITE_GATHER) {
            await writeAll(fh, gathered);
            gathered = [];
            size = 0;
          }
        }
        if (size) await writeAll(fh, gathered);
      }
      if (opts.mtime) await fh.utimes(opts.mtime, opts.mtime);
      if (batch) batch.note(root);
      else await fh.sync();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(at(dir, tmp)).catch(() => undefined);
      throw err;
    }
    await fh.close();
    try {
      await rename(at(dir, tmp), at(dir, name));
    } catch (err) {
      await unlink(at(dir, tmp)).catch(() => undefined);
      throw err;
    }
    if (!batch) await dir.sync();
    return bytes;
  } finally {
    await dir.close();
  }
}

/** The directory holding `root/rel`, opened without following links, and the entry's name; null when a folder on the way is missing. */
async function openParent(root: string, rel: string): Promise<{ dir: FileHandle; name: string } | null> {
  const names = checkRel(root, rel);
  try {
    return { dir: await openDirNoFollow(root, names.slice(0, -1).join('/')), name: names[names.length - 1]! };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Moves the entry `root/rel` (whatever it is: a link is moved as the link) to `dest`, a
 * path outside root; the parent directories below root are opened without following
 * links. Returns false when there was nothing. Across file systems only a regular file
 * is copied (then removed); anything else throws.
 */
export async function moveOut(root: string, rel: string, dest: string): Promise<boolean> {
  const parent = await openParent(root, rel);
  if (!parent) return false;
  const { dir, name } = parent;
  try {
    const src = at(dir, name);
    try {
      await rename(src, dest);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (code !== 'EXDEV') throw err;
      const fh = await openReadNoFollow(root, rel);
      try {
        const out = await open(dest, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of fh.createReadStream({ autoClose: false })) {
            const buf = chunk as Buffer;
            for (let off = 0; off < buf.length;) off += (await out.write(buf, off, buf.length - off)).bytesWritten;
          }
          await out.sync();
        } finally {
          await out.close();
        }
      } finally {
        await fh.close();
      }
      await unlink(src);
    }
    await dir.sync();
    return true;
  } finally {
    await dir.close();
  }
}

/**
 * Removes the entry `root/rel` (a link is removed as the link) after opening its parent
 * directories without following links. Returns false when there was nothing.
 */
export async function unlinkIn(root: string, rel: string): Promise<boolean> {
  const parent = await openParent(root, rel);
  if (!parent) return false;
  const { dir, name } = parent;
  try {
    await unlink(at(dir, name));
    await dir.sync();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  } finally {
    await dir.close();
  }
}
