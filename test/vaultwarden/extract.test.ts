import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, test } from 'node:test';
import { AgentError } from '../../agent/errors.ts';
import { ImageTree, cleanEntryName } from '../../agent/vaultwarden/extract.ts';
import { tarOf, type ImageFile } from '../fixtures/oci.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-oci-extract-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function fresh(): string {
  const d = join(root, `t${++n}`);
  mkdirSync(d);
  return d;
}

async function apply(tree: ImageTree, layers: ImageFile[][]): Promise<void> {
  for (const [i, files] of layers.entries()) {
    await pipeline(Readable.from([await tarOf(files)]), tree.layer(`layer ${i + 1} of ${layers.length}`));
  }
}

/** Every entry below dir: path → 'dir 755' / 'file 644 <sha256 prefix>' / 'link -> target'. */
function listing(dir: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(dir, p));
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[p] = `link -> ${readlinkSync(join(dir, p))}`;
    else if (st.isDirectory()) {
      out[p] = `dir ${mode}`;
      Object.assign(out, listing(dir, p));
    } else out[p] = `file ${mode} ${createHash('sha256').update(readFileSync(join(dir, p))).digest('hex').slice(0, 12)}`;
  }
  return out;
}

const h = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 12);
const BASE: ImageFile[] = [
  { path: 'vaultwarden', data: 'BIN-1', mode: 0o700 },
  { path: 'web-vault/', type: 'dir', mode: 0o700 },
  { path: 'web-vault/index.html', data: '<html>1', mode: 0o600 },
];

test('keeps only /vaultwarden (0755) and web-vault/ (0755 dirs, 0644 files); everything else is drained', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [[
    { path: 'etc/', type: 'dir' },
    { path: 'etc/passwd', data: 'root:x:0:0' },
    { path: './vaultwarden', data: 'BIN-1', mode: 0o700 },
    { path: 'usr/bin/vaultwarden', data: 'not me' },
    { path: '/web-vault/index.html', data: '<html>1', mode: 0o600 },
    { path: 'web-vault/app/main.js', data: 'js', mode: 0o777 },
    { path: 'web-vaultx/evil', data: 'no' },
    { path: 'start.sh', data: '#!/bin/sh', mode: 0o755 },
    { path: 'data/', type: 'dir' },
  ]]);
  const r = await tree.finish();
  assert.deepEqual(listing(dir), {
    vaultwarden: `file 755 ${h('BIN-1')}`,
    'web-vault': 'dir 755',
    'web-vault/app': 'dir 755',
    'web-vault/app/main.js': `file 644 ${h('js')}`,
    'web-vault/index.html': `file 644 ${h('<html>1')}`,
  });
  assert.deepEqual(r, { files: 3, bytes: 5 + 7 + 2, skippedLinks: 0 });
});

test('whiteouts remove files and trees of earlier layers; an opaque dir drops what earlier layers put in it', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [
    [...BASE,
      { path: 'web-vault/old.js', data: 'old' },
      { path: 'web-vault/gone/a.js', data: 'a' },
      { path: 'web-vault/gone/b/c.js', data: 'c' },
      { path: 'web-vault/opq/1.js', data: '1' },
      { path: 'web-vault/opq/sub/2.js', data: '2' }],
    [{ path: 'web-vault/.wh.old.js' },
      { path: 'web-vault/.wh.gone' },
      { path: 'web-vault/opq/' , type: 'dir' },
      { path: 'web-vault/opq/.wh..wh..opq' },
      { path: 'web-vault/opq/3.js', data: '3' },
      { path: 'web-vault/.wh.never-existed' },
      { path: '.wh.etc' },
      { path: 'vaultwarden', data: 'BIN-2' }],
    // A whiteout only hides lower layers: new.js written in the same layer stays.
    [{ path: 'web-vault/new.js', data: 'new' }, { path: 'web-vault/.wh.new.js' }],
  ]);
  await tree.finish();
  assert.deepEqual(listing(dir), {
    vaultwarden: `file 755 ${h('BIN-2')}`,
    'web-vault': 'dir 755',
    'web-vault/index.html': `file 644 ${h('<html>1')}`,
    'web-vault/new.js': `file 644 ${h('new')}`,
    'web-vault/opq': 'dir 755',
    'web-vault/opq/3.js': `file 644 ${h('3')}`,
  });
});

