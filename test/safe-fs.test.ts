import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import {
  ensureDirs, isSafeKey, moveOut, openReadNoFollow, SyncBatch, unlinkIn, UnsafePathError, walkNoFollow, writeFileInto, type SkipKind, type WalkOptions,
} from '../agent/safe-fs.ts';

const base = mkdtempSync(join(tmpdir(), 'vws-safefs-'));
chmodSync(base, 0o755);
after(() => rmSync(base, { recursive: true, force: true }));

/** The service user of these tests: not root, so ownership checks mean something. */
const svc = { uid: 4242, gid: 4242 };
let n = 0;

/** A fresh data folder owned by the service user, and a "secret" outside it owned by root. */
function world(): { data: string; secretDir: string; secret: string } {
  const d = join(base, `w${n++}`);
  const data = join(d, 'data');
  const secretDir = join(d, 'etc-vwstream');
  mkdirSync(data, { recursive: true });
  mkdirSync(secretDir, { mode: 0o700 });
  chownSync(data, svc.uid, svc.gid);
  const secret = join(secretDir, 'vwstream.env');
  writeFileSync(secret, 'S3_SECRET_ACCESS_KEY=topsecret\n', { mode: 0o600 });
  return { data, secretDir, secret };
}

function put(data: string, rel: string, content: string): void {
  mkdirSync(join(data, rel, '..'), { recursive: true });
  writeFileSync(join(data, rel), content);
}

async function walk(root: string, dirs: string[], opts: Omit<WalkOptions, 'onSkip' | 'onError'> = {}) {
  const skipped: [string, SkipKind][] = [];
  const errors: [string, string][] = [];
  const files: string[] = [];
  for await (const e of walkNoFollow(root, dirs, { ...opts, onSkip: (r, k) => skipped.push([r, k]), onError: (r, err) => errors.push([r, err instanceof UnsafePathError ? err.reason : (err as NodeJS.ErrnoException).code ?? err.message]) })) files.push(e.rel);
  return { files, skipped, errors };
}

test('walk: regular files only; symlinked dir, symlinked file, FIFO and temp names are not reported, links once each', async () => {
  const { data, secretDir, secret } = world();
  put(data, 'attachments/c1/a.bin', 'A');
  put(data, 'attachments/c1/.vws-123-a.bin', 'partial');
  put(data, 'rsa_key.pem', 'KEY');
  put(data, 'db.sqlite3', 'DB');
  symlinkSync(secret, join(data, 'attachments/c1/x'));
  symlinkSync(secretDir, join(data, 'sends'));
  symlinkSync(secret, join(data, 'config.json'));
  execFileSync('mkfifo', [join(data, 'attachments/fifo')]);
  const r = await walk(data, ['attachments', 'sends'], { rootFiles: (nm) => nm === 'config.json' || nm.startsWith('rsa_key') });
  assert.deepEqual(r.files, ['rsa_key.pem', 'attachments/c1/a.bin']);
  assert.deepEqual(r.skipped.sort(), [['attachments/c1/x', 'symlink'], ['attachments/fifo', 'fifo'], ['config.json', 'symlink'], ['sends', 'symlink']]);
  assert.deepEqual(r.errors, []);
});

test('walk: a link in an intermediate component of a scanned folder is not followed', async () => {
  const { data, secretDir } = world();
  mkdirSync(join(secretDir, 'deeper'));
  writeFileSync(join(secretDir, 'deeper/f'), 'secret');
  symlinkSync(secretDir, join(data, 'icon'));
  const r = await walk(data, ['icon/deeper']);
  assert.deepEqual(r.files, []);
  assert.deepEqual(r.skipped, [['icon', 'symlink']]);
});

test('walk: a missing folder is empty; a folder that is a file is an error, never "empty"', async () => {
  const { data } = world();
  put(data, 'attachments', 'I am a file');
  const r = await walk(data, ['attachments', 'sends']);
  assert.deepEqual(r.files, []);
  assert.deepEqual(r.errors, [['attachments', 'not-a-directory']]);
});

