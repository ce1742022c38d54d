import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync, existsSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FileMirror } from '../../agent/files/mirror.ts';
import { scopeOf } from '../../agent/files/scope.ts';
import { DirStore } from '../../agent/files/store.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-mirror-'));
after(() => rmSync(root, { recursive: true, force: true }));
const data = join(root, 'data');
const remote = join(root, 'remote');
const scope = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false });
const me = { uid: process.getuid!(), gid: process.getgid!() };

function write(rel: string, content: string | Buffer): void {
  mkdirSync(join(data, rel, '..'), { recursive: true });
  writeFileSync(join(data, rel), content);
}

test('first sync uploads everything in scope; idle pass makes no request; one change costs one upload', async () => {
  write('attachments/c1/a.bin', Buffer.alloc(4096, 1));
  write('attachments/c1/b.bin', Buffer.alloc(1024, 2));
  write('sends/s1/file', 'send');
  write('config.json', '{}');
  write('rsa_key.pem', 'KEY');
  write('db.sqlite3', 'not mirrored');
  write('icon_cache/x.png', 'not mirrored');
  const store = new DirStore(remote);
  const mirror = new FileMirror({ dataFolder: data, scope, store, manifestPath: join(root, 'manifest.json') });

  const first = await mirror.sync('start');
  assert.equal(first.uploaded, 5);
  assert.equal(first.uploadedBytes, 4096 + 1024 + 4 + 2 + 3);
  assert.deepEqual((await store.list()).map((o) => o.key).sort(), ['attachments/c1/a.bin', 'attachments/c1/b.bin', 'config.json', 'rsa_key.pem', 'sends/s1/file']);

  const before = { ...store.stats };
  const idle = await mirror.sync('timer');
  assert.equal(idle.uploaded, 0);
  assert.equal(idle.unchanged, 5);
  assert.deepEqual(store.stats, before, 'an idle pass makes no request');

  write('attachments/c1/b.bin', Buffer.alloc(2048, 3));
  const one = await mirror.sync('change');
  assert.equal(one.uploaded, 1);
  assert.equal(one.uploadedBytes, 2048);
  assert.equal(store.stats.requests - before.requests, 1);
  assert.deepEqual(readFileSync(join(remote, 'attachments/c1/b.bin')), Buffer.alloc(2048, 3));

  // Touched but identical content: hashed, not uploaded.
  const t = new Date(Date.now() + 5000);
  utimesSync(join(data, 'config.json'), t, t);
  const touched = await mirror.sync('change');
  assert.equal(touched.uploaded, 0);

  // A removed file is deleted remotely.
  unlinkSync(join(data, 'attachments/c1/a.bin'));
  const del = await mirror.sync('change');
  assert.equal(del.deleted, 1);
  assert.ok(!existsSync(join(remote, 'attachments/c1/a.bin')));

  // The whole attachments folder vanishes (unmounted, wiped): the remote keeps it.
  rmSync(join(data, 'attachments'), { recursive: true });
  const wiped = await mirror.sync('change');
  assert.equal(wiped.deleted, 0);
  assert.deepEqual(wiped.heldBack, [{ group: 'attachments', files: 1 }]);
  assert.ok(existsSync(join(remote, 'attachments/c1/b.bin')));
});

test('restore brings files back (0600) and a fresh mirror starts from them without re-uploading', async () => {
  const data2 = join(root, 'data2');
  mkdirSync(data2);
  writeFileSync(join(data2, 'rsa_key.pem'), 'OTHER KEY GENERATED LOCALLY');
  const store = new DirStore(remote);
  const mirror = new FileMirror({ dataFolder: data2, scope, store, manifestPath: join(root, 'manifest2.json') });
  const r = await mirror.restore(me, join(root, 'aside'));
  assert.equal(r.files, 4);
  assert.equal(readFileSync(join(data2, 'rsa_key.pem'), 'utf8'), 'KEY');
  assert.equal(readFileSync(join(root, 'aside/files/rsa_key.pem'), 'utf8'), 'OTHER KEY GENERATED LOCALLY');
  assert.deepEqual(readFileSync(join(data2, 'attachments/c1/b.bin')), Buffer.alloc(2048, 3));
  assert.equal(statSync(join(data2, 'sends/s1/file')).mode & 0o777, 0o600);
  const before = store.stats.requests;
  const s = await mirror.sync('start');
  assert.equal(s.uploaded, 0);
  assert.equal(store.stats.requests, before);
});

test('checkRemote re-uploads what disappeared from the remote', async () => {
  const store = new DirStore(remote);
  const mirror = new FileMirror({ dataFolder: join(root, 'data2'), scope, store, manifestPath: join(root, 'manifest2.json') });
  rmSync(join(remote, 'config.json'));
  assert.equal(await mirror.checkRemote(), 1);
  const s = await mirror.sync('start');
  assert.equal(s.uploaded, 1);
  assert.ok(existsSync(join(remote, 'config.json')));
});

