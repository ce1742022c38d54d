import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { buildConfig, PROFILES } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { listGenerations, listSnapshots, listWalSegments, parseRestoreLogLine, parseSnapshots, parseWalSegments, renderLitestreamConfig, restoreTo, type Generation } from '../../agent/replication/litestream.ts';
import { oldestRestorable, parseIndex, parseTimestamp, requireGeneration, resolvePointInTime } from '../../agent/replication/pitr.ts';
import { inspectDb } from '../../agent/replication/inspect.ts';
import { waitReplicaConfirmed } from '../../agent/replication/confirm.ts';
import { compareWithLive } from '../../agent/verify/drill.ts';
import { generationRows, formatBytes } from '../../agent/cli/generations.ts';

const LITESTREAM = new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url).pathname;
const NOW = new Date('2026-11-25T12:00:00.000Z');

test('timestamps: RFC 3339 with Z or an offset, fractions, a space for T', () => {
  assert.equal(parseTimestamp('2026-11-25T10:00:00Z', NOW).toISOString(), '2026-11-25T10:00:00.000Z');
  assert.equal(parseTimestamp('2026-11-25T11:00:00+01:00', NOW).toISOString(), '2026-11-25T10:00:00.000Z');
  assert.equal(parseTimestamp('2026-11-25T09:30:00-00:30', NOW).toISOString(), '2026-11-25T10:00:00.000Z');
  assert.equal(parseTimestamp('2026-11-25T10:00:00.123456789Z', NOW).toISOString(), '2026-11-25T10:00:00.123Z');
  assert.equal(parseTimestamp('2026-11-25 10:00:00z', NOW).toISOString(), '2026-11-25T10:00:00.000Z');
});

test('timestamps: relative times count back from now', () => {
  assert.equal(parseTimestamp('10 minutes ago', NOW).toISOString(), '2026-11-25T11:50:00.000Z');
  assert.equal(parseTimestamp('1 minute ago', NOW).toISOString(), '2026-11-25T11:59:00.000Z');
  assert.equal(parseTimestamp('90s ago', NOW).toISOString(), '2026-11-25T11:58:30.000Z');
  assert.equal(parseTimestamp('2h ago', NOW).toISOString(), '2026-11-25T10:00:00.000Z');
  assert.equal(parseTimestamp('1.5 hours ago', NOW).toISOString(), '2026-11-25T10:30:00.000Z');
  assert.equal(parseTimestamp('3 days ago', NOW).toISOString(), '2026-11-22T12:00:00.000Z');
  assert.equal(parseTimestamp('1 week ago', NOW).toISOString(), '2026-11-18T12:00:00.000Z');
  assert.equal(parseTimestamp('  5 MIN ago ', NOW).toISOString(), '2026-11-25T11:55:00.000Z');
  assert.equal(parseTimestamp('now', NOW).toISOString(), NOW.toISOString());
});

test('timestamps: ambiguous or malformed input is one clear error', () => {
  assert.throws(() => parseTimestamp('2026-11-25T10:00:00', NOW), /no time zone/);
  assert.throws(() => parseTimestamp('2026-11-25 10:00', NOW), /no time zone/);
  assert.throws(() => parseTimestamp('yesterday', NOW), /expected RFC 3339 or "<number> <unit> ago"/);
  assert.throws(() => parseTimestamp('10 fortnights ago', NOW), /unknown unit "fortnights"/);
  assert.throws(() => parseTimestamp('2026-02-30T10:00:00Z', NOW), /not a real date/);
  assert.throws(() => parseTimestamp('2026-13-01T10:00:00Z', NOW), /out of range/);
  assert.throws(() => parseTimestamp('10 minutes', NOW), /--timestamp "10 minutes" is not valid/);
});

const gen = (generation: string, start: string, end: string): Generation => ({ generation, start: new Date(start), end: new Date(end), lag: '0s' });
const GENS = [
  gen('aaaaaaaaaaaaaaaa', '2026-11-25T08:00:00Z', '2026-11-25T09:00:00Z'),
  gen('bbbbbbbbbbbbbbbb', '2026-11-25T10:00:00Z', '2026-11-25T11:00:00Z'),
];

test('point in time: inside a generation → that generation at the timestamp', () => {
  const r = resolvePointInTime(GENS, new Date('2026-11-25T10:30:00Z'));
  assert.deepEqual(r.target, { generation: 'bbbbbbbbbbbbbbbb', timestamp: '2026-11-25T10:30:00.000Z' });
  assert.equal(r.endFallback, undefined);
  assert.match(r.describe, /generation bbbbbbbbbbbbbbbb as of 2026-11-25T10:30:00Z/);
});

