import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { asideName } from '../../agent/aside.ts';
import { AsideKeeper } from '../../agent/daemon/aside.ts';
import { setLogLevel } from '../../agent/log.ts';

const DAY = 86_400_000;
const tmp = mkdtempSync(join(tmpdir(), 'vws-keeper-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
setLogLevel('fatal');

function plant(dir: string, name: string, bytes: number): void {
  mkdirSync(join(dir, name), { recursive: true });
  writeFileSync(join(dir, name, 'db.sqlite3'), Buffer.alloc(bytes));
}

test('the keeper prunes by the rule and its summary follows what is on disk', async () => {
  const dir = join(tmp, 'aside');
  const k = new AsideKeeper(dir, { minKeep: 1, retentionDays: 7 });
  assert.deepEqual({ ...(await k.summary()), lastPrune: null }, { dir, count: 0, bytes: 0, foreign: [], rule: { minKeep: 1, retentionDays: 7 }, lastPrune: null, error: null });
  assert.equal((await k.check()).ok, true);
  const old = asideName(new Date(Date.now() - 30 * DAY), 'corrupt');
  const newest = asideName(new Date(), 'corrupt');
  plant(dir, old, 1000);
  plant(dir, newest, 2000);
  writeFileSync(join(dir, 'README'), 'mine');
  const s1 = await k.summary();
  assert.equal(s1.count, 2);
  assert.equal(s1.bytes, 3000);
  assert.deepEqual(s1.foreign, ['README']);
  // Two prunes at once run one after the other; the second finds nothing more to do.
  await Promise.all([k.prune('test'), k.prune('test again')]);
  assert.deepEqual(readdirSync(dir).sort(), ['README', newest].sort());
  const s2 = await k.summary();
  assert.equal(s2.count, 1);
  assert.equal(s2.bytes, 2000);
  assert.equal(s2.lastPrune?.removed, 0, 'the last of the two prunes removed nothing');
  assert.equal(s2.lastPrune?.errors, 0);
  const c = await k.check();
  assert.equal(c.name, 'aside_size');
  assert.equal(c.ok, true);
  assert.match(c.detail, /^1 folders, 2\.0 KiB kept aside under /);
});
