import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { rcloneContext } from '../backup/destinations.ts';
import { loadConfig, type Config, type S3Settings } from '../config/config.ts';
import { diskCheck } from '../daemon/report.ts';
import { ConfigError, errorMessage } from '../errors.ts';
import { run as runProcess, type RunOptions, type RunResult } from '../exec.ts';
import { s3Client } from '../files/store.ts';
import { scrub } from '../log.ts';
import { API_GROUP, PATHS, SERVICE_USER, UNITS } from '../paths.ts';
import { lookupUser } from '../replication/runtime.ts';
import { S3LeaseStore, type ConditionalSupport } from '../replication/lease.ts';
import { chooseVaultwarden, vaultwardenEnvOf } from '../vaultwarden/choose.ts';
import { VersionStore } from '../vaultwarden/versions.ts';

/**
 * `vwstream-agent doctor`: each check says ok, warn (not fatal) or FAIL with the fix.
 * Every check is bounded (a frozen S3 or remote must not hang doctor), reads only, and
 * leaves nothing behind but what it removes again (scratch objects/files it wrote itself).
 * Nothing here prints a secret: every detail passes through scrub() (the config's secrets).
 */
export type Level = 'ok' | 'warn' | 'fail';
export interface CheckResult { check: string; level: Level; detail: string; fix: string | null }

/** One network check's bound. */
export const NET_TIMEOUT_MS = 10_000;
/** Clock offset against S3's Date header: warn above, FAIL above. */
export const CLOCK_WARN_MS = 5_000;
export const CLOCK_FAIL_MS = 60_000;

const ok = (check: string, detail: string): CheckResult => ({ check, level: 'ok', detail, fix: null });
const warn = (check: string, detail: string, fix: string | null): CheckResult => ({ check, level: 'warn', detail, fix });
const fail = (check: string, detail: string, fix: string): CheckResult => ({ check, level: 'fail', detail, fix });
const sec = (ms: number) => `${ms < 10_000 && ms % 1000 !== 0 ? (ms / 1000).toFixed(1) : Math.round(ms / 1000)} s`;

/** What the checks touch outside themselves; tests pass fakes. */
export interface DoctorEnv {
  paths: { dataFolder: string; stateDir: string; socket: string; controlSocket: string; dbFile: string; roleOverride: string; vaultwardenDir?: string };
  run(file: string, args: string[], opts: RunOptions): Promise<RunResult>;
  now(): number;
  /** A GET to http://host:port/path; null when the connection was refused. */
  httpGet(host: string, port: number, path: string, timeoutMs: number): Promise<{ status: number } | null>;
  /** S3 requests of check 4 (scratch object + conditional-write probe), with the server's Date. */
  s3Probe(s3: S3Settings, signal: AbortSignal): Promise<S3ProbeResult>;
  /** GET /status on the agent's socket: its state, or why it did not answer. */
  agentStatus(socket: string, timeoutMs: number): Promise<{ state: string } | { error: string }>;
  /** The gid of a group, or null when there is none. */
  groupId(name: string): Promise<number | null>;
}

export interface S3ProbeResult {
  putMs: number; getMs: number; deleteMs: number;
  /** The server's Date header and the local time halfway through that request. */
  serverDate: string | undefined; localMidMs: number;
  conditional: ConditionalSupport | { error: string };
}

/** Runs fn with a bound: a check that does not settle in time is a FAIL naming the bound. */
/**
 * Clean-ups (the scratch object's DELETE) still in flight when a check's bound cut it
 * off: each has its own timeout, and runDoctor waits for them so nothing is left behind.
 */
const pendingCleanups = new Set<Promise<unknown>>();
export function cleanupLater(p: Promise<unknown>): Promise<unknown> {
  const q = p.catch(() => undefined).finally(() => pendingCleanups.delete(q));
  pendingCleanups.add(q);
  return q;
}
export async function awaitCleanups(): Promise<void> {
  while (pendingCleanups.size > 0) await Promise.allSettled([...pendingCleanups]);
}
const CLEANUP_MS = 5_000;