test('walk: an unreadable folder is reported with its errno (as an unprivileged user)', () => {
  const { data } = world();
  put(data, 'attachments/ok/a', 'A');
  put(data, 'attachments/locked/b', 'B');
  chmodSync(join(data, 'attachments/locked'), 0o000);
  chmodSync(data, 0o755);
  for (const d of ['attachments', 'attachments/ok']) chmodSync(join(data, d), 0o755);
  chmodSync(join(data, 'attachments/ok/a'), 0o644);
  chmodSync(join(base, `w${n - 1}`), 0o755);
  const script = `
    import { walkNoFollow } from ${JSON.stringify(new URL('../agent/safe-fs.ts', import.meta.url).href)};
    const out = { files: [], errors: [] };
    for await (const e of walkNoFollow(${JSON.stringify(data)}, ['attachments'], { onError: (r, e) => out.errors.push([r, e.code]) })) out.files.push(e.rel);
    console.log(JSON.stringify(out));`;
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), { files: ['attachments/ok/a'], errors: [['attachments/locked', 'EACCES']] });
});

test('walk: a directory owned by another uid is read; a foreign hard link is skipped with ownerUid', async () => {
  const { data } = world();
  put(data, 'attachments/other/f', 'F');
  chownSync(join(data, 'attachments/other'), 1234, 1234);
  put(data, 'attachments/mine', 'M');
  chownSync(join(data, 'attachments/mine'), svc.uid, svc.gid);
  const rootOwned = join(base, `hl${n}`);
  writeFileSync(rootOwned, 'root only', { mode: 0o600 });
  linkSync(rootOwned, join(data, 'attachments/hard'));
  const r = await walk(data, ['attachments'], { ownerUid: svc.uid });
  assert.deepEqual(r.files, ['attachments/mine', 'attachments/other/f']);
  assert.deepEqual(r.skipped, [['attachments/hard', 'hardlink']]);
});

test('openReadNoFollow: reads a regular file; refuses a symlinked file, a link in a middle component, a FIFO, a replaced file', async () => {
  const { data, secretDir, secret } = world();
  put(data, 'attachments/c/a', 'AAA');
  symlinkSync(secret, join(data, 'attachments/c/x'));
  symlinkSync(secretDir, join(data, 'sends'));
  execFileSync('mkfifo', [join(data, 'attachments/fifo')]);
  const fh = await openReadNoFollow(data, 'attachments/c/a');
  assert.equal((await fh.readFile()).toString(), 'AAA');
  await fh.close();
  await assert.rejects(openReadNoFollow(data, 'attachments/c/x'), (e: unknown) => e instanceof UnsafePathError && e.reason === 'symlink' && e.path === `${data}/attachments/c/x`);
  await assert.rejects(openReadNoFollow(data, 'sends/vwstream.env'), (e: unknown) => e instanceof UnsafePathError && e.reason === 'symlink' && e.path === `${data}/sends`);
  await assert.rejects(openReadNoFollow(data, 'attachments/fifo'), (e: unknown) => e instanceof UnsafePathError && e.reason === 'not-a-file' && /fifo/.test(e.message));
  const st = statSync(join(data, 'attachments/c/a'));
  await assert.rejects(openReadNoFollow(data, 'attachments/c/a', { dev: st.dev, ino: st.ino + 1 }), /was replaced since it was listed/);
  await assert.rejects(openReadNoFollow(data, '../etc-vwstream/vwstream.env'), (e: unknown) => e instanceof UnsafePathError && e.reason === 'bad-path');
});

