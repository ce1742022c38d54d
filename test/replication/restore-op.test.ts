import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import type { Runtime } from '../../agent/replication/runtime.ts';
import { readState } from '../../agent/state-file.ts';
import { waitReplicaConfirmed } from '../../agent/replication/confirm.ts';
import { contentDigest, inspectDb } from '../../agent/replication/inspect.ts';
import { renderLitestreamConfig } from '../../agent/replication/litestream.ts';
import { installForced, resolveRestorePoint, restoreChecked, restoreOnStart } from '../../agent/replication/restore.ts';
import { readRestoreOp } from '../../agent/replication/restore-op.ts';

// A crash injected between "set the live database aside" and "install the prepared copy",
// then the next start: it must finish the operator's choice (or put the old one back),
// never quietly restore something else. Real litestream, directory replica.
const LITESTREAM = new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vws-op-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cfg = buildConfig(parseEnvFile(`LOCAL_REPLICA_PATH=${dir}/replica\nLITESTREAM_SYNC_INTERVAL=200ms\n`), 'test.env');
const data = join(dir, 'data');
const db = join(data, 'db.sqlite3');
const conf = join(dir, 'litestream.yml');
const port = 20000 + Math.floor(Math.random() * 20000);
const rt: Runtime = {
  ids: { uid: process.getuid!(), gid: process.getgid!() }, litestreamIds: { uid: process.getuid!(), gid: process.getgid!() }, apiGroup: undefined, dbPath: db, litestreamConfig: conf,
  metricsAddr: `127.0.0.1:${port}`, litestreamConfigChanged: false, litestreamBin: LITESTREAM,
};
const users = (path: string) => (new DatabaseSync(path, { readOnly: true }).prepare('SELECT email FROM users ORDER BY email').all() as { email: string }[]).map((r) => r.email);
const paths = (name: string) => ({ opFile: join(dir, `${name}-op.json`), stateFile: join(dir, `${name}-state.json`), asideRoot: join(dir, `${name}-aside`) });
let pointT: Date;
let digest20: string;

before(async () => {
  // 10 users, a moment T, 10 more users: all replicated, then Litestream stops cleanly.
  mkdirSync(data, { recursive: true });
  writeFileSync(conf, renderLitestreamConfig(cfg, { dbPath: db, metricsAddr: rt.metricsAddr }));
  const w = new DatabaseSync(db);
  w.exec('PRAGMA journal_mode=WAL; CREATE TABLE users(uuid TEXT PRIMARY KEY, email TEXT)');
  const add = (from: number) => { for (let i = from; i < from + 10; i++) w.prepare('INSERT INTO users VALUES (?, ?)').run(`u${String(i).padStart(2, '0')}`, `u${String(i).padStart(2, '0')}@example.com`); };
  const proc = execa(LITESTREAM, ['replicate', '-config', conf, '-no-expand-env'], { reject: false });
  try {
    add(0);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: db, timeoutMs: 15_000 })).confirmed);
    await sleep(2100);
    pointT = new Date();
    await sleep(2100);
    add(10);
    await sleep(1500);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: db, timeoutMs: 15_000 })).confirmed);
  } finally {
    proc.kill('SIGTERM');
    await proc;
  }
  w.close();
  digest20 = contentDigest(db);
});

