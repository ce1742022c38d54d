import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3Settings } from '../config/config.ts';
import { unlinkDurable, writeFileDurable } from '../fs.ts';
import { instanceId } from './instance.ts';

/**
 * The single-writer lease (contract behaviour 5): who may write the replica, until when.
 * `instance` (see instance.ts) and `token` identify the holder; `holder` (hostname),
 * `machineId` and `bootId` are information for the operator only: clones share them.
 * Leases written before `instance` existed lack it.
 */
export interface Lease { holder: string; instance?: string; machineId: string; bootId: string; token: string; acquiredAt: string; expiresAt: string; ttlMs: number }
/** `instance`: this boot's instance id; `token`: this run of the agent. */
export interface Identity { holder: string; instance: string; machineId: string; bootId: string; token: string }

function readId(path: string): string {
  try { return readFileSync(path, 'utf8').trim() || 'unknown'; } catch { return 'unknown'; }
}

/** This run's identity; the instance id is read from (or created in) `instanceFile`. */
export function myIdentity(instanceFile: string): Identity & { instanceCreated: boolean } {
  const bootId = readId('/proc/sys/kernel/random/boot_id');
  const { record, created } = instanceId(instanceFile, bootId);
  return { holder: hostname(), instance: record.id, machineId: readId('/etc/machine-id'), bootId, token: randomBytes(12).toString('hex'), instanceCreated: created };
}

/** How a lease's holder is named to an operator: hostname and a short instance id (clones share hostnames). */
export function describeHolder(l: Pick<Lease, 'holder' | 'instance'>): string {
  return `${l.holder} (instance ${l.instance ? l.instance.slice(0, 8) : 'unknown'})`;
}

export type LeaseDecision =
  | { action: 'acquire'; reason: string }
  | { action: 'renew' }
  | { action: 'wait'; holder: string; instance: string | null; until: Date };

/**
 * Pure lease rule. A lease belongs to whoever holds its token; an earlier run of this
 * agent in the same boot (same instance id, now gone: only one agent runs per host) may
 * take it over at once; anyone else (a clone with the same machine id and boot id, this
 * host after a reboot) only after it expired plus a safety margin (the holder fences
 * itself that margin *before* expiry, so two writers never overlap while clocks agree
 * within the margin).
 */
export function decideLease(current: Lease | null, me: Identity, nowMs: number, safetyMs: number): LeaseDecision {
  if (!current) return { action: 'acquire', reason: 'no lease' };
  if (current.token === me.token) return { action: 'renew' };
  // The instance id is random per boot and per host's /run: machine ids, host names and
  // boot ids are not enough (clones share the first two, containers the kernel's boot id).
  if (typeof current.instance === 'string' && current.instance.length > 0 && current.instance === me.instance) {
    return { action: 'acquire', reason: 'held by an earlier run of this agent in this boot' };
  }
  const expires = Date.parse(current.expiresAt);
  if (!Number.isFinite(expires) || nowMs > expires + safetyMs) return { action: 'acquire', reason: `lease of ${describeHolder(current)} expired at ${current.expiresAt}` };
  return { action: 'wait', holder: current.holder, instance: current.instance ?? null, until: new Date(expires) };
}

export function newLease(me: Identity, nowMs: number, ttlMs: number, acquiredAt?: string): Lease {
  return {
    holder: me.holder, instance: me.instance, machineId: me.machineId, bootId: me.bootId, token: me.token,
    acquiredAt: acquiredAt ?? new Date(nowMs).toISOString(), expiresAt: new Date(nowMs + ttlMs).toISOString(), ttlMs,
  };
}

/** The holder must have renewed before expiry minus the margin, or stop writing. */
export function safetyMargin(ttlMs: number): number {
  return Math.min(5_000, Math.floor(ttlMs / 4));
}

/** A conditional write was refused (412/409): the lease is not the version we expected. */
export class LeaseConflict extends Error {}
/**
 * A conditional write answered 500/503: it may or may not have landed (a real server, Ceph
 * RGW, answers 500 to the loser of a race now and then). Only a read tells.
 */
export class LeaseAmbiguous extends Error {}

/**
 * Whether the store refuses a conditional write whose precondition fails (probed, not
 * assumed). `applicable: false`: the lease is not shared (a directory replica is one host's).
 */
export interface ConditionalSupport { enforced: boolean; applicable: boolean; detail: string }

/** Where the lease lives: an object beside the replica (S3) or a file beside the directory replica. */
export interface LeaseStore {
  readonly url: string;
  read(signal?: AbortSignal): Promise<{ lease: Lease; etag?: string } | null>;
  /**
   * Conditional where the server supports it: `etag` = replace exactly that version, null =
   * only if absent, neither = unconditional. Throws LeaseConflict (precondition failed) or
   * LeaseAmbiguous (a conditional write answered 5xx: landed or not, read to know).
   * Resolves to the written version's etag where the store says it (S3's PUT answer).
   */
  write(lease: Lease, expect: { etag?: string | null }, signal?: AbortSignal): Promise<{ etag?: string }>;
  remove(signal?: AbortSignal): Promise<void>;
  /** Finds out whether the store enforces conditional writes (throws when it cannot be reached). */
  probe(signal?: AbortSignal): Promise<ConditionalSupport>;
}

