import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { drainBudgetOf } from '../../agent/config/budget.ts';
import { Daemon, type DaemonDeps } from '../../agent/daemon/daemon.ts';
import { EVENTS, type DaemonEvent } from '../../agent/daemon/machine.ts';
import type { Clock, LeaseEvents, LeasePort, MirrorPort, SystemdPort } from '../../agent/daemon/ports.ts';
import type { SyncReport } from '../../agent/files/mirror.ts';
import type { Lease, LeaseDecision } from '../../agent/replication/lease.ts';
import type { PersistentState } from '../../agent/state-file.ts';
import { UNITS } from '../../agent/paths.ts';

/**
 * The daemon's transitions, driven through fake systemd, lease, mirror, Litestream and
 * state: each scenario is a row (role, faults, where a stop arrives) and its expected
 * states, unit calls and exit code. The last test checks that the rows together fire
 * every (event, from-state) pair of the state machine's table.
 */

const VW = UNITS.vaultwarden;
const LS = UNITS.litestream;

type Phase =
  | 'probe' | 'renew-start' | 'lease-wait' | 'restore' | 'litestream-start' | 'files-start' | 'vaultwarden-start' | 'serving'
  | 'drain-vaultwarden' | 'drain-litestream' | 'drain-files'
  | 'secondary-fetch' | 'secondary-serving';

interface World {
  calls: string[];
  units: Map<string, string>;
  hooks: Partial<Record<Phase, () => void>>;
  state: PersistentState;
  leaseWaits: number;
  restoreFails: number;
  fetchFails: number;
  /** The replica holds nothing (every fetch fails) until the test says otherwise. */
  replicaAbsent: boolean;
  /** The daemon under test, for hooks that look at it mid-run. */
  daemon?: Daemon;
  seen: Record<string, unknown>;
  vwDiesOnce: boolean;
  vwStartFails: number;
  restoreRefuses: boolean;
  installFails: boolean;
  stateThrows: boolean;
  readyThrows: boolean;
  /** The snapshot before a Vaultwarden upgrade cannot be taken (full disk). */
  snapshotFails: boolean;
  /** The secondary's copy as a file (its digest), when a scenario models what Vaultwarden writes to it. */
  localDigest?: string;
  /** Vaultwarden migrates the copy as it starts (another version than the primary's). */
  vwMigrates?: boolean;
  /** No local database: restoreOnStart tells the decision before its copy is installed; both take a few ticks. */
  newHost?: boolean;
  filesFailEarly?: boolean;
  lease: FakeLease;
  mirror: FakeMirror;
  now: number;
}

class FakeLease implements LeasePort {
  readonly url = 'fake://lease';
  readonly me = { holder: 'h', instance: 'i-me', machineId: 'm', bootId: 'b', token: 't-me' };
  seen: Lease | null = null;
  suspended: string | null = null;
  conditional = { enforced: true, detail: 'conditional writes enforced' };
  events: LeaseEvents | null = null;
  renewing = false;
  released = false;
  private readonly w: () => World;
  constructor(w: () => World) { this.w = w; }
  get held(): boolean { return this.seen?.token === this.me.token; }
  async tryAcquire(): Promise<LeaseDecision> {
    const w = this.w();
    w.hooks.probe?.(); // the real keeper probes conditional writes at its first acquire
    if (w.leaseWaits > 0) {
      w.leaseWaits--;
      w.hooks['lease-wait']?.();
      return { action: 'wait', holder: 'other', instance: 'i-other', until: new Date(w.now + 10_000) };
    }
    this.seen = { holder: 'h', instance: 'i-me', machineId: 'm', bootId: 'b', token: this.me.token, acquiredAt: '', expiresAt: new Date(w.now + 60_000).toISOString(), ttlMs: 60_000 };
    return { action: 'acquire', reason: 'no lease' };
  }
  startRenewing() { this.renewing = true; this.w().hooks['renew-start']?.(); }
  stop() { this.renewing = false; }
  async release() { this.released = true; this.seen = null; return true; }
  async peek() { return null; }
  async seize() { this.seen = { holder: 'h', instance: 'i-me', machineId: 'm', bootId: 'b', token: this.me.token, acquiredAt: '', expiresAt: '', ttlMs: 60_000 }; }
}

const report = (reason: string): SyncReport => ({ reason, at: '', ms: 1, uploaded: 0, uploadedBytes: 0, deleted: 0, unchanged: 3, conflicts: 0, heldBack: [], deletionsCancelled: false, errors: [] });