export async function bounded(check: string, ms: number, fn: (signal: AbortSignal) => Promise<CheckResult | CheckResult[]>, fix: string, what?: string): Promise<CheckResult[]> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const work = fn(ac.signal).then((r) => (Array.isArray(r) ? r : [r]));
  const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); });
  try {
    const r = await Promise.race([work, timeout]);
    if (r !== 'timeout') return r;
    // Cut off: abort, then give the check its clean-up (a scratch object's DELETE) before answering.
    ac.abort(new Error(`no answer within ${sec(ms)}`));
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([work.catch(() => undefined), new Promise((res) => { grace = setTimeout(res, CLEANUP_MS + 1_000); })]);
    clearTimeout(grace);
    return [fail(check, `${what ? `${what}: ` : ''}no answer within ${sec(ms)}`, fix)];
  } catch (err) {
    return [fail(check, errorMessage(err), fix)];
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------
// 1. config

/** Loads the config strictly: an error or any warning is a FAIL. Returns the config when it loads. */
export function checkConfig(path: string, load: (p: string) => Config = loadConfig): { cfg: Config | null; results: CheckResult[] } {
  try {
    const cfg = load(path);
    if (cfg.warnings.length === 0) return { cfg, results: [ok('config', `${path}: valid, no warnings`)] };
    return {
      cfg,
      results: cfg.warnings.map((w) => fail('config', `warning: ${w}`, `correct or remove that line in ${path} (vwstream-agent check-config shows every warning), then systemctl restart vwstream-agent`)),
    };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { cfg: null, results: [fail('config', err.message, `fix ${err.key} in ${path} (allowed: ${err.allowed}); vwstream-agent check-config validates it, then systemctl restart vwstream-agent`)] };
  }
}

// ---------------------------------------------------------------------------------------
// 2. Vaultwarden binary and web vault

function serviceIds(): { uid?: number; gid?: number } {
  try {
    const ids = lookupUser(SERVICE_USER);
    return { uid: ids.uid, gid: ids.gid };
  } catch {
    return {};
  }
}

const isFalse = (v: string | undefined) => v !== undefined && /^(false|0|no|off)$/i.test(v.trim());

export async function checkVaultwarden(cfg: Pick<Config, 'vaultwardenBin'>, env: Pick<DoctorEnv, 'run' | 'paths'>, source: 'operator' | 'installed' | 'default' = 'operator'): Promise<CheckResult> {
  const bin = cfg.vaultwardenBin;
  const fixBin = source === 'operator' ? `install Vaultwarden at ${bin}, or set VAULTWARDEN_BIN in the config to where it is (or remove it and run vwstream-agent vaultwarden install)`
    : source === 'installed' ? 'install it again: vwstream-agent vaultwarden install'
      : `vwstream-agent vaultwarden install (the official image), or install Vaultwarden at ${bin}, or set VAULTWARDEN_BIN in the config to where it is`;
  let st;
  try {
    st = await stat(bin);
  } catch (err) {
    return fail('vaultwarden', `${bin}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorMessage(err)}`, fixBin);
  }
  if (!st.isFile()) return fail('vaultwarden', `${bin} is not a file`, fixBin);
  try {
    await access(bin, constants.X_OK);
    if ((st.mode & 0o111) === 0) throw new Error('not executable');
  } catch {
    return fail('vaultwarden', `${bin} is not executable (mode ${(st.mode & 0o777).toString(8)})`, `chmod 755 ${bin}`);
  }
  // As the service user, as the unit runs it: a binary is never run as root to ask its version.
  const r = await env.run(bin, ['--version'], { timeoutMs: 5_000, reject: false, cwd: '/', ...serviceIds() });
  const line = (r.stdout || r.stderr).split('\n').map((l) => l.trim()).find(Boolean) ?? '';
  if (r.timedOut) return fail('vaultwarden', `${bin} --version did not finish within 5 s`, `check that ${bin} is Vaultwarden (VAULTWARDEN_BIN)`);
  if (r.exitCode !== 0) return fail('vaultwarden', `${bin} --version exited ${r.exitCode}${line ? `: ${line}` : ''}`, `check that ${bin} is Vaultwarden and runs on this host (VAULTWARDEN_BIN)`);
  if (!/vaultwarden/i.test(line)) return warn('vaultwarden', `${bin} --version printed ${JSON.stringify(line.slice(0, 80))}, not "Vaultwarden x.y.z"`, `check that VAULTWARDEN_BIN points at Vaultwarden`);
  return ok('vaultwarden', `${bin}: ${line}`);
}

/**
 * Vaultwarden exits at start when WEB_VAULT_FOLDER (default web-vault/, relative to its
 * working directory, the data folder: see vwstream-vaultwarden.service) lacks
 * index.html, unless WEB_VAULT_ENABLED=false.
 */
export async function checkWebVault(cfg: Pick<Config, 'vaultwardenEnv'>, env: Pick<DoctorEnv, 'paths'>): Promise<CheckResult> {
  const venv = cfg.vaultwardenEnv;
  if (isFalse(venv.WEB_VAULT_ENABLED)) return ok('web-vault', 'WEB_VAULT_ENABLED=false: Vaultwarden runs without it');
  const folder = venv.WEB_VAULT_FOLDER || 'web-vault/';
  const dir = isAbsolute(folder) ? folder : join(env.paths.dataFolder, folder);
  const index = join(dir, 'index.html');
  try {
    const st = await stat(index);
    if (!st.isFile()) throw new Error('not a file');
    return ok('web-vault', `${index} present`);
  } catch {
    return fail('web-vault', `Vaultwarden exits at start: no web vault at ${dir} (index.html missing; WEB_VAULT_FOLDER=${folder})`,
      `put the web vault (web-vault/ of the Vaultwarden release) at ${dir}, set WEB_VAULT_FOLDER to where it is, or WEB_VAULT_ENABLED=false to run without it`);
  }
}

// ---------------------------------------------------------------------------------------
// 3. ROCKET_PORT

export async function checkPort(cfg: Pick<Config, 'rocketAddress' | 'rocketPort'>, env: Pick<DoctorEnv, 'httpGet' | 'run'>): Promise<CheckResult> {
  const a = cfg.rocketAddress;
  const host = a === '0.0.0.0' ? '127.0.0.1' : a === '::' ? '::1' : a;
  const where = `${a.includes(':') ? `[${a}]` : a}:${cfg.rocketPort}`;
  const fixOther = `stop what listens there (ss -ltnp 'sport = :${cfg.rocketPort}' names it) or set ROCKET_PORT to a free port`;
  let res: { status: number } | null;
  try {
    res = await env.httpGet(host, cfg.rocketPort, '/alive', 3_000);
  } catch (err) {
    return fail('port', `ROCKET_PORT ${cfg.rocketPort}: something on ${where} does not answer HTTP (${errorMessage(err)})`, fixOther);
  }
  if (res === null) return ok('port', `${where} free (Vaultwarden is not running)`);
  if (res.status !== 200) return fail('port', `ROCKET_PORT ${cfg.rocketPort}: something else answers on ${where} (GET /alive → ${res.status}); Vaultwarden cannot listen there`, fixOther);
  const active = await env.run('systemctl', ['is-active', UNITS.vaultwarden], { timeoutMs: 5_000, reject: false });
  if (active.stdout.trim() !== 'active' && active.stdout.trim() !== 'reloading') {
    return fail('port', `ROCKET_PORT ${cfg.rocketPort}: a Vaultwarden answers /alive on ${where}, but ${UNITS.vaultwarden} is ${active.stdout.trim() || 'not running'}: another one holds the port`, fixOther);
  }
  return ok('port', `Vaultwarden answers on ${where} (GET /alive → 200)`);
}

// ---------------------------------------------------------------------------------------
// 4. S3 (or the local replica directory) and 7. the clock

function s3Fix(err: unknown, s3: S3Settings): string {
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (/SignatureDoesNotMatch|InvalidAccessKeyId|InvalidClientTokenId|AuthorizationHeaderMalformed/.test(name) || status === 403 && /Signature/.test(errorMessage(err))) {
    return 'check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (the server refused the signature or the key)';
  }
  if (/RequestTimeTooSkewed/.test(name)) return 'set the clock right (timedatectl set-ntp true): S3 refuses requests signed with a clock that is off';
  if (/NoSuchBucket/.test(name) || status === 404) return `create the bucket ${s3.bucket} or correct S3_BUCKET`;
  if (/AccessDenied/.test(name) || status === 403) return `give the key PutObject, GetObject and DeleteObject on ${s3.bucket}/${s3.prefix ? s3.prefix + '/' : ''}*`;
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|EHOSTUNREACH/.test(`${e.code ?? ''} ${errorMessage(err)}`)) return `check S3_ENDPOINT (${s3.endpoint ?? 'AWS'}) and that this host reaches it`;
  return `check S3_ENDPOINT, S3_REGION, S3_BUCKET and the keys; the replica cannot be written until S3 answers`;
}

