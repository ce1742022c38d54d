import { accessSync, constants } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Config } from '../config/config.ts';
import { errorMessage } from '../errors.ts';
import { run as execRun, type RunOptions, type RunResult } from '../exec.ts';
import { log } from '../log.ts';
import { writePrivateFile } from '../fs.ts';

/**
 * Tailscale: the operator's system tailscaled (from Tailscale's package), driven through
 * its CLI. The agent joins the tailnet (`tailscale up`, the auth key through a 0600 file,
 * never argv) and publishes Vaultwarden with `tailscale serve` (or `funnel`). Every step
 * first reads the current state, so a restart changes nothing that is already right.
 */
export type TailscaleSettings = Config['tailscale'];
export type ServeType = 'https' | 'http' | 'tcp' | 'tls-terminated-tcp';

export const TAILSCALE_BIN = '/usr/bin/tailscale';
export const AUTHKEY_FILE = '/run/vwstream/tailscale-authkey';
/** Ports Tailscale Funnel accepts. */
export const FUNNEL_PORTS = [443, 8443, 10000] as const;
/** `tailscale up --timeout`: a bad or expired key fails instead of blocking forever. */
export const UP_TIMEOUT = '60s';

/** Where tailscale serve forwards to: Vaultwarden's own listener, loopback when it listens on all. */
export function proxyTarget(mode: TailscaleSettings['serveMode'], rocketAddress: string, rocketPort: number): string {
  let host = ['0.0.0.0', '::', ''].includes(rocketAddress) ? '127.0.0.1' : rocketAddress;
  if (host.includes(':')) host = `[${host}]`;
  return mode === 'https' ? `http://${host}:${rocketPort}` : `tcp://${host}:${rocketPort}`;
}

/** `tailscale up` argv. The key, when given, is a file: reference; never the key itself. */
export function upArgs(ts: TailscaleSettings, authKeyFile: string | undefined): string[] {
  const args = ['up', `--hostname=${ts.hostname}`];
  if (ts.loginServer) args.push(`--login-server=${ts.loginServer}`);
  if (ts.tags.length) args.push(`--advertise-tags=${ts.tags.join(',')}`);
  if (authKeyFile) args.push(`--auth-key=file:${authKeyFile}`);
  args.push(`--timeout=${UP_TIMEOUT}`);
  return args;
}

/** `tailscale serve|funnel --bg --<mode>=<port> <target>`. */
export function serveArgs(ts: TailscaleSettings, target: string): string[] {
  return [ts.funnel ? 'funnel' : 'serve', '--bg', `--${ts.serveMode}=${ts.servePort}`, target];
}

export interface TailnetStatus {
  backendState: string;
  ips: string[];
  /** MagicDNS name without the trailing dot ('' when none). */
  dnsName: string;
  hostName: string;
  authUrl: string;
}

/** Parses `tailscale status --json` (ipnstate.Status). */
export function parseStatus(json: string): TailnetStatus {
  const s = JSON.parse(json) as { BackendState?: string; TailscaleIPs?: string[]; AuthURL?: string; Self?: { DNSName?: string; HostName?: string; TailscaleIPs?: string[] } };
  return {
    backendState: s.BackendState ?? 'NoState',
    ips: s.Self?.TailscaleIPs ?? s.TailscaleIPs ?? [],
    dnsName: (s.Self?.DNSName ?? '').replace(/\.$/, ''),
    hostName: s.Self?.HostName ?? '',
    authUrl: s.AuthURL ?? '',
  };
}

export interface ServeState { type: ServeType | null; target: string | null; funnel: boolean }

