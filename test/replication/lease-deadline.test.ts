/**
 * The lease keeper's deadline and conditional paths on a fake store and a fake clock
 * (node:test mock timers: setTimeout and Date). Two fakes: one enforces If-None-Match /
 * If-Match as Ceph RGW does (an unquoted ETag; a quoted one fails), one ignores them as
 * fauxqs does.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { LeaseKeeper } from '../../agent/replication/lease-keeper.ts';
import { LeaseAmbiguous, LeaseConflict, newLease, type ConditionalSupport, type Identity, type Lease, type LeaseStore } from '../../agent/replication/lease.ts';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const TTL = 10_000; // margin 2.5 s, renewals every 3.333 s (TTL/3 below 30 s), attempts capped at 3.333 s, retries after 1 s
const id = (n: string): Identity => ({ holder: 'vault', instance: `i-${n}`, machineId: 'm', bootId: 'b', token: `t-${n}` });
/** Clock resolution of these tests: a timer's callback sees the end of the tick it fired in. */
const STEP = 10;
const flush = async () => { for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r)); };
/** Advances the fake clock in steps, letting promises run between them. */
async function advance(ms: number, step = STEP): Promise<void> {
  for (let done = 0; done < ms; done += step) {
    mock.timers.tick(Math.min(step, ms - done));
    await flush();
  }
}
const now = () => Date.now();
/** Awaits p while the fake clock runs (a settle delay is a timer too). */
async function driven<T>(p: Promise<T>): Promise<T> {
  let done = false;
  void p.then(() => { done = true; }, () => { done = true; });
  await flush();
  while (!done) await advance(STEP);
  return p;
}

interface Call { op: 'read' | 'write'; at: number; abortedAt?: number; expect?: { etag?: string | null }; lease?: Lease }

class FakeStore implements LeaseStore {
  readonly url = 'fake://bucket/vw/lease.json';
  obj: { body: string; etag: string } | null = null;
  private n = 0;
  calls: Call[] = [];
  /** Reads (or writes) never answer; they only end when their signal aborts. */
  hangReads = false;
  hangWrites = false;
  /** Runs before a write is applied; may throw (as the server answering) or change the object. */
  beforeWrite: ((lease: Lease, expect: { etag?: string | null }) => Promise<void> | void) | null = null;
  /** Runs after a write was applied; may throw (the answer lost, e.g. a 500 after landing). */
  afterWrite: ((lease: Lease) => void) | null = null;
  /** Runs after a read got its answer, before it returns. */
  afterRead: (() => Promise<void> | void) | null = null;
  readonly enforce: boolean;
  constructor(enforce: boolean) { this.enforce = enforce; }

  private async wait(call: Call, hang: boolean, signal?: AbortSignal): Promise<void> {
    this.calls.push(call);
    await new Promise<void>((r) => setImmediate(r));
    if (signal?.aborted) { call.abortedAt = now(); throw signal.reason; }
    if (!hang) return;
    await new Promise<void>((_r, reject) => {
      signal?.addEventListener('abort', () => { call.abortedAt = now(); reject(signal.reason as Error); }, { once: true });
    });
  }

  async read(signal?: AbortSignal): Promise<{ lease: Lease; etag?: string } | null> {
    await this.wait({ op: 'read', at: now() }, this.hangReads, signal);
    const o = this.obj;
    await this.afterRead?.();
    return o ? { lease: JSON.parse(o.body) as Lease, etag: `"${o.etag}"` } : null;
  }

  /** What the server does with a PUT (also used by tests to play another host). */
  put(lease: Lease, expect: { etag?: string | null }): void {
    if (this.enforce) {
      if (expect.etag === null && this.obj) throw new LeaseConflict('lease changed under us (412)');
      // Like RGW: the ETag must come unquoted.
      if (expect.etag && (!this.obj || expect.etag !== this.obj.etag)) throw new LeaseConflict('lease changed under us (412)');
    }
    this.obj = { body: JSON.stringify(lease), etag: `etag-${++this.n}` };
  }