function describeS3Error(err: unknown): string {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  // The SDK says "UnknownError" when the error response has no body to read a message from.
  const msg = /^(UnknownError)?$/.test(errorMessage(err)) ? '' : errorMessage(err);
  const name = e.name && e.name !== 'Error' && !msg.startsWith(e.name) ? e.name : '';
  return `${name}${name && msg ? ': ' : ''}${msg}${status ? ` (HTTP ${status})` : ''}`;
}

/** Check 4 with S3_BUCKET set, and check 7 from the same responses. */
export async function checkS3(cfg: Pick<Config, 'leaseTtlMs'> & { s3: S3Settings }, env: Pick<DoctorEnv, 's3Probe'>, signal: AbortSignal): Promise<CheckResult[]> {
  const s3 = cfg.s3;
  const url = `s3://${s3.bucket}/${s3.prefix ? s3.prefix + '/' : ''}`;
  let r: S3ProbeResult;
  try {
    r = await env.s3Probe(s3, signal);
  } catch (err) {
    if (signal.aborted) throw err;
    const e = err as { serverDate?: string; localMidMs?: number };
    const clock = e.serverDate && e.localMidMs ? clockResult(e.serverDate, e.localMidMs) : warn('clock', 'not checked: S3 did not answer', null);
    return [fail('s3', `${url}: ${describeS3Error(err)}`, s3Fix(err, s3)), clock];
  }
  const out: CheckResult[] = [ok('s3', `${url}: PUT ${r.putMs} ms, GET ${r.getMs} ms, DELETE ${r.deleteMs} ms (scratch object, removed)`)];
  const c = r.conditional;
  if ('error' in c) out.push(warn('conditional-writes', `could not probe: ${c.error}`, 'run doctor again when S3 answers'));
  else if (c.enforced) out.push(ok('conditional-writes', `enforced (${c.detail}): the lease is taken by If-None-Match/If-Match`));
  else {
    out.push(warn('conditional-writes', `not enforced (${c.detail}): the lease is checked by reading it back; two primaries on this prefix can overlap for up to ${sec(cfg.leaseTtlMs)}`,
      'for a standby pair use a store that enforces If-None-Match/If-Match (AWS S3, Ceph RGW, Cloudflare R2, …)'));
  }
  out.push(clockResult(r.serverDate, r.localMidMs));
  return out;
}

