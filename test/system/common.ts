import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { bootHost, freePort, installPackage, installStandin, standin, type Host, type StandinClient } from './harness.ts';

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
