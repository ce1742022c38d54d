import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { bumpCounter, readState, updateState } from '../agent/state-file.ts';

const NODE = process.execPath;
const MODULE = new URL('../agent/state-file.ts', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'vws-state-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// A writer process: N updates of its own key and N bumps of its own counter, as the
// daemon, `backup` and `verify` do beside each other.
const writer = (path: string, name: string, n: number) => `
import { bumpCounter, updateState } from ${JSON.stringify(MODULE)};
for (let i = 1; i <= ${n}; i++) {
  await updateState({ ${name === 'a' ? 'lastDbSync' : 'secondaryDigest'}: '${name}-' + i }, ${JSON.stringify(path)});
  await bumpCounter('restores', '${name}', ${JSON.stringify(path)});
}
`;

test('two processes updating the state file at once: every update survives', async () => {
  const path = join(dir, 'state.json');
  const N = 150;
  await updateState({ acceptedLocalDigest: 'before' }, path);
  const run = (name: string) => execa(NODE, ['--no-warnings', '--input-type=module', '-e', writer(path, name, N)]);
  // In this process too, concurrently: the in-process queue and the lock work together.
  const local = (async () => { for (let i = 0; i < N; i++) await bumpCounter('drains', 'complete', path); })();
  const [a, b] = await Promise.all([run('a'), run('b'), local]);
  assert.equal(a.exitCode, 0);
  assert.equal(b.exitCode, 0);
  const s = readState(path);
  assert.equal(s.counters?.restores?.a, N);
  assert.equal(s.counters?.restores?.b, N);
  assert.equal(s.counters?.drains?.complete, N);
  assert.equal(s.lastDbSync, `a-${N}`);
  assert.equal(s.secondaryDigest, `b-${N}`);
  assert.equal(s.acceptedLocalDigest, 'before');
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), s);
});

test('concurrent updates inside one process are not lost either', async () => {
  const path = join(dir, 'one.json');
  await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? bumpCounter('restores', 'restore', path) : bumpCounter('drains', 'incomplete', path))));
  const s = readState(path);
  assert.equal(s.counters?.restores?.restore, 20);
  assert.equal(s.counters?.drains?.incomplete, 20);
});

test('a lock left by a killed writer does not block the next one', async () => {
  const path = join(dir, 'killed.json');
  await updateState({ lastDbSync: 'x' }, path);
  // Hold the lock in a child, then SIGKILL it while it holds it.
  const holder = execa(NODE, ['--no-warnings', '--input-type=module', '-e', `
import { DatabaseSync } from 'node:sqlite';
const db = new DatabaseSync(${JSON.stringify(path + '.lock')});
db.exec('BEGIN EXCLUSIVE');
process.stdout.write('held\\n');
setInterval(() => {}, 1000);
`], { reject: false });
  await new Promise<void>((resolve) => holder.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('held')) resolve(); }));
  holder.kill('SIGKILL');
  await holder;
  await updateState({ lastDbSync: 'after' }, path);
  assert.equal(readState(path).lastDbSync, 'after');
});

test('an unreadable state file is an error, not a reset to empty', async () => {
  const path = join(dir, 'dir-not-file.json');
  mkdirSync(path); // a directory where the file should be: EISDIR on read
  await assert.rejects(updateState({ lastDbSync: 'y' }, path), /EISDIR/);
});