/** Check 7: the offset of this host's clock against the S3 server's Date header (1 s resolution). */
export function clockResult(serverDate: string | undefined, localMs: number): CheckResult {
  const server = serverDate ? Date.parse(serverDate) : NaN;
  if (!Number.isFinite(server)) return warn('clock', 'not checked: the S3 response had no Date header', null);
  const offset = localMs - server;
  const abs = Math.abs(offset);
  const what = `this host's clock is ${(abs / 1000).toFixed(1)} s ${offset >= 0 ? 'ahead of' : 'behind'} the S3 server (Date: ${serverDate})`;
  const fix = 'keep the clock synchronised (timedatectl set-ntp true; timedatectl timesync-status)';
  if (abs > CLOCK_FAIL_MS) return fail('clock', `${what}: the lease's expiry and S3's request signatures both depend on the clock (S3 refuses signatures more than 15 min off)`, fix);
  if (abs > CLOCK_WARN_MS) return warn('clock', `${what}: the lease's safety margin is at most 5 s`, fix);
  return ok('clock', `offset ${(offset / 1000).toFixed(1)} s against the S3 server (within ±${sec(CLOCK_WARN_MS)}; Date has 1 s resolution)`);
}

/** Check 4 without S3_BUCKET: the directory replica is writable (a scratch file, removed). */
export async function checkLocalReplica(cfg: Pick<Config, 'localReplicaPath'>): Promise<CheckResult[]> {
  const dir = cfg.localReplicaPath;
  const notS3 = ok('clock', 'not checked: no S3_BUCKET (the lease is a local file)');
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) return [fail('replica', `${dir} is not a directory`, `remove it or set LOCAL_REPLICA_PATH to a directory`), notS3];
  } catch {
    return [warn('replica', `${dir} does not exist yet (the agent creates it at its first start)`, 'systemctl restart vwstream-agent'), notS3];
  }
  const probe = join(dir, `.doctor-${randomBytes(6).toString('hex')}`);
  const t0 = Date.now();
  try {
    await writeFile(probe, 'vwstream-agent doctor\n', { flag: 'wx', mode: 0o600 });
    const back = await readFile(probe, 'utf8');
    if (back !== 'vwstream-agent doctor\n') throw new Error('read back other bytes');
  } catch (err) {
    return [fail('replica', `${dir} is not writable: ${errorMessage(err)}`, `check the disk and permissions of ${dir} (LOCAL_REPLICA_PATH)`), notS3];
  } finally {
    await rm(probe, { force: true }).catch(() => undefined);
  }
  return [ok('replica', `file://${dir}: writable (scratch file written, read and removed in ${Date.now() - t0} ms; no S3_BUCKET)`), notS3];
}

