// The mirror never mixes up, loses or leaks: manifests bound to one destination,
// content-checked restores, no overwrite of objects this vault did not write, no remote
// deletion after a read error, no link followed, resumable and checked downloads.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { CONFLICT_PREFIX, FileMirror } from '../../agent/files/mirror.ts';
import { scopeOf } from '../../agent/files/scope.ts';
import { DirStore, type ObjectStore, type RemoteBody, type RemoteObject } from '../../agent/files/store.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-mirror-safety-'));
after(() => rmSync(root, { recursive: true, force: true }));
const scope = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false });
const me = { uid: process.getuid!(), gid: process.getgid!() };
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
let n = 0;

function put(dir: string, rel: string, content: string | Buffer): void {
  mkdirSync(dirname(join(dir, rel)), { recursive: true });
  writeFileSync(join(dir, rel), content);
}

/** A case of its own: data folder, two remotes, a manifest path and the aside folder. */
function fresh() {
  const d = join(root, `case${++n}`);
  for (const x of ['data', 'a', 'b', 'tmp']) mkdirSync(join(d, x), { recursive: true });
  const mk = (remote: 'a' | 'b', store: ObjectStore = new DirStore(join(d, remote))) =>
    new FileMirror({ dataFolder: join(d, 'data'), scope, store, manifestPath: join(d, 'manifest.json'), pendingPath: join(d, 'files-restore.json'), stagingDir: join(d, 'tmp') });
  return { d, data: join(d, 'data'), mk };
}

function listAll(dir: string, rel = ''): string[] {
  if (!existsSync(join(dir, rel))) return [];
  return readdirSync(join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? listAll(dir, r) : [r];
  }).sort();
}

test('the README path: a new host\'s own rsa_key.pem (same size) is replaced by the replica\'s on restore and set aside; the bucket\'s copy never changes', async () => {
  const { d, data, mk } = fresh();
  const original = `-----BEGIN PRIVATE KEY-----\n${'A'.repeat(1600)}\n-----END PRIVATE KEY-----\n`;
  const generated = `-----BEGIN PRIVATE KEY-----\n${'B'.repeat(1600)}\n-----END PRIVATE KEY-----\n`;
  assert.equal(original.length, generated.length, 'keys of the same size: size is no identity');
  // The bucket (remote b) holds the original vault's files.
  put(join(d, 'b'), 'rsa_key.pem', original);
  put(join(d, 'b'), 'attachments/c1/a.bin', 'attachment');
  // The fresh install mirrored its own new key to the local directory replica (remote a).
  put(data, 'rsa_key.pem', generated);
  const first = await mk('a').sync('start');
  assert.equal(first.uploaded, 1);
  // The operator points the agent at the bucket: the manifest for remote a says nothing about b.
  const mirror = mk('b');
  const r = await mirror.restore(me, join(d, 'aside'));
  assert.deepEqual({ files: r.files, replaced: r.replaced }, { files: 2, replaced: 1 });
  assert.equal(sha(readFileSync(join(data, 'rsa_key.pem'))), sha(original));
  assert.equal(readFileSync(join(d, 'aside/files/rsa_key.pem'), 'utf8'), generated, 'the replaced local key is kept aside');
  assert.equal(readFileSync(join(data, 'attachments/c1/a.bin'), 'utf8'), 'attachment');
  assert.equal(statSync(join(data, 'rsa_key.pem')).mode & 0o777, 0o600);
  const s = await mirror.sync('start');
  assert.deepEqual({ uploaded: s.uploaded, conflicts: s.conflicts }, { uploaded: 0, conflicts: 0 });
  assert.equal(sha(readFileSync(join(d, 'b/rsa_key.pem'))), sha(original), 'the bucket keeps the original key');
  assert.ok(!existsSync(join(d, 'files-restore.json')), 'a completed restore leaves no pending record');
});

