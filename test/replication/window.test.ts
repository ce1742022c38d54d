import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Generation } from '../../agent/replication/litestream.ts';
import { RestorableWindow } from '../../agent/replication/window.ts';

test('an empty answer is asked again soon; a real range is cached; invalidate forces a new look', async () => {
  let answer: Generation[] = [];
  let calls = 0;
  const w = new RestorableWindow(async () => { calls++; return answer; }, 600_000, 0);
  assert.deepEqual({ ...(await w.current())!, checkedAt: 'x' }, { oldest: null, newest: null, generations: 0, checkedAt: 'x', error: null });
  const start = new Date('2026-11-25T10:00:00Z');
  const end = new Date('2026-11-25T11:00:00Z');
  answer = [{ generation: '0123456789abcdef', start, end, lag: '0s' }];
  await new Promise((r) => setTimeout(r, 5));
  const r = (await w.current())!;
  assert.equal(r.generations, 1);
  assert.equal(r.newest, end.toISOString());
  assert.equal(calls, 2);
  await w.current(); // cached for maxAgeMs
  assert.equal(calls, 2);
  w.invalidate();
  await w.current();
  assert.equal(calls, 3);
});