  async write(lease: Lease, expect: { etag?: string | null }, signal?: AbortSignal): Promise<{ etag?: string }> {
    const call: Call = { op: 'write', at: now(), expect, lease };
    await this.wait(call, this.hangWrites, signal);
    await this.beforeWrite?.(lease, expect);
    // The store unquotes as S3LeaseStore does.
    this.put(lease, expect.etag ? { etag: expect.etag.replace(/^"(.*)"$/, '$1') } : expect);
    this.afterWrite?.(lease);
    // S3 answers a PUT with the new version's ETag, quoted.
    return { etag: `"${this.obj!.etag}"` };
  }

  async remove(): Promise<void> { this.obj = null; }
  async probe(): Promise<ConditionalSupport> {
    return { enforced: this.enforce, applicable: true, detail: this.enforce ? 'fake: 412' : 'fake: ignored' };
  }
  get lease(): Lease | null { return this.obj ? JSON.parse(this.obj.body) as Lease : null; }
  since(t: number, op?: Call['op']): Call[] { return this.calls.filter((c) => c.at >= t && (!op || c.op === op)); }
}

function keeper(store: LeaseStore, name: string, events: string[]): LeaseKeeper {
  return new LeaseKeeper({
    store, me: id(name), ttlMs: TTL, settleMs: 1_000,
    onLost: (r, stolen) => events.push(`${now() - T0} lost ${stolen} ${r}`),
    onSuspended: (r) => events.push(`${now() - T0} suspended ${r}`),
    onRegained: () => events.push(`${now() - T0} regained`),
  });
}
const at = (e: string) => Number(e.split(' ')[0]);
/** Within the clock resolution of these tests. */
function near(actual: number, expected: number, what: string): void {
  assert.ok(actual >= expected && actual <= expected + 2 * STEP, `${what}: ${actual - T0} ms, expected ${expected - T0} ms (+${2 * STEP})`);
}

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 }));
afterEach(() => mock.timers.reset());

