import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rm, symlink, chmod } from 'node:fs/promises';
import { posix } from 'node:path';
import tar, { type Extract, type ExtractEvents, type Header } from 'tar-stream';
import { AgentError } from '../errors.ts';
import { log } from '../log.ts';

/**
 * Applies an image's layers (tar streams, in order) to a folder, keeping only what a
 * bare-metal Vaultwarden needs: the regular file `/vaultwarden` (written 0755) and the tree
 * `/web-vault/` (folders 0755, files 0644). Every other entry is drained unread.
 *
 * - Entry names lose leading `./` and `/`; a `..` component or a NUL refuses the image.
 * - Whiteouts work across layers as in overlayfs: `.wh.NAME` removes NAME (file or tree)
 *   from earlier layers, `DIR/.wh..wh..opq` removes what earlier layers put in DIR; what
 *   the same layer adds stays.
 * - Symlinks are kept inside web-vault only when their target stays inside web-vault
 *   (an absolute target is read from the image root and rewritten relative); others are
 *   skipped. Hard links are resolved by copying the file they name when it was extracted
 *   (kept) before; otherwise skipped.
 * - Nothing already in the folder is followed: an existing entry in the way is removed and
 *   files are created with O_CREAT|O_EXCL|O_NOFOLLOW; an entry below a symlink refuses the
 *   image.
 *
 * The folder is the caller's staging folder: after an error it may hold a partial tree,
 * and the caller removes it.
 */

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY, O_DIRECTORY } = constants;
const FILE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
const BINARY = 'vaultwarden';
const WEB = 'web-vault';
const OPAQUE = '.wh..wh..opq';

type Source = ExtractEvents['entry'][1];

export interface ExtractResult { files: number; bytes: number; skippedLinks: number }

type Kept = 'binary' | 'web' | false;

function kept(segs: string[]): Kept {
  if (segs.length === 1 && segs[0] === BINARY) return 'binary';
  if (segs[0] === WEB) return 'web';
  return false;
}

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

async function lstatOrUndefined(p: string): Promise<import('node:fs').Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Splits an entry name into clean segments ([] for the root); undefined reason when fine. */
export function cleanEntryName(raw: string): { segs: string[]; reason?: string } {
  if (raw.includes('\0')) return { segs: [], reason: 'contains a NUL byte' };
  let n = raw;
  while (n.startsWith('./') || n.startsWith('/')) n = n.startsWith('/') ? n.slice(1) : n.slice(2);
  const segs = n.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) return { segs, reason: "has a '..' component" };
  return { segs };
}