test('restore --force --timestamp T, crash after setting the live database aside: the next start installs T, not the latest', async () => {
  const p = paths('pitr');
  const point = await resolveRestorePoint(cfg, rt, { timestamp: pointT.toISOString() });
  assert.equal(point.pointInTime, true);
  const { tmp, facts } = await restoreChecked(rt, point.target, { cfg, ...(point.endFallback ? { endFallback: point.endFallback } : {}) });
  assert.equal(facts.users, 10);
  const digest10 = contentDigest(tmp);

  await assert.rejects(
    installForced(cfg, rt, tmp, point.describe, point.target, { paths: p, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }),
    { message: /^restore of generation [0-9a-f]{16} as of .* interrupted: injected crash$/ },
  );
  // The moment of the crash: no live database, the old one aside, the copy and the record on disk.
  assert.ok(!existsSync(db));
  const op = readRestoreOp(p.opFile)!;
  assert.equal(op.kind, 'operator');
  assert.equal(op.preparedDigest, digest10);
  assert.deepEqual(op.target, point.target);
  assert.ok(existsSync(tmp));
  assert.equal(contentDigest(join(op.asideDir!, 'db.sqlite3')), digest20);

  const outcome = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(outcome.recovered?.outcome, 'completed');
  assert.equal(outcome.decision.action, 'keep'); // the operator's point, kept (not the replica's latest)
  assert.equal(contentDigest(db), digest10);
  assert.deepEqual(users(db), Array.from({ length: 10 }, (_, i) => `u0${i}@example.com`));
  assert.equal(readState(p.stateFile).acceptedLocalDigest, digest10);
  assert.match(readState(p.stateFile).lastRestore!.reason, /by the operator/);
  assert.equal(readState(p.stateFile).lastRestore!.setAsideTo, op.asideDir);
  assert.equal(readRestoreOp(p.opFile), undefined);
  assert.ok(!existsSync(tmp));
  assert.equal(contentDigest(join(op.asideDir!, 'db.sqlite3')), digest20); // the replaced one kept
  assert.equal(users(join(op.asideDir!, 'db.sqlite3')).length, 20);

  // A second start: nothing recorded, the restored vault is kept as the operator's choice.
  const again = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(again.recovered, undefined);
  assert.equal(again.decision.action, 'keep');
  assert.equal(contentDigest(db), digest10);

  // Put the 20-user database back for the next test.
  rmSync(db, { force: true });
  for (const f of readdirSync(op.asideDir!)) renameSync(join(op.asideDir!, f), join(data, f));
  assert.equal(contentDigest(db), digest20);
});

test('crash after setting aside, and the prepared copy lost: the next start puts the previous database back', async () => {
  const p = paths('lost');
  const { tmp } = await restoreChecked(rt, {}, { cfg });
  await assert.rejects(installForced(cfg, rt, tmp, 'the latest state', {}, { paths: p, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }), /interrupted: injected crash/);
  assert.ok(!existsSync(db));
  rmSync(tmp); // the copy is gone (e.g. a tmpfs, or removed by hand)
  const outcome = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(outcome.recovered?.outcome, 'rolled-back');
  assert.equal(contentDigest(db), digest20);
  assert.equal(users(db).length, 20);
  assert.equal(inspectDb(db).generation, outcome.generation); // its Litestream metadata came back too
  assert.equal(outcome.decision.action, 'keep');
  assert.equal(readRestoreOp(p.opFile), undefined);
  assert.equal(readState(p.stateFile).acceptedLocalDigest, undefined);
});

test('a damaged prepared copy is not installed: rolled back', async () => {
  const p = paths('damaged');
  const { tmp } = await restoreChecked(rt, {}, { cfg });
  await assert.rejects(installForced(cfg, rt, tmp, 'the latest state', {}, { paths: p, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }), /injected crash/);
  writeFileSync(tmp, 'not a database any more\n'.repeat(300));
  const outcome = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(outcome.recovered?.outcome, 'rolled-back');
  assert.equal(contentDigest(db), digest20);
  assert.ok(!existsSync(tmp));
});

test('the startup restore (corrupt local database), crash in between: the next start completes it from the prepared copy', async () => {
  const p = paths('startup');
  // A corrupt live database of another lineage: the rule sets it aside and restores.
  const keep = join(dir, 'good-aside');
  mkdirSync(keep);
  for (const f of readdirSync(data)) renameSync(join(data, f), join(keep, f));
  writeFileSync(db, 'this is not a database\n'.repeat(500));
  await assert.rejects(restoreOnStart(cfg, rt, { paths: p, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }), /injected crash/);
  assert.ok(!existsSync(db));
  const op = readRestoreOp(p.opFile)!;
  assert.equal(op.kind, 'startup');
  assert.ok(existsSync(op.prepared));
  assert.ok(readdirSync(p.asideRoot)[0]!.endsWith('-corrupt'));
  const outcome = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(outcome.recovered?.outcome, 'completed');
  assert.equal(contentDigest(db), digest20);
  assert.equal(users(db).length, 20);
  assert.match(readState(p.stateFile).lastRestore!.reason, /fails integrity_check/);
  assert.equal(readState(p.stateFile).acceptedLocalDigest, undefined); // not an operator's choice
  assert.match(readFileSync(join(op.asideDir!, 'db.sqlite3'), 'utf8'), /^this is not a database/);
});