test('point in time: after a generation\'s last write → its end (Litestream alone finds "no matching backups")', () => {
  const between = resolvePointInTime(GENS, new Date('2026-11-25T09:30:00Z'));
  assert.deepEqual(between.target, { generation: 'aaaaaaaaaaaaaaaa' });
  assert.match(between.describe, /last write 2026-11-25T09:00:00Z/);
  const idle = resolvePointInTime(GENS, new Date('2026-11-25T11:50:00Z'));
  assert.deepEqual(idle.target, { generation: 'bbbbbbbbbbbbbbbb' });
  // Within the last listed second: the timestamp is tried, the end is the fallback.
  const edge = resolvePointInTime(GENS, new Date('2026-11-25T11:00:00.400Z'));
  assert.deepEqual(edge.target, { generation: 'bbbbbbbbbbbbbbbb', timestamp: '2026-11-25T11:00:00.400Z' });
  assert.deepEqual(edge.endFallback, { generation: 'bbbbbbbbbbbbbbbb' });
});

test('point in time: before the oldest restorable point names it', () => {
  assert.equal(oldestRestorable(GENS)?.toISOString(), '2026-11-25T08:00:00.000Z');
  assert.throws(() => resolvePointInTime(GENS, new Date('2026-11-25T07:59:59Z')), /2026-11-25T07:59:59Z is before the oldest restorable point in time, 2026-11-25T08:00:00Z/);
  assert.throws(() => resolvePointInTime([], new Date()), /holds no generations/);
});

test('generation and index arguments', () => {
  assert.equal(requireGeneration(GENS, 'aaaaaaaaaaaaaaaa').generation, 'aaaaaaaaaaaaaaaa');
  assert.throws(() => requireGeneration(GENS, '0123456789abcdef'), /unknown generation 0123456789abcdef: the replica holds aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb/);
  assert.equal(parseIndex('153'), '00000099');
  assert.equal(parseIndex('0x99'), '00000099');
  assert.equal(parseIndex('0'), '00000000');
  assert.throws(() => parseIndex('x9'), /not valid/);
});

test('profiles: critical/standard/relaxed and explicit values win', () => {
  const build = (t: string) => buildConfig(parseEnvFile(t), 'test.env');
  assert.deepEqual(PROFILES.standard, { snapshotIntervalMs: 6 * 3_600_000, retentionMs: 168 * 3_600_000 });
  const std = build('');
  assert.equal(std.litestream.profile, 'standard');
  assert.equal(std.litestream.snapshotIntervalMs, 6 * 3_600_000);
  assert.equal(std.litestream.retentionMs, 168 * 3_600_000);
  const crit = build('LITESTREAM_PROFILE=critical\nLITESTREAM_SNAPSHOT_INTERVAL=30m\n');
  assert.equal(crit.litestream.snapshotIntervalMs, 30 * 60_000);
  assert.equal(crit.litestream.retentionMs, 336 * 3_600_000);
  const relaxed = build('LITESTREAM_PROFILE=relaxed');
  assert.equal(relaxed.litestream.snapshotIntervalMs, 24 * 3_600_000);
  assert.equal(relaxed.litestream.retentionMs, 72 * 3_600_000);
  // The rendered litestream.yml carries the effective values.
  const yml = renderLitestreamConfig(crit, { dbPath: '/d/db.sqlite3', metricsAddr: '127.0.0.1:1' });
  assert.match(yml, /snapshot-interval: "30m"\n\s+retention: "336h"/);
});

test('litestream listings and restore log lines', () => {
  const s = parseSnapshots('replica  generation        index  size  created\nfile     ef44ff4cc7c11514  0      352   2026-11-25T11:39:15Z\nfile     ef44ff4cc7c11514  2      400   2026-11-25T12:39:15Z\n');
  assert.deepEqual(s.map((x) => [x.index, x.size]), [[0, 352], [2, 400]]);
  const w = parseWalSegments('replica  generation        index  offset  size  created\nfile     ef44ff4cc7c11514  0      0       471   2026-11-25T11:39:15Z\nfile     ef44ff4cc7c11514  0      16512   140   2026-11-25T11:39:17Z\n');
  assert.deepEqual(w.map((x) => [x.index, x.offset, x.size]), [[0, 0, 471], [0, 16512, 140]]);
  const rows = generationRows([gen('ef44ff4cc7c11514', '2026-11-25T11:39:15Z', '2026-11-25T11:39:24Z')], s, w);
  assert.deepEqual(rows, [{ generation: 'ef44ff4cc7c11514', first: '2026-11-25T11:39:15Z', last: '2026-11-25T11:39:24Z', snapshots: 2, walSegments: 2, bytes: 352 + 400 + 471 + 140 }]);
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.deepEqual(parseRestoreLogLine('time=2026-11-25T11:39:27.047Z level=INFO msg="restoring wal files" db=/d replica=file generation=ef44 index_min=3 index_max=153'), { phase: 'wal', walMin: 3, walMax: 153 });
  assert.deepEqual(parseRestoreLogLine('time=x level=INFO msg="applied wal" db=/d generation=ef44 index=7 elapsed=1ms'), { phase: 'wal', walIndex: 7 });
  assert.deepEqual(parseRestoreLogLine('time=x level=INFO msg="restoring snapshot" db=/d'), { phase: 'snapshot' });
  assert.equal(parseRestoreLogLine('something else'), undefined);
});