test('outside a restore, a local file that differs from a remote object this vault did not write is kept under a conflict key, said once, never overwriting it', async () => {
  const { d, data, mk } = fresh();
  put(join(d, 'b'), 'rsa_key.pem', 'REMOTE KEY');
  put(join(d, 'b'), 'config.json', '{"same":1}');
  put(data, 'rsa_key.pem', 'LOCAL KEY!');
  put(data, 'config.json', '{"same":1}');
  put(data, 'attachments/c1/new.bin', 'new');
  const mirror = mk('b');
  await mirror.checkRemote();
  const s = await mirror.sync('start');
  assert.equal(s.conflicts, 1);
  assert.equal(s.uploaded, 1, 'only the new attachment is uploaded; config.json (same content) is adopted');
  assert.equal(readFileSync(join(d, 'b/rsa_key.pem'), 'utf8'), 'REMOTE KEY');
  const kept = listAll(join(d, 'b')).filter((k) => k.startsWith(CONFLICT_PREFIX));
  assert.equal(kept.length, 1);
  assert.match(kept[0]!, /\/rsa_key\.pem$/);
  assert.equal(readFileSync(join(d, 'b', kept[0]!), 'utf8'), 'LOCAL KEY!');
  const again = await mirror.sync('timer');
  assert.deepEqual({ uploaded: again.uploaded, conflicts: again.conflicts }, { uploaded: 0, conflicts: 0 }, 'the conflict is not re-uploaded every pass');
  // Deleting the local file never deletes the remote object (it was never ours).
  unlinkSync(join(data, 'rsa_key.pem'));
  const del = await mirror.sync('change');
  assert.equal(del.deleted, 0);
  assert.equal(readFileSync(join(d, 'b/rsa_key.pem'), 'utf8'), 'REMOTE KEY');
  // The conflict keys are not restored into a vault.
  const { data: data2, mk: mk2 } = fresh();
  const other = new FileMirror({ dataFolder: data2, scope, store: new DirStore(join(d, 'b')), manifestPath: join(data2, '..', 'm.json') });
  await other.restore(me);
  assert.deepEqual(listAll(data2), ['attachments/c1/new.bin', 'config.json', 'rsa_key.pem']);
  void mk2;
});

test('a read error during the scan cancels every deletion of that pass (a folder replaced by a file); uploads go on', async () => {
  const { data, mk } = fresh();
  put(data, 'attachments/c1/a.bin', 'a');
  put(data, 'attachments/c1/b.bin', 'b');
  put(data, 'sends/s1/file', 's');
  const mirror = mk('a');
  await mirror.sync('start');
  unlinkSync(join(data, 'attachments/c1/a.bin')); // a real deletion…
  rmSync(join(data, 'sends'), { recursive: true });
  writeFileSync(join(data, 'sends'), 'not a folder'); // …and a folder that cannot be read
  put(data, 'attachments/c2/new.bin', 'new');
  const s = await mirror.sync('change');
  assert.equal(s.deleted, 0);
  assert.equal(s.deletionsCancelled, true);
  assert.equal(s.uploaded, 1, 'uploads go on');
  assert.ok(s.errors.some((e) => /sends: cannot read \(ENOTDIR\)/.test(e)), s.errors.join('; '));
  assert.ok(existsSync(join(mirror.store.url.slice(7), 'attachments/c1/a.bin')), 'the remote copy is kept');
  assert.equal(mirror.failedPasses, 1, 'counts as a file-sync error');
  // Readable again: the deletion goes through.
  unlinkSync(join(data, 'sends'));
  mkdirSync(join(data, 'sends/s1'), { recursive: true });
  writeFileSync(join(data, 'sends/s1/file'), 's');
  const ok = await mirror.sync('change');
  assert.equal(ok.deleted, 1);
  assert.deepEqual(ok.errors, []);
});