for (const enforce of [true, false]) {
  test(`${enforce ? 'enforcing' : 'ignoring'} store: the deadline fires at expiry − margin while the store hangs; no request outlives it; regained after the outage`, async () => {
    const store = new FakeStore(enforce);
    const events: string[] = [];
    const k = keeper(store, 'a', events);
    assert.equal((await driven(k.tryAcquire())).action, 'acquire');
    assert.equal(k.conditional?.enforced, enforce);
    const lease = store.lease!;
    const expiry = Date.parse(lease.expiresAt);
    assert.equal(k.deadline, expiry - 2_500);
    k.startRenewing();
    await advance(3_400); // one renewal at +3.333 s
    assert.equal(events.length, 0, events.join('\n'));
    const renewed = store.lease!;
    const deadline = Date.parse(renewed.expiresAt) - 2_500;
    assert.equal(k.deadline, deadline);
    // The store hangs from now on.
    store.hangReads = store.hangWrites = true;
    const hungFrom = now();
    await advance(deadline - now() + 200);
    assert.equal(events.length, 1, events.join('\n'));
    assert.match(events[0]!, /suspended lease not renewed before its expiry minus 2500 ms/);
    assert.ok(at(events[0]!) >= deadline - T0 && at(events[0]!) <= deadline - T0 + STEP, `suspended at ${at(events[0]!)}, the deadline is ${deadline - T0}`);
    assert.ok(Date.parse(renewed.expiresAt) - (T0 + at(events[0]!)) >= 2_500 - STEP, 'fenced less than the margin before expiry');
    const during = store.since(hungFrom).filter((c) => c.at < deadline);
    assert.ok(during.length >= 1, `attempts while hung: ${JSON.stringify(during)}`);
    for (const c of during) {
      // The first request of a renewal: on an enforcing store the conditional write alone.
      assert.equal(c.op, enforce ? 'write' : 'read');
      assert.ok(c.abortedAt !== undefined && c.abortedAt <= deadline + STEP, `a ${c.op} started at ${c.at - T0} was aborted at ${c.abortedAt === undefined ? 'never' : c.abortedAt - T0}, after the deadline ${deadline - T0}`);
      assert.ok(c.abortedAt - c.at <= 3_333 + STEP, `an attempt ran ${c.abortedAt - c.at} ms, more than TTL/3`);
    }
    // A failed attempt is retried within 1–2 s (here: after the deadline, as a suspended one), reading first.
    const retry = store.since(during[0]!.abortedAt!, 'read')[0]!;
    assert.ok(retry.at - during[0]!.abortedAt! >= 1_000 - STEP && retry.at - during[0]!.abortedAt! <= 2_000 + STEP, `retry ${retry.at - during[0]!.abortedAt!} ms after the failed attempt`);
    assert.equal(k.suspended !== null, true);
    // Suspended: an attempt every 5 s, each reading first; the store answers again: read,
    // write, read back, settle, read back → regained.
    await advance(6_000);
    const susp = store.since(deadline);
    assert.ok(susp.length >= 1 && susp.every((c) => c.op === 'read'), JSON.stringify(susp));
    store.hangReads = store.hangWrites = false;
    const back = now();
    await advance(14_000);
    assert.equal(events.length, 2, events.join('\n'));
    assert.match(events[1]!, /regained$/);
    const reg = at(events[1]!) + T0;
    // The suspended attempt in flight runs out (its cap: TTL/3 + two settles), the next
    // starts at most 5 s later and regains after its settle.
    assert.ok(reg - back <= 5_333 + 5_000 + 1_000 + 200, `regained ${reg - back} ms after the store answered`);
    const last = store.since(back);
    assert.deepEqual(last.slice(0, 4).map((c) => c.op), ['read', 'write', 'read', 'read'], 'regain: read, write, read back, read back after the settle');
    assert.ok(Math.abs(last[3]!.at - last[2]!.at - 1_000) <= STEP, 'settle delay between the read-backs');
    assert.equal(k.suspended, null);
    assert.equal(k.deadline, Date.parse(store.lease!.expiresAt) - 2_500);
    k.stop();
  });
}

for (const enforce of [true, false]) {
  test(`cadence and requests, ${enforce ? 'enforcing store: one conditional write per renewal' : 'ignoring store: read + write + read-back'}`, async () => {
    const store = new FakeStore(enforce);
    const k = keeper(store, 'a', []);
    await driven(k.tryAcquire());
    const afterAcquire = store.calls.map((c) => c.op);
    assert.deepEqual(afterAcquire, enforce ? ['read', 'write'] : ['read', 'write', 'read', 'read']);
    k.startRenewing();
    const n = store.calls.length;
    const etags: string[] = [];
    store.afterWrite = () => { etags.push(`"${store.obj!.etag}"`); };
    await advance(T0 + 10_050 - now());
    const ops = store.calls.slice(n);
    const writes = ops.filter((c) => c.op === 'write');
    const offsets = writes.map((c) => c.at - T0);
    assert.equal(offsets.length, 3, `renewals ${JSON.stringify(offsets)} (${enforce})`);
    offsets.forEach((o, i) => assert.ok(Math.abs(o - 3_333 * (i + 1)) <= 50, `renewals at TTL/3 from the last success: ${JSON.stringify(offsets)} (${enforce})`));
    assert.deepEqual(ops.map((c) => c.op).join(','), (enforce ? 'write,' : 'read,write,read,').repeat(3).slice(0, -1), 'requests per renewal');
    for (const w of writes) assert.match(String(w.expect?.etag), /^"etag-\d+"$/, 'the keeper passes the etag as S3 answers it; the store unquotes it');
    // Each renewal names the version the one before it wrote (the enforcing store refuses any other).
    if (enforce) assert.deepEqual(writes.slice(1).map((w) => w.expect?.etag), etags.slice(0, 2));
    assert.equal(store.lease!.expiresAt, new Date(writes[2]!.at + TTL).toISOString());
    k.stop();
  });
}