test('ensureDirs: creates real dirs owned by the service user; refuses a link, a file, a foreign owner, naming the path', async () => {
  const { data, secretDir } = world();
  await ensureDirs(data, 'attachments/c1', svc, 0o750);
  for (const d of ['attachments', 'attachments/c1']) {
    const st = lstatSync(join(data, d));
    assert.ok(st.isDirectory());
    assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [svc.uid, svc.gid, 0o750]);
  }
  symlinkSync(secretDir, join(data, 'sends'));
  const before = statSync(secretDir);
  await assert.rejects(ensureDirs(data, 'sends/s1', svc), (e: unknown) => e instanceof UnsafePathError && e.reason === 'symlink' && e.message.startsWith(`${data}/sends: is a symbolic link`));
  const afterSt = statSync(secretDir);
  assert.deepEqual([afterSt.uid, afterSt.mode], [before.uid, before.mode]);
  assert.deepEqual(readdirSync(secretDir), ['vwstream.env']);
  // A link in an intermediate component.
  mkdirSync(join(secretDir, 'sub'));
  symlinkSync(secretDir, join(data, 'attachments/c1/hop'));
  await assert.rejects(ensureDirs(data, 'attachments/c1/hop/sub/new', svc), (e: unknown) => e instanceof UnsafePathError && e.path === `${data}/attachments/c1/hop`);
  assert.deepEqual(readdirSync(join(secretDir, 'sub')), []);
  put(data, 'icon_cache', 'file');
  await assert.rejects(ensureDirs(data, 'icon_cache/x', svc), (e: unknown) => e instanceof UnsafePathError && e.reason === 'not-a-directory');
  mkdirSync(join(data, 'foreign'));
  chownSync(join(data, 'foreign'), 1234, 1234);
  await assert.rejects(ensureDirs(data, 'foreign/x', svc), (e: unknown) => e instanceof UnsafePathError && e.reason === 'owner' && /owned by uid 1234, expected 4242 or 0/.test(e.message));
  assert.deepEqual(readdirSync(join(data, 'foreign')), []);
});

test('writeFileInto: temp + rename, owner and mode on the file, mtime; a link at the name is replaced, not written through', async () => {
  const { data, secret } = world();
  const mtime = new Date('2025-05-05T05:05:05Z');
  assert.equal(await writeFileInto(data, 'attachments/c/a.bin', Buffer.from('hello'), svc, { mode: 0o640, mtime }), 5);
  const st = lstatSync(join(data, 'attachments/c/a.bin'));
  assert.deepEqual([st.isFile(), st.uid, st.gid, st.mode & 0o7777, st.mtimeMs], [true, svc.uid, svc.gid, 0o640, mtime.getTime()]);
  assert.equal(readFileSync(join(data, 'attachments/c/a.bin'), 'utf8'), 'hello');
  assert.deepEqual(readdirSync(join(data, 'attachments/c')), ['a.bin']);

  symlinkSync(secret, join(data, 'rsa_key.pem'));
  await writeFileInto(data, 'rsa_key.pem', Readable.from([Buffer.from('NEW'), Buffer.from('KEY')]), svc);
  assert.ok(lstatSync(join(data, 'rsa_key.pem')).isFile());
  assert.equal(readFileSync(join(data, 'rsa_key.pem'), 'utf8'), 'NEWKEY');
  assert.equal(readFileSync(secret, 'utf8'), 'S3_SECRET_ACCESS_KEY=topsecret\n');
  const sec = statSync(secret);
  assert.deepEqual([sec.uid, sec.mode & 0o7777], [0, 0o600]);

  const src = join(base, `src${n}`);
  writeFileSync(src, Buffer.alloc(70_000, 7));
  assert.equal(await writeFileInto(data, 'sends/s/file', { fromPath: src }, svc), 70_000);
  assert.deepEqual(readFileSync(join(data, 'sends/s/file')), Buffer.alloc(70_000, 7));
});

test('writeFileInto: refuses a symlinked parent (the target directory stays untouched)', async () => {
  const { data, secretDir } = world();
  const target = join(base, `rootdir${n}`);
  mkdirSync(target, { mode: 0o755 });
  symlinkSync(target, join(data, 'attachments'));
  await assert.rejects(writeFileInto(data, 'attachments/c/a.bin', 'x', svc), (e: unknown) => e instanceof UnsafePathError && e.path === `${data}/attachments`);
  const st = statSync(target);
  assert.deepEqual([st.uid, st.mode & 0o7777, readdirSync(target)], [0, 0o755, []]);
  assert.deepEqual(readdirSync(secretDir), ['vwstream.env']);
});