test('restore drill comparison allows for the replication lag, not for loss', () => {
  const live = (users: number, files: number) => ({ tables: { users, ciphers: users * 2 }, files });
  assert.deepEqual(compareWithLive(live(10, 3), live(10, 3), live(10, 3)), []);
  // Written during the drill: the replica may hold either side.
  assert.deepEqual(compareWithLive(live(11, 3), live(10, 3), live(12, 4)), []);
  assert.deepEqual(compareWithLive(live(8, 3), live(10, 3), live(10, 3)), ['users: restored 8, live 10', 'ciphers: restored 16, live 20']);
  assert.deepEqual(compareWithLive(live(10, 1), live(10, 3), live(10, 3)), ['files: restored 1, live 3']);
  assert.deepEqual(compareWithLive({ tables: {}, files: 0 }, { tables: { users: 1 }, files: 0 }, { tables: { users: 1 }, files: 0 }), ['table users missing in the restored copy (live 1)']);
});

// The real litestream binary: 10 rows, T, 10 more → restoring T gives 10; after the last write → 20.
const dir = mkdtempSync(join(tmpdir(), 'vws-pitr-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('point in time with the real litestream against a directory replica', async () => {
  const db = join(dir, 'db.sqlite3');
  const cfg = buildConfig(parseEnvFile(`LOCAL_REPLICA_PATH=${dir}/replica\nLITESTREAM_SYNC_INTERVAL=200ms\n`), 'test.env');
  const conf = join(dir, 'litestream.yml');
  const port = 20000 + Math.floor(Math.random() * 20000);
  writeFileSync(conf, renderLitestreamConfig(cfg, { dbPath: db, metricsAddr: `127.0.0.1:${port}` }));
  const w = new DatabaseSync(db);
  w.exec('PRAGMA journal_mode=WAL; CREATE TABLE users(uuid TEXT PRIMARY KEY, email TEXT)');
  const proc = execa(LITESTREAM, ['replicate', '-config', conf, '-no-expand-env'], { reject: false });
  const add = (from: number) => { for (let i = from; i < from + 10; i++) w.prepare('INSERT INTO users VALUES (?, ?)').run(`u${i}`, `u${i}@example.com`); };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  let t: Date;
  try {
    add(0);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: `127.0.0.1:${port}`, dbPath: db, timeoutMs: 15_000 })).confirmed);
    // Object times have one-second resolution: keep T clear of both bursts.
    await sleep(2100);
    t = new Date();
    await sleep(2100);
    add(10);
    await sleep(1500);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: `127.0.0.1:${port}`, dbPath: db, timeoutMs: 15_000 })).confirmed);
  } finally {
    proc.kill('SIGTERM');
    await proc;
  }
  const gens = await listGenerations(conf, db, LITESTREAM);
  assert.equal(gens.length, 1);
  assert.equal((await listSnapshots(conf, db, LITESTREAM)).length, 1);
  assert.ok((await listWalSegments(conf, db, LITESTREAM)).length >= 2);

  const atT = resolvePointInTime(gens, t);
  const out1 = join(dir, 'at-t.sqlite3');
  await restoreTo(conf, db, out1, atT.target, LITESTREAM);
  assert.equal(inspectDb(out1).users, 10);

  // A minute after the last write: Litestream alone says "no matching backups found"; the resolved target is the end.
  const later = resolvePointInTime(gens, new Date(gens[0]!.end.getTime() + 60_000));
  const out2 = join(dir, 'later.sqlite3');
  await restoreTo(conf, db, out2, later.target, LITESTREAM);
  assert.equal(inspectDb(out2).users, 20);
  await assert.rejects(restoreTo(conf, db, join(dir, 'raw.sqlite3'), { timestamp: new Date(gens[0]!.end.getTime() + 60_000).toISOString() }, LITESTREAM), /no matching backups found/);
  w.close();
});
