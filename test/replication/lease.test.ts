import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { instanceId } from '../../agent/replication/instance.ts';
import { decideLease, describeHolder, myIdentity, newLease, safetyMargin, type Identity } from '../../agent/replication/lease.ts';

const me: Identity = { holder: 'vault-b', instance: 'i-b', machineId: 'm-b', bootId: 'boot-b', token: 'tok-b' };
const other: Identity = { holder: 'vault-a', instance: 'i-a', machineId: 'm-a', bootId: 'boot-a', token: 'tok-a' };
const dir = mkdtempSync(join(tmpdir(), 'vws-instance-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const now = Date.parse('2026-11-25T10:00:00Z');
const ttl = 60_000;
const safety = safetyMargin(ttl);

test('no lease: acquire', () => assert.equal(decideLease(null, me, now, safety).action, 'acquire'));

test('ours: renew', () => assert.deepEqual(decideLease(newLease(me, now - 10_000, ttl), me, now, safety), { action: 'renew' }));

test('alive lease of another host: wait, naming holder and expiry', () => {
  const d = decideLease(newLease(other, now - 10_000, ttl), me, now, safety);
  assert.deepEqual(d, { action: 'wait', holder: 'vault-a', instance: 'i-a', until: new Date(now + 50_000) });
});

test('expired only after the safety margin: the holder fences itself that margin before expiry', () => {
  const lease = newLease(other, now - ttl, ttl); // expires exactly now
  assert.equal(decideLease(lease, me, now, safety).action, 'wait');
  assert.equal(decideLease(lease, me, now + safety, safety).action, 'wait');
  assert.equal(decideLease(lease, me, now + safety + 1, safety).action, 'acquire');
});

test('stolen from our point of view: another token is alive, so we wait (and a running holder fences)', () => {
  const thief = newLease({ holder: 'vault-c', instance: 'i-c', machineId: 'm-c', bootId: 'boot-c', token: 'tok-c' }, now, ttl);
  assert.equal(decideLease(thief, me, now, safety).action, 'wait');
});

test('an earlier run of this agent (same instance, another token) is taken over at once', () => {
  assert.deepEqual(decideLease(newLease({ ...me, token: 'tok-old' }, now, ttl), me, now, safety), { action: 'acquire', reason: 'held by an earlier run of this agent in this boot' });
});

test('clones: same machine id, boot id and hostname, another instance: wait until the lease expired', () => {
  // Two containers from one image on one kernel: /etc/machine-id, hostname and the
  // kernel's boot id are the same; only the instance id (their own /run) differs.
  const clone: Identity = { ...me, instance: 'i-clone', token: 'tok-clone' };
  const held = newLease(me, now - 10_000, ttl);
  assert.deepEqual(decideLease(held, clone, now, safety), { action: 'wait', holder: 'vault-b', instance: 'i-b', until: new Date(now + 50_000) });
  // And the other way round: neither may take the other's live lease.
  assert.equal(decideLease(newLease(clone, now, ttl), me, now, safety).action, 'wait');
  // Only once it expired plus the margin.
  assert.equal(decideLease(held, clone, now + 50_000 + safety, safety).action, 'wait');
  assert.equal(decideLease(held, clone, now + 50_000 + safety + 1, safety).action, 'acquire');
});

test('a lease written before instance ids (none, or empty) is never taken as our own', () => {
  const { instance: _drop, ...old } = newLease({ ...me, token: 'tok-old' }, now, ttl);
  assert.equal(decideLease(old, me, now, safety).action, 'wait');
  assert.equal(decideLease({ ...old, instance: '' }, { ...me, instance: '' }, now, safety).action, 'wait');
  assert.equal(describeHolder(old), 'vault-b (instance unknown)');
});

test('the lease names instance, machine id and boot id; the holder is described by hostname and short instance', () => {
  const l = newLease({ ...me, instance: '0123456789abcdef0123456789abcdef' }, now, ttl);
  assert.deepEqual(Object.keys(l).sort(), ['acquiredAt', 'bootId', 'expiresAt', 'holder', 'instance', 'machineId', 'token', 'ttlMs']);
  assert.equal(describeHolder(l), 'vault-b (instance 01234567)');
});

test('instance id: created once per boot in its file (0600), kept by a restart, new after a reboot or a garbled file', () => {
  const file = join(dir, 'run', 'vwstream', 'instance.json');
  const first = instanceId(file, 'boot-1', new Date('2026-12-01T10:00:00Z'));
  assert.equal(first.created, true);
  assert.match(first.record.id, /^[0-9a-f]{32}$/);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { id: first.record.id, bootId: 'boot-1', createdAt: '2026-12-01T10:00:00.000Z' });
  // An agent restart in the same boot: the same id.
  const again = instanceId(file, 'boot-1');
  assert.deepEqual(again, { record: first.record, created: false });
  // A /run that survived a reboot (not a tmpfs): a new id.
  const rebooted = instanceId(file, 'boot-2');
  assert.equal(rebooted.created, true);
  assert.notEqual(rebooted.record.id, first.record.id);
  writeFileSync(file, '{"id":"../../etc"}');
  const garbled = instanceId(file, 'boot-2');
  assert.equal(garbled.created, true);
  assert.match(garbled.record.id, /^[0-9a-f]{32}$/);
});

test('two containers on one kernel (same machine id and boot id, each its own /run): two instances, one lease', () => {
  const a = myIdentity(join(dir, 'host-a', 'instance.json'));
  const b = myIdentity(join(dir, 'host-b', 'instance.json'));
  assert.equal(a.machineId, b.machineId);
  assert.equal(a.bootId, b.bootId);
  assert.equal(a.holder, b.holder);
  assert.notEqual(a.instance, b.instance);
  assert.equal(decideLease(newLease(a, now, ttl), b, now, safety).action, 'wait');
  // A restart of a's agent (same /run, new token) takes a's lease back at once.
  const aRestarted = myIdentity(join(dir, 'host-a', 'instance.json'));
  assert.equal(aRestarted.instance, a.instance);
  assert.notEqual(aRestarted.token, a.token);
  assert.equal(aRestarted.instanceCreated, false);
  assert.equal(decideLease(newLease(a, now, ttl), aRestarted, now, safety).action, 'acquire');
});

test('a garbled expiry is treated as expired', () => {
  assert.equal(decideLease({ ...newLease(other, now, ttl), expiresAt: 'garbage' }, me, now, safety).action, 'acquire');
});

test('safety margin: at most 5 s, a quarter of short TTLs', () => {
  assert.equal(safetyMargin(60_000), 5_000);
  assert.equal(safetyMargin(10_000), 2_500);
});