/** The real S3 probe: PUT, GET, DELETE a scratch key, then the lease's conditional-write probe (beside, never on, lease.json). */
export async function realS3Probe(s3: S3Settings, signal: AbortSignal, makeClient: (s: S3Settings) => S3Client = s3Client): Promise<S3ProbeResult> {
  const client = makeClient(s3);
  let lastDate: string | undefined;
  // Inner to the deserializer: sees every raw response, errors included.
  client.middlewareStack.add((next) => async (args) => {
    const res = await next(args);
    const headers = (res.response as { headers?: Record<string, string> } | undefined)?.headers;
    if (headers?.date) lastDate = headers.date;
    return res;
  }, { step: 'deserialize', priority: 'low', name: 'doctorDateHeader' });
  const key = [s3.prefix, `.doctor-${randomBytes(8).toString('hex')}`].filter(Boolean).join('/');
  const body = `vwstream-agent doctor ${new Date().toISOString()}`;
  const timed = async <T>(fn: () => Promise<T>) => { const t = Date.now(); const v = await fn(); return { v, ms: Date.now() - t, mid: (t + Date.now()) / 2 }; };
  const started = Date.now();
  try {
    const put = await timed(() => client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: body, ContentType: 'text/plain', ...(s3.acl ? { ACL: s3.acl as 'private' } : {}) }), { abortSignal: signal }));
    const serverDate = lastDate;
    let got: { v: string; ms: number };
    try {
      got = await timed(async () => (await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }), { abortSignal: signal })).Body!.transformToString());
    } catch (err) {
      // Not with `signal`: when the bound cut the GET off, it is aborted already.
      await cleanupLater(client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: key }), { abortSignal: AbortSignal.timeout(CLEANUP_MS) }));
      throw err;
    }
    const del = await timed(() => client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: key }), { abortSignal: signal })).catch(async (err) => {
      await cleanupLater(client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: key }), { abortSignal: AbortSignal.timeout(CLEANUP_MS) }));
      throw err;
    });
    if (got.v !== body) throw new Error(`read back ${got.v.length} bytes that differ from the ${body.length} written to ${key}`);
    let conditional: S3ProbeResult['conditional'];
    try {
      conditional = await new S3LeaseStore(s3, client).probe(signal, cleanupLater);
    } catch (err) {
      if (signal.aborted) throw err;
      conditional = { error: describeS3Error(err) };
    }
    return { putMs: put.ms, getMs: got.ms, deleteMs: del.ms, serverDate, localMidMs: put.mid, conditional };
  } catch (err) {
    // An error answer carries the server's Date too (RequestTimeTooSkewed above all): the clock check still runs.
    if (lastDate && err && typeof err === 'object') Object.assign(err, { serverDate: lastDate, localMidMs: (started + Date.now()) / 2 });
    throw err;
  } finally {
    client.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// 5. backup remotes

export async function checkRemote(cfg: Pick<Config, 's3' | 'rcloneRemoteName' | 'rcloneEnv' | 'rcloneFlags'>, remote: string, env: Pick<DoctorEnv, 'run'>, timeoutMs = NET_TIMEOUT_MS): Promise<CheckResult> {
  const ctx = rcloneContext(cfg);
  const name = remote.split(':')[0] ?? remote;
  const check = `remote ${remote}`;
  // Bounds after RCLONE_FLAGS: a black-holed destination answers within the check's bound.
  const bounds = [`--contimeout=${Math.floor(timeoutMs / 2000)}s`, `--timeout=${Math.floor(timeoutMs / 1000)}s`, '--retries=1', '--low-level-retries=1'];
  const t0 = Date.now();
  const r = await env.run(ctx.bin, ['lsf', '--max-depth', '1', remote, ...ctx.flags, ...bounds], { env: ctx.env, timeoutMs, reject: false });
  const ms = Date.now() - t0;
  const lines = (r.stderr || '').split('\n').filter((l) => l.trim() && !/NOTICE: Config file .* not found/.test(l))
    .map((l) => l.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, '').trim());
  const why = lines.slice(-2).join(' | ');
  if (r.timedOut) return fail(check, `rclone lsf did not finish within ${sec(timeoutMs)}`, `check that this host reaches ${remote} (rclone lsf ${remote})`);
  if (r.exitCode === 0) return ok(check, `reachable (rclone lsf: ${r.stdout.split('\n').filter(Boolean).length} entries, ${ms} ms)`);
  if (r.exitCode === 3 && /directory not found/i.test(r.stderr)) return ok(check, `reachable; the folder does not exist yet (the first backup creates it; ${ms} ms)`);
  if (/didn't find section in config file|not found in config file|couldn't find type/i.test(r.stderr)) {
    return fail(check, `rclone has no remote "${name}" (${why})`, `define it: RCLONE_CONFIG_${name.toUpperCase().replace(/-/g, '_')}_TYPE=… (and its settings) in the config, or use the S3 remote "${cfg.rcloneRemoteName}:" (RCLONE_REMOTE_NAME); then correct BACKUP_REMOTES`);
  }
  const upper = name.toUpperCase().replace(/-/g, '_');
  if (/SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|status code: 403/.test(r.stderr)) {
    const keys = cfg.s3 && upper === cfg.rcloneRemoteName.toUpperCase().replace(/-/g, '_') && !Object.keys(cfg.rcloneEnv).some((k) => k.startsWith(`RCLONE_CONFIG_${upper}_`))
      ? 'S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (this remote is derived from S3_*)' : `the credentials in RCLONE_CONFIG_${upper}_*`;
    return fail(check, `the remote refused the credentials (${why})`, `check ${keys}`);
  }
  return fail(check, `rclone lsf exited ${r.exitCode}${why ? `: ${why}` : ''}`, `rclone lsf ${remote} shows the error; check the remote's settings (RCLONE_CONFIG_${name.toUpperCase().replace(/-/g, '_')}_*) and credentials`);
}