/** What `tailscale serve status --json` (ipn.ServeConfig) says about one port. */
export function parseServeStatus(json: string, port: number, dnsName: string): ServeState {
  const sc = (json.trim() ? JSON.parse(json) : {}) as {
    TCP?: Record<string, { HTTPS?: boolean; HTTP?: boolean; TCPForward?: string; TerminateTLS?: string }>;
    Web?: Record<string, { Handlers?: Record<string, { Proxy?: string }> }>;
    AllowFunnel?: Record<string, boolean>;
  } | null;
  const hp = `${dnsName}:${port}`;
  const h = sc?.TCP?.[String(port)];
  const funnel = sc?.AllowFunnel?.[hp] === true;
  if (!h) return { type: null, target: null, funnel };
  if (h.HTTPS || h.HTTP) return { type: h.HTTPS ? 'https' : 'http', target: sc?.Web?.[hp]?.Handlers?.['/']?.Proxy ?? null, funnel };
  if (h.TCPForward) return { type: h.TerminateTLS ? 'tls-terminated-tcp' : 'tcp', target: `tcp://${h.TCPForward}`, funnel };
  return { type: null, target: null, funnel };
}

/**
 * The serve/funnel commands that turn `current` into what the settings ask for: none when
 * it already is; the old handler on the port switched off first when its type differs
 * (tailscale refuses to change a port's type in place).
 */
export function servePlan(current: ServeState, ts: TailscaleSettings, target: string): string[][] {
  if (current.type === ts.serveMode && current.target === target && current.funnel === ts.funnel) return [];
  const cmds: string[][] = [];
  if (current.type && current.type !== ts.serveMode) cmds.push(['serve', `--${current.type}=${ts.servePort}`, 'off']);
  cmds.push(serveArgs(ts, target));
  return cmds;
}

/** The URL the tailnet reaches Vaultwarden at. */
export function tailnetUrl(ts: TailscaleSettings, dnsName: string): string {
  if (!dnsName) return '';
  if (ts.serveMode === 'https') return `https://${dnsName}${ts.servePort === 443 ? '' : `:${ts.servePort}`}`;
  return `tcp://${dnsName}:${ts.servePort}`;
}

export interface TailscaleReport {
  enabled: boolean;
  /** Joined and serving as configured. */
  up: boolean;
  backendState: string | null;
  /** First tailnet IPv4 (else the first address). */
  address: string | null;
  addresses: string[];
  dnsName: string | null;
  url: string | null;
  serve: string | null;
  error: string | null;
  since: string | null;
}

type Runner = (file: string, args: string[], opts?: RunOptions) => Promise<RunResult>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TailscaleOptions {
  bin?: string;
  authKeyFile?: string;
  /** Bound of the wait for tailscaled at each attempt. */
  daemonWaitMs?: number;
  retryMs?: number;
  run?: Runner;
}

export class Tailscale {
  private readonly ts: TailscaleSettings;
  private readonly target: string;
  private readonly bin: string;
  private readonly authKeyFile: string;
  private readonly daemonWaitMs: number;
  private readonly retryMs: number;
  private readonly run: Runner;
  private readonly checkBin: boolean;
  private report: TailscaleReport;
  private started = false;

  constructor(cfg: Pick<Config, 'tailscale' | 'rocketAddress' | 'rocketPort'>, opts: TailscaleOptions = {}) {
    this.ts = cfg.tailscale;
    this.target = proxyTarget(cfg.tailscale.serveMode, cfg.rocketAddress, cfg.rocketPort);
    this.bin = opts.bin ?? TAILSCALE_BIN;
    this.authKeyFile = opts.authKeyFile ?? AUTHKEY_FILE;
    this.daemonWaitMs = opts.daemonWaitMs ?? 30_000;
    this.retryMs = opts.retryMs ?? 30_000;
    this.run = opts.run ?? execRun;
    this.checkBin = opts.run === undefined;
    this.report = { enabled: this.ts.enabled, up: false, backendState: null, address: null, addresses: [], dnsName: null, url: null, serve: null, error: null, since: null };
  }

  status(): TailscaleReport {
    return { ...this.report };
  }

  /**
   * One bounded attempt now (the caller awaits it before READY); when it fails, Vaultwarden
   * keeps serving locally and further attempts run every retryMs until one succeeds or
   * `stopped` resolves.
   */
  async start(stopped: Promise<void>): Promise<void> {
    if (!this.ts.enabled || this.started) return;
    this.started = true;
    if (await this.attempt()) return;
    let stop = false;
    void stopped.then(() => { stop = true; });
    void (async () => {
      while (!stop) {
        await Promise.race([sleep(this.retryMs), stopped]);
        if (stop || await this.attempt()) return;
      }
    })();
  }

