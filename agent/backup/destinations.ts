import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { DEFAULT_RCLONE_CONFIG, type Config } from '../config/config.ts';
import { run, spawnPiped, type RunResult } from '../exec.ts';
import { log, scrub } from '../log.ts';
import { FanOut } from './fanout.ts';
import { planRetention, type RetentionPlan } from './retention.ts';

/**
 * rclone destinations of BACKUP_REMOTES (`remote:path`). rclone runs with an explicit
 * environment: the S3 remote derived from S3_* (named RCLONE_REMOTE_NAME) plus the
 * operator's RCLONE_CONFIG_* variables (which win). Secrets travel only in that env.
 */
export interface RcloneContext {
  env: Record<string, string>;
  flags: string[];
  bin: string;
}

/** rclone's env-config name for a remote: upper case, '-' → '_' (as rclone looks it up). */
export function envRemoteName(name: string): string {
  return name.toUpperCase().replace(/-/g, '_');
}

export function rcloneEnvOf(cfg: Pick<Config, 's3' | 'rcloneRemoteName' | 'rcloneEnv'>): Record<string, string> {
  const env: Record<string, string> = {};
  if (cfg.s3) {
    const p = `RCLONE_CONFIG_${envRemoteName(cfg.rcloneRemoteName)}_`;
    env[`${p}TYPE`] = 's3';
    env[`${p}PROVIDER`] = cfg.s3.provider;
    env[`${p}ACCESS_KEY_ID`] = cfg.s3.accessKeyId;
    env[`${p}SECRET_ACCESS_KEY`] = cfg.s3.secretAccessKey;
    env[`${p}REGION`] = cfg.s3.region;
    if (cfg.s3.endpoint) env[`${p}ENDPOINT`] = cfg.s3.endpoint;
    env[`${p}FORCE_PATH_STYLE`] = String(cfg.s3.forcePathStyle);
    if (cfg.s3.acl) env[`${p}ACL`] = cfg.s3.acl;
    if (cfg.s3.noCheckBucket) env[`${p}NO_CHECK_BUCKET`] = 'true';
  }
  // The rclone config file the units can read (not root's home: ProtectHome=yes); RCLONE_CONFIG in the env file wins.
  return { RCLONE_CONFIG: DEFAULT_RCLONE_CONFIG, ...env, ...cfg.rcloneEnv };
}

/**
 * Bounds for an unreachable destination (a refused or black-holed endpoint otherwise
 * retries with back-off for many minutes). RCLONE_FLAGS come after and win.
 */
export const RCLONE_DEFAULT_FLAGS = ['--contimeout=15s', '--timeout=5m', '--retries=2', '--low-level-retries=3'];

export function rcloneContext(cfg: Pick<Config, 's3' | 'rcloneRemoteName' | 'rcloneEnv' | 'rcloneFlags'>, bin = 'rclone'): RcloneContext {
  return { env: rcloneEnvOf(cfg), flags: [...RCLONE_DEFAULT_FLAGS, ...cfg.rcloneFlags.split(/\s+/).filter(Boolean)], bin };
}

/** `remote:path` + `/name` (no doubled slash; `remote:` alone is the remote's root). */
export function joinRemote(dest: string, name: string): string {
  return dest.endsWith(':') || dest.endsWith('/') ? `${dest}${name}` : `${dest}/${name}`;
}