// ---------------------------------------------------------------------------------------
// 6. disk

/** Free space under the data folder and the agent's state (staging), and the directory replica when there is no S3. */
export async function checkDisk(env: Pick<DoctorEnv, 'paths'>, localReplica?: string): Promise<CheckResult[]> {
  const db = await stat(env.paths.dbFile).then((s) => s.size, () => 0);
  const out: CheckResult[] = [];
  const replica = localReplica && await stat(localReplica).then((s) => s.isDirectory(), () => false) ? [localReplica] : [];
  for (const dir of [env.paths.dataFolder, env.paths.stateDir, ...replica]) {
    const h = await diskCheck(dir, db);
    out.push(h.ok ? ok('disk', h.detail) : fail('disk', h.detail, `free space under ${dir}: the database grows there, and restores and backups stage up to twice its size under ${env.paths.stateDir}`));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// 8. timers and 9. the socket

/** Microsecond timespan as systemctl prints it ("1d 2h 3min 4.5s", "150ms") → ms. */
export function parseTimespan(s: string): number | null {
  const t = s.trim();
  if (t === '' || t === '0' || t === 'infinity' || t === 'n/a') return null;
  const units: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3, min: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8, M: 2.6298e9, y: 3.15576e10 };
  let total = 0;
  let matched = '';
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d|w|M|y)/g)) { total += Number(m[1]) * units[m[2]!]!; matched += m[0]; }
  return matched.replace(/\s/g, '') === t.replace(/\s/g, '') ? total : null;
}

export type AgentState = { active: boolean; state: string | null; role: 'primary' | 'secondary' };

/** The timers the agent starts when it serves as primary: sync, verify, and backup when enabled. */
export async function checkTimers(cfg: Pick<Config, 'backup'> | null, agent: AgentState, env: Pick<DoctorEnv, 'run' | 'now'>): Promise<CheckResult[]> {
  const timers: string[] = [UNITS.syncTimer, ...(cfg === null ? [] : cfg.backup.enabled ? [UNITS.backupTimer] : []), UNITS.verifyTimer];
  const uptimeMs = await readFile('/proc/uptime', 'utf8').then((t) => Number(t.split(' ')[0]) * 1000, () => NaN);
  const out: CheckResult[] = [];
  for (const unit of timers) {
    const r = await env.run('systemctl', ['show', '--timestamp=unix', '-p', 'LoadState', '-p', 'ActiveState', '-p', 'NextElapseUSecRealtime', '-p', 'NextElapseUSecMonotonic', unit], { timeoutMs: 5_000, reject: false });
    const p = Object.fromEntries(r.stdout.split('\n').map((l) => { const i = l.indexOf('='); return [l.slice(0, i), l.slice(i + 1)]; }));
    if (r.exitCode !== 0 || p.LoadState === undefined) { out.push(fail('timer', `${unit}: systemctl show failed (${(r.stderr || r.stdout).trim()})`, 'systemctl status ' + unit)); continue; }
    if (p.LoadState !== 'loaded') { out.push(fail('timer', `${unit} is ${p.LoadState}`, 'reinstall the package (apt install --reinstall vwstream-agent)')); continue; }
    let next: number | null = null;
    const raw = (p.NextElapseUSecRealtime ?? '').trim();
    const rt = /^@(\d+)/.exec(raw);
    if (rt) next = Number(rt[1]) * 1000;
    else if (raw && raw !== 'n/a' && raw !== '0') {
      const t = Date.parse(raw.replace(/^[A-Za-z]{3} /, ''));
      if (Number.isFinite(t)) next = t;
    }
    const mono = parseTimespan(p.NextElapseUSecMonotonic ?? '');
    if (next === null && mono !== null && Number.isFinite(uptimeMs)) next = env.now() + (mono - uptimeMs);
    const nextText = next === null ? `no next run${raw ? ` (${raw})` : ''}` : `next ${new Date(next).toISOString().replace(/\.\d+Z$/, 'Z')}`;
    if (p.ActiveState === 'active') { out.push(ok('timer', `${unit} active, ${nextText}`)); continue; }
    if (!agent.active) out.push(warn('timer', `${unit} ${p.ActiveState}: the agent is not running (it starts its timers when it serves)`, 'systemctl start vwstream-agent'));
    else if (agent.role === 'secondary') out.push(ok('timer', `${unit} ${p.ActiveState}: not used on a secondary`));
    else if (agent.state !== 'serving') out.push(warn('timer', `${unit} ${p.ActiveState}: the agent is ${agent.state ?? 'starting'}, not serving yet (it starts its timers when it serves)`, 'vwstream-agent status shows why'));
    else out.push(fail('timer', `${unit} ${p.ActiveState} while the agent serves`, `systemctl start ${unit}; journalctl -u vwstream-agent shows why it is not running`));
  }
  return out;
}