  private async attempt(): Promise<boolean> {
    try {
      await this.ensure();
      return true;
    } catch (err) {
      const msg = errorMessage(err);
      const changed = this.report.error !== msg;
      this.report = { ...this.report, up: false, error: msg };
      if (changed) log.error({ err: msg }, `tailscale: ${msg}; Vaultwarden keeps serving locally, retrying every ${this.retryMs / 1000}s`);
      return false;
    }
  }

  private async cli(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return this.run(this.bin, args, { timeoutMs });
  }

  private async readStatus(): Promise<TailnetStatus> {
    const r = await this.run(this.bin, ['status', '--json'], { timeoutMs: 15_000, reject: false });
    if (r.exitCode !== 0 || !r.stdout.trim().startsWith('{')) throw new Error(`tailscaled does not answer: ${(r.stderr || r.stdout).trim().split('\n')[0] ?? ''}`);
    return parseStatus(r.stdout);
  }

  /** Waits (bounded) until tailscaled answers on its socket. */
  private async waitDaemon(): Promise<TailnetStatus> {
    const deadline = Date.now() + this.daemonWaitMs;
    for (;;) {
      try {
        const st = await this.readStatus();
        if (st.backendState !== 'NoState') return st;
        if (Date.now() > deadline) return st;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${errorMessage(err)} (waited ${this.daemonWaitMs / 1000}s; is tailscaled.service running?)`);
      }
      await sleep(500);
    }
  }

  /** Joins the tailnet and publishes Vaultwarden, changing only what differs. */
  async ensure(): Promise<void> {
    if (this.checkBin) {
      try { accessSync(this.bin, constants.X_OK); } catch { throw new Error(`${this.bin} not found: install Tailscale's package (it provides tailscale and tailscaled)`); }
    }
    let st = await this.waitDaemon();
    if (st.backendState === 'Running') {
      log.info({ dnsName: st.dnsName, ips: st.ips }, `tailscale: already on the tailnet as ${st.dnsName || st.hostName} (tailscale up not needed)`);
    } else {
      const key = this.ts.authKey;
      if (!key && st.backendState === 'NeedsLogin') {
        throw new Error('tailscale needs a login and TAILSCALE_AUTHKEY is empty: set it, or log in once with tailscale up');
      }
      if (key) await writePrivateFile(this.authKeyFile, key);
      try {
        log.info({ backendState: st.backendState, hostname: this.ts.hostname, loginServer: this.ts.loginServer ?? null, tags: this.ts.tags }, `tailscale: joining the tailnet as ${this.ts.hostname} (was ${st.backendState})`);
        await this.cli(upArgs(this.ts, key ? this.authKeyFile : undefined), 90_000);
      } finally {
        if (key) await rm(this.authKeyFile, { force: true });
      }
      st = await this.readStatus();
      if (st.backendState !== 'Running') throw new Error(`tailscale up finished but the backend is ${st.backendState}${st.authUrl ? ` (login at ${st.authUrl})` : ''}`);
    }

    const current = parseServeStatus((await this.cli(['serve', 'status', '--json'])).stdout, this.ts.servePort, st.dnsName);
    const plan = servePlan(current, this.ts, this.target);
    for (const cmd of plan) await this.cli(cmd, 60_000);
    const serve = `${this.ts.funnel ? 'funnel' : 'serve'} ${this.ts.serveMode}:${this.ts.servePort} → ${this.target}`;
    const address = st.ips.find((ip) => !ip.includes(':')) ?? st.ips[0] ?? null;
    const url = tailnetUrl(this.ts, st.dnsName) || null;
    this.report = { enabled: true, up: true, backendState: st.backendState, address, addresses: st.ips, dnsName: st.dnsName || null, url, serve, error: null, since: new Date().toISOString() };
    log.info({ address, dnsName: st.dnsName, url, serve, changed: plan.length > 0 }, `tailscale: ${url ?? address} (${address}); ${serve}${plan.length ? '' : ' (already configured)'}`);
  }
}