test('a pass stuck on a hung store does not hold the shutdown pass past its bound', async () => {
  const hung = new DirStore(join(root, 'hung'));
  // put() never settles unless aborted: an S3 that stopped answering.
  hung.put = (_k: string, _r: unknown, signal?: AbortSignal) => new Promise<{ etag: string }>((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
  const data3 = join(root, 'data3');
  mkdirSync(join(data3, 'attachments/c'), { recursive: true });
  writeFileSync(join(data3, 'attachments/c/x'), 'x');
  const mirror = new FileMirror({ dataFolder: data3, scope, store: hung, manifestPath: join(root, 'manifest3.json') });
  await mirror.checkRemote();
  const keepAlive = setInterval(() => undefined, 1000); // AbortSignal.timeout's timer is unref'd
  const background = mirror.syncInBackground('change');
  const t = Date.now();
  await assert.rejects(mirror.sync('shutdown', AbortSignal.timeout(300)), (e: Error) => e.name === 'TimeoutError');
  assert.ok(Date.now() - t < 2000, 'shutdown pass gave up at its bound');
  mirror.stopWatching(); // the drain cancels the background pass
  await assert.rejects(background, /draining/);
  clearInterval(keepAlive);
});

test('lag: a change seen by the watcher waits until a clean pass uploads it; a failing store keeps it waiting', async () => {
  const data4 = join(root, 'data4');
  mkdirSync(join(data4, 'attachments/c'), { recursive: true });
  const store = new DirStore(join(root, 'remote4'));
  const mirror = new FileMirror({ dataFolder: data4, scope, store, manifestPath: join(root, 'manifest4.json') });
  assert.equal(mirror.lagMs, null, 'no watcher: unknown');
  await mirror.sync('start');
  const realPut = store.put.bind(store);
  store.put = async () => { throw new Error('S3 unreachable'); };
  const errors: Error[] = [];
  mirror.watch((e) => errors.push(e));
  try {
    assert.equal(mirror.lagMs, 0);
    writeFileSync(join(data4, 'attachments/c/new'), 'new');
    await new Promise((r) => setTimeout(r, 1_600)); // the watcher's pass ran and failed
    assert.ok(mirror.lagMs! >= 1_000, `lag ${mirror.lagMs}`);
    assert.equal(mirror.failedPasses, 1);
    store.put = realPut;
    await mirror.sync('timer');
    assert.equal(mirror.lagMs, 0);
    assert.deepEqual(errors, []);
  } finally {
    mirror.stopWatching();
  }
});

test('watch: scope folders recursively and root files flat; the database, its WAL and Litestream\'s files never start a pass; a folder created later or replaced by a link', async () => {
  const data = join(root, 'data-watch');
  mkdirSync(join(data, 'attachments/a1'), { recursive: true });
  mkdirSync(join(data, '.db.sqlite3-litestream/generations/g/wal'), { recursive: true });
  writeFileSync(join(data, 'db.sqlite3'), 'db');
  const store = new DirStore(join(root, 'remote-watch'));
  const mirror = new FileMirror({ dataFolder: data, scope, store, manifestPath: join(root, 'manifest-watch.json') });
  await mirror.sync('start');
  const passes: string[] = [];
  const realSync = mirror.syncInBackground.bind(mirror);
  mirror.syncInBackground = async (reason: string) => { passes.push(reason); return realSync(reason); };
  const settle = () => new Promise((r) => setTimeout(r, 1_400)); // the 1 s debounce, and a little
  mirror.watch((e) => assert.fail(e));
  try {
    for (let i = 0; i < 5; i++) {
      writeFileSync(join(data, 'db.sqlite3-wal'), `wal ${i}`);
      writeFileSync(join(data, '.db.sqlite3-litestream/generations/g/wal/00000000.wal'), `shadow ${i}`);
    }
    writeFileSync(join(data, 'db.sqlite3'), 'db2');
    await settle();
    assert.deepEqual(passes, [], 'a database write started a pass');
    writeFileSync(join(data, 'attachments/a1/deep'), 'x');
    await settle();
    assert.deepEqual(passes, ['change']);
    writeFileSync(join(data, 'rsa_key.pem'), 'key');
    await settle();
    assert.deepEqual(passes, ['change', 'change']);
    // sends/ did not exist at the start: created now, then a file in it.
    mkdirSync(join(data, 'sends/s1'), { recursive: true });
    await settle();
    writeFileSync(join(data, 'sends/s1/file'), 'send');
    await settle();
    assert.equal(passes.length, 4, `passes ${JSON.stringify(passes)}`);
    // attachments/ replaced by a link to a folder elsewhere: what changes there is not watched.
    const elsewhere = join(root, 'elsewhere-watch');
    mkdirSync(elsewhere, { recursive: true });
    rmSync(join(data, 'attachments'), { recursive: true, force: true });
    symlinkSync(elsewhere, join(data, 'attachments'));
    await settle();
    const before = passes.length;
    writeFileSync(join(elsewhere, 'through-the-link'), 'x');
    await settle();
    assert.equal(passes.length, before, 'a change behind a link started a pass');
  } finally {
    mirror.stopWatching();
  }
});
