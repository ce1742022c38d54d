import assert from 'node:assert/strict';
import { chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { asideName, asideSizeCheck, listAside, parseAsideName, planAsidePrune, pruneAside, removeTree, type AsideEntry } from '../agent/aside.ts';
import { setAside } from '../agent/replication/runtime.ts';
import { buildConfig } from '../agent/config/config.ts';
import { parseEnvFile } from '../agent/config/envfile.ts';
import type { PATHS } from '../agent/paths.ts';

const DAY = 86_400_000;
const now = new Date('2026-12-01T10:00:00.000Z');
const at = (days: number) => new Date(now.getTime() - days * DAY);
const entry = (reason: string, days: number, bytes = 100): AsideEntry => {
  const name = asideName(at(days), reason);
  return { name, path: `/x/${name}`, reason, at: at(days), bytes, files: 1 };
};
const names = (vs: { entry: AsideEntry }[]) => vs.map((v) => v.entry.name);

test('setAside names parse back to their moment and reason', () => {
  const p = parseAsideName('2026-12-01T09-28-58-123Z-secondary-local-changes')!;
  assert.equal(p.at.toISOString(), '2026-12-01T09:28:58.123Z');
  assert.equal(p.reason, 'secondary-local-changes');
  assert.deepEqual(parseAsideName(asideName(now, 'before-restore')), { at: now, reason: 'before-restore' });
  // The backup restore's fallback for files without a database: epoch milliseconds.
  assert.deepEqual(parseAsideName('1764582000000-before-backup-restore'), { at: new Date(1764582000000), reason: 'before-backup-restore' });
});

test('names the agent did not write are not aside folders', () => {
  for (const n of [
    '', 'notes.txt', 'lost+found', '.hidden', 'secondary-local-changes',
    '2026-12-01T09-28-58-123Z', '2026-12-01T09-28-58-123Z-', '2026-12-01T09-28-58-123Z-Corrupt', '2026-12-01T09-28-58-123Z-a b',
    '2026-12-01T09:28:58.123Z-corrupt', '2026-02-31T09-28-58-123Z-corrupt', '2026-12-01T25-28-58-123Z-corrupt',
    '2026-12-01T09-28-58-12Z-corrupt', 'x2026-12-01T09-28-58-123Z-corrupt', '2026-12-01T09-28-58-123Z-corrupt/..',
    '2026-12-01T09-28-58-123Z-corrupt.bak', '2026-12-01T09-28-58-123Z--corrupt', '2026-12-01T09-28-58-123Z-corrupt-',
    '176458200000-before-backup-restore', '01764582000000-x', '17645820000000-x',
  ]) assert.equal(parseAsideName(n), null, JSON.stringify(n));
});

test('retention table: per reason the N newest and everything younger than D days stay', () => {
  const rule = { minKeep: 2, retentionDays: 7 };
  const cases: { what: string; entries: AsideEntry[]; remove: string[] }[] = [
    { what: 'nothing', entries: [], remove: [] },
    { what: 'the only copy of a reason, very old', entries: [entry('corrupt', 900)], remove: [] },
    { what: 'two old copies: both are the N newest', entries: [entry('before-restore', 30), entry('before-restore', 60)], remove: [] },
    {
      what: 'five old and young copies of one reason',
      entries: [entry('secondary-local-changes', 0.01), entry('secondary-local-changes', 2), entry('secondary-local-changes', 10), entry('secondary-local-changes', 20), entry('secondary-local-changes', 40)],
      remove: [entry('secondary-local-changes', 40).name, entry('secondary-local-changes', 20).name, entry('secondary-local-changes', 10).name],
    },
    { what: 'more than N, all younger than D', entries: [entry('untouched', 3), entry('untouched', 5), entry('untouched', 6.9)], remove: [] },
    {
      what: 'reasons are counted separately',
      entries: [entry('a', 50), entry('a', 40), entry('a', 30), entry('b', 100), entry('b', 90)],
      remove: [entry('a', 50).name],
    },
    { what: 'exactly D days old is not younger', entries: [entry('a', 1), entry('a', 2), entry('a', 7)], remove: [entry('a', 7).name] },
  ];
  for (const c of cases) {
    const plan = planAsidePrune(c.entries, rule, now);
    assert.deepEqual(names(plan.remove), c.remove, c.what);
    assert.equal(plan.keep.length + plan.remove.length, c.entries.length, c.what);
    // The newest of every reason is always kept.
    for (const r of new Set(c.entries.map((e) => e.reason))) {
      const newest = c.entries.filter((e) => e.reason === r).sort((x, y) => y.at.getTime() - x.at.getTime())[0]!;
      assert.ok(names(plan.keep).includes(newest.name), `${c.what}: newest ${r} kept`);
    }
  }
});

test('the newest of a reason survives even with minKeep 0 asked; retentionDays 0 removes nothing', () => {
  const es = [entry('a', 100), entry('a', 200), entry('b', 300)];
  assert.deepEqual(names(planAsidePrune(es, { minKeep: 0, retentionDays: 1 }, now).remove), [entry('a', 200).name]);
  assert.deepEqual(planAsidePrune(es, { minKeep: 1, retentionDays: 0 }, now).remove, []);
  // Listing order does not matter; ties are broken by name.
  const shuffled = [es[2]!, es[0]!, es[1]!];
  assert.deepEqual(names(planAsidePrune(shuffled, { minKeep: 1, retentionDays: 1 }, now).remove), names(planAsidePrune(es, { minKeep: 1, retentionDays: 1 }, now).remove));
});

test('health bound: 2 GiB, or a quarter of the free space when that is less', () => {
  const GiB = 1024 ** 3;
  assert.equal(asideSizeCheck(GiB, 3, 100 * GiB, '/a').ok, true);
  assert.equal(asideSizeCheck(2 * GiB + 1, 3, 100 * GiB, '/a').ok, false);
  assert.equal(asideSizeCheck(GiB, 3, 3 * GiB, '/a').ok, false);
  assert.equal(asideSizeCheck(GiB, 3, 4 * GiB, '/a').ok, true);
  const c = asideSizeCheck(3 * GiB, 7, null, '/var/lib/vwstream/aside');
  assert.equal(c.name, 'aside_size');
  assert.equal(c.ok, false);
  assert.match(c.detail, /^7 folders, 3\.0 GiB kept aside under \/var\/lib\/vwstream\/aside \(max 2\.0 GiB/);
  assert.match(c.detail, /vwstream-agent aside prune/);
});

const tmp = mkdtempSync(join(tmpdir(), 'vws-aside-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** An aside folder as setAside leaves it: db files and a restore's replaced files below files/. */
function plant(dir: string, name: string, bytes: number): void {
  mkdirSync(join(dir, name, 'files', 'attachments'), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, name, 'db.sqlite3'), Buffer.alloc(bytes, 1));
  writeFileSync(join(dir, name, 'files', 'attachments', 'a.bin'), Buffer.alloc(10, 2));
}

test('listing and pruning on disk: exact removals, sizes, foreign entries and links left alone', async () => {
  const dir = join(tmp, 'aside');
  const outside = join(tmp, 'outside');
  mkdirSync(outside, { recursive: true });
  writeFileSync(join(outside, 'precious'), 'do not delete');
  const slc = [0.01, 2, 10, 20, 40].map((d) => asideName(at(d), 'secondary-local-changes'));
  slc.forEach((n, i) => plant(dir, n, 1000 * (i + 1)));
  plant(dir, asideName(at(90), 'corrupt'), 500);
  plant(dir, `${at(50).getTime()}-before-backup-restore`, 300);
  plant(dir, asideName(at(45), 'before-backup-restore'), 250);
  plant(dir, asideName(at(100), 'before-backup-restore'), 200);
  // Inside a folder that will go: a link to something precious outside, and a link to a folder.
  symlinkSync(join(outside, 'precious'), join(dir, slc[4]!, 'link-to-file'));
  symlinkSync(outside, join(dir, slc[4]!, 'files', 'link-to-dir'));
  // Foreign: a file, a link with an aside-like name (to a folder full of data), a folder with another name.
  writeFileSync(join(dir, 'notes.txt'), 'operator notes');
  symlinkSync(outside, join(dir, asideName(at(365), 'corrupt') + 'x'));
  const linkName = asideName(at(400), 'secondary-local-changes');
  symlinkSync(outside, join(dir, linkName));
  mkdirSync(join(dir, 'old-backups'));
  const foreignOwner = asideName(at(500), 'before-restore');
  plant(dir, foreignOwner, 50);
  if (process.getuid?.() === 0) chownSync(join(dir, foreignOwner), 12345, 12345);

  const uid = process.getuid?.() ?? 0;
  const l = await listAside(dir, uid);
  const agentNames = [...slc, asideName(at(90), 'corrupt'), `${at(50).getTime()}-before-backup-restore`, asideName(at(45), 'before-backup-restore'), asideName(at(100), 'before-backup-restore'), ...(uid === 0 ? [] : [foreignOwner])];
  assert.deepEqual(new Set(l.entries.map((e) => e.name)), new Set(agentNames));
  const sizeOf = (n: string) => l.entries.find((e) => e.name === n)!.bytes;
  assert.equal(sizeOf(slc[0]!), 1010);
  assert.equal(sizeOf(slc[4]!), 5010, 'links inside are not followed nor counted');
  assert.equal(l.bytes, l.entries.reduce((s, e) => s + e.bytes, 0));
  assert.deepEqual(l.entries.map((e) => e.at.getTime()), [...l.entries.map((e) => e.at.getTime())].sort((a, b) => a - b), 'oldest first');
  const foreign = new Map(l.foreign.map((f) => [f.name, f]));
  assert.equal(foreign.get('notes.txt')?.kind, 'file');
  assert.equal(foreign.get('old-backups')?.kind, 'directory');
  assert.equal(foreign.get(linkName)?.kind, 'symlink');
  assert.match(foreign.get(linkName)!.why, /symbolic link/);
  if (uid === 0) assert.match(foreign.get(foreignOwner)!.why, /owned by uid 12345/);

  const rule = { minKeep: 2, retentionDays: 7 };
  const dry = await pruneAside(dir, rule, { dryRun: true, now, uid });
  const expected = [asideName(at(100), 'before-backup-restore'), slc[4]!, slc[3]!, slc[2]!]; // oldest first
  assert.deepEqual(names(dry.removed), expected);
  assert.equal(readdirSync(dir).length, l.entries.length + l.foreign.length, 'a dry run removes nothing');

  const r = await pruneAside(dir, rule, { now, uid });
  assert.deepEqual(names(r.removed), expected);
  assert.deepEqual(r.errors, []);
  assert.equal(r.removedBytes, 3010 + 4010 + 5010 + 210);
  for (const n of expected) assert.equal(existsSync(join(dir, n)), false, `${n} removed`);
  for (const n of agentNames.filter((x) => !expected.includes(x))) assert.ok(lstatSync(join(dir, n)).isDirectory(), `${n} kept`);
  for (const f of l.foreign) assert.ok(lstatSync(f.path), `${f.name} left alone`);
  assert.equal(readFileSync(join(outside, 'precious'), 'utf8'), 'do not delete', 'the target of a link inside a removed folder');
  assert.ok(lstatSync(join(dir, linkName)).isSymbolicLink());
  // Applying the rule again removes nothing more.
  assert.deepEqual((await pruneAside(dir, rule, { now, uid })).removed, []);
});

test('a missing aside folder lists as empty; removeTree unlinks a link, never its target', async () => {
  const l = await listAside(join(tmp, 'never-made'));
  assert.equal(l.missing, true);
  assert.deepEqual(l.entries, []);
  const d = join(tmp, 'rt');
  mkdirSync(join(d, 'target'), { recursive: true });
  writeFileSync(join(d, 'target', 'keep'), 'x');
  symlinkSync(join(d, 'target'), join(d, 'link'));
  await removeTree(join(d, 'link'));
  assert.equal(readFileSync(join(d, 'target', 'keep'), 'utf8'), 'x');
  assert.equal(existsSync(join(d, 'link')), false);
});

test('a folder setAside made is listed under its reason with the moved database\'s bytes', async () => {
  const dir = join(tmp, 'real');
  const db = join(tmp, 'db.sqlite3');
  writeFileSync(db, Buffer.alloc(4096, 3));
  writeFileSync(`${db}-wal`, Buffer.alloc(100, 4));
  const made = await setAside(db, 'secondary-local-changes', dir as typeof PATHS.asideDir);
  const l = await listAside(dir);
  assert.equal(l.entries.length, 1);
  assert.equal(l.entries[0]!.path, made);
  assert.equal(l.entries[0]!.reason, 'secondary-local-changes');
  assert.equal(l.entries[0]!.bytes, 4196);
  assert.ok(Math.abs(l.entries[0]!.at.getTime() - Date.now()) < 60_000);
});

test('ASIDE_MIN_KEEP and ASIDE_RETENTION_DAYS: defaults, and errors that name key and value', () => {
  const cfg = (text: string) => buildConfig(parseEnvFile(text, '/etc/vwstream/vwstream.env'), '/etc/vwstream/vwstream.env');
  assert.deepEqual(cfg('').aside, { minKeep: 5, retentionDays: 7 });
  assert.deepEqual(cfg('ASIDE_MIN_KEEP=1\nASIDE_RETENTION_DAYS=0\n').aside, { minKeep: 1, retentionDays: 0 });
  for (const [line, msg] of [
    ['ASIDE_MIN_KEEP=0', /^ASIDE_MIN_KEEP="0" is not valid: expected a whole number from 1 to 100000 \(\/etc\/vwstream\/vwstream.env line 1\)$/],
    ['ASIDE_MIN_KEEP=five', /^ASIDE_MIN_KEEP="five" is not valid: expected a whole number from 1 to 100000/],
    ['ASIDE_RETENTION_DAYS=30d', /^ASIDE_RETENTION_DAYS="30d" is not valid: expected a whole number from 0 to 36500/],
    ['ASIDE_RETENTION_DAYS=-1', /^ASIDE_RETENTION_DAYS="-1" is not valid/],
  ] as const) assert.throws(() => cfg(`${line}\n`), (e: Error) => e.name === 'ConfigError' && msg.test(e.message), line);
  assert.match(cfg('ASIDE_KEEP=3\n').warnings.join('\n'), /ASIDE_KEEP .* is not a vwstream-agent setting/);
});
