import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { moveDurable, unlinkDurable, writeFileDurable, writePrivateFile } from '../agent/fs.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-fs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('writeFileDurable: replaces the file whole, private by default, no temporary left', async () => {
  const p = join(dir, 'new/sub/state.json');
  await writeFileDurable(p, 'one\n');
  await writeFileDurable(p, 'two\n');
  assert.equal(readFileSync(p, 'utf8'), 'two\n');
  assert.equal(statSync(p).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(join(dir, 'new/sub')), ['state.json']);
  await writeFileDurable(p, 'three\n', { mode: 0o644, owner: { uid: 65534, gid: 65534 } });
  const st = statSync(p);
  assert.equal(st.mode & 0o777, 0o644);
  assert.equal(st.uid, 65534);
  assert.equal(st.gid, 65534);
  await writePrivateFile(p, 'four\n');
  assert.equal(statSync(p).mode & 0o777, 0o600);
});

test('writeFileDurable: a failed write leaves the old file and no temporary', async () => {
  const p = join(dir, 'keep.txt');
  await writeFileDurable(p, 'old');
  await assert.rejects(writeFileDurable(p, 'new', { owner: { uid: -5, gid: -5 } }));
  assert.equal(readFileSync(p, 'utf8'), 'old');
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('keep')), ['keep.txt']);
});

test('moveDurable: a file and a directory tree, same filesystem and across (/dev/shm)', async () => {
  const src = join(dir, 'src.bin');
  writeFileSync(src, Buffer.alloc(70_000, 7), { mode: 0o640 });
  await moveDurable(src, join(dir, 'dst.bin'));
  assert.ok(!existsSync(src));
  assert.equal(readFileSync(join(dir, 'dst.bin')).length, 70_000);
  // Across filesystems: /dev/shm is a tmpfs (the test runs on the root filesystem).
  const far = mkdtempSync('/dev/shm/vws-fs-');
  try {
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'a/b'), { recursive: true, mode: 0o750 });
    writeFileSync(join(tree, 'a/b/f'), 'deep', { mode: 0o600 });
    writeFileSync(join(tree, 'top'), 'top');
    const to = join(far, 'tree');
    await moveDurable(tree, to);
    assert.ok(!existsSync(tree));
    assert.equal(readFileSync(join(to, 'a/b/f'), 'utf8'), 'deep');
    assert.equal(statSync(join(to, 'a/b/f')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(to, 'top'), 'utf8'), 'top');
    assert.deepEqual(readdirSync(far), ['tree']);
    await moveDurable(join(dir, 'dst.bin'), join(far, 'dst.bin'));
    assert.equal(statSync(join(far, 'dst.bin')).mode & 0o777, 0o640);
    assert.ok(!existsSync(join(dir, 'dst.bin')));
  } finally {
    rmSync(far, { recursive: true, force: true });
  }
  await unlinkDurable(join(dir, 'missing'));
});
