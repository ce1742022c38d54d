import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { AgentError } from '../errors.ts';
import { run } from '../exec.ts';
import { log } from '../log.ts';
import { isSafeKey } from '../safe-fs.ts';
import { createDecryptStream, looksEncrypted } from './encrypt.ts';
import type { RcloneContext } from './destinations.ts';

/** Fetches `remote:path/name` with rclone into `dir`; a local path is used as it is. */
export async function fetchArchive(source: string, dir: string, ctx: RcloneContext, localExists: boolean): Promise<string> {
  if (localExists) return source;
  if (!/^[A-Za-z0-9_][A-Za-z0-9_-]*:/.test(source)) throw new AgentError(`${source}: no such file, and not an rclone remote:path`);
  const dest = join(dir, source.slice(source.lastIndexOf('/') + 1).replace(/^.*:/, '') || 'archive');
  await run(ctx.bin, ['copyto', source, dest, ...ctx.flags], { env: ctx.env, timeoutMs: 3_600_000 });
  return dest;
}

async function head(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Unpacks a backup archive (encrypted or not, gzip or not: detected from its bytes) into
 * `staging` (a fresh folder of the agent's own), refusing the whole archive when an entry
 * name is not a clean relative path (absolute, '..', empty segments, backslash, NUL).
 * Only regular files are unpacked: links and other entry types in an archive are ignored.
 * Returns the relative paths.
 */
export async function extractArchive(file: string, staging: string, password: string, onProgress?: (line: string) => void): Promise<string[]> {
  const encrypted = looksEncrypted(await head(file, 16));
  if (encrypted && !password) throw new AgentError(`${file} is encrypted and BACKUP_PASSWORD is empty`);
  const stages: NodeJS.ReadWriteStream[] = [];
  if (encrypted) stages.push(createDecryptStream(password));
  const entries: string[] = [];
  const extract = tar.extract();
  let refused: AgentError | undefined;
  extract.on('entry', (h, stream, next) => {
    let rel = h.name.replace(/^\.\//, '');
    if (h.type === 'directory') rel = rel.replace(/\/+$/, '');
    if (h.type === 'directory' && (rel === '' || rel === '.')) { stream.resume(); return next(); }
    if (!isSafeKey(rel)) {
      stream.resume();
      refused ??= new AgentError(`archive entry ${JSON.stringify(h.name)} is not a clean relative path (it could escape the data folder); refusing this archive`);
      return next();
    }
    if (h.type === 'directory') { stream.resume(); return next(); }
    if (h.type !== 'file') {
      log.warn({ entry: rel, type: h.type }, `restore: ignored archive entry ${rel}: a ${h.type}, not a regular file`);
      stream.resume();
      return next();
    }
    if (refused) { stream.resume(); return next(); }
    const dest = join(staging, rel);
    entries.push(rel);
    if (entries.length % 200 === 0) onProgress?.(`extracted ${entries.length} entries`);
    void mkdir(dirname(dest), { recursive: true, mode: 0o700 })
      .then(() => pipeline(stream, createWriteStream(dest, { mode: 0o600 })))
      .then(() => chmod(dest, 0o600))
      .then(() => (h.mtime ? utimes(dest, h.mtime, h.mtime) : undefined))
      .then(() => next(), next);
  });
  // Our names say the format; otherwise gzip is recognised by its magic (1f 8b) when
  // the file is not encrypted, and assumed (the default format) when it is.
  const first = await head(file, 2);
  const gzip = /\.tar\.gz(\.enc)?$/.test(file) || (!/\.tar(\.enc)?$/.test(file) && (encrypted || (first[0] === 0x1f && first[1] === 0x8b)));
  if (gzip) stages.push(createGunzip());
  try {
    await pipeline(createReadStream(file), ...(stages as []), extract);
  } catch (err) {
    if (err instanceof AgentError) throw err;
    // With a wrong key CBC still yields bytes; gunzip or tar then choke before the padding check.
    if (encrypted) throw new AgentError(`cannot decrypt ${file}: wrong BACKUP_PASSWORD or not an archive of this product (${(err as Error).message})`);
    throw new AgentError(`cannot unpack ${file}: ${(err as Error).message}`);
  }
  if (refused) throw refused;
  return entries;
}