/** A new host: the database and everything beside it out of the way; returns what puts them back. */
function hideLocal(): () => void {
  const set = [db, `${db}-wal`, `${db}-shm`, join(data, '.db.sqlite3-litestream')].filter((f) => existsSync(f));
  for (const f of set) renameSync(f, `${f}.newhost-saved`);
  return () => {
    for (const f of [db, `${db}-wal`, `${db}-shm`, join(data, '.db.sqlite3-litestream')]) rmSync(f, { recursive: true, force: true });
    for (const f of set) renameSync(`${f}.newhost-saved`, f);
  };
}

test('new host (no local database): one integrity_check, no content digest; a crash before the install is finished from the copy', async () => {
  const p = paths('newhost-crash');
  const saved = hideLocal();
  try {
    let decided = 0;
    await assert.rejects(restoreOnStart(cfg, rt, { paths: p, onRestoreDecided: () => { decided++; }, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }), /injected crash/);
    assert.equal(decided, 1); // told before the copy was installed
    assert.ok(!existsSync(db));
    const op = readRestoreOp(p.opFile)!;
    assert.equal(op.kind, 'startup');
    assert.equal(op.asideDir, null);
    assert.equal(op.preparedDigest, null); // nothing to confuse the copy with: no digest taken
    assert.equal(typeof op.preparedIno, 'number');
    assert.equal(op.preparedUsers, 20);
    assert.ok(existsSync(op.prepared));

    let again = 0;
    const outcome = await restoreOnStart(cfg, rt, { paths: p, onRestoreDecided: () => { again++; } });
    assert.equal(outcome.recovered?.outcome, 'completed');
    assert.equal(outcome.decision.action, 'keep');
    assert.equal(again, 0); // a recovered start takes the sequential path
    assert.equal(contentDigest(db), digest20);
    assert.equal(readRestoreOp(p.opFile), undefined);
    assert.ok(!existsSync(op.prepared));
  } finally {
    saved();
  }
});

test('new host: a crash after the install (record still there): the live file is the renamed copy (same inode), completed without a digest', async () => {
  const p = paths('newhost-installed');
  const saved = hideLocal();
  try {
    await assert.rejects(restoreOnStart(cfg, rt, { paths: p, hooks: { afterSetAside: () => { throw new Error('injected crash'); } } }), /injected crash/);
    const op = readRestoreOp(p.opFile)!;
    renameSync(op.prepared, db); // what the install does, then the crash before the bookkeeping
    const outcome = await restoreOnStart(cfg, rt, { paths: p });
    assert.equal(outcome.recovered?.outcome, 'completed');
    assert.equal(contentDigest(db), digest20);
    assert.equal(readState(p.stateFile).lastRestore!.action, 'restore');
    assert.equal(readState(p.stateFile).acceptedLocalDigest, undefined);
    assert.equal(readRestoreOp(p.opFile), undefined);
  } finally {
    saved();
  }
});

test('new host: the restore runs beside the listing and installs the latest state; no copy is left behind', async () => {
  const p = paths('newhost');
  const saved = hideLocal();
  try {
    const order: string[] = [];
    // The copy may end before or after the listing decides (they race); the install waits
    // for what the decision's callback returns (the daemon: the files' restore recorded).
    const outcome = await restoreOnStart(cfg, rt, {
      paths: p,
      onRestoreDecided: async (d) => {
        order.push(`decided:${d.setAside}`);
        await new Promise((r) => setTimeout(r, 300));
        order.push(existsSync(db) ? 'installed before the callback returned' : 'not installed while the callback ran');
      },
      onProgress: (s) => { if (s.phase === 'done') order.push('copy done'); },
    });
    assert.equal(outcome.decision.action, 'restore');
    assert.equal(contentDigest(db), digest20);
    assert.deepEqual(order.filter((o) => o !== 'copy done'), ['decided:none', 'not installed while the callback ran']);
    assert.ok(order.includes('copy done'));
    assert.deepEqual(readdirSync(data).filter((f) => f.startsWith('.vwstream-restore-')), []);
    assert.equal(readRestoreOp(p.opFile), undefined);
  } finally {
    saved();
  }
});
