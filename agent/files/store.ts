import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, copyFile } from 'node:fs/promises';
import { Agent as HttpsAgent } from 'node:https';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3Settings } from '../config/config.ts';

/** Counters a benchmark or status reads: requests made and bytes moved. */
export interface StoreStats { requests: number; bytesUp: number; bytesDown: number }

export interface RemoteObject { key: string; size: number }

/**
 * Where mirrored files go: S3 objects under <prefix>/files/, or a directory beside the
 * local replica. Keys are paths relative to the data folder.
 */
export interface ObjectStore {
  readonly url: string;
  readonly stats: StoreStats;
  put(key: string, localPath: string, size: number, signal?: AbortSignal): Promise<void>;
  delete(key: string, signal?: AbortSignal): Promise<void>;
  list(signal?: AbortSignal): Promise<RemoteObject[]>;
  get(key: string, destPath: string, signal?: AbortSignal): Promise<void>;
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

export class S3Store implements ObjectStore {
  readonly stats: StoreStats = { requests: 0, bytesUp: 0, bytesDown: 0 };
  readonly url: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly base: string;
  private readonly acl: string | undefined;

  constructor(s3: S3Settings, client: S3Client = s3Client(s3)) {
    this.client = client;
    this.bucket = s3.bucket;
    this.base = [s3.prefix, 'files'].filter(Boolean).join('/') + '/';
    this.acl = s3.acl;
    this.url = `s3://${s3.bucket}/${this.base}`;
  }

  async put(key: string, localPath: string, size: number, signal?: AbortSignal): Promise<void> {
    this.stats.requests++;
    await this.client.send(new PutObjectCommand({
      Bucket: this.bucket, Key: this.base + key, Body: createReadStream(localPath), ContentLength: size,
      ...(this.acl ? { ACL: this.acl as 'private' } : {}),
    }), { abortSignal: signal });
    this.stats.bytesUp += size;
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
      for (const o of r.Contents ?? []) if (o.Key) out.push({ key: o.Key.slice(this.base.length), size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async get(key: string, destPath: string, signal?: AbortSignal): Promise<void> {
    this.stats.requests++;
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.base + key }), { abortSignal: signal });
    await mkdir(dirname(destPath), { recursive: true });
    await pipeline(r.Body as Readable, createWriteStream(destPath, { mode: 0o600 }), { signal });
    this.stats.bytesDown += r.ContentLength ?? 0;
  }
}

/** The local-directory replica's file mirror: <LOCAL_REPLICA_PATH>/files/. */
export class DirStore implements ObjectStore {
  readonly stats: StoreStats = { requests: 0, bytesUp: 0, bytesDown: 0 };
  readonly url: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.url = `file://${root}/`;
  }

  async put(key: string, localPath: string, size: number): Promise<void> {
    this.stats.requests++;
    const dest = join(this.root, key);
    await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
    const tmp = `${dest}.vws-tmp`;
    await copyFile(localPath, tmp);
    await rename(tmp, dest);
    this.stats.bytesUp += size;
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
      try { entries = await readdir(dir, { withFileTypes: true }); } catch { return; }
      for (const e of entries) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(join(dir, e.name), r);
        else if (e.isFile() && !e.name.endsWith('.vws-tmp')) out.push({ key: r, size: (await stat(join(dir, e.name))).size });
      }
    };
    await walk(this.root, '');
    return out;
  }

  async get(key: string, destPath: string): Promise<void> {
    this.stats.requests++;
    await mkdir(dirname(destPath), { recursive: true });
    await copyFile(join(this.root, key), destPath);
    this.stats.bytesDown += (await stat(destPath)).size;
  }
}
