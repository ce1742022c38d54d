import assert from 'node:assert/strict';
import { test } from 'node:test';
process.env.TZ = 'UTC';
import { Cron } from 'croner';
import { run } from '../../agent/exec.ts';
import { cronToOnCalendar, nextRun, renderTimerDropIn } from '../../agent/config/cron.ts';
import { ConfigError } from '../../agent/errors.ts';

const BASE = new Date('2025-06-30T12:00:00Z');

test('common expressions translate to readable OnCalendar', () => {
  assert.deepEqual(cronToOnCalendar('0 3 * * *'), ['*-*-* 03:00:00']);
  assert.deepEqual(cronToOnCalendar('30 2 * * 0'), ['Sun *-*-* 02:30:00']);
  assert.deepEqual(cronToOnCalendar('30 2 * * 7'), ['Sun *-*-* 02:30:00']);
  assert.deepEqual(cronToOnCalendar('0 3 * * MON-FRI'), ['Mon..Fri *-*-* 03:00:00']);
  assert.deepEqual(cronToOnCalendar('*/15 * * * *'), ['*-*-* *:00,15,30,45:00']);
  assert.deepEqual(cronToOnCalendar('0 */6 * * *'), ['*-*-* 00,06,12,18:00:00']);
  assert.deepEqual(cronToOnCalendar('0 0 1 jan,jul *'), ['*-01,07-01 00:00:00']);
  assert.deepEqual(cronToOnCalendar('0 4 L * *'), ['*-*~01 04:00:00']);
  assert.deepEqual(cronToOnCalendar('5 1-4 * * *'), ['*-*-* 01..04:05:00']);
});

test('day-of-month and day-of-week both restricted: either fires (two OnCalendar lines)', () => {
  assert.deepEqual(cronToOnCalendar('0 3 1,15 * 1'), ['Mon *-*-* 03:00:00', '*-*-01,15 03:00:00']);
  assert.match(renderTimerDropIn('0 3 1,15 * 1'), /\[Timer\]\nOnCalendar=\nOnCalendar=Mon \*-\*-\* 03:00:00\nOnCalendar=\*-\*-01,15 03:00:00\n$/);
});

test('invalid or inexpressible expressions throw a ConfigError naming BACKUP_CRON', () => {
  for (const bad of ['0 3 * *', '0 3 * * * *', '61 3 * * *', '0 3 ? * *', '0 3 * * 1#2', '0 3 15W * *', '0 3 * * 5L', '0 22-2 * * *', 'x 3 * * *']) {
    assert.throws(() => cronToOnCalendar(bad), (err: unknown) => {
      assert.ok(err instanceof ConfigError, bad);
      assert.equal(err.key, 'BACKUP_CRON');
      assert.match(err.message, /^BACKUP_CRON=/);
      return true;
    }, bad);
  }
  assert.throws(() => cronToOnCalendar('bad', 'VERIFY_CRON'), /^ConfigError: VERIFY_CRON=|VERIFY_CRON=/);
});

test('nextRun follows croner', () => {
  assert.equal(nextRun('0 3 * * *', BASE)!.toISOString(), '2025-07-01T03:00:00.000Z');
});

/** The first n elapses systemd computes for the OnCalendar lines, united. */
async function systemdElapses(exprs: string[], n: number): Promise<string[]> {
  const r = await run('systemd-analyze', ['calendar', `--iterations=${n}`, '--base-time=2025-06-30 12:00:00 UTC', ...exprs], { env: { TZ: 'UTC' } });
  const times = [...r.stdout.matchAll(/(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC/g)].map((m) => `${m[1]!.replace(' ', 'T')}.000Z`);
  return [...new Set(times)].sort().slice(0, n);
}

test('systemd computes exactly the runs croner computes', async () => {
  const exprs = [
    '0 3 * * *', '*/15 */2 1-10/3 * *', '0 3 * * 5-7', '0 3 1,15 * 1', '7 9 13 * FRI', '0 0 * jan,feb *', '0 4 L * *',
    '0 3 */2 * *', '10-20/5 8-18 * * 1-5', '0 12 29 2 *', '0 3 1-7 * 0', '59 23 31 * *', '0 0 1 1 0', '0 3 * * sun,sat', '0 3 10/5 * *',
  ];
  const N = 25;
  for (const e of exprs) {
    const cal = cronToOnCalendar(e);
    const expected = new Cron(e, { paused: true, timezone: 'UTC' }).nextRuns(N, BASE).map((d) => d.toISOString());
    const got = await systemdElapses(cal, N);
    assert.equal(got.length, N, e);
    assert.deepEqual(got, expected, `${e} → ${cal.join(' | ')}`);
  }
});