export class DestinationError extends Error {
  readonly destination: string;
  constructor(destination: string, message: string, cause?: unknown) {
    super(`${destination}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'DestinationError';
    this.destination = destination;
  }
}

function explain(r: RunResult): string {
  if (r.timedOut) return 'timed out';
  const lines = (r.stderr || r.stdout).trim().split('\n').filter((l) => !/NOTICE: Config file .* not found/.test(l));
  return scrub(`rclone exited ${r.exitCode}${lines.length ? `: ${lines.slice(-2).join(' | ')}` : ''}`);
}

async function rclone(ctx: RcloneContext, args: string[], timeoutMs: number, signal?: AbortSignal): Promise<RunResult> {
  signal?.throwIfAborted();
  return run(ctx.bin, [...args, ...ctx.flags], { env: ctx.env, timeoutMs, reject: false });
}

export interface RemoteArchive { name: string; size: number; modTime: string }

/** An upload in progress: the archive is written to `stdin` as it is produced. */
export interface Upload {
  destination: string;
  stdin: NodeJS.WritableStream;
  /** Settles when rclone exits, with how it ended. */
  exited: Promise<string>;
  /** After stdin ended: rclone's verdict, then the listed size must equal `bytes`. */
  finish(bytes: number): Promise<{ bytes: number; ms: number }>;
  /** Stops rclone now (finish() then fails); abort() also cleans up. */
  kill(): void;
  /** Stops the upload and removes whatever part of it landed (best effort). */
  abort(): Promise<void>;
}

/**
 * Streams an archive to dest/name with `rclone rcat` (nothing staged on disk; S3 gets a
 * multipart upload that only appears once complete).
 */
export function openUpload(ctx: RcloneContext, dest: string, name: string, opts: { timeoutMs?: number } = {}): Upload {
  const started = Date.now();
  const target = joinRemote(dest, name);
  const child = spawnPiped(ctx.bin, ['rcat', target, ...ctx.flags], { env: ctx.env, timeoutMs: opts.timeoutMs ?? 6 * 3_600_000 });
  return {
    destination: dest,
    stdin: child.stdin,
    exited: child.result.then(explain),
    async finish(bytes) {
      const r = await child.result;
      if (r.exitCode !== 0 || r.timedOut) throw new DestinationError(dest, `upload of ${name} failed (${explain(r)})`);
      const listed = (await listArchives(ctx, dest)).find((a) => a.name === name);
      if (!listed) throw new DestinationError(dest, `upload of ${name} reported success but the file is not listed`);
      if (listed.size !== bytes && listed.size >= 0) throw new DestinationError(dest, `upload of ${name}: remote size ${listed.size} ≠ archive ${bytes}`);
      return { bytes, ms: Date.now() - started };
    },
    kill: () => child.kill(),
    async abort() {
      child.kill();
      await child.result;
      const r = await rclone(ctx, ['deletefile', target], 120_000);
      if (r.exitCode !== 0 && !/not found|doesn't exist|no such file/i.test(r.stderr)) {
        log.warn({ destination: dest }, `backup: could not remove the incomplete ${target} (${explain(r)}); delete it by hand`);
      }
    },
  };
}

/** Uploads a local file as dest/name (openUpload fed from the file). */
export async function shipArchive(ctx: RcloneContext, file: string, dest: string, name: string, opts: { timeoutMs?: number } = {}): Promise<{ bytes: number; ms: number }> {
  const up = openUpload(ctx, dest, name, opts);
  const fan = new FanOut([{ name: dest, stream: up.stdin, gone: up.exited }]);
  try {
    await pipeline(createReadStream(file), fan);
  } catch (err) {
    await up.abort();
    if (fan.failures.length) await up.finish(fan.bytes); // throws with rclone's own error
    throw err;
  }
  return up.finish(fan.bytes);
}

/** Files directly under dest (a missing directory is an empty list). */
export async function listArchives(ctx: RcloneContext, dest: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<RemoteArchive[]> {
  const r = await rclone(ctx, ['lsjson', '--files-only', '--no-mimetype', dest], opts.timeoutMs ?? 300_000, opts.signal);
  if (r.exitCode === 3 && /directory not found/i.test(r.stderr)) return [];
  if (r.exitCode !== 0 || r.timedOut) throw new DestinationError(dest, `listing failed (${explain(r)})`);
  let items: { Name: string; Size: number; ModTime: string; IsDir: boolean }[];
  try {
    items = JSON.parse(r.stdout || '[]');
  } catch {
    throw new DestinationError(dest, 'listing failed (rclone lsjson printed no JSON)');
  }
  return items.filter((i) => !i.IsDir).map((i) => ({ name: i.Name, size: i.Size, modTime: i.ModTime }));
}

export async function deleteArchive(ctx: RcloneContext, dest: string, name: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
  const r = await rclone(ctx, ['deletefile', joinRemote(dest, name)], opts.timeoutMs ?? 300_000, opts.signal);
  if (r.exitCode !== 0 || r.timedOut) throw new DestinationError(dest, `deleting ${name} failed (${explain(r)})`);
}

export interface RetentionResult extends RetentionPlan { errors: string[] }

/**
 * Retention on one destination: lists it, deletes archives older than `retentionDays`
 * while keeping the `minKeep` newest. Only this product's archive names are touched.
 * A failed deletion is reported in `errors` (the next run tries again), not thrown.
 */
export async function applyRetention(ctx: RcloneContext, dest: string, policy: { now: Date; retentionDays: number; minKeep: number }, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<RetentionResult> {
  const listed = await listArchives(ctx, dest, opts);
  const plan = planRetention(listed.map((a) => a.name), policy.now, policy.retentionDays, policy.minKeep);
  const errors: string[] = [];
  const deleted: string[] = [];
  for (const name of plan.delete) {
    try {
      await deleteArchive(ctx, dest, name, opts);
      deleted.push(name);
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      errors.push((err as Error).message);
    }
  }
  return { ...plan, delete: deleted, errors };
}