export class ImageTree {
  readonly dir: string;
  private touched = new Set<string>();
  private layerName = '';
  private skippedLinks = 0;
  /** The error that stopped the current layer (the tar stream may only report "premature close"). */
  failure: AgentError | undefined;
  private pending: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    this.dir = dir.replace(/\/+$/, '') || '/';
  }

  private abs(segs: string[]): string {
    return segs.length ? `${this.dir}/${segs.join('/')}` : this.dir;
  }

  /**
   * A writable for one layer's uncompressed tar. `name` appears in errors, e.g.
   * "layer 3 of 7 (sha256:…)". It finishes when the tar has been applied.
   */
  layer(name: string): Extract {
    this.layerName = name;
    this.touched = new Set();
    this.failure = undefined;
    const extract = tar.extract();
    extract.on('entry', (h: Header, stream: Source, next: (err?: Error | null) => void) => {
      this.pending = this.entry(h, stream).then(() => next(), (err: unknown) => {
        stream.resume();
        const wrapped = this.wrap(err, h.name);
        this.failure ??= wrapped;
        next(wrapped);
      });
    });
    return extract;
  }

  /** Resolves when the entry being written is done (a destroyed tar stream does not wait for it). */
  async idle(): Promise<void> {
    await this.pending;
  }

  private wrap(err: unknown, entry: string): AgentError {
    if (err instanceof AgentError) return err;
    const code = errCode(err);
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new AgentError(`no space left on device writing ${this.dir} (${entry} in ${this.layerName}: ${code})`, { hint: 'free disk space and pull again', cause: err });
    }
    return new AgentError(`cannot extract ${JSON.stringify(entry)} of ${this.layerName} into ${this.dir}: ${(err as Error).message}`, { cause: err });
  }

  private refuse(entry: string, reason: string): AgentError {
    return new AgentError(`${this.layerName}: entry ${JSON.stringify(entry)} ${reason}; refusing the image`);
  }

  private async drain(stream: Source): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('error', reject);
      stream.resume();
    });
  }

  private async entry(h: Header, stream: Source): Promise<void> {
    const { segs, reason } = cleanEntryName(h.name);
    if (reason) throw this.refuse(h.name, reason);
    const base = segs[segs.length - 1] ?? '';
    if (base.startsWith('.wh.')) {
      const parent = segs.slice(0, -1);
      if (base === OPAQUE) {
        await this.opaque(parent);
      } else {
        const target = [...parent, base.slice(4)];
        if (kept(target) || (target.length === 1 && target[0] === WEB)) await this.removeLower(target);
      }
      return this.drain(stream);
    }
    const k = segs.length ? kept(segs) : false;
    if (!k) return this.drain(stream);
    const type = h.type ?? 'file';
    if (k === 'binary') {
      if (type === 'file' || type === 'contiguous-file') return this.writeFile(segs, stream, 0o755);
      if (type === 'link') return this.copyLink(segs, h, stream, 0o755);
      log.warn({ entry: h.name, type }, `image: /${BINARY} in ${this.layerName} is a ${type}, not a regular file; skipped`);
      return this.drain(stream);
    }
    switch (type) {
      case 'directory':
        await this.makeDir(segs);
        return this.drain(stream);
      case 'file':
      case 'contiguous-file':
        return this.writeFile(segs, stream, 0o644);
      case 'symlink':
        await this.makeSymlink(segs, h.linkname ?? '', h.name);
        return this.drain(stream);
      case 'link':
        return this.copyLink(segs, h, stream, 0o644);
      default:
        log.warn({ entry: h.name, type }, `image: ${h.name} in ${this.layerName} is a ${type}; skipped`);
        return this.drain(stream);
    }
  }

  /** Makes the parent folders of `segs` real folders (never through a symlink). */
  private async parents(segs: string[], entry: string): Promise<void> {
    for (let i = 1; i < segs.length; i++) {
      const p = segs.slice(0, i);
      const abs = this.abs(p);
      const st = await lstatOrUndefined(abs);
      if (st?.isSymbolicLink()) throw this.refuse(entry, `lies below the symlink ${p.join('/')}; refusing to write through it`);
      if (st && !st.isDirectory()) await rm(abs, { recursive: true, force: true });
      if (!st || !st.isDirectory()) {
        await mkdir(abs, { mode: 0o755 });
        await chmod(abs, 0o755);
      }
      this.touched.add(p.join('/'));
    }
  }

  /** Removes whatever is at `segs` (a symlink itself, never its target). */
  private async clear(segs: string[]): Promise<void> {
    await rm(this.abs(segs), { recursive: true, force: true });
  }

  private async makeDir(segs: string[]): Promise<void> {
    await this.parents(segs, segs.join('/'));
    const abs = this.abs(segs);
    const st = await lstatOrUndefined(abs);
    if (st && !st.isDirectory()) await this.clear(segs);
    if (!st || !st.isDirectory()) await mkdir(abs, { mode: 0o755 });
    await chmod(abs, 0o755);
    this.touched.add(segs.join('/'));
  }

  private async create(segs: string[], mode: number, fill: (fh: import('node:fs/promises').FileHandle) => Promise<void>): Promise<void> {
    await this.parents(segs, segs.join('/'));
    await this.clear(segs);
    const fh = await open(this.abs(segs), FILE_FLAGS, mode);
    try {
      await fill(fh);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    this.touched.add(segs.join('/'));
  }

  private async writeFile(segs: string[], stream: Source, mode: number): Promise<void> {
    await this.create(segs, mode, async (fh) => {
      for await (const chunk of stream) {
        const buf = chunk as Buffer;
        let off = 0;
        while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
      }
    });
  }

  /** A hard link: a copy of the file it names when that file was extracted (and kept) before. */
  private async copyLink(segs: string[], h: Header, stream: Source, mode: number): Promise<void> {
    await this.drain(stream);
    const { segs: src, reason } = cleanEntryName(h.linkname ?? '');
    if (reason) throw this.refuse(h.name, `links to ${JSON.stringify(h.linkname)}, which ${reason}`);
    const srcAbs = this.abs(src);
    const st = src.length && kept(src) ? await this.realFile(src) : undefined;
    if (!st) {
      this.skippedLinks++;
      log.warn({ entry: h.name, linkname: h.linkname }, `image: hard link ${h.name} -> ${h.linkname ?? ''} in ${this.layerName} names no file kept from the image; skipped`);
      return;
    }
    const from = await open(srcAbs, O_RDONLY | O_NOFOLLOW);
    try {
      await this.create(segs, mode, async (fh) => {
        const buf = Buffer.allocUnsafe(1 << 20);
        for (let pos = 0; ;) {
          const { bytesRead } = await from.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          let off = 0;
          while (off < bytesRead) off += (await fh.write(buf, off, bytesRead - off)).bytesWritten;
        }
      });
    } finally {
      await from.close();
    }
  }

  /** lstat of a regular file reached without any symlink on the way. */
  private async realFile(segs: string[]): Promise<import('node:fs').Stats | undefined> {
    for (let i = 1; i <= segs.length; i++) {
      const st = await lstatOrUndefined(this.abs(segs.slice(0, i)));
      if (!st) return undefined;
      if (i < segs.length && !st.isDirectory()) return undefined;
      if (i === segs.length) return st.isFile() ? st : undefined;
    }
    return undefined;
  }

  private async makeSymlink(segs: string[], linkname: string, entry: string): Promise<void> {
    const skip = (why: string): void => {
      this.skippedLinks++;
      log.warn({ entry, linkname }, `image: symlink ${entry} -> ${linkname} in ${this.layerName} ${why}; skipped`);
    };
    if (linkname === '' || linkname.includes('\0')) return skip('has no usable target');
    const from = segs.slice(0, -1).join('/');
    const resolved = linkname.startsWith('/') ? posix.normalize(linkname.slice(1)) : posix.normalize(posix.join(from, linkname));
    if (resolved.startsWith('../') || resolved === '..' || !resolved.startsWith(`${WEB}/`)) return skip('points outside web-vault');
    const target = posix.relative(from, resolved) || '.';
    await this.parents(segs, entry);
    await this.clear(segs);
    await symlink(target, this.abs(segs));
    this.touched.add(segs.join('/'));
  }

  /** Removes what earlier layers left at `segs`, keeping what this layer wrote. */
  private async removeLower(segs: string[]): Promise<void> {
    for (let i = 1; i < segs.length; i++) {
      const st = await lstatOrUndefined(this.abs(segs.slice(0, i)));
      if (!st || !st.isDirectory()) return; // not there (or only behind a link): nothing to hide
    }
    const key = segs.join('/');
    if (!this.touched.has(key)) {
      await this.clear(segs);
      return;
    }
    const st = await lstatOrUndefined(this.abs(segs));
    if (st?.isDirectory()) for (const name of await readdir(this.abs(segs))) await this.removeLower([...segs, name]);
  }

  private async opaque(dir: string[]): Promise<void> {
    if (dir.length === 0) {
      for (const name of [BINARY, WEB]) await this.removeLower([name]);
      return;
    }
    if (dir[0] !== WEB) return;
    const st = await this.realDir(dir);
    if (!st) return;
    for (const name of await readdir(this.abs(dir))) await this.removeLower([...dir, name]);
  }

  private async realDir(segs: string[]): Promise<boolean> {
    for (let i = 1; i <= segs.length; i++) {
      const st = await lstatOrUndefined(this.abs(segs.slice(0, i)));
      if (!st || !st.isDirectory()) return false;
    }
    return true;
  }

  /**
   * Checks that the tree holds `vaultwarden` and `web-vault/index.html`, fsyncs every
   * folder (files were synced as written) and counts the regular files and their bytes.
   */
  async finish(): Promise<ExtractResult> {
    const bin = await lstatOrUndefined(this.abs([BINARY]));
    if (!bin?.isFile()) throw new AgentError('the image has no /vaultwarden (a regular file at its root)', { hint: 'is this a Vaultwarden image (vaultwarden/server)?' });
    if (!(await this.realFile([WEB, 'index.html']))) throw new AgentError('the image has no web-vault/index.html', { hint: 'is this a Vaultwarden image (vaultwarden/server), not an -alpine or custom build without the web vault?' });
    let files = 0;
    let bytes = 0;
    const walk = async (abs: string): Promise<void> => {
      for (const d of await readdir(abs, { withFileTypes: true })) {
        const p = `${abs}/${d.name}`;
        if (d.isDirectory()) await walk(p);
        else if (d.isFile()) {
          files++;
          bytes += (await lstat(p)).size;
        }
      }
      const fh = await open(abs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    };
    await walk(this.dir);
    return { files, bytes, skippedLinks: this.skippedLinks };
  }
}