test('at the default LEASE_TTL (60 s) on an enforcing store: a renewal every 30 s, one conditional PUT each (120 an hour)', async () => {
  const store = new FakeStore(true);
  const k = new LeaseKeeper({ store, me: id('a'), ttlMs: 60_000, settleMs: 1_000, onLost: () => assert.fail('lost') });
  await driven(k.tryAcquire());
  assert.equal(k.renewEveryMs, 30_000);
  k.startRenewing();
  const n = store.calls.length;
  await advance(T0 + 120_050 - now(), 50);
  const ops = store.calls.slice(n);
  assert.deepEqual(ops.map((c) => `${c.op}@${Math.round((c.at - T0) / 1000)}`), ['write@30', 'write@60', 'write@90', 'write@120']);
  assert.equal(k.deadline, Date.parse(store.lease!.expiresAt) - 5_000);
  k.stop();
});

test('412 on renewal with another holder in the store: lost at once (stolen), once, no more requests', async () => {
  const store = new FakeStore(true);
  const events: string[] = [];
  const k = keeper(store, 'a', events);
  await driven(k.tryAcquire());
  k.startRenewing();
  // Another host replaces the lease between two renewals (a forced promote elsewhere).
  await advance(2_000);
  store.put(newLease(id('thief'), now(), TTL), {});
  await advance(1_400);
  assert.equal(events.length, 1, events.join('\n'));
  assert.match(events[0]!, /^33[3-5]\d lost true lease taken by vault \(instance i-thief\) \(our renewal: lease changed under us \(412\)\)$/);
  assert.deepEqual(store.since(T0 + 2_100).map((c) => c.op), ['write', 'read'], 'the refused conditional write, then one read');
  const n = store.calls.length;
  await advance(20_000);
  assert.equal(store.calls.length, n, 'requests after the lease was lost');
  assert.equal(events.length, 1);
  assert.equal(k.held, false);
});

test('a 500 on a conditional renewal: one read settles it (landed → ok; not landed → retried within 1–2 s), never lost or suspended', async () => {
  const store = new FakeStore(true);
  const events: string[] = [];
  const k = keeper(store, 'a', events);
  await driven(k.tryAcquire());
  k.startRenewing();
  // 1: the write lands, the answer is a 500.
  store.afterWrite = () => { store.afterWrite = null; throw new LeaseAmbiguous('conditional lease write answered 500'); };
  await advance(3_400);
  assert.equal(k.deadline, Date.parse(store.lease!.expiresAt) - 2_500);
  near(Date.parse(store.lease!.expiresAt), T0 + 3_333 + TTL, 'the landed write counts: expiry');
  // 2: the write does not land, the answer is a 500 (a lost race on RGW would look the same).
  store.beforeWrite = () => { store.beforeWrite = null; throw new LeaseAmbiguous('conditional lease write answered 500'); };
  const t = now();
  await advance(4_500);
  const writes = store.since(t, 'write');
  assert.equal(writes.length, 2, JSON.stringify(writes));
  assert.ok(writes[1]!.at - writes[0]!.at >= 1_000 && writes[1]!.at - writes[0]!.at <= 2_000, `retry ${writes[1]!.at - writes[0]!.at} ms after the ambiguous write`);
  assert.equal(store.lease!.expiresAt, new Date(writes[1]!.at + TTL).toISOString());
  // 3: a 412 while the lease is still ours (a retried PUT whose first try landed): the read shows it, carry on.
  store.afterWrite = () => { store.afterWrite = null; throw new LeaseConflict('lease changed under us (412)'); };
  await advance(3_400);
  assert.equal(events.length, 0, events.join('\n'));
  assert.ok(k.held);
  assert.equal(k.suspended, null);
  k.stop();
});