class FakeMirror implements MirrorPort {
  readonly store = { url: 'fake://files' };
  lastSync: Date | null = null;
  lastReport: SyncReport | null = null;
  unreadable = [];
  lagMs: number | null = 0;
  failedPasses = 0;
  fenced: string | null = null;
  watching = false;
  private readonly w: () => World;
  constructor(w: () => World) { this.w = w; }
  async sync(reason: string, signal?: AbortSignal) {
    const w = this.w();
    if (this.fenced) throw new Error(`file mirror stopped: ${this.fenced}`);
    w.calls.push(`files:${reason}`);
    if (reason === 'start') w.hooks['files-start']?.();
    if (reason === 'shutdown') w.hooks['drain-files']?.();
    signal?.throwIfAborted();
    if (this.fenced) throw new Error(`file mirror stopped: ${this.fenced}`);
    this.lastSync = new Date(w.now);
    return (this.lastReport = report(reason));
  }
  syncInBackground(reason: string) { return this.sync(reason); }
  async checkRemote() { return 0; }
  watch() { this.watching = true; }
  stopWatching() { this.watching = false; }
  fence(reason: string) { this.fenced = reason; this.w().calls.push('files:fenced'); }
  unfence() { this.fenced = null; this.w().calls.push('files:unfenced'); }
  pendingRestore() { return null; }
  async restore(_ids: unknown, _aside?: string, _progress?: unknown, signal?: AbortSignal, onRecorded?: () => void) {
    const w = this.w();
    w.calls.push('files:restore');
    if (w.newHost) {
      await new Promise((r) => setImmediate(r));
      if (w.filesFailEarly) { w.calls.push('files:failed-early'); throw new Error('no space left on device (the pending-restore record)'); }
      w.calls.push('files:recorded');
      onRecorded?.();
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setImmediate(r));
        if (signal?.aborted) { w.calls.push('files:aborted'); throw signal.reason; }
      }
      w.calls.push('files:done');
    } else onRecorded?.();
    return { files: 1, bytes: 1, unchanged: 0, replaced: 0, ignored: 0 };
  }
}

function fakeSystemd(w: () => World): SystemdPort {
  const st = (u: string) => w().units.get(u) ?? 'inactive';
  return {
    async start(unit) {
      const x = w();
      x.calls.push(`start:${unit}`);
      if (unit === LS) x.hooks['litestream-start']?.();
      if (unit === VW) {
        x.hooks['vaultwarden-start']?.();
        if (x.vwStartFails > 0) { x.vwStartFails--; x.units.set(unit, 'failed'); return 'failed'; }
        if (x.vwMigrates && x.localDigest !== undefined && !x.localDigest.endsWith('+migrated')) x.localDigest += '+migrated';
      }
      x.units.set(unit, 'active');
      return 'done';
    },
    async stop(unit) {
      const x = w();
      x.calls.push(`stop:${unit}`);
      if (unit === VW && st(VW) === 'active') x.hooks['drain-vaultwarden']?.();
      if (unit === LS && st(LS) === 'active') x.hooks['drain-litestream']?.();
      x.units.set(unit, 'inactive');
      return 'done';
    },
    async state(unit) {
      if (w().stateThrows) throw new Error('D-Bus connection lost');
      return { activeState: st(unit), subState: st(unit) === 'active' ? 'running' : 'dead', result: 'success', execMainStatus: 0 };
    },
    async kill(unit) { w().calls.push(`kill:${unit}`); w().units.set(unit, 'inactive'); },
    async startNoWait(unit) { w().calls.push(`start-nowait:${unit}`); },
    async restartNoWait(unit) { w().calls.push(`restart-nowait:${unit}`); },
  };
}

const cfgOf = (env: string) => buildConfig(parseEnvFile(env), 'test.env', { dataFolder: '/nonexistent/vaultwarden' });

interface Row {
  name: string;
  role?: 'primary' | 'secondary';
  env?: string;
  setup?: (w: World) => void;
  /** Where the stop (SIGTERM) arrives. */
  stopAt?: Phase;
  /** Something the scenario does once serving (before the stop, which follows `act`). */
  act?: (d: Daemon, w: World) => Promise<void>;
  exit: number;
  states: string[];
  /** Unit calls that must appear, in this order (others may be interleaved). */
  order?: string[];
  never?: string[];
  check?: (d: Daemon, w: World) => void;
}

const allFired = new Set<string>();

