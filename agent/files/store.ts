import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { Agent as HttpsAgent } from 'node:https';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pipeline as streamPipeline, Transform, type Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import type { S3Settings } from '../config/config.ts';
import { fsyncDir } from '../fs.ts';

/** Counters a benchmark or status reads: requests made and bytes moved. */
export interface StoreStats { requests: number; bytesUp: number; bytesDown: number }

/**
 * One object as listed. `etag` changes whenever the object is written again (S3's ETag;
 * for a directory store, size, mtime and inode), so a listing tells whether an object
 * is still the version the mirror uploaded or downloaded.
 */
export interface RemoteObject { key: string; size: number; etag: string }

/** What a HEAD tells about one object; `sha256` when the mirror stored it as metadata. */
export interface RemoteHead { size: number; etag: string; sha256?: string }

/** A download: the body (to be consumed) and what the store says of it. */
export interface RemoteBody { body: Readable; size: number; etag: string; sha256?: string }

export interface PutRequest {
  /** Opens the bytes to upload (may be called again on a retry). */
  open: () => Readable;
  size: number;
  sha256: string;
  /** Only create: fail with PreconditionFailedError when the key exists (where the store enforces it). */
  createOnly?: boolean;
}

/** A create-only put found the key taken (HTTP 412). */
export class PreconditionFailedError extends Error {
  constructor(key: string) {
    super(`${key}: the object exists already (precondition failed)`);
    this.name = 'PreconditionFailedError';
  }
}

/**
 * Where mirrored files go: S3 objects under <prefix>/files/, or a directory beside the
 * local replica. Keys are paths relative to the data folder.
 */
export interface ObjectStore {
  readonly url: string;
  readonly stats: StoreStats;
  /** Uploads; returns the new object's etag. */
  put(key: string, req: PutRequest, signal?: AbortSignal): Promise<{ etag: string }>;
  delete(key: string, signal?: AbortSignal): Promise<void>;
  list(signal?: AbortSignal): Promise<RemoteObject[]>;
  /** The object's size, etag and stored sha256, or null when there is none. */
  head(key: string, signal?: AbortSignal): Promise<RemoteHead | null>;
  get(key: string, signal?: AbortSignal): Promise<RemoteBody>;
}

export function s3Client(s3: S3Settings): S3Client {
  return new S3Client({
    region: s3.region,
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
    forcePathStyle: s3.forcePathStyle,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    // Plain PUTs with Content-Length: one request per file, understood by every S3 server.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    // A hung S3 must not hang a pass forever: bounded connect, and a socket idle timeout.
    requestHandler: {
      connectionTimeout: 10_000,
      requestTimeout: 60_000,
      ...(s3.skipVerify ? { httpsAgent: new HttpsAgent({ rejectUnauthorized: false }) } : {}),
    },
  });
}

/** The body, counting the bytes that pass into stats.bytesDown; destroying it closes the source too. */
function counted(body: Readable, stats: StoreStats): Readable {
  const t = new Transform({ transform(chunk: Buffer, _enc, cb) { stats.bytesDown += chunk.length; cb(null, chunk); } });
  streamPipeline(body, t, () => undefined); // errors reach the reader through t
  return t;
}

const unquote = (etag: string | undefined): string => (etag ?? '').replace(/^"|"$/g, '');

