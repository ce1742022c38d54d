import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MIN_FINAL_SYNC_MS, planLitestream } from '../../agent/cli/stop-writers.ts';
import type { Lease } from '../../agent/replication/lease.ts';

// What stop-writers (the agent unit's ExecStopPost) does with a Litestream the agent left
// running: a final sync only within this host's lease, else SIGKILL (no upload).
const ME = 'a'.repeat(32);
const now = Date.parse('2026-01-01T12:00:00Z');
const lease = (over: Partial<Lease>): Lease => ({
  holder: 'vault-a', instance: ME, machineId: 'm', bootId: 'b', token: 't', acquiredAt: '2026-01-01T11:00:00Z',
  expiresAt: new Date(now + 40_000).toISOString(), ttlMs: 60_000, ...over,
});

test('own lease with time left: final sync bounded by the expiry less the safety margin', () => {
  const p = planLitestream(lease({}), ME, now);
  assert.equal(p.action, 'final-sync');
  // 40 s to expiry, margin min(5 s, 60 s / 4) = 5 s.
  assert.equal(p.action === 'final-sync' && p.withinMs, 35_000);
  assert.match(p.why, /this host holds the lease until 2026-01-01T12:00:40\.000Z/);
});

test('short TTL: the margin is a quarter of it', () => {
  const p = planLitestream(lease({ ttlMs: 10_000, expiresAt: new Date(now + 8_000).toISOString() }), ME, now);
  assert.deepEqual(p.action === 'final-sync' && p.withinMs, 5_500);
});

test('own lease about to lapse (or lapsed): kill, no final sync', () => {
  const edge = 5_000 + MIN_FINAL_SYNC_MS - 1;
  assert.equal(planLitestream(lease({ expiresAt: new Date(now + edge).toISOString() }), ME, now).action, 'kill');
  assert.equal(planLitestream(lease({ expiresAt: new Date(now + edge + 1).toISOString() }), ME, now).action, 'final-sync');
  const lapsed = planLitestream(lease({ expiresAt: new Date(now - 1_000).toISOString() }), ME, now);
  assert.equal(lapsed.action, 'kill');
  assert.match(lapsed.why, /runs out at .* \(-6 s left before its safety margin\)/);
  assert.equal(planLitestream(lease({ expiresAt: 'garbage' }), ME, now).action, 'kill');
});

test('another holder, a lease of a clone (same host name, other instance), none, unreadable, or no instance file: kill', () => {
  const other = planLitestream(lease({ instance: 'b'.repeat(32), holder: 'vault-b' }), ME, now);
  assert.equal(other.action, 'kill');
  assert.match(other.why, /held by vault-b \(instance bbbbbbbb\), not by this host/);
  assert.equal(planLitestream(lease({ instance: 'b'.repeat(32) }), ME, now).action, 'kill');
  assert.equal(planLitestream(lease({ instance: undefined }), ME, now).action, 'kill');
  assert.deepEqual(planLitestream(null, ME, now), { action: 'kill', why: 'there is no lease' });
  assert.deepEqual(planLitestream({ error: 'connect ECONNREFUSED' }, ME, now), { action: 'kill', why: 'the lease cannot be read (connect ECONNREFUSED)' });
  assert.equal(planLitestream(lease({}), undefined, now).action, 'kill');
});