async function play(row: Row): Promise<{ d: Daemon; w: World; code: number }> {
  let w!: World;
  const get = () => w;
  w = {
    calls: [], units: new Map(), hooks: {}, state: {} as PersistentState, leaseWaits: 0, restoreFails: 0, fetchFails: 0, replicaAbsent: false, seen: {},
    vwDiesOnce: false, vwStartFails: 0, restoreRefuses: false, installFails: false, stateThrows: false, readyThrows: false, snapshotFails: false,
    lease: new FakeLease(get), mirror: new FakeMirror(get), now: Date.parse('2026-12-01T12:00:00Z'),
  };
  const clock: Clock = {
    now: () => w.now,
    sleep: async (ms, signal) => {
      for (let left = ms; left > 0 && !signal?.aborted; left -= 250) {
        w.now += Math.min(250, left);
        await new Promise((r) => setImmediate(r));
      }
    },
  };
  const cfg = cfgOf(`NODE_ROLE=${row.role ?? 'primary'}\n${row.env ?? ''}`);
  let daemon!: Daemon;
  const stop = () => daemon.requestStop('SIGTERM');
  row.setup?.(w);
  if (row.stopAt) w.hooks[row.stopAt] = stop;
  let servedAt = -1;
  const deps: DaemonDeps = {
    cfg, role: row.role ?? 'primary', systemd: fakeSystemd(get), clock,
    notifier: {
      status: async () => undefined,
      ready: async (t) => { if (w.readyThrows && t.startsWith('serving')) throw new Error('notify socket gone'); w.calls.push(`ready:${t.split(':')[0]}`); if (t.startsWith('serving')) servedAt = w.calls.length; },
      stopping: async () => { w.calls.push('stopping'); },
      extendTimeout: async () => undefined,
    },
    lease: w.lease, bindLease: (e) => { w.lease.events = e; }, mirror: w.mirror,
    litestream: {
      metrics: async () => ({ text: '', position: { syncErrors: 0, walSize: 10, dbSize: 100 } as never }),
      shadow: async () => undefined,
      verifyLoaded: async () => undefined,
      confirm: async () => true,
    },
    startup: {
      litestreamConfigChanged: false,
      restoreOnStart: async (_onProgress, _signal, onRestoreDecided) => {
        w.calls.push('restore-db');
        w.hooks.restore?.();
        if (w.newHost) {
          await onRestoreDecided?.();
          w.calls.push('restore-db:decided');
          for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
          if (w.restoreFails > 0) { w.restoreFails--; w.calls.push('restore-db:failed'); throw new Error('replica unreachable'); }
          w.calls.push('restore-db:installed');
        }
        if (w.restoreRefuses) {
          const { AgentError, EXIT } = await import('../../agent/errors.ts');
          throw new AgentError('the replica is behind the local database', { exitCode: EXIT.REFUSED });
        }
        if (w.restoreFails > 0) { w.restoreFails--; throw new Error('replica unreachable'); }
        return { decision: { action: 'restore', reason: 'no local database' } as never, ms: 5 };
      },
      createDbFile: async () => false,
      writeDrainInfo: async () => undefined,
      readFinalSync: async () => ({ confirmed: true, detail: 'replica at the local WAL position' }),
      asideFolder: (why) => `/aside/${why}`,
      afterDatabaseRestore: async () => {
        w.calls.push('vw:after-restore');
        for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r)); // outlasts the files' download
        w.calls.push('vw:after-restore:done');
      },
      beforeVaultwarden: async () => {
        w.calls.push('vw:before-start');
        if (w.snapshotFails) throw new Error('could not take the snapshot before upgrading Vaultwarden 1.32.7 → 1.33.0: no space left');
      },
      vaultwardenStarted: async (opts) => { w.calls.push(`vw:started${opts?.deferMarker ? ':deferred' : ''}`); },
      afterReady: async () => { w.calls.push('vw:marker'); },
    },
    copy: {
      fetch: async () => {
        w.calls.push('copy:fetch');
        w.hooks['secondary-fetch']?.();
        if (w.fetchFails > 0) { w.fetchFails--; throw new Error('replica unreachable'); }
        if (w.replicaAbsent) throw new Error('the replica holds no generations');
        return { tmp: '/tmp/x', digest: `d${w.calls.length}`, users: 2 };
      },
      replicaExists: async () => { w.calls.push('copy:exists'); return !w.replicaAbsent; },
      local: () => ({ exists: true, intact: true, digest: w.localDigest ?? w.state.secondaryDigest ?? 'd0' }),
      keepAside: async () => '/aside/local',
      install: async () => {
        w.calls.push('copy:install');
        if (w.installFails) throw new Error('disk full');
        if (w.localDigest !== undefined) w.localDigest = `installed-${w.calls.length}`;
      },
      discard: async () => undefined,
      restoreFiles: async () => { w.calls.push('files:restore'); },
      persistPrimary: async () => '/var/lib/vwstream/role-override',
    },
    state: {
      read: () => w.state,
      update: async (p) => { w.state = { ...w.state, ...p }; },
      bump: async () => undefined,
    },
    alive: async () => w.units.get(VW) === 'active',
    aliveUrl: 'http://127.0.0.1:8080/alive',
    budget: drainBudgetOf(cfg),
    ids: { uid: 0, gid: 0 },
    extras: { startTailscale: async () => undefined, startAside: () => undefined, stopAside: () => undefined, pruneAside: async () => undefined, notify: () => undefined },
  };
  daemon = new Daemon(deps);
  w.daemon = daemon;
  const running = daemon.run();
  // Once serving: the scenario's act, then (unless it ended the run) a stop.
  const watcher = (async () => {
    for (let i = 0; i < 20_000 && servedAt < 0; i++) await new Promise((r) => setImmediate(r));
    if (servedAt < 0) return;
    w.hooks.serving?.();
    if (row.role === 'secondary') w.hooks['secondary-serving']?.();
    if (row.act) await row.act(daemon, w);
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    daemon.requestStop('SIGTERM');
  })();
  const code = await running;
  await watcher;
  for (const f of daemon.machine.fired) allFired.add(f);
  return { d: daemon, w, code };
}