test('an unreadable attachment folder (EACCES, as the non-root user) deletes nothing remotely', { skip: process.getuid!() !== 0 ? 'needs root to drop to nobody' : false }, () => {
  const { d, data } = fresh();
  put(data, 'attachments/c1/a.bin', 'a');
  put(data, 'attachments/c2/b.bin', 'b');
  chmodSync(root, 0o711); // the unprivileged child must reach its case folder
  execFileSync('chown', ['-R', 'nobody:nogroup', d]);
  const script = join(d, 'run.ts');
  writeFileSync(script, `
    import { chmodSync } from 'node:fs';
    import { FileMirror } from ${JSON.stringify(new URL('../../agent/files/mirror.ts', import.meta.url).pathname)};
    import { scopeOf } from ${JSON.stringify(new URL('../../agent/files/scope.ts', import.meta.url).pathname)};
    import { DirStore } from ${JSON.stringify(new URL('../../agent/files/store.ts', import.meta.url).pathname)};
    const d = ${JSON.stringify(d)};
    const m = new FileMirror({ dataFolder: d + '/data', scope: scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false }), store: new DirStore(d + '/a'), manifestPath: d + '/manifest.json' });
    const first = await m.sync('start');
    chmodSync(d + '/data/attachments/c1', 0o000);
    const second = await m.sync('change');
    process.stdout.write(JSON.stringify({ first: first.uploaded, deleted: second.deleted, cancelled: second.deletionsCancelled, errors: second.errors }));
  `);
  execFileSync('chown', ['nobody:nogroup', script]);
  const out = execFileSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LOG_LEVEL: 'error' } });
  const r = JSON.parse(out.slice(out.indexOf('{"first"'))) as { first: number; deleted: number; cancelled: boolean; errors: string[] };
  chmodSync(join(data, 'attachments/c1'), 0o700);
  assert.equal(r.first, 2);
  assert.equal(r.deleted, 0, 'the unreadable folder\'s file is not deleted remotely');
  assert.equal(r.cancelled, true);
  assert.deepEqual(r.errors, ['attachments/c1: cannot read (EACCES)']);
  assert.ok(existsSync(join(d, 'a/attachments/c1/a.bin')));
});

test('links in the data folder are never followed: not uploaded, not written through on restore', async () => {
  const { d, data, mk } = fresh();
  const secret = join(d, 'etc-vwstream');
  mkdirSync(secret);
  writeFileSync(join(secret, 'vwstream.env'), 'S3_SECRET_ACCESS_KEY=very-secret');
  writeFileSync(join(d, 'shadow'), 'root:$6$hash');
  put(data, 'attachments/c1/a.bin', 'a');
  symlinkSync(secret, join(data, 'sends')); // a whole folder replaced by a link
  symlinkSync(join(d, 'shadow'), join(data, 'attachments/c1/x')); // a file link
  symlinkSync(join(d, 'shadow'), join(data, 'rsa_key.pem'));
  execFileSync('mkfifo', [join(data, 'attachments/c1/fifo')]);
  const mirror = mk('a');
  const s = await mirror.sync('start');
  assert.equal(s.uploaded, 1);
  assert.deepEqual(listAll(join(d, 'a')), ['attachments/c1/a.bin']);
  for (const f of listAll(join(d, 'a'))) assert.doesNotMatch(readFileSync(join(d, 'a', f), 'utf8'), /very-secret|root:/);

  // Restore into a data folder whose attachments/ is a link to a directory the service user must not reach.
  const target = join(d, 'root-owned');
  mkdirSync(target, { mode: 0o755 });
  const { data: data2 } = fresh();
  put(join(d, 'a'), 'sends/s1/file', 'send');
  symlinkSync(target, join(data2, 'attachments'));
  const other = new FileMirror({ dataFolder: data2, scope, store: new DirStore(join(d, 'a')), manifestPath: join(data2, '..', 'm.json') });
  const r = await other.restore({ uid: 65534, gid: 65534 });
  assert.equal(r.ignored, 1, 'the file under the linked folder is skipped');
  assert.deepEqual(readdirSync(target), [], 'nothing written through the link');
  assert.equal(statSync(target).uid, 0, 'the link target is not chowned');
  assert.equal(lstatSync(join(data2, 'attachments')).isSymbolicLink(), true);
  assert.equal(readFileSync(join(data2, 'sends/s1/file'), 'utf8'), 'send');
  assert.equal(statSync(join(data2, 'sends/s1/file')).uid, 65534);
  assert.equal(statSync(join(data2, 'sends/s1')).uid, 65534);
});