for (const enforce of [true, false]) {
  test(`race of two clones on ${enforce ? 'an enforcing' : 'an ignoring'} store: exactly one holder (creation and take-over)`, async () => {
    const store = new FakeStore(enforce);
    const events: string[] = [];
    const a = keeper(store, 'a', events);
    const b = keeper(store, 'b', events);
    const race = Promise.all([a.tryAcquire(), b.tryAcquire()]);
    await advance(3_000);
    const [da, db] = await race;
    assert.deepEqual([da.action, db.action].sort(), ['acquire', 'wait']);
    assert.equal([a, b].filter((k) => k.held).length, 1);
    const holder = store.lease!.token;
    assert.equal((a.held ? a : b).me.token, holder);
    // The holder dies; after expiry + margin two more clones race to take it over (If-Match on the same etag).
    await advance(TTL + 2_500 + 100, 500);
    const c = keeper(store, 'c', events);
    const d = keeper(store, 'd', events);
    const race2 = Promise.all([c.tryAcquire(), d.tryAcquire()]);
    await advance(3_000);
    const [dc, dd] = await race2;
    assert.deepEqual([dc.action, dd.action].sort(), ['acquire', 'wait'], JSON.stringify([dc, dd]));
    assert.equal([c, d].filter((k) => k.held).length, 1);
    assert.equal(store.lease!.token, (c.held ? c : d).me.token);
    if (enforce) {
      const takeovers = store.calls.filter((x) => x.op === 'write' && x.lease && ['t-c', 't-d'].includes(x.lease.token));
      assert.ok(takeovers.every((x) => typeof x.expect?.etag === 'string'), 'take-over without If-Match');
    }
    assert.equal(events.length, 0, events.join('\n'));
  });
}

test('a renewal whose write completes after the deadline does not count: suspended at the deadline, regained only by the read-back path', async () => {
  const store = new FakeStore(true);
  const events: string[] = [];
  const k = keeper(store, 'a', events);
  await driven(k.tryAcquire());
  const deadline = k.deadline!;
  k.startRenewing();
  // Renewal writes hang past the deadline and then land (a request the abort did not stop).
  let release: (() => void) | null = null;
  store.beforeWrite = () => new Promise<void>((r) => { release = r; });
  await advance(deadline - now() + 100);
  assert.equal(events.length, 1, events.join('\n'));
  assert.ok(at(events[0]!) - (deadline - T0) <= STEP && at(events[0]!) >= deadline - T0, `suspended at ${at(events[0]!)}, deadline ${deadline - T0}`);
  assert.match(events[0]!, /suspended/);
  store.beforeWrite = null;
  release!(); // lands now, after the deadline
  await flush();
  const landedAt = now();
  near(Date.parse(store.lease!.expiresAt), T0 + 3_333 + TTL, 'the late write landed: expiry');
  assert.ok(k.suspended, 'a late success lifted the suspension');
  // The next (suspended) attempt: read, write, read back, settle, read back, then regained.
  await advance(8_000);
  assert.equal(events.length, 2, events.join('\n'));
  assert.match(events[1]!, /regained$/);
  const after = store.since(landedAt);
  assert.deepEqual(after.slice(0, 4).map((c) => c.op), ['read', 'write', 'read', 'read']);
  assert.ok(at(events[1]!) + T0 >= after[3]!.at, 'regained before the settled read-back');
  k.stop();
});

test('without onSuspended the deadline is a loss (not stolen), at the deadline', async () => {
  const store = new FakeStore(true);
  const lost: string[] = [];
  const k = new LeaseKeeper({ store, me: id('a'), ttlMs: TTL, onLost: (r, stolen) => lost.push(`${now() - T0} ${stolen} ${r}`) });
  await driven(k.tryAcquire());
  k.startRenewing();
  store.hangReads = store.hangWrites = true;
  await advance(9_000);
  assert.equal(lost.length, 1);
  assert.match(lost[0]!, /^75\d\d false lease not renewed before its expiry minus 2500 ms/);
});
