import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DRAIN_MARGIN_MS, drainBudget } from '../../agent/config/budget.ts';
import { renderDropins } from '../../agent/systemd/dropins.ts';

test('defaults fit in STOP_GRACE_PERIOD unchanged', () => {
  const b = drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 });
  assert.equal(b.scaled, false);
  assert.deepEqual([b.vaultwardenMs, b.litestreamMs, b.filesMs], [60_000, 60_000, 60_000]);
  assert.equal(b.confirmMs, 28_000);
  assert.deepEqual(b.units, { agentSec: 315, vaultwardenSec: 60, litestreamSec: 30, backupSec: 1 });
});

test('steps that add up to more than the grace period are scaled down and stay within it', () => {
  for (const grace of [40_000, 60_000, 120_000]) {
    const b = drainBudget(grace, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 });
    assert.equal(b.scaled, true);
    assert.ok(b.vaultwardenMs + b.litestreamMs + b.filesMs <= grace - DRAIN_MARGIN_MS, `grace ${grace}`);
    // Litestream's two halves (confirm, then SIGTERM bounded by TimeoutStopSec) fit its share.
    assert.ok(b.confirmMs + b.units.litestreamSec * 1000 <= b.litestreamMs + 1000);
    assert.ok(b.vaultwardenMs >= 10_000);
    assert.ok(b.units.agentSec * 1000 >= grace);
  }
  // Configured Litestream/file timeouts are kept when they fit; Vaultwarden takes the rest.
  const small = drainBudget(40_000, { litestreamShutdownMs: 10_000, syncShutdownMs: 10_000 });
  assert.deepEqual([small.vaultwardenMs, small.litestreamMs, small.filesMs, small.confirmMs], [10_000, 10_000, 10_000, 3_000]);
  assert.equal(small.units.litestreamSec, 5);
});

test('a running backup gets BACKUP_SHUTDOWN_TIMEOUT, at most a third of the grace, and the rest still fits', () => {
  const b = drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000, backupShutdownMs: 120_000 });
  assert.equal(b.backupMs, 100_000);
  assert.ok(b.backupMs + b.vaultwardenMs + b.litestreamMs + b.filesMs <= 300_000 - DRAIN_MARGIN_MS);
  assert.equal(b.units.backupSec, 100);
});

test('drop-ins carry the timeouts and the sync interval', () => {
  const files = renderDropins(drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 }), 300_000);
  assert.match(files['vwstream-agent.service.d/50-vwstream.conf']!, /^TimeoutStopSec=315$/m);
  assert.match(files['vwstream-litestream.service.d/50-vwstream.conf']!, /^TimeoutStopSec=30$/m);
  // An empty assignment resets every monotonic trigger: after the last one, both are set.
  const timer = files['vwstream-sync.timer.d/50-vwstream.conf']!;
  assert.match(timer, /^OnActiveSec=\nOnActiveSec=300s\nOnUnitActiveSec=300s\n$/m);
  const afterReset = timer.split('\n').slice(timer.split('\n').findLastIndex((l) => /^On\w+Sec=$/.test(l)) + 1);
  assert.deepEqual(afterReset.filter(Boolean), ['OnActiveSec=300s', 'OnUnitActiveSec=300s']);
  assert.equal(files['vwstream-verify.timer.d/50-vwstream.conf'], undefined);
});

test('the restore drill timer follows VERIFY_CRON', () => {
  const files = renderDropins(drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 }), 300_000, undefined, '0 4 * * 0');
  assert.match(files['vwstream-verify.timer.d/50-vwstream.conf']!, /^# Written by vwstream-agent from VERIFY_CRON=0 4 \* \* 0\n\[Timer\]\nOnCalendar=\nOnCalendar=Sun \*-\*-\* 04:00:00$/m);
  assert.equal(files['vwstream-backup.timer.d/50-vwstream.conf'], undefined);
});