test('an opaque marker at the root and a whiteout of web-vault drop the earlier tree', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [
    [...BASE, { path: 'web-vault/x.js', data: 'x' }],
    [{ path: '.wh.web-vault' }, { path: 'web-vault/index.html', data: '<html>2' }],
  ]);
  assert.deepEqual(listing(dir), {
    vaultwarden: `file 755 ${h('BIN-1')}`,
    'web-vault': 'dir 755',
    'web-vault/index.html': `file 644 ${h('<html>2')}`,
  });
  const dir2 = fresh();
  const tree2 = new ImageTree(dir2);
  await apply(tree2, [BASE, [{ path: '.wh..wh..opq' }, { path: 'web-vault/index.html', data: '<html>3' }]]);
  assert.deepEqual(listing(dir2), { 'web-vault': 'dir 755', 'web-vault/index.html': `file 644 ${h('<html>3')}` });
  await assert.rejects(tree2.finish(), { message: 'the image has no /vaultwarden (a regular file at its root)' });
});

test("a '..' component or a NUL refuses the image", async () => {
  for (const name of ['web-vault/../../etc/x', '../vaultwarden', 'a/../web-vault/x', 'web-vault/..']) {
    const dir = fresh();
    const tree = new ImageTree(dir);
    await assert.rejects(apply(tree, [[...BASE, { path: name, data: 'x' }]]), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.message, `layer 1 of 1: entry ${JSON.stringify(name)} has a '..' component; refusing the image`);
      return true;
    });
    assert.equal(existsSync(join(root, 'etc')), false);
  }
  assert.equal(cleanEntryName('web-vault/a\0b').reason, 'contains a NUL byte');
  assert.deepEqual(cleanEntryName('.//./web-vault//a/./b/'), { segs: ['web-vault', 'a', 'b'] });
  assert.deepEqual(cleanEntryName('/'), { segs: [] });
});

test('symlinks: kept inside web-vault (absolute ones rewritten relative), skipped when they leave it', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [[...BASE,
    { path: 'web-vault/app/main.js', data: 'js' },
    { path: 'web-vault/rel.js', type: 'symlink', linkname: 'app/main.js' },
    { path: 'web-vault/app/up.html', type: 'symlink', linkname: '../index.html' },
    { path: 'web-vault/abs.js', type: 'symlink', linkname: '/web-vault/app/main.js' },
    { path: 'web-vault/passwd', type: 'symlink', linkname: '/etc/passwd' },
    { path: 'web-vault/escape', type: 'symlink', linkname: '../../../etc/shadow' },
    { path: 'web-vault/self', type: 'symlink', linkname: '.' },
    { path: 'web-vault/bin', type: 'symlink', linkname: '../vaultwarden' },
    { path: 'vaultwarden2', type: 'symlink', linkname: 'vaultwarden' },
  ]]);
  const r = await tree.finish();
  assert.deepEqual(listing(dir), {
    vaultwarden: `file 755 ${h('BIN-1')}`,
    'web-vault': 'dir 755',
    'web-vault/abs.js': 'link -> app/main.js',
    'web-vault/app': 'dir 755',
    'web-vault/app/main.js': `file 644 ${h('js')}`,
    'web-vault/app/up.html': 'link -> ../index.html',
    'web-vault/index.html': `file 644 ${h('<html>1')}`,
    'web-vault/rel.js': 'link -> app/main.js',
  });
  assert.equal(r.skippedLinks, 4);
});

test('an entry below a symlink refuses the image instead of writing through it', async () => {
  const outside = fresh();
  const dir = fresh();
  const tree = new ImageTree(dir);
  await assert.rejects(apply(tree, [[...BASE,
    { path: 'web-vault/app/', type: 'dir' },
    { path: 'web-vault/lnk', type: 'symlink', linkname: 'app' },
    { path: 'web-vault/lnk/x.js', data: 'x' },
  ]]), { message: 'layer 1 of 1: entry "web-vault/lnk/x.js" lies below the symlink web-vault/lnk; refusing to write through it; refusing the image' });
  assert.deepEqual(readdirSync(join(dir, 'web-vault/app')), []);
  assert.deepEqual(readdirSync(outside), []);
});