/** A directory store that also lists keys a real bucket may hold, and can fail or cut downloads. */
class OddStore extends DirStore {
  extra: RemoteObject[] = [];
  failKeys = new Set<string>();
  shortKeys = new Set<string>();
  override async list(): Promise<RemoteObject[]> {
    return [...(await super.list()), ...this.extra];
  }
  override async get(key: string): Promise<RemoteBody> {
    if (this.failKeys.has(key)) throw new Error('connection reset');
    const r = await super.get(key);
    if (!this.shortKeys.has(key)) return r;
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    return { ...r, body: Readable.from([Buffer.concat(chunks).subarray(0, 1)]) };
  }
}

test('unsafe keys and folder markers are ignored with a warning; a cut download is never renamed into place', async () => {
  const { d, data } = fresh();
  put(join(d, 'b'), 'attachments/c1/a.bin', 'attachment');
  put(join(d, 'b'), 'config.json', '{"x":1}');
  const store = new OddStore(join(d, 'b'));
  store.extra = [
    { key: 'attachments/', size: 0, etag: 'x' },
    { key: 'attachments/../../escape', size: 1, etag: 'x' },
    { key: '/etc/passwd', size: 1, etag: 'x' },
    { key: 'sends//s', size: 1, etag: 'x' },
  ];
  store.shortKeys.add('config.json');
  const mirror = new FileMirror({ dataFolder: data, scope, store, manifestPath: join(d, 'manifest.json'), pendingPath: join(d, 'pending.json') });
  await assert.rejects(mirror.restore(me), /config\.json: downloaded 1 bytes, the listing says 7/);
  assert.deepEqual(listAll(data), ['attachments/c1/a.bin'], 'no partial config.json, no escape, no marker file');
  assert.ok(!existsSync(join(d, 'escape')));
  assert.ok(existsSync(join(d, 'pending.json')), 'the unfinished restore is recorded');
});

test('an interrupted file restore is recorded and completed by the next start; downloads run in parallel', async () => {
  const { d, data } = fresh();
  for (let i = 0; i < 20; i++) put(join(d, 'b'), `attachments/c${i % 4}/f${i}.bin`, Buffer.alloc(1000 + i, i));
  const store = new OddStore(join(d, 'b'));
  store.failKeys.add('attachments/c3/f7.bin');
  let inFlight = 0;
  let peak = 0;
  const realGet = store.get.bind(store);
  store.get = async (key: string) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setTimeout(r, 5));
    try { return await realGet(key); } finally { inFlight--; }
  };
  const opts = { dataFolder: data, scope, manifestPath: join(d, 'manifest.json'), pendingPath: join(d, 'pending.json'), parallel: 4 };
  const progress: number[] = [];
  await assert.rejects(new FileMirror({ ...opts, store }).restore(me, join(d, 'aside'), (p) => progress.push(p.done)), /f7\.bin: connection reset.*completed at the next start/);
  assert.equal(listAll(data).length, 19);
  assert.ok(peak > 1 && peak <= 4, `parallel downloads, bounded (peak ${peak})`);
  assert.equal(progress.at(-1), 20);
  // The next start: a new mirror sees the record (for this destination) and finishes it.
  store.failKeys.clear();
  const next = new FileMirror({ ...opts, store });
  const pending = next.pendingRestore();
  assert.equal(pending?.destination, store.url);
  assert.equal(pending?.asideDir, join(d, 'aside'));
  const before = store.stats.bytesDown;
  const r = await next.restore(me);
  assert.deepEqual({ files: r.files, unchanged: r.unchanged }, { files: 1, unchanged: 19 });
  assert.equal(store.stats.bytesDown - before, 1007, 'only the missing file is downloaded');
  assert.equal(next.pendingRestore(), null);
  assert.equal(listAll(data).length, 20);
  // Another destination's record is not this one's.
  writeFileSync(join(d, 'pending.json'), JSON.stringify({ destination: 's3://other/x/files/', startedAt: new Date().toISOString() }));
  assert.equal(new FileMirror({ ...opts, store }).pendingRestore(), null);
  chownSync(join(data, 'attachments'), me.uid, me.gid);
});
