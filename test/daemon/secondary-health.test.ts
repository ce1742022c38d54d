import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Secondary, type SecondarySettings } from '../../agent/daemon/secondary.ts';

/** The standby's refresh_age follows its own interval, not HEALTHCHECK_MAX_SYNC_AGE alone. */
function secondaryAt(settings: Partial<SecondarySettings>, now: { t: number }): Secondary {
  const s: SecondarySettings = { serve: true, serverless: false, intervalMs: 3_600_000, maxSyncAgeMs: 600_000, leaseTtlMs: 60_000, replica: 's3://b/p', replicaMissing: '', ...settings };
  return new Secondary({
    settings: s, clock: { now: () => now.t, sleep: async () => undefined },
  } as unknown as ConstructorParameters<typeof Secondary>[0]);
}

test('default intervals: healthy for the whole hour between refreshes and one missed refresh, not after', () => {
  const now = { t: 0 };
  const s = secondaryAt({}, now);
  assert.equal(s.healthCheck().ok, false, 'never refreshed');
  s.lastRefresh = new Date(0);
  for (const minutes of [1, 10, 11, 59, 61, 119]) {
    now.t = minutes * 60_000;
    assert.equal(s.healthCheck().ok, true, `${minutes} min after the refresh: ${s.healthCheck().detail}`);
  }
  now.t = 121 * 60_000;
  const late = s.healthCheck();
  assert.equal(late.ok, false);
  assert.match(late.detail, /max 7200s/);
});

test('a short interval keeps HEALTHCHECK_MAX_SYNC_AGE as the floor', () => {
  const now = { t: 0 };
  const s = secondaryAt({ intervalMs: 30_000 }, now);
  s.lastRefresh = new Date(0);
  now.t = 599_000;
  assert.equal(s.healthCheck().ok, true);
  now.t = 601_000;
  assert.equal(s.healthCheck().ok, false);
});

test('serverless: restored once is healthy for good; a failed attempt is named', () => {
  const now = { t: 0 };
  const s = secondaryAt({ serverless: true }, now);
  s.lastRefresh = new Date(0);
  s.lastAttempt = { at: 5, ok: false, detail: 'replica unreachable' };
  now.t = 10 * 86_400_000;
  const h = s.healthCheck();
  assert.equal(h.ok, true);
  assert.match(h.detail, /serverless.*last attempt failed: replica unreachable/);
});