test('a symlink planted in the folder beforehand is replaced, never followed', async () => {
  const outside = fresh();
  writeFileSync(join(outside, 'target'), 'precious');
  mkdirSync(join(outside, 'wv'));
  const dir = fresh();
  symlinkSync(join(outside, 'target'), join(dir, 'vaultwarden'));
  mkdirSync(join(dir, 'web-vault'));
  symlinkSync(join(outside, 'target'), join(dir, 'web-vault', 'index.html'));
  const tree = new ImageTree(dir);
  await apply(tree, [BASE]);
  await tree.finish();
  assert.equal(readFileSync(join(outside, 'target'), 'utf8'), 'precious');
  assert.equal(lstatSync(join(dir, 'vaultwarden')).isFile(), true);
  assert.equal(readFileSync(join(dir, 'vaultwarden'), 'utf8'), 'BIN-1');
  assert.equal(readFileSync(join(dir, 'web-vault/index.html'), 'utf8'), '<html>1');
  // A planted symlink in place of a parent folder: refused, nothing lands outside.
  const dir2 = fresh();
  symlinkSync(join(outside, 'wv'), join(dir2, 'web-vault'));
  await assert.rejects(apply(new ImageTree(dir2), [[{ path: 'web-vault/index.html', data: 'x' }]]),
    { message: 'layer 1 of 1: entry "web-vault/index.html" lies below the symlink web-vault; refusing to write through it; refusing the image' });
  assert.deepEqual(readdirSync(join(outside, 'wv')), []);
});

test('hard links are resolved by copying a kept file, else skipped; special files skipped', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [[...BASE,
    { path: 'web-vault/a.js', data: 'AAA' },
    { path: 'web-vault/b.js', type: 'link', linkname: 'web-vault/a.js' },
    { path: 'web-vault/c.js', type: 'link', linkname: 'usr/share/x.js' },
    { path: 'usr/bin/vw', data: 'BIN-X' },
  ]]);
  const r = await tree.finish();
  const l = listing(dir);
  assert.equal(l['web-vault/b.js'], `file 644 ${h('AAA')}`);
  assert.equal(l['web-vault/c.js'], undefined);
  assert.equal(lstatSync(join(dir, 'web-vault/b.js')).nlink, 1);
  assert.equal(r.skippedLinks, 1);
  assert.deepEqual(r, { files: 4, bytes: 5 + 7 + 3 + 3, skippedLinks: 1 });
});

test('a file replaces an earlier dir and a dir replaces an earlier file', async () => {
  const dir = fresh();
  const tree = new ImageTree(dir);
  await apply(tree, [
    [...BASE, { path: 'web-vault/x/y.js', data: 'y' }, { path: 'web-vault/f', data: 'f' }],
    [{ path: 'web-vault/x', data: 'now a file' }, { path: 'web-vault/f/', type: 'dir' }, { path: 'web-vault/f/g.js', data: 'g' }],
  ]);
  const l = listing(dir);
  assert.equal(l['web-vault/x'], `file 644 ${h('now a file')}`);
  assert.equal(l['web-vault/f'], 'dir 755');
  assert.equal(l['web-vault/f/g.js'], `file 644 ${h('g')}`);
  assert.equal(l['web-vault/x/y.js'], undefined);
});

test('finish: the image must have /vaultwarden and web-vault/index.html', async () => {
  const d1 = fresh();
  const t1 = new ImageTree(d1);
  await apply(t1, [[{ path: 'web-vault/index.html', data: 'x' }]]);
  await assert.rejects(t1.finish(), { message: 'the image has no /vaultwarden (a regular file at its root)' });
  const d2 = fresh();
  const t2 = new ImageTree(d2);
  await apply(t2, [[{ path: 'vaultwarden', data: 'x' }, { path: 'web-vault/app.js', data: 'x' }]]);
  await assert.rejects(t2.finish(), { message: 'the image has no web-vault/index.html' });
  const d3 = fresh();
  const t3 = new ImageTree(d3);
  await apply(t3, [[{ path: 'vaultwarden', type: 'symlink', linkname: 'usr/bin/vaultwarden' }, { path: 'web-vault/index.html', data: 'x' }]]);
  await assert.rejects(t3.finish(), { message: 'the image has no /vaultwarden (a regular file at its root)' });
});
