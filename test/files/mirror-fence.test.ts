import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FencedError, FileMirror } from '../../agent/files/mirror.ts';
import { scopeOf } from '../../agent/files/scope.ts';
import { DirStore } from '../../agent/files/store.ts';

/** A fenced mirror (lease not renewable or lost) writes nothing to the remote. */
const root = mkdtempSync(join(tmpdir(), 'vws-fence-'));
after(() => rmSync(root, { recursive: true, force: true }));
const scope = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('fence aborts the pass in flight and refuses new ones; unfence lets the watcher catch up what waited', async () => {
  const data = join(root, 'data');
  const remote = join(root, 'remote');
  mkdirSync(join(data, 'attachments', 'c'), { recursive: true });
  for (let i = 0; i < 40; i++) writeFileSync(join(data, 'attachments', 'c', `f${i}`), Buffer.alloc(256 * 1024, i));
  const store = new DirStore(remote);
  const mirror = new FileMirror({ dataFolder: data, scope, store, manifestPath: join(root, 'manifest.json'), parallel: 1 });

  const pass = mirror.sync('start');
  await sleep(5);
  mirror.fence('lease not renewed');
  await assert.rejects(pass, (err: Error) => err.name === 'FencedError' || err.name === 'AbortError');
  const uploadedAtFence = (await store.list()).length;
  assert.ok(uploadedAtFence < 40, `the pass stopped early (${uploadedAtFence} of 40 uploaded)`);
  await assert.rejects(mirror.sync('timer'), FencedError);
  await assert.rejects(mirror.syncInBackground('timer'), FencedError);

  // While fenced, the watcher counts what changed as lag but schedules nothing.
  mirror.watch(() => undefined);
  writeFileSync(join(data, 'attachments', 'c', 'during'), 'written while fenced');
  await sleep(1500);
  assert.equal((await store.list()).length, uploadedAtFence, 'nothing written while fenced');
  assert.ok((mirror.lagMs ?? 0) > 0, 'the change waits as lag');
  assert.equal(existsSync(join(remote, 'attachments', 'c', 'during')), false);

  mirror.unfence();
  for (let i = 0; i < 100 && (mirror.lagMs !== 0 || (await store.list()).length < 41); i++) await sleep(100);
  assert.equal((await store.list()).length, 41, 'one pass after unfence uploads everything that waited');
  assert.equal(mirror.lagMs, 0);
  mirror.stopWatching();
});