function inOrder(calls: string[], expected: string[]): void {
  let i = 0;
  for (const c of calls) if (c === expected[i]) i++;
  assert.equal(i, expected.length, `expected in order ${JSON.stringify(expected)}; calls were ${JSON.stringify(calls)}`);
}

const DRAIN = [`stop:${VW}`, `stop:${LS}`, 'files:shutdown'];

const rows: Row[] = [
  { name: 'primary: restore, replicate, serve, stop → ordered drain, lease released', exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'],
    order: ['restore-db', 'vw:after-restore', 'files:restore', 'vw:after-restore:done', `start:${LS}`, 'files:start', `start:${VW}`, 'ready:serving', 'stopping', ...DRAIN],
    check: (_d, w) => { assert.equal(w.lease.released, true); assert.equal(w.state.lastDrain?.complete, true); } },
  { name: 'the upgrade snapshot comes before Vaultwarden starts, the record once it answers', exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'],
    order: [`start:${LS}`, 'vw:before-start', `start:${VW}`, 'vw:started:deferred', 'ready:serving', 'vw:marker'] },
  { name: 'new host: the files download beside the database copy, and the upgrade snapshot of the restored copy beside them; Litestream and Vaultwarden only after all; the row marker after READY', setup: (w) => { w.newHost = true; }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'],
    order: ['restore-db', 'files:restore', 'files:recorded', 'restore-db:decided', 'restore-db:installed', 'vw:after-restore', 'files:done', 'vw:after-restore:done', `start:${LS}`, 'vw:before-start', `start:${VW}`, 'vw:started:deferred', 'ready:serving', 'vw:marker'],
    check: (_d, w) => { assert.equal(w.calls.filter((c) => c === 'files:restore').length, 1); } },
  { name: 'new host, the database restore fails: the files\' download is stopped and waited for; nothing starts', setup: (w) => { w.newHost = true; w.restoreFails = 1; }, exit: 1,
    states: ['restoring', 'failed', 'draining', 'failed'],
    order: ['restore-db', 'files:restore', 'files:recorded', 'restore-db:decided', 'restore-db:failed', 'files:aborted'], never: [`start:${LS}`, `start:${VW}`, 'vw:after-restore', 'files:done'] },
  { name: 'new host, the files\' restore cannot even be recorded: the database is not installed, the start fails', setup: (w) => { w.newHost = true; w.filesFailEarly = true; }, exit: 1,
    states: ['restoring', 'failed', 'draining', 'failed'],
    order: ['restore-db', 'files:restore', 'files:failed-early'], never: ['restore-db:decided', 'restore-db:installed', `start:${LS}`, `start:${VW}`] },
  { name: 'no snapshot possible before an upgrade: Vaultwarden does not start, failed, exit 1', setup: (w) => { w.snapshotFails = true; }, exit: 1,
    states: ['restoring', 'replicating', 'failed', 'draining', 'failed'], order: ['vw:before-start', `stop:${LS}`], never: [`start:${VW}`, 'vw:started:deferred', 'ready:serving'] },
  { name: 'stop during the conditional-write probe: nothing started', stopAt: 'probe', exit: 0,
    states: ['draining', 'stopped'], never: [`start:${LS}`, `start:${VW}`, 'restore-db'] },
  { name: 'stop while waiting for the lease: nothing started, READY sent once', stopAt: 'lease-wait', setup: (w) => { w.leaseWaits = 100; }, exit: 0,
    states: ['waiting', 'draining', 'stopped'], never: [`start:${LS}`, `start:${VW}`, 'restore-db'],
    check: (_d, w) => assert.equal(w.calls.filter((c) => c === 'ready:waiting').length, 1) },
  { name: 'lease frees after two waits: waiting → restoring → serving', setup: (w) => { w.leaseWaits = 2; }, exit: 0,
    states: ['waiting', 'restoring', 'replicating', 'serving', 'draining', 'stopped'] },
  { name: 'stop during the restore: Litestream and Vaultwarden never start', stopAt: 'restore', exit: 0,
    states: ['restoring', 'draining', 'stopped'], never: [`start:${LS}`, `start:${VW}`] },
  { name: 'stop while Litestream starts: drained with its final sync', stopAt: 'litestream-start', exit: 0,
    states: ['restoring', 'replicating', 'draining', 'stopped'], order: [`start:${LS}`, 'stopping', `stop:${LS}`, 'files:shutdown'], never: [`start:${VW}`] },
  { name: 'stop during the first file pass: Vaultwarden never starts', stopAt: 'files-start', exit: 0,
    states: ['restoring', 'replicating', 'draining', 'stopped'], never: [`start:${VW}`], order: ['files:start', 'stopping', `stop:${LS}`] },
  { name: 'stop while Vaultwarden starts: ordered drain', stopAt: 'vaultwarden-start', exit: 0,
    states: ['restoring', 'replicating', 'draining', 'stopped'], order: [`start:${VW}`, 'stopping', ...DRAIN], never: ['ready:serving'] },
  { name: 'a second stop during the drain changes nothing', stopAt: 'drain-litestream', exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'], order: DRAIN },
  { name: 'adopted units (agent restart): no restore decision', setup: (w) => { w.units.set(VW, 'active'); w.units.set(LS, 'active'); }, exit: 0,
    states: ['replicating', 'serving', 'draining', 'stopped'], never: ['restore-db', `start:${LS}`, 'vw:before-start', 'vw:started:deferred'] },
  { name: 'adopted after waiting for the lease', setup: (w) => { w.leaseWaits = 1; w.units.set(VW, 'active'); w.units.set(LS, 'active'); }, exit: 0,
    states: ['waiting', 'replicating', 'serving', 'draining', 'stopped'], never: ['restore-db'] },
  { name: 'restore fails: failed, drained, exit 1', setup: (w) => { w.restoreFails = 1; }, exit: 1,
    states: ['restoring', 'failed', 'draining', 'failed'], never: [`start:${LS}`] },
  { name: 'restore rule refuses: refused, exit 65', setup: (w) => { w.restoreRefuses = true; }, exit: 65,
    states: ['restoring', 'refused', 'draining', 'refused'], never: [`start:${LS}`, `start:${VW}`] },
  { name: 'Vaultwarden fails to start: failed after Litestream started, its final sync still runs', setup: (w) => { w.vwStartFails = 1; }, exit: 1,
    states: ['restoring', 'replicating', 'failed', 'draining', 'failed'], order: [`start:${VW}`, `stop:${VW}`, `stop:${LS}`] },
  { name: 'systemd unreachable at start: failed before anything', setup: (w) => { w.stateThrows = true; }, exit: 1,
    states: ['failed', 'draining', 'failed'], never: [`start:${LS}`] },
  { name: 'READY cannot be sent once serving: failed, drained in order, exit 1', setup: (w) => { w.readyThrows = true; }, exit: 1,
    states: ['restoring', 'replicating', 'serving', 'failed', 'draining', 'failed'], order: ['stopping', ...DRAIN] },
  { name: 'Vaultwarden dies while serving: degraded, restarted, serving again',
    act: async (_d, w) => { w.units.set(VW, 'failed'); for (let i = 0; i < 400 && w.calls.filter((c) => c === `start:${VW}`).length < 2; i++) await new Promise((r) => setImmediate(r)); }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'degraded', 'serving', 'draining', 'stopped'],
    check: (d) => assert.equal(d.units.restartCounts[VW], 1) },
  { name: 'Vaultwarden keeps dying: the restart budget ends the run (failed, exit 1)',
    act: async (_d, w) => {
      const orig = w.units.set.bind(w.units);
      w.units.set = (k: string, v: string) => orig(k, k === VW && v === 'active' ? 'failed' : v);
      orig(VW, 'failed');
      for (let i = 0; i < 20_000 && !w.calls.includes('stopping'); i++) await new Promise((r) => setImmediate(r));
    }, exit: 1,
    states: ['restoring', 'replicating', 'serving', 'degraded', 'failed', 'draining', 'failed'] },
  { name: 'lease not renewable: writers stop (Litestream killed, mirror fenced), degraded; regained: resumed',
    act: async (_d, w) => {
      w.lease.events!.onSuspended('S3 does not answer');
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
      assert.equal(w.units.get(LS), 'inactive');
      assert.ok(w.mirror.fenced);
      w.lease.events!.onRegained();
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'degraded', 'serving', 'draining', 'stopped'],
    order: ['files:fenced', `kill:${LS}`, `start:${LS}`, 'files:unfenced', ...DRAIN] },
  { name: 'suspended until the stop: the drain kills nothing more, uploads nothing, is incomplete, keeps the lease',
    act: async (_d, w) => { w.lease.events!.onSuspended('S3 does not answer'); for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r)); }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'degraded', 'draining', 'stopped'], never: ['files:shutdown'],
    check: (_d, w) => { assert.equal(w.state.lastDrain?.complete, false); assert.equal(w.lease.released, false); } },
  { name: 'lease taken by another: fenced, Litestream killed, Vaultwarden stopped, exit 65',
    act: async (_d, w) => { w.lease.events!.onLost('lease taken by other', true); for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r)); }, exit: 65,
    states: ['restoring', 'replicating', 'serving', 'fenced'], order: ['files:fenced', `kill:${LS}`, `stop:${VW}`], never: ['files:shutdown', `stop:${LS}`],
    check: (_d, w) => assert.equal(w.lease.released, false) },
  { name: 'lease lost while degraded (store back, someone else holds it): fenced',
    act: async (_d, w) => {
      w.lease.events!.onSuspended('S3 does not answer');
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
      w.lease.events!.onLost('lease taken by other', true);
      for (let i = 0; i < 200; i++) await new Promise((r) => setImmediate(r));
    }, exit: 65, states: ['restoring', 'replicating', 'serving', 'degraded', 'fenced'], never: ['files:shutdown'] },
  { name: 'lease lost during the drain (after Vaultwarden stopped): no final sync upload, no file upload, exit 65',
    setup: (w) => { w.hooks['drain-vaultwarden'] = () => w.lease.events!.onLost('lease taken by other', true); }, exit: 65,
    states: ['restoring', 'replicating', 'serving', 'draining', 'fenced'], never: ['files:shutdown', `stop:${LS}`], order: [`stop:${VW}`, `kill:${LS}`] },
  { name: 'suspended during the drain\'s final sync: Litestream killed, no file upload, drain incomplete',
    setup: (w) => { w.hooks['drain-litestream'] = () => w.lease.events!.onSuspended('S3 does not answer'); }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'], never: ['files:shutdown'],
    check: (_d, w) => assert.equal(w.state.lastDrain?.complete, false) },
  { name: 'lease lost during the restore (renewal runs from the take): fenced before Litestream ever starts, exit 65',
    setup: (w) => { w.hooks.restore = () => w.lease.events!.onLost('lease taken by other', true); }, exit: 65,
    states: ['restoring', 'fenced'], never: [`start:${LS}`, `start:${VW}`, 'files:start'] },
  { name: 'lease not renewable during the restore: Litestream waits for the renewal, then the start goes on',
    setup: (w) => {
      w.hooks.restore = () => {
        w.lease.events!.onSuspended('S3 does not answer');
        setTimeout(() => w.lease.events!.onRegained(), 20);
      };
    }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'], order: ['files:fenced', 'files:unfenced', `start:${LS}`, 'files:start'] },
  { name: 'lease lost after Litestream started (during the first file pass): fenced while replicating, Vaultwarden never starts',
    setup: (w) => { w.hooks['files-start'] = () => w.lease.events!.onLost('lease taken by other', true); }, exit: 65,
    states: ['restoring', 'replicating', 'fenced'], never: [`start:${VW}`, 'files:shutdown'], order: [`start:${LS}`, 'files:fenced', `kill:${LS}`] },
  { name: 'suspended during the first file pass: serving degraded (Litestream stopped), regained: Litestream restarted, serving',
    setup: (w) => { w.hooks['files-start'] = () => w.lease.events!.onSuspended('S3 does not answer'); },
    act: async (_d, w) => { w.lease.events!.onRegained(); for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r)); }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'degraded', 'serving', 'draining', 'stopped'], order: [`start:${LS}`, 'files:fenced', `kill:${LS}`, `start:${VW}`, `start:${LS}`, 'files:unfenced'] },
  { name: 'lease lost right after the take (renewal runs from there): fenced from starting, nothing started, exit 65',
    setup: (w) => { w.hooks['renew-start'] = () => w.lease.events!.onLost('lease taken by other', true); }, exit: 65,
    states: ['fenced'], never: [`start:${LS}`, `start:${VW}`, 'restore-db'] },
  { name: 'lease lost right after a take that followed a wait: fenced from waiting, exit 65',
    setup: (w) => { w.leaseWaits = 1; w.hooks['renew-start'] = () => w.lease.events!.onLost('lease taken by other', true); }, exit: 65,
    states: ['waiting', 'fenced'], never: [`start:${LS}`, `start:${VW}`, 'restore-db'] },
  { name: 'systemd lost right after a take that followed a wait: failed from waiting, exit 1',
    setup: (w) => { w.leaseWaits = 1; w.hooks['renew-start'] = () => { w.stateThrows = true; }; }, exit: 1,
    states: ['waiting', 'failed', 'draining', 'failed'], never: [`start:${LS}`, 'restore-db'] },
  { name: 'suspended and regained during the drain: Litestream is not started again, the drain is incomplete',
    setup: (w) => { w.hooks['drain-vaultwarden'] = () => { w.lease.events!.onSuspended('S3 does not answer'); setImmediate(() => w.lease.events!.onRegained()); }; }, exit: 0,
    states: ['restoring', 'replicating', 'serving', 'draining', 'stopped'], never: ['files:shutdown', 'files:unfenced'],
    check: (_d, w) => { assert.equal(w.calls.filter((c) => c === `start:${LS}`).length, 1, 'Litestream started once, never after the suspension'); assert.equal(w.state.lastDrain?.complete, false); } },
  { name: 'stop during the secondary\'s file restore after Vaultwarden stopped: it is not started again',
    role: 'secondary', env: 'SECONDARY_SYNC_INTERVAL=60s\n',
    act: async (d, w) => {
      w.hooks['secondary-fetch'] = () => undefined;
      const orig = d.deps.copy.install;
      (d.deps.copy as { install: typeof orig }).install = async (tmp) => { await orig(tmp); d.requestStop('SIGTERM'); };
      for (let i = 0; i < 20_000 && !w.calls.includes('stopping'); i++) await new Promise((r) => setImmediate(r));
    }, exit: 0, states: ['restoring', 'serving', 'draining', 'stopped'],
    check: (_d, w) => { const last = w.calls.lastIndexOf('copy:install'); assert.ok(!w.calls.slice(last).includes(`start:${VW}`), `Vaultwarden restarted after the stop: ${JSON.stringify(w.calls.slice(last))}`); } },
  { name: 'secondary running a newer Vaultwarden: its migrations of the copy at start are not local changes at the next refreshes', role: 'secondary', env: 'SECONDARY_SYNC_INTERVAL=60s\n',
    setup: (w) => { w.localDigest = 'd0'; w.state.secondaryDigest = 'd0'; w.vwMigrates = true; },
    act: async (d, w) => {
      for (let i = 0; i < 40_000 && d.secondary.counts.swapped < 3; i++) await new Promise((r) => setImmediate(r));
      w.seen.swapped = d.secondary.counts.swapped;
    },
    exit: 0, states: ['restoring', 'serving', 'draining', 'stopped'],
    check: (d, w) => {
      assert.ok(Number(w.seen.swapped) >= 3, `refreshes swapped: ${String(w.seen.swapped)}`);
      assert.equal(d.secondary.counts.localChangesKept, 0, 'a migrated copy is not kept aside as local changes');
      assert.ok(w.localDigest!.endsWith('+migrated'));
      assert.equal(w.state.secondaryDigest, w.localDigest, 'the copy as Vaultwarden left it is the reference');
    } },
  { name: 'secondary: restore, serve, stop → Vaultwarden stopped, nothing uploaded', role: 'secondary', exit: 0,
    states: ['restoring', 'serving', 'draining', 'stopped'], order: ['copy:fetch', 'copy:install', `start:${VW}`, 'ready:serving', 'stopping', `stop:${VW}`], never: [`start:${LS}`, 'files:shutdown'] },
  { name: 'secondary: replica unreachable at first, READY while retrying, then serving', role: 'secondary', setup: (w) => { w.fetchFails = 2; }, exit: 0,
    states: ['restoring', 'serving', 'draining', 'stopped'], order: ['ready:restoring', 'ready:serving'] },
  { name: 'secondary: no replica yet → a status warning naming the replica while it waits, gone once restored', role: 'secondary', exit: 0,
    setup: (w) => {
      w.replicaAbsent = true;
      let fetches = 0;
      w.hooks['secondary-fetch'] = () => {
        if (++fetches !== 3) return;
        w.seen.missing = w.daemon!.secondary.replicaMissing;
        w.replicaAbsent = false; // the primary's first upload
      };
    },
    check: (d, w) => {
      assert.match(String(w.seen.missing), /^NODE_ROLE=secondary but the replica file:\/\/\S+ does not exist yet: /);
      assert.equal(d.secondary.replicaMissing, null, 'no warning once the copy is restored');
    },
    states: ['restoring', 'serving', 'draining', 'stopped'], order: ['copy:exists', 'ready:restoring', 'copy:exists', 'ready:serving'] },
  { name: 'secondary: stop during its restore', role: 'secondary', stopAt: 'secondary-fetch', exit: 0,
    states: ['restoring', 'draining', 'stopped'], never: [`start:${VW}`] },
  { name: 'secondary: a refresh failing after Vaultwarden stopped brings it back on the previous copy', role: 'secondary', env: 'SECONDARY_SYNC_INTERVAL=60s\n',
    act: async (d, w) => {
      w.installFails = true;
      for (let i = 0; i < 20_000 && d.secondary.counts.failed === 0; i++) await new Promise((r) => setImmediate(r));
      for (let i = 0; i < 2000 && w.units.get(VW) !== 'active'; i++) await new Promise((r) => setImmediate(r));
      assert.equal(w.units.get(VW), 'active', 'Vaultwarden runs again after the failed refresh');
      assert.equal(d.secondary.lastAttempt?.ok, false);
    }, exit: 0, states: ['restoring', 'serving', 'draining', 'stopped'],
    order: ['copy:install', `start:${VW}`, 'ready:serving', `stop:${VW}`, 'copy:install', `start:${VW}`] },
  { name: 'secondary: promote takes the lease, persists the role, restarts the agent', role: 'secondary',
    act: async (d, w) => { const r = await d.promote(true); assert.equal(r.status, 200); assert.equal(w.lease.held, true); await new Promise((r2) => setTimeout(r2, 250)); }, exit: 0,
    states: ['restoring', 'serving', 'draining', 'stopped'], order: ['ready:serving', `restart-nowait:${UNITS.agent}`] },
  { name: 'secondary: Vaultwarden fails to start after the restore: failed', role: 'secondary', setup: (w) => { w.vwStartFails = 1; }, exit: 1,
    states: ['restoring', 'failed', 'draining', 'failed'] },
];

