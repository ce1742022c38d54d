/**
 * Who owns what in the data folder and the directory replica (issue 13, item 8): the
 * helpers that hand Litestream its files never follow a link planted in the data folder.
 * Needs root (chown); skipped as another user.
 */
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { adoptTree, createDbFile, installRestored, shareDbFiles } from '../../agent/replication/runtime.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-own-'));
after(() => rmSync(root, { recursive: true, force: true }));
const asRoot = { skip: process.getuid?.() === 0 ? false : 'needs root (chown)' };
const LS = { uid: 4321, gid: 4322 };
const VW = { uid: 5432, gid: 5433 };
const owner = (p: string) => { const st = lstatSync(p); return `${st.uid}:${st.gid}`; };

test('adoptTree hands a whole tree over, re-owns links without following them, and only once', asRoot, async () => {
  const outside = join(root, 'outside.txt');
  writeFileSync(outside, 'not yours');
  const tree = join(root, 'replica');
  mkdirSync(join(tree, 'db', 'generations', 'abc'), { recursive: true, mode: 0o755 });
  writeFileSync(join(tree, 'db', 'generations', 'abc', 'wal.lz4'), 'x');
  writeFileSync(join(tree, 'lease.json'), '{}');
  symlinkSync(outside, join(tree, 'db', 'planted'));
  symlinkSync(root, join(tree, 'dirlink'));
  assert.equal(await adoptTree(tree, LS), true);
  for (const p of ['', 'db', 'db/generations', 'db/generations/abc', 'db/generations/abc/wal.lz4', 'lease.json', 'db/planted', 'dirlink']) {
    assert.equal(owner(join(tree, p)), '4321:4322', p || 'top');
  }
  assert.equal(statSync(tree).mode & 0o777, 0o700);
  assert.equal(owner(outside), '0:0', 'the link target keeps its owner');
  assert.equal(owner(root), '0:0', 'the linked directory keeps its owner');
  assert.equal(await adoptTree(tree, LS), false, 'already its owner: nothing to do');
});

test('adoptTree leaves a link or a missing path alone', asRoot, async () => {
  const target = join(root, 'target-dir');
  mkdirSync(target);
  symlinkSync(target, join(root, 'meta-link'));
  assert.equal(await adoptTree(join(root, 'meta-link'), LS), false);
  assert.equal(owner(target), '0:0');
  assert.equal(await adoptTree(join(root, 'missing'), LS), false);
});

test('the database files become group-writable for Litestream, links are not followed', asRoot, async () => {
  const dir = join(root, 'data');
  mkdirSync(dir);
  const db = join(dir, 'db.sqlite3');
  writeFileSync(db, 'db');
  chmodSync(db, 0o600);
  const outside = join(root, 'etc-file');
  writeFileSync(outside, 'secret');
  chmodSync(outside, 0o600);
  symlinkSync(outside, `${db}-wal`);
  await shareDbFiles(db, VW);
  assert.equal(statSync(db).mode & 0o777, 0o660);
  assert.equal(owner(db), '5432:5433');
  assert.equal(statSync(outside).mode & 0o777, 0o600);
  assert.equal(owner(outside), '0:0');
});

test('a new vault gets an empty database file, 0660, owned by the service user; an existing one is kept', asRoot, async () => {
  const db = join(root, 'new.sqlite3');
  assert.equal(await createDbFile(db, VW), true);
  const st = statSync(db);
  assert.deepEqual([st.size, st.mode & 0o777, `${st.uid}:${st.gid}`], [0, 0o660, '5432:5433']);
  writeFileSync(db, 'data');
  assert.equal(await createDbFile(db, VW), false);
  assert.equal(statSync(db).size, 4);
  symlinkSync(join(root, 'nowhere'), join(root, 'link.sqlite3'));
  assert.equal(await createDbFile(join(root, 'link.sqlite3'), VW), false);
  assert.throws(() => statSync(join(root, 'nowhere')), /ENOENT/, 'nothing created through the link');
});

test('a restored database is installed 0660 for the service user', asRoot, async () => {
  const tmp = join(root, 'restored.tmp');
  writeFileSync(tmp, 'restored');
  chmodSync(tmp, 0o600);
  const db = join(root, 'live.sqlite3');
  await installRestored(tmp, db, VW);
  const st = statSync(db);
  assert.deepEqual([st.mode & 0o777, `${st.uid}:${st.gid}`], [0o660, '5432:5433']);
});