const statusOf = (err: unknown): number | undefined => (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;

/**
 * The ETag as If-Match wants it: without quotes. S3 returns it quoted; Ceph RGW (and
 * DigitalOcean Spaces) answer 412 to the quoted form, AWS accepts both.
 */
export function unquoteEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

export class S3LeaseStore implements LeaseStore {
  readonly url: string;
  private readonly key: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  constructor(s3: S3Settings, client: S3Client) {
    this.client = client;
    this.bucket = s3.bucket;
    this.key = [s3.prefix, 'lease.json'].filter(Boolean).join('/');
    this.url = `s3://${s3.bucket}/${this.key}`;
  }

  async read(signal?: AbortSignal): Promise<{ lease: Lease; etag?: string } | null> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key }), { abortSignal: signal });
      const lease = JSON.parse(await r.Body!.transformToString()) as Lease;
      return r.ETag ? { lease, etag: r.ETag } : { lease };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) return null;
      throw err;
    }
  }

  async write(lease: Lease, expect: { etag?: string | null }, signal?: AbortSignal): Promise<{ etag?: string }> {
    const cond = expect.etag === null ? { IfNoneMatch: '*' } : expect.etag ? { IfMatch: unquoteEtag(expect.etag) } : null;
    try {
      const r = await this.client.send(new PutObjectCommand({
        Bucket: this.bucket, Key: this.key, Body: JSON.stringify(lease), ContentType: 'application/json', ...cond,
      }), { abortSignal: signal });
      return r.ETag ? { etag: r.ETag } : {};
    } catch (err) {
      const status = statusOf(err);
      if (status === 412 || status === 409) throw new LeaseConflict(`lease changed under us (${status})`);
      // If-Match on a lease object that is gone (deleted by hand, or released by a run that
      // took it over): the version we expected is not there any more.
      if (expect.etag && status === 404) throw new LeaseConflict('lease changed under us (404: the lease object is gone)');
      if (cond && (status === 500 || status === 503)) throw new LeaseAmbiguous(`conditional lease write answered ${status}: landed or not, a read tells`);
      throw err;
    }
  }

  async remove(signal?: AbortSignal): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key }), { abortSignal: signal });
  }

  /**
   * Probes both preconditions the lease relies on, on a probe object beside the lease:
   * created with `If-None-Match: *`, then created again the same way (a store that enforces
   * it refuses: 412, or 409 on AWS under concurrency), then replaced with `If-Match` on an
   * ETag it does not have (refused: 412). A renewal is one `If-Match` PUT, so a store that
   * honours `If-None-Match` but ignores `If-Match` counts as not enforcing. Stores that
   * ignore both (fauxqs, s3rver) overwrite every time. The probe object is deleted afterwards.
   * `track` is handed the clean-up DELETE (its own 5 s bound, not `signal`, which may be aborted already).
   */
  async probe(signal?: AbortSignal, track: (p: Promise<unknown>) => Promise<unknown> = (p) => p.catch(() => undefined)): Promise<ConditionalSupport> {
    const key = [this.key.split('/').slice(0, -1).join('/'), `.vwstream-probe-${randomBytes(8).toString('hex')}`].filter(Boolean).join('/');
    const url = `s3://${this.bucket}/${key}`;
    const put = (n: number, cond: { IfNoneMatch: string } | { IfMatch: string }) => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: `probe ${n}`, ...cond }), { abortSignal: signal });
    /** 'refused' when the precondition failed (412/409), 'accepted' when the write went through. */
    const attempt = async (n: number, cond: { IfNoneMatch: string } | { IfMatch: string }): Promise<{ outcome: 'refused' | 'accepted'; status?: number }> => {
      try {
        await put(n, cond);
        return { outcome: 'accepted' };
      } catch (err) {
        const status = statusOf(err);
        if (status === 412 || status === 409) return { outcome: 'refused', status };
        throw err;
      }
    };
    try {
      await put(1, { IfNoneMatch: '*' });
      const again = await attempt(2, { IfNoneMatch: '*' });
      if (again.outcome === 'accepted') return { enforced: false, applicable: true, detail: `a second PUT with If-None-Match: * on ${url} succeeded` };
      const wrong = await attempt(3, { IfMatch: '0123456789abcdef0123456789abcdef' });
      if (wrong.outcome === 'accepted') return { enforced: false, applicable: true, detail: `If-None-Match: * is enforced (${again.status}) but a PUT with If-Match on an ETag ${url} does not have succeeded` };
      return { enforced: true, applicable: true, detail: `a second PUT with If-None-Match: * answered ${again.status}, one with a wrong If-Match ${wrong.status}` };
    } finally {
      await track(this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: AbortSignal.timeout(5_000) }));
    }
  }
}

export class FileLeaseStore implements LeaseStore {
  readonly url: string;
  private readonly path: string;
  constructor(dir: string) {
    this.path = `${dir}/lease.json`;
    this.url = `file://${this.path}`;
  }

  async read(): Promise<{ lease: Lease } | null> {
    try {
      return { lease: JSON.parse(await readFile(this.path, 'utf8')) as Lease };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async write(lease: Lease): Promise<{ etag?: string }> {
    // Durable: after a power loss the lease on disk is the last one written, whole.
    await writeFileDurable(this.path, JSON.stringify(lease), { mode: 0o644 });
    return {};
  }

  async remove(): Promise<void> {
    await unlinkDurable(this.path);
  }

  /** A directory replica is one host's own disk: no second writer shares this file, nothing to enforce. */
  async probe(): Promise<ConditionalSupport> {
    return { enforced: false, applicable: false, detail: `not applicable: ${this.path} is in a directory replica on this host; no other host writes it` };
  }
}
