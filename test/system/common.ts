import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { bootHost, freePort, installPackage, installStandin, standin, type Host, type S3Server, type StandinClient } from './harness.ts';

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
  const text = Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
  await host.writeFile('/etc/vwstream/vwstream.env', text, 0o600);
}

/** `systemctl restart` blocks until READY=1 (Type=notify); returns how long that took. */
export async function startAgent(host: Host, verb: 'start' | 'restart' = 'restart'): Promise<number> {
  const t = Date.now();
  await host.exec(['systemctl', verb, 'vwstream-agent.service'], { timeoutMs: 300_000 });
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

/** S3_* settings for a bucket/prefix on the emulator (LEASE_TTL 10 s: replacements start soon). */
export function s3Env(s3: S3Server, bucket: string, prefix: string): Record<string, string> {
  return {
    S3_BUCKET: bucket, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'fault-key',
    S3_SECRET_ACCESS_KEY: 'fault-secret-0a1b2c3d', S3_REGION: 'us-east-1', S3_PREFIX: prefix, LEASE_TTL: '10',
  };
}

/** The uuids in the host's users table (read beside the running stand-in and Litestream). */
export async function userUuids(host: Host): Promise<Set<string>> {
  const r = await host.exec(['sqlite3', '-readonly', '/var/lib/vaultwarden/db.sqlite3', 'SELECT uuid FROM users;']);
  return new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}