describe('daemon transitions (fake systemd, lease, mirror, Litestream)', () => {
  for (const row of rows) {
    test(row.name, async () => {
      const { d, w, code } = await play(row);
      assert.equal(code, row.exit, `exit code; calls: ${JSON.stringify(w.calls)}`);
      assert.deepEqual(d.machine.history.map((h) => h.to).filter((s, i, a) => i === 0 || s !== a[i - 1] || s === 'failed' || s === 'refused').filter((s) => s !== 'starting'), row.states);
      assert.deepEqual(d.machine.refusedEvents.filter((e) => !e.startsWith('serve from') && !e.startsWith('degrade from')), [], 'no event fired from a state the table forbids');
      if (row.order) inOrder(w.calls, row.order);
      for (const n of row.never ?? []) assert.ok(!w.calls.includes(n), `${n} must not happen; calls: ${JSON.stringify(w.calls)}`);
      row.check?.(d, w);
    });
  }
  after(() => {
    // Together the rows fire every (event, from-state) pair of the table.
    const missing: string[] = [];
    for (const [event, { from }] of Object.entries(EVENTS) as [DaemonEvent, { from: readonly string[] }][]) {
      for (const f of from) if (!allFired.has(`${event}:${f}`)) missing.push(`${event} from ${f}`);
    }
    assert.deepEqual(missing, [], `transitions no row exercises: ${missing.join(', ')}`);
  });
});
