import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideLease, newLease, safetyMargin, type Identity } from '../../agent/replication/lease.ts';

const me: Identity = { holder: 'vault-b', machineId: 'm-b', bootId: 'boot-b', token: 'tok-b' };
const other: Identity = { holder: 'vault-a', machineId: 'm-a', bootId: 'boot-a', token: 'tok-a' };
const now = Date.parse('2026-11-25T10:00:00Z');
const ttl = 60_000;
const safety = safetyMargin(ttl);

test('no lease: acquire', () => assert.equal(decideLease(null, me, now, safety).action, 'acquire'));

test('ours: renew', () => assert.deepEqual(decideLease(newLease(me, now - 10_000, ttl), me, now, safety), { action: 'renew' }));

test('alive lease of another host: wait, naming holder and expiry', () => {
  const d = decideLease(newLease(other, now - 10_000, ttl), me, now, safety);
  assert.deepEqual(d, { action: 'wait', holder: 'vault-a', until: new Date(now + 50_000) });
});

test('expired only after the safety margin: the holder fences itself that margin before expiry', () => {
  const lease = newLease(other, now - ttl, ttl); // expires exactly now
  assert.equal(decideLease(lease, me, now, safety).action, 'wait');
  assert.equal(decideLease(lease, me, now + safety, safety).action, 'wait');
  assert.equal(decideLease(lease, me, now + safety + 1, safety).action, 'acquire');
});

test('stolen from our point of view: another token is alive, so we wait (and a running holder fences)', () => {
  const thief = newLease({ holder: 'vault-c', machineId: 'm-c', bootId: 'boot-c', token: 'tok-c' }, now, ttl);
  assert.equal(decideLease(thief, me, now, safety).action, 'wait');
});

test('an earlier run of this agent in the same boot is taken over at once; a reboot or a clone waits', () => {
  assert.deepEqual(decideLease(newLease({ ...me, token: 'tok-old' }, now, ttl), me, now, safety), { action: 'acquire', reason: 'held by an earlier run of this agent' });
  // After a reboot (new boot id) the old lease runs out like anyone's.
  assert.equal(decideLease(newLease({ ...me, bootId: 'boot-old', token: 'x' }, now, ttl), me, now, safety).action, 'wait');
  // Clones share machine id and host name, never the boot id.
  assert.equal(decideLease(newLease({ ...me, bootId: 'boot-clone', token: 'x' }, now, ttl), me, now, safety).action, 'wait');
  assert.equal(decideLease(newLease({ ...me, bootId: 'unknown', token: 'x' }, now, ttl), { ...me, bootId: 'unknown' }, now, safety).action, 'wait');
});

test('a garbled expiry is treated as expired', () => {
  assert.equal(decideLease({ ...newLease(other, now, ttl), expiresAt: 'garbage' }, me, now, safety).action, 'acquire');
});

test('safety margin: at most 5 s, a quarter of short TTLs', () => {
  assert.equal(safetyMargin(60_000), 5_000);
  assert.equal(safetyMargin(10_000), 2_500);
});
