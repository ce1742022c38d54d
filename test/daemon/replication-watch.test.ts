import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IDLE_METRICS_MS, ReplicationWatch, SHADOW_LAG_MS } from '../../agent/daemon/replication-watch.ts';
import type { Clock, LitestreamPort } from '../../agent/daemon/ports.ts';
import type { LitestreamPosition, ShadowPosition } from '../../agent/replication/litestream.ts';

/** Litestream, the shadow WAL and the database's -wal as the watch sees them, all settable. */
function world(opts: { withWal?: boolean } = {}) {
  const w = {
    now: Date.parse('2026-12-01T12:00:00Z'),
    shadow: { generation: 'g1', index: 3, size: 4152, mtimeMs: 1000 } as ShadowPosition,
    wal: { size: 4152, mtimeMs: 1000 } as { size: number; mtimeMs: number } | undefined,
    replica: { index: 3, offset: 4152 },
    syncErrors: 0,
    down: false,
    metricsCalls: 0,
  };
  const clock = { now: () => w.now } as Clock;
  const port: LitestreamPort = {
    metrics: async () => {
      w.metricsCalls++;
      if (w.down) throw new Error('connection refused');
      return { text: '', position: { replicaIndex: w.replica.index, replicaOffset: w.replica.offset, shadowIndex: undefined, shadowSize: undefined, walSize: 10, dbSize: 100, syncErrors: w.syncErrors, syncCount: 1 } as LitestreamPosition };
    },
    shadow: async () => ({ ...w.shadow }),
    ...(opts.withWal === false ? {} : { localWal: async () => (w.wal ? { ...w.wal } : undefined) }),
    verifyLoaded: async () => undefined,
    confirm: async () => true,
  };
  const errors: string[] = [];
  const watch = new ReplicationWatch({ litestream: port, clock, maxSyncAgeMs: 600_000, onError: (t) => errors.push(t) });
  return { w, watch, errors };
}

test('idle: once the replica holds everything, unchanged local files answer the polls; /metrics again after IDLE_METRICS_MS', async () => {
  const { w, watch } = world();
  await watch.poll();
  assert.equal(w.metricsCalls, 1);
  assert.equal(watch.lastDbSync?.getTime(), w.now - SHADOW_LAG_MS);
  for (let i = 1; i < IDLE_METRICS_MS / 1000; i++) {
    w.now += 1000;
    await watch.poll();
    assert.equal(watch.lastDbSync?.getTime(), w.now - SHADOW_LAG_MS, 'the confirmation moves on while idle');
  }
  assert.equal(w.metricsCalls, 1);
  assert.deepEqual(watch.polls, { metrics: 1, idle: IDLE_METRICS_MS / 1000 - 1 });
  w.now += 1000;
  await watch.poll();
  assert.equal(w.metricsCalls, 2, 'read again after IDLE_METRICS_MS');
});

test('a write (the -wal moves) is never confirmed from the idle path: /metrics decides, and the replica behind it is not in sync', async () => {
  const { w, watch } = world();
  await watch.poll();
  const confirmedAt = watch.lastDbSync!.getTime();
  w.now += 1000;
  w.wal = { size: 8272, mtimeMs: 2000 }; // Vaultwarden wrote; Litestream has not shipped it yet
  w.shadow = { ...w.shadow, size: 8272, mtimeMs: 2000 };
  await watch.poll();
  assert.equal(w.metricsCalls, 2);
  assert.equal(watch.lastDbSync!.getTime(), confirmedAt, 'confirmed although the replica lags');
  w.now += 1000;
  await watch.poll(); // still behind: every poll asks
  assert.equal(w.metricsCalls, 3);
  w.replica = { index: 3, offset: 8272 };
  w.now += 1000;
  await watch.poll();
  assert.equal(watch.lastDbSync!.getTime(), w.now - SHADOW_LAG_MS);
  w.now += 1000;
  w.wal = { size: 8272, mtimeMs: 3000 }; // same size, later write (the WAL restarted after a checkpoint)
  await watch.poll();
  assert.equal(w.metricsCalls, 5, 'an mtime change alone is a write');
});

test('Litestream down, a restart of it, or no -wal reader: every poll asks /metrics', async () => {
  const { w, watch } = world();
  await watch.poll();
  w.down = true;
  w.now += IDLE_METRICS_MS;
  await watch.poll();
  const at = watch.lastDbSync!.getTime();
  for (let i = 0; i < 3; i++) { w.now += 1000; await watch.poll(); }
  assert.equal(w.metricsCalls, 5);
  assert.equal(watch.lastDbSync!.getTime(), at);
  assert.equal(watch.position, null);
  w.down = false;
  w.now += 1000;
  await watch.poll();
  watch.startedMs = w.now; // Litestream restarted by the agent
  w.now += 1000;
  await watch.poll();
  assert.equal(w.metricsCalls, 7);

  const plain = world({ withWal: false });
  for (let i = 0; i < 3; i++) { plain.w.now += 1000; await plain.watch.poll(); }
  assert.equal(plain.w.metricsCalls, 3);
});

test('sync errors are seen at the next /metrics read, within IDLE_METRICS_MS', async () => {
  const { w, watch, errors } = world();
  await watch.poll();
  w.syncErrors = 2;
  let polls = 0;
  while (errors.length === 0 && polls < 20) { w.now += 1000; await watch.poll(); polls++; }
  assert.deepEqual(errors, ['litestream reports sync errors (2)']);
  assert.ok(polls <= IDLE_METRICS_MS / 1000, `seen after ${polls} polls`);
});

test('a wall clock stepped back does not stretch the idle window: /metrics is read at the next poll', async () => {
  const { w, watch } = world();
  await watch.poll();
  w.now += 1000;
  await watch.poll();
  assert.equal(w.metricsCalls, 1);
  w.now -= 3_600_000; // NTP steps the clock back an hour
  await watch.poll();
  assert.equal(w.metricsCalls, 2);
});