test('writeFileInto with a SyncBatch: the same checks and result; durability left to one flush (syncfs of the root), a stream gathered into large writes', async () => {
  const { data, secret, secretDir } = world();
  const synced: string[] = [];
  const batch = new SyncBatch(async (r) => { synced.push(r); });
  // Odd-sized pieces across several 1 MiB gathers, and a string piece.
  const pieces = [...Array.from({ length: 9 }, (_, i) => Buffer.alloc(300_001 + i, i + 1)), 'tail'];
  const whole = Buffer.concat(pieces.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
  assert.equal(await writeFileInto(data, 'attachments/c1/big', Readable.from(pieces), svc, { batch }), whole.length);
  assert.equal(createHash('sha256').update(readFileSync(join(data, 'attachments/c1/big'))).digest('hex'), createHash('sha256').update(whole).digest('hex'));
  const st = lstatSync(join(data, 'attachments/c1'));
  assert.deepEqual([st.uid, st.mode & 0o7777], [svc.uid, 0o700], 'a created folder is the service user\'s');
  assert.deepEqual(readdirSync(join(data, 'attachments/c1')), ['big']);

  symlinkSync(secret, join(data, 'rsa_key.pem'));
  await writeFileInto(data, 'rsa_key.pem', 'KEY', svc, { batch });
  assert.ok(lstatSync(join(data, 'rsa_key.pem')).isFile(), 'a link at the name is replaced, not written through');
  assert.equal(readFileSync(secret, 'utf8'), 'S3_SECRET_ACCESS_KEY=topsecret\n');
  symlinkSync(secretDir, join(data, 'sends'));
  await assert.rejects(writeFileInto(data, 'sends/s/f', 'x', svc, { batch }), (e: unknown) => e instanceof UnsafePathError && e.path === `${data}/sends`);
  assert.deepEqual(readdirSync(secretDir), ['vwstream.env']);

  assert.deepEqual([synced, batch.pending], [[], 1], 'nothing flushed before flush()');
  await batch.flush();
  assert.deepEqual([synced, batch.pending], [[data], 0]);
  await batch.flush();
  assert.deepEqual(synced, [data], 'nothing written since: no second syncfs');
  // A failed flush keeps its writes pending.
  const failing = new SyncBatch(async () => { throw new Error('EIO'); });
  await writeFileInto(data, 'config.json', '{}', svc, { batch: failing });
  await assert.rejects(failing.flush(), /EIO/);
  assert.equal(failing.pending, 1);
});

test('moveOut and unlinkIn move or remove the link itself, never its target', async () => {
  const { data, secret } = world();
  put(data, 'attachments/a', 'A');
  symlinkSync(secret, join(data, 'attachments/x'));
  const aside = join(base, `aside${n}`);
  mkdirSync(aside);
  assert.equal(await moveOut(data, 'attachments/a', join(aside, 'a')), true);
  assert.equal(await moveOut(data, 'attachments/x', join(aside, 'x')), true);
  assert.equal(await moveOut(data, 'attachments/none', join(aside, 'none')), false);
  assert.equal(await moveOut(data, 'nodir/none', join(aside, 'none')), false);
  assert.equal(readFileSync(join(aside, 'a'), 'utf8'), 'A');
  assert.ok(lstatSync(join(aside, 'x')).isSymbolicLink());
  symlinkSync(secret, join(data, 'attachments/y'));
  assert.equal(await unlinkIn(data, 'attachments/y'), true);
  assert.equal(await unlinkIn(data, 'attachments/y'), false);
  assert.equal(readFileSync(secret, 'utf8'), 'S3_SECRET_ACCESS_KEY=topsecret\n');
  assert.deepEqual(readdirSync(join(data, 'attachments')), []);
});

test('isSafeKey', () => {
  for (const k of ['attachments/c/a.bin', 'rsa_key.pem', 'sends/x y/f', 'a/.hidden']) assert.equal(isSafeKey(k), true, k);
  for (const k of ['', '/etc/passwd', 'attachments/', 'a//b', 'a/../b', '..', './a', 'a/.', 'a\\b', 'a\u0000b', 'a\nb']) assert.equal(isSafeKey(k), false, JSON.stringify(k));
});