/** The agent's read socket: mode 0660, group vwstream, answers GET /status; absent while the agent is stopped. */
export async function checkSocket(agentActive: boolean, env: Pick<DoctorEnv, 'paths' | 'agentStatus' | 'groupId'>): Promise<{ result: CheckResult; state: string | null }> {
  const sock = env.paths.socket;
  let st;
  try {
    st = await stat(sock);
  } catch {
    if (!agentActive) return { result: ok('socket', `agent not running (no ${sock})`), state: null };
    return { result: fail('socket', `the agent runs but ${sock} is missing`, 'systemctl restart vwstream-agent; journalctl -u vwstream-agent shows why'), state: null };
  }
  if (!st.isSocket()) return { result: fail('socket', `${sock} is not a socket`, `systemctl stop vwstream-agent; rm ${sock}; systemctl start vwstream-agent`), state: null };
  const mode = st.mode & 0o777;
  const gid = await env.groupId(API_GROUP);
  if (mode !== 0o660 || st.uid !== 0 || (gid !== null && st.gid !== gid)) {
    return { result: fail('socket', `${sock} has mode ${mode.toString(8)}, owner ${st.uid}:${st.gid} (expected 660 root:${API_GROUP}${gid !== null ? ` (${gid})` : ''})`, 'systemctl restart vwstream-agent (it sets the mode and group when it listens)'), state: null };
  }
  const s = await env.agentStatus(sock, 3_000);
  if ('error' in s) {
    return { result: fail('socket', `${sock} (660 root:${API_GROUP}) does not answer: ${s.error}`, agentActive ? 'systemctl restart vwstream-agent; journalctl -u vwstream-agent' : `the agent is stopped but left ${sock}: systemctl start vwstream-agent`), state: null };
  }
  return { result: ok('socket', `${sock} (660 root:${API_GROUP}) answers: state ${s.state}`), state: s.state };
}

// ---------------------------------------------------------------------------------------
// all of it

export interface DoctorReport { results: CheckResult[]; configLoaded: boolean; ms: number }

/**
 * Every check, in a fixed order. With a config that does not load, the checks that need
 * none still run (disk, socket, the sync and verify timers): configLoaded=false (exit 78).
 */
