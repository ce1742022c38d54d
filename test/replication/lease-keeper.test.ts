import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { LeaseKeeper } from '../../agent/replication/lease-keeper.ts';
import { FileLeaseStore, newLease, type Identity } from '../../agent/replication/lease.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-lease-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const id = (n: string): Identity => ({ holder: `host-${n}`, instance: `i-${n}`, machineId: `m-${n}`, bootId: `b-${n}`, token: `t-${n}` });

test('acquire, a second holder waits, renewal keeps it, a thief is noticed, release frees it', async () => {
  const store = new FileLeaseStore(join(dir, 'a'));
  const lost: { reason: string; stolen: boolean }[] = [];
  const a = new LeaseKeeper({ store, me: id('a'), ttlMs: 10_000, settleMs: 10, onLost: (reason, stolen) => lost.push({ reason, stolen }) });
  const b = new LeaseKeeper({ store, me: id('b'), ttlMs: 10_000, settleMs: 10, onLost: () => assert.fail('b never held it') });
  assert.equal((await a.tryAcquire()).action, 'acquire');
  assert.ok(a.held);
  const w = await b.tryAcquire();
  assert.equal(w.action, 'wait');
  assert.equal(w.action === 'wait' && w.holder, 'host-a');
  const before = (await store.read())!.lease.expiresAt;
  await new Promise((r) => setTimeout(r, 5));
  await a.renew();
  assert.ok((await store.read())!.lease.expiresAt > before, 'renewed');
  assert.equal(lost.length, 0);
  // Someone overwrites the lease (a forced promote elsewhere): the holder must stop writing.
  await store.write(newLease(id('c'), Date.now(), 10_000));
  await a.renew();
  assert.equal(lost.length, 1);
  assert.equal(lost[0]!.stolen, true);
  assert.match(lost[0]!.reason, /^lease taken by host-c/);
  // c releases only its own lease; a's release does nothing now.
  assert.equal(await a.release(), false);
  assert.ok(await store.read());
});

test('a lease that cannot be renewed before its expiry (minus the margin) is given up, not stolen', async () => {
  const store = new FileLeaseStore(join(dir, 'b'));
  const lost: boolean[] = [];
  const a = new LeaseKeeper({ store, me: id('a'), ttlMs: 4_000, settleMs: 10, onLost: (_r, stolen) => lost.push(stolen) });
  await a.tryAcquire();
  store.read = async () => { throw new Error('S3 unreachable'); };
  await a.renew(); // before the deadline: a warning only
  assert.deepEqual(lost, []);
  await new Promise((r) => setTimeout(r, 3_100)); // past expiry − margin (1 s)
  await a.renew();
  assert.deepEqual(lost, [false]);
});

test('with onSuspended: an unreachable store suspends (once), then the lease is regained if still ours, or lost if taken', async () => {
  const store = new FileLeaseStore(join(dir, 'c'));
  const events: string[] = [];
  const a = new LeaseKeeper({
    store, me: id('a'), ttlMs: 4_000, settleMs: 10,
    onLost: (r, stolen) => events.push(`lost ${stolen} ${r}`), onSuspended: (r) => events.push(`suspended ${r}`), onRegained: () => events.push('regained'),
  });
  await a.tryAcquire();
  const realRead = store.read.bind(store);
  store.read = async () => { throw new Error('S3 unreachable'); };
  await a.renew(); // before the deadline: a warning only
  assert.deepEqual(events, []);
  await new Promise((r) => setTimeout(r, 3_100));
  await a.renew();
  await a.renew(); // still down: no second event
  assert.equal(events.length, 1);
  assert.match(events[0]!, /^suspended lease not renewed before its expiry minus 1000 ms \(.*: S3 unreachable\)$/);
  assert.match(a.suspended!, /S3 unreachable/);
  // The store answers again and the (expired) lease is still ours: renewed, regained.
  store.read = realRead;
  await a.renew();
  assert.deepEqual(events.slice(1), ['regained']);
  assert.equal(a.suspended, null);
  assert.ok(Date.parse((await store.read())!.lease.expiresAt) > Date.now() + 3_000);
  // Down again, and meanwhile another host takes the expired lease: lost (stolen) on return.
  store.read = async () => { throw new Error('S3 unreachable'); };
  await new Promise((r) => setTimeout(r, 3_100));
  await a.renew();
  await store.write(newLease(id('b'), Date.now(), 4_000));
  store.read = realRead;
  await a.renew();
  assert.equal(events.length, 4);
  assert.match(events[3]!, /^lost true lease taken by host-b/);
});

test('clones sharing machine id, boot id and hostname: the second waits; a restart of the holder (same instance) takes its lease back at once', async () => {
  const store = new FileLeaseStore(join(dir, 'clones'));
  const shared = { holder: 'vault', machineId: 'eec8e4d1ae1d4a0fb7584983944ee18a', bootId: 'b-shared' };
  const a = new LeaseKeeper({ store, me: { ...shared, instance: 'i-one', token: 't-1' }, ttlMs: 10_000, settleMs: 10, onLost: () => assert.fail('a lost its lease') });
  const clone = new LeaseKeeper({ store, me: { ...shared, instance: 'i-two', token: 't-2' }, ttlMs: 10_000, settleMs: 10, onLost: () => assert.fail('the clone never held it') });
  assert.equal((await a.tryAcquire()).action, 'acquire');
  const w = await clone.tryAcquire();
  assert.deepEqual(w.action === 'wait' ? { holder: w.holder, instance: w.instance } : w, { holder: 'vault', instance: 'i-one' });
  assert.equal(clone.held, false);
  assert.equal((await store.read())!.lease.token, 't-1', 'the clone wrote over the holder\'s lease');
  // The holder's agent restarts within the boot: new token, same instance id.
  const restarted = new LeaseKeeper({ store, me: { ...shared, instance: 'i-one', token: 't-3' }, ttlMs: 10_000, settleMs: 10, onLost: () => assert.fail('lost') });
  assert.deepEqual(await restarted.tryAcquire(), { action: 'acquire', reason: 'held by an earlier run of this agent in this boot' });
  assert.equal((await store.read())!.lease.token, 't-3');
  assert.equal((await clone.tryAcquire()).action, 'wait');
});