function httpStatus(err: unknown): number | undefined {
  return err instanceof S3ServiceException ? err.$metadata.httpStatusCode : (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

export class S3Store implements ObjectStore {
  readonly stats: StoreStats = { requests: 0, bytesUp: 0, bytesDown: 0 };
  readonly url: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly base: string;
  private readonly acl: string | undefined;
  /** The store answered 501 to If-None-Match once: it does not do conditional writes. */
  private noConditions = false;

  constructor(s3: S3Settings, client: S3Client = s3Client(s3)) {
    this.client = client;
    this.bucket = s3.bucket;
    this.base = [s3.prefix, 'files'].filter(Boolean).join('/') + '/';
    this.acl = s3.acl;
    this.url = `s3://${s3.bucket}/${this.base}`;
  }

  async put(key: string, req: PutRequest, signal?: AbortSignal): Promise<{ etag: string }> {
    const send = async (conditional: boolean) => {
      this.stats.requests++;
      return this.client.send(new PutObjectCommand({
        Bucket: this.bucket, Key: this.base + key, Body: req.open(), ContentLength: req.size,
        Metadata: { sha256: req.sha256 },
        ...(conditional ? { IfNoneMatch: '*' } : {}),
        ...(this.acl ? { ACL: this.acl as 'private' } : {}),
      }), { abortSignal: signal });
    };
    let r;
    try {
      r = await send(req.createOnly === true && !this.noConditions);
    } catch (err) {
      const status = httpStatus(err);
      if (status === 412 || status === 409) throw new PreconditionFailedError(key);
      if (status !== 501 || !req.createOnly) throw err;
      this.noConditions = true; // checked by a HEAD just before: a plain PUT is the best this store offers
      r = await send(false);
    }
    this.stats.bytesUp += req.size;
    return { etag: unquote(r.ETag) };
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    this.stats.requests++;
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.base + key }), { abortSignal: signal });
  }

  async list(signal?: AbortSignal): Promise<RemoteObject[]> {
    const out: RemoteObject[] = [];
    let token: string | undefined;
    do {
      this.stats.requests++;
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.base, ContinuationToken: token }), { abortSignal: signal });
      for (const o of r.Contents ?? []) if (o.Key) out.push({ key: o.Key.slice(this.base.length), size: o.Size ?? 0, etag: unquote(o.ETag) });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async head(key: string, signal?: AbortSignal): Promise<RemoteHead | null> {
    this.stats.requests++;
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.base + key }), { abortSignal: signal });
      const sha = r.Metadata?.sha256;
      return { size: r.ContentLength ?? 0, etag: unquote(r.ETag), ...(sha && /^[0-9a-f]{64}$/.test(sha) ? { sha256: sha } : {}) };
    } catch (err) {
      if (httpStatus(err) === 404) return null;
      throw err;
    }
  }

  async get(key: string, signal?: AbortSignal): Promise<RemoteBody> {
    this.stats.requests++;
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.base + key }), { abortSignal: signal });
    const body = counted(r.Body as Readable, this.stats);
    const sha = r.Metadata?.sha256;
    return { body, size: r.ContentLength ?? 0, etag: unquote(r.ETag), ...(sha && /^[0-9a-f]{64}$/.test(sha) ? { sha256: sha } : {}) };
  }
}

/**
 * The local-directory replica's file mirror: <LOCAL_REPLICA_PATH>/files/. Written only
 * by the agent; read without following links (the replica directory may be shared with
 * a service user).
 */
export class DirStore implements ObjectStore {
  readonly stats: StoreStats = { requests: 0, bytesUp: 0, bytesDown: 0 };
  readonly url: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.url = `file://${root}/`;
  }

  private static etagOf(st: { size: number; mtimeMs: number; ino: number }): string {
    return `${st.size}-${Math.trunc(st.mtimeMs)}-${st.ino}`;
  }

  async put(key: string, req: PutRequest): Promise<{ etag: string }> {
    this.stats.requests++;
    const dest = join(this.root, key);
    if (req.createOnly && (await lstat(dest).catch(() => undefined))) throw new PreconditionFailedError(key);
    await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
    const tmp = `${dest}.vws-tmp`;
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(req.open());
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
    await fsyncDir(dirname(dest));
    this.stats.bytesUp += req.size;
    return { etag: DirStore.etagOf(await lstat(dest)) };
  }

  async delete(key: string): Promise<void> {
    this.stats.requests++;
    await rm(join(this.root, key), { force: true });
  }

  async list(): Promise<RemoteObject[]> {
    this.stats.requests++;
    const out: RemoteObject[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try { entries = await readdir(dir, { withFileTypes: true }); } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel === '') return; // nothing mirrored yet
        throw err;
      }
      for (const e of entries) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        // Dirent types come from lstat: a link is neither a directory nor a file here.
        if (e.isDirectory()) await walk(join(dir, e.name), r);
        else if (e.isFile() && !e.name.endsWith('.vws-tmp')) {
          const st = await lstat(join(dir, e.name));
          out.push({ key: r, size: st.size, etag: DirStore.etagOf(st) });
        }
      }
    };
    await walk(this.root, '');
    return out;
  }

  private async openObject(key: string) {
    return open(join(this.root, key), constants.O_RDONLY | constants.O_NOFOLLOW);
  }

  async head(key: string): Promise<RemoteHead | null> {
    this.stats.requests++;
    let fh;
    try { fh = await this.openObject(key); } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) return null;
      const h = createHash('sha256');
      await pipeline(fh.createReadStream({ autoClose: false, start: 0 }), h);
      return { size: st.size, etag: DirStore.etagOf(st), sha256: h.digest('hex') };
    } finally {
      await fh.close();
    }
  }

  async get(key: string): Promise<RemoteBody> {
    this.stats.requests++;
    const fh = await this.openObject(key);
    const st = await fh.stat();
    if (!st.isFile()) { await fh.close(); throw new Error(`${key}: not a regular file in ${this.root}`); }
    const body = counted(fh.createReadStream({ autoClose: true, start: 0 }), this.stats);
    return { body, size: st.size, etag: DirStore.etagOf(st) };
  }
}

/** Reads a whole object to a plain file (drills into a private temporary folder). */
export async function downloadTo(store: ObjectStore, key: string, destPath: string, signal?: AbortSignal): Promise<number> {
  const r = await store.get(key, signal);
  await mkdir(dirname(destPath), { recursive: true, mode: 0o700 });
  const fh = await open(destPath, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(r.body, signal ? { signal } : {});
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}