export async function runDoctor(configPath: string, env: DoctorEnv, load: (p: string) => Config = loadConfig, setSecrets: (s: string[]) => void = () => undefined): Promise<DoctorReport> {
  const t0 = env.now();
  const { cfg, results: configResults } = checkConfig(configPath, load);
  if (cfg) setSecrets(cfg.secrets);
  const agentActive = (await env.run('systemctl', ['is-active', UNITS.agent], { timeoutMs: 5_000, reject: false }).catch(() => ({ stdout: '' } as RunResult))).stdout.trim() === 'active';
  const cfgChecks: Promise<CheckResult[]>[] = [];
  if (cfg) {
    // The binary and web vault the unit would run (VAULTWARDEN_BIN, or the installed version).
    const store = new VersionStore(env.paths.vaultwardenDir ?? PATHS.vaultwardenDir);
    const choice = chooseVaultwarden(cfg, store);
    const pinPending = choice.source === 'default' && cfg.vaultwarden.version !== undefined && !cfg.vaultwarden.binGiven;
    const fixVw = choice.source === 'operator' ? `check VAULTWARDEN_BIN (${choice.bin})` : `check ${choice.bin} (vwstream-agent vaultwarden install)`;
    if (pinPending) {
      cfgChecks.push(Promise.resolve([warn('vaultwarden', `VAULTWARDEN_VERSION=${cfg.vaultwarden.version} is not installed yet: the agent installs it from ${cfg.vaultwarden.image} at its next start`, 'vwstream-agent vaultwarden install, or restart the agent')]));
    } else {
      cfgChecks.push(bounded('vaultwarden', NET_TIMEOUT_MS, () => checkVaultwarden({ vaultwardenBin: choice.bin }, env, choice.source), fixVw));
      cfgChecks.push(bounded('web-vault', NET_TIMEOUT_MS, () => checkWebVault({ vaultwardenEnv: vaultwardenEnvOf(cfg, store) }, env), 'check WEB_VAULT_FOLDER'));
    }
    cfgChecks.push(bounded('port', NET_TIMEOUT_MS, () => checkPort(cfg, env), `check what listens on ROCKET_PORT ${cfg.rocketPort}`));
    if (cfg.s3) {
      const s3cfg = { ...cfg, s3: cfg.s3 };
      cfgChecks.push(bounded('s3', NET_TIMEOUT_MS, (signal) => checkS3(s3cfg, env, signal), `check that this host reaches S3_ENDPOINT (${cfg.s3.endpoint ?? 'AWS'}) and that the server is up`, `s3://${cfg.s3.bucket}/${cfg.s3.prefix ? cfg.s3.prefix + '/' : ''}`)
        .then((r) => (r.length === 1 && r[0]!.level === 'fail' ? [...r, warn('clock', 'not checked: S3 did not answer', null)] : r)));
    } else cfgChecks.push(bounded('replica', NET_TIMEOUT_MS, () => checkLocalReplica(cfg), `check the disk under ${cfg.localReplicaPath}`));
    for (const remote of cfg.backup.remotes) {
      cfgChecks.push(bounded(`remote ${remote}`, NET_TIMEOUT_MS + 2_000, () => checkRemote(cfg, remote, env), `check that this host reaches ${remote}`));
    }
  }
  const disk = bounded('disk', NET_TIMEOUT_MS, () => checkDisk(env, cfg && !cfg.s3 ? cfg.localReplicaPath : undefined), 'check the file systems (df -h)');
  // The role the agent runs as: promote's override file wins over NODE_ROLE (as at the agent's start).
  const override = (await readFile(env.paths.roleOverride, 'utf8').catch(() => '')).trim();
  const role = override === 'primary' || override === 'secondary' ? override : cfg?.role ?? 'primary';
  const socket = checkSocket(agentActive, env);
  const { result: socketResult, state } = await socket;
  const timers = bounded('timer', NET_TIMEOUT_MS, () => checkTimers(cfg, { active: agentActive, state, role }, env), 'systemctl list-timers vwstream-*');
  const rest = (await Promise.all([...cfgChecks, disk, timers])).flat();
  const oneLine = (t: string) => scrub(t).split('\n').map((l) => l.trim()).filter(Boolean).join(' | ');
  const results = [...configResults, ...rest, socketResult].map((r) => ({ ...r, detail: oneLine(r.detail), fix: r.fix === null ? null : oneLine(r.fix) }));
  await awaitCleanups();
  return { results, configLoaded: cfg !== null, ms: env.now() - t0 };
}

// ---------------------------------------------------------------------------------------
// the real environment

function httpGetReal(host: string, port: number, path: string, timeoutMs: number): Promise<{ status: number } | null> {
  // A TCP connect first: refused = free; then the HTTP request on fetch.
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port, timeout: timeoutMs });
    sock.once('connect', () => {
      sock.destroy();
      fetch(`http://${host.includes(':') ? `[${host}]` : host}:${port}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
        .then(async (r) => { await r.arrayBuffer().catch(() => undefined); resolve({ status: r.status }); })
        .catch((err: unknown) => reject(new Error((err as { cause?: Error }).cause?.message ?? errorMessage(err))));
    });
    sock.once('timeout', () => { sock.destroy(); reject(new Error(`connect timed out after ${sec(timeoutMs)}`)); });
    sock.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(null) : reject(err)));
  });
}

async function groupIdReal(name: string): Promise<number | null> {
  const text = await readFile('/etc/group', 'utf8').catch(() => '');
  const line = text.split('\n').find((l) => l.startsWith(`${name}:`));
  return line ? Number(line.split(':')[2]) : null;
}

export function realEnv(apiStatus: (socket: string, timeoutMs: number) => Promise<{ state: string } | { error: string }>): DoctorEnv {
  return {
    paths: { dataFolder: PATHS.dataFolder, stateDir: PATHS.stateDir, socket: PATHS.socket, controlSocket: PATHS.controlSocket, dbFile: PATHS.dbFile, roleOverride: PATHS.roleOverride },
    run: runProcess,
    now: () => Date.now(),
    httpGet: httpGetReal,
    s3Probe: (s3, signal) => realS3Probe(s3, signal),
    agentStatus: apiStatus,
    groupId: groupIdReal,
  };
}
