import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { bootHost, freePort, installPackage, installStandin, standin, type Host, type S3Server, type StandinClient } from './harness.ts';

const AGENT = 'vwstream-agent.service';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const REPO = new URL('../..', import.meta.url).pathname;

/** The .deb under test: VWS_DEB (set by make) or the newest in dist/. */
export function debPath(): string {
  if (process.env.VWS_DEB) return process.env.VWS_DEB;
  const dist = join(REPO, 'dist');
  const debs = existsSync(dist) ? readdirSync(dist).filter((f) => f.endsWith('.deb')).sort() : [];
  if (debs.length === 0) throw new Error('no .deb: run make deb (or make test-system)');
  return join(dist, debs.at(-1)!);
}

export interface AgentHost { host: Host; port: number; vw: StandinClient }

/**
 * A fresh Debian 12 host with the package installed by apt, the Vaultwarden stand-in at
 * /usr/bin/vaultwarden, and /etc/vwstream/vwstream.env holding `env` plus its own port.
 * The agent is not (re)started: tests do that to time it.
 */
export async function agentHost(name: string, env: Record<string, string>): Promise<AgentHost> {
  const host = await bootHost(name);
  await installPackage(host, debPath());
  await installStandin(host);
  const port = await freePort();
  await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(port), ...env });
  return { host, port, vw: standin(host, port) };
}

export async function writeEnv(host: Host, env: Record<string, string>): Promise<void> {
  // The stand-in, as Vaultwarden does, exits at start without a web vault
  // (<WEB_VAULT_FOLDER>/index.html). installStandin puts the program alone at
  // /usr/bin/vaultwarden, so unless the test says where the web vault is (or runs an image
  // version, which brings one), Vaultwarden is told to run without it.
  if (!('WEB_VAULT_ENABLED' in env || 'WEB_VAULT_FOLDER' in env || 'VAULTWARDEN_VERSION' in env || 'VAULTWARDEN_IMAGE' in env)) env = { ...env, WEB_VAULT_ENABLED: 'false' };
  const text = Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
  await host.writeFile('/etc/vwstream/vwstream.env', text, 0o600);
}

/** `systemctl restart` blocks until READY=1 (Type=notify); returns how long that took. */
export async function startAgent(host: Host, verb: 'start' | 'restart' = 'restart'): Promise<number> {
  const t = Date.now();
  const r = await host.exec(['systemctl', verb, 'vwstream-agent.service'], { timeoutMs: 300_000, check: false });
  if (r.exitCode !== 0) {
    // What the agent said is what a failure here needs (the host is gone once the test ends).
    throw new Error(`[${host.name}] systemctl ${verb} vwstream-agent.service: exit code ${r.exitCode}\n${r.stderr.trim()}\n--- journal ---\n${await journalTail(host, 60)}`);
  }
  return Date.now() - t;
}

export async function statusJson(host: Host): Promise<Record<string, any>> {
  const r = await host.exec(['vwstream-agent', 'status', '--json']);
  return JSON.parse(r.stdout) as Record<string, any>;
}

