// A file restore makes its files durable once, at its end (one syncfs of the data
// folder's file system), and records nothing before that: neither the manifest that lets
// the next start skip a file unread nor the end of the pending restore.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { FileMirror, syncFileSystem } from '../../agent/files/mirror.ts';
import { scopeOf } from '../../agent/files/scope.ts';
import { DirStore } from '../../agent/files/store.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-mirror-durable-'));
after(() => rmSync(root, { recursive: true, force: true }));
const scope = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false });
const me = { uid: process.getuid!(), gid: process.getgid!() };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
let n = 0;

function fresh(files: Record<string, Buffer>) {
  const d = join(root, `case${++n}`);
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(dirname(join(d, 'remote', rel)), { recursive: true });
    writeFileSync(join(d, 'remote', rel), content);
  }
  mkdirSync(join(d, 'data'), { recursive: true });
  return { d, data: join(d, 'data'), manifest: join(d, 'manifest.json'), pending: join(d, 'pending.json') };
}

function count(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).length;
}

const files: Record<string, Buffer> = {};
for (let i = 0; i < 12; i++) files[`attachments/c${i}/f${i}.bin`] = Buffer.alloc(3000 + i, i + 1);
files['rsa_key.pem'] = Buffer.from('KEY');
// A body bigger than one gathered write (1 MiB), in the read stream's 64 KiB pieces.
const big = Buffer.alloc(2.5 * 1024 * 1024);
for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
files['sends/s1/big'] = big;

test('one syncfs of the data folder after every file is written, before the manifest and the end of the pending restore', async () => {
  const c = fresh(files);
  const calls: Array<{ root: string; files: number; manifest: boolean; pending: boolean }> = [];
  const syncfs = async (r: string) => { calls.push({ root: r, files: count(c.data), manifest: existsSync(c.manifest), pending: existsSync(c.pending) }); };
  const mirror = new FileMirror({ dataFolder: c.data, scope, store: new DirStore(join(c.d, 'remote')), manifestPath: c.manifest, pendingPath: c.pending, parallel: 4, syncfs });
  const r = await mirror.restore(me);
  assert.equal(r.files, 14);
  assert.deepEqual(calls, [{ root: c.data, files: 14, manifest: false, pending: true }]);
  assert.ok(existsSync(c.manifest) && !existsSync(c.pending));
  assert.equal(sha(readFileSync(join(c.data, 'sends/s1/big'))), sha(big));
  assert.deepEqual(readFileSync(join(c.data, 'attachments/c11/f11.bin')), Buffer.alloc(3011, 12));
  assert.equal(readdirSync(join(c.data, 'attachments/c3')).join(','), 'f3.bin', 'no temporary name left');

  // Nothing written (all unchanged): no syncfs.
  calls.length = 0;
  const again = await new FileMirror({ dataFolder: c.data, scope, store: new DirStore(join(c.d, 'remote')), manifestPath: c.manifest, pendingPath: c.pending, syncfs }).restore(me);
  assert.equal(again.unchanged, 14);
  assert.deepEqual(calls, []);
});

test('a failed syncfs fails the restore: no manifest, the restore stays pending, and the next start compares every file by content', async () => {
  const c = fresh(files);
  const store = new DirStore(join(c.d, 'remote'));
  const failing = async (r: string) => { throw new Error(`cannot make the restored files in ${r} durable: sync -f exited 1: EIO`); };
  await assert.rejects(new FileMirror({ dataFolder: c.data, scope, store, manifestPath: c.manifest, pendingPath: c.pending, syncfs: failing }).restore(me),
    { message: `cannot make the restored files in ${c.data} durable: sync -f exited 1: EIO` });
  assert.ok(!existsSync(c.manifest), 'no manifest vouches for files that may not be on disk');
  assert.ok(existsSync(c.pending), 'the restore is still pending');
  // A crash left one file short (renamed into place, its data lost): the next start replaces it.
  writeFileSync(join(c.data, 'attachments/c5/f5.bin'), '');
  let synced = 0;
  const next = new FileMirror({ dataFolder: c.data, scope, store, manifestPath: c.manifest, pendingPath: c.pending, syncfs: async () => { synced++; } });
  assert.ok(next.pendingRestore());
  const r = await next.restore(me);
  assert.deepEqual({ files: r.files, unchanged: r.unchanged, replaced: r.replaced }, { files: 1, unchanged: 13, replaced: 1 });
  assert.deepEqual(readFileSync(join(c.data, 'attachments/c5/f5.bin')), Buffer.alloc(3005, 6));
  assert.equal(synced, 1);
  assert.equal(next.pendingRestore(), null);
});

test('a failed download still flushes what was written before the manifest records it', async () => {
  const c = fresh(files);
  const store = new DirStore(join(c.d, 'remote'));
  const realGet = store.get.bind(store);
  store.get = async (key: string) => { if (key === 'rsa_key.pem') throw new Error('connection reset'); return realGet(key); };
  const order: string[] = [];
  const mirror = new FileMirror({ dataFolder: c.data, scope, store, manifestPath: c.manifest, pendingPath: c.pending, syncfs: async () => { order.push(existsSync(c.manifest) ? 'sync after manifest' : 'sync'); } });
  await assert.rejects(mirror.restore(me), /rsa_key\.pem: connection reset.*completed at the next start/);
  assert.deepEqual(order, ['sync']);
  const saved = JSON.parse(readFileSync(c.manifest, 'utf8')) as { entries: Record<string, unknown> };
  assert.equal(Object.keys(saved.entries).length, 13);
  assert.ok(existsSync(c.pending));
});

test('syncFileSystem: syncfs of a real folder; a missing one fails naming it', async () => {
  await syncFileSystem(root);
  const missing = join(root, 'no-such-folder');
  await assert.rejects(syncFileSystem(missing), (e: Error) => e.message.startsWith(`cannot make the restored files in ${missing} durable: sync -f exited 1: sync: error opening '${missing}': No such file or directory`));
});
