import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planSync, type LocalFile, type Manifest } from '../../agent/files/plan.ts';
import { inScope, scopeOf } from '../../agent/files/scope.ts';

const all = { attachments: true, sends: true, config: true, rsaKey: true, iconCache: false };
const f = (size: number, mtimeMs = 1000): LocalFile => ({ size, mtimeMs });
const m = (entries: Record<string, [number, number]>): Manifest =>
  new Map(Object.entries(entries).map(([k, [size, mtimeMs]]) => [k, { size, mtimeMs, sha256: `sha-${k}` }]));

test('scope: contract parts in, database and icon cache out (unless asked)', () => {
  const s = scopeOf(all);
  for (const p of ['attachments/c1/a.bin', 'sends/s1/x', 'config.json', 'rsa_key.pem', 'rsa_key.pub.pem']) assert.ok(inScope(s, p), p);
  for (const p of ['db.sqlite3', 'db.sqlite3-wal', 'icon_cache/x.png', 'tmp/x', '../etc/passwd', 'attachments/../db.sqlite3', '']) assert.ok(!inScope(s, p), p);
  assert.ok(inScope(scopeOf({ ...all, iconCache: true }), 'icon_cache/x.png'));
  assert.ok(!inScope(scopeOf({ ...all, rsaKey: false }), 'rsa_key.pem'));
  assert.ok(!inScope(scopeOf({ ...all, attachments: false }), 'attachments/c1/a.bin'));
});

test('unchanged size and mtime: nothing to read; changed or new: check', () => {
  const p = planSync(new Map([['attachments/a', f(10)], ['attachments/b', f(20, 2000)], ['config.json', f(5)]]), m({ 'attachments/a': [10, 1000], 'attachments/b': [20, 1000] }));
  assert.deepEqual(p.check, ['attachments/b', 'config.json']);
  assert.equal(p.unchanged, 1);
  assert.deepEqual(p.remove, []);
});

test('a file removed locally is deleted remotely; one never uploaded is not touched', () => {
  const p = planSync(new Map([['attachments/a', f(10)]]), m({ 'attachments/a': [10, 1000], 'attachments/b': [20, 1000] }));
  assert.deepEqual(p.remove, ['attachments/b']);
  assert.deepEqual(p.heldBack, []);
});

test('no mass delete: a group empty locally while the manifest holds files there is held back', () => {
  const p = planSync(new Map([['config.json', f(5)]]), m({ 'attachments/a': [1, 1], 'attachments/b': [1, 1], 'sends/s': [1, 1], 'config.json': [5, 1000] }));
  assert.deepEqual(p.remove, []);
  assert.deepEqual(p.heldBack.sort((a, b) => a.group.localeCompare(b.group)), [{ group: 'attachments', files: 2 }, { group: 'sends', files: 1 }]);
  const empty = planSync(new Map(), m({ 'attachments/a': [1, 1], 'rsa_key.pem': [1, 1] }));
  assert.deepEqual(empty.remove, []);
  assert.equal(empty.heldBack.length, 2);
});