/** Waits until the agent confirms the replica holds everything written before `since`. */
export async function waitDbSynced(host: Host, since: number, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await statusJson(host);
    if (s.lastDbSync && Date.parse(s.lastDbSync) >= since) return Date.parse(s.lastDbSync) - since;
    if (Date.now() > deadline) throw new Error(`replica not confirmed in sync after ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Polls `status --json` until the agent serves (e.g. after waiting for a lease). */
export async function waitServing(host: Host, timeoutMs = 120_000): Promise<Record<string, any>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await statusJson(host).catch(() => undefined);
    if (s?.state === 'serving') return s;
    if (Date.now() > deadline) throw new Error(`not serving after ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function unitProp(host: Host, unit: string, prop: string): Promise<string> {
  return (await host.exec(['systemctl', 'show', '-P', prop, unit])).stdout.trim();
}

/** S3_* settings for a bucket/prefix on the server, with its credentials (LEASE_TTL 10 s: replacements start soon). */
export function s3Env(s3: S3Server, bucket: string, prefix: string): Record<string, string> {
  return {
    S3_BUCKET: bucket, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: s3.accessKey,
    S3_SECRET_ACCESS_KEY: s3.secretKey, S3_REGION: 'us-east-1', S3_PREFIX: prefix, LEASE_TTL: '10',
  };
}

/** The uuids in the host's users table (read beside the running stand-in and Litestream). */
export async function userUuids(host: Host): Promise<Set<string>> {
  const r = await host.exec(['sqlite3', '-readonly', '/var/lib/vaultwarden/db.sqlite3', 'SELECT uuid FROM users;']);
  return new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}

/** The `msg` of every pino JSON line of the agent's journal (other lines as they are). */
export async function agentMessages(host: Host, args: string[] = []): Promise<string[]> {
  const journal = await host.journal(['-u', AGENT, '-o', 'cat', ...args]);
  return journal.split('\n').filter(Boolean).map((l) => {
    if (!l.startsWith('{')) return l;
    try {
      const j = JSON.parse(l) as { msg?: unknown; reason?: unknown };
      return `${String(j.msg ?? l)}${j.reason !== undefined ? ` (reason: ${String(j.reason)})` : ''}`;
    } catch { return l; }
  });
}

export async function journalTail(host: Host, n = 40): Promise<string> {
  if (!host.running) return `(host ${host.name} is not running)`;
  return (await agentMessages(host)).slice(-n).map((m) => `  | ${m}`).join('\n');
}

/**
 * Polls fn every intervalMs until it returns a value other than undefined (errors count as
 * "not yet"; the last one is reported). On timeout throws with the last state and the agent's
 * journal tail of `diag`.
 */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>, diag?: Host, intervalMs = 250): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  let last: unknown = 'never polled';
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return { value: v, ms: Date.now() - t0 };
      last = 'not yet';
    } catch (e) {
      last = e instanceof Error ? e.message : e;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String(last).slice(0, 2000)})${diag ? `\n--- ${diag.name} agent journal ---\n${await journalTail(diag)}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Starts (restarts) the agent; Type=notify: returns at READY=1 (a waiting primary sends READY too). */
export async function startAgentQuick(host: Host, timeoutMs = 120_000): Promise<number> {
  const t0 = Date.now();
  let r = await host.exec(['systemctl', 'restart', AGENT], { timeoutMs, check: false });
  // Environment, not the agent: under this machine's hybrid cgroup v1, nspawn hosts now and
  // then fail a unit's start before exec with 219/CGROUP (after "Failed to kill control
  // group … Input/output error"). Retry that, visibly, and nothing else.
  for (let i = 0; i < 2 && r.exitCode !== 0 && /status=219\/CGROUP/.test((await agentMessages(host, ['-n', '5'])).join('\n')); i++) {
    console.log(`# harness: [${host.name}] ${AGENT} failed to start with 219/CGROUP (nspawn cgroup); reset-failed and retried`);
    await host.exec(['systemctl', 'reset-failed', AGENT], { check: false });
    r = await host.exec(['systemctl', 'restart', AGENT], { timeoutMs, check: false });
  }
  if (r.exitCode !== 0) throw new Error(`[${host.name}] systemctl restart ${AGENT}: exit ${r.exitCode} ${r.stderr}\n--- agent journal ---\n${await journalTail(host)}`);
  return Date.now() - t0;
}

/** The agent's file mirror has uploaded everything changed before `since`. */
export async function waitFilesSynced(host: Host, since: number): Promise<void> {
  await waitFor(`${host.name} file mirror in sync`, 30_000, async () => {
    const s = await statusJson(host);
    return s.lastFileSync && Date.parse(s.lastFileSync) >= since ? true : undefined;
  }, host);
}
