import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, test } from 'node:test';
import { execa } from 'execa';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import type { Runtime } from '../../agent/replication/runtime.ts';
import { AgentError, EXIT } from '../../agent/errors.ts';
import { waitReplicaConfirmed } from '../../agent/replication/confirm.ts';
import { listWalSegments, renderLitestreamConfig, shadowPosition } from '../../agent/replication/litestream.ts';
import { replicaPosition, restoreOnStart } from '../../agent/replication/restore.ts';

// A local copy ahead of its replica in the same generation (the replica lost its last
// uploads, as after an incomplete drain): the start must not replace it with the older replica.
const LITESTREAM = new URL('../../node_modules/@flydotio/litestream-linux-x64/litestream', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vws-ahead-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const cfg = buildConfig(parseEnvFile(`LOCAL_REPLICA_PATH=${dir}/replica\nLITESTREAM_SYNC_INTERVAL=200ms\n`), 'test.env');
const data = join(dir, 'data');
const db = join(data, 'db.sqlite3');
const conf = join(dir, 'litestream.yml');
const rt: Runtime = {
  ids: { uid: process.getuid!(), gid: process.getgid!() }, litestreamIds: { uid: process.getuid!(), gid: process.getgid!() }, apiGroup: undefined, dbPath: db, litestreamConfig: conf,
  metricsAddr: `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}`, litestreamConfigChanged: false, litestreamBin: LITESTREAM,
};
const paths = (n: string) => ({ opFile: join(dir, `${n}-op.json`), stateFile: join(dir, `${n}-state.json`), asideRoot: join(dir, `${n}-aside`) });
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
let pristine: string;
let midIndex: number;

before(async () => {
  mkdirSync(data);
  writeFileSync(conf, renderLitestreamConfig(cfg, { dbPath: db, metricsAddr: rt.metricsAddr }));
  const w = new DatabaseSync(db);
  w.exec('PRAGMA busy_timeout=10000; PRAGMA journal_mode=WAL; CREATE TABLE users(uuid TEXT PRIMARY KEY, email TEXT); CREATE TABLE ciphers(uuid TEXT PRIMARY KEY, data BLOB)');
  const proc = execa(LITESTREAM, ['replicate', '-config', conf, '-no-expand-env'], { reject: false });
  try {
    for (let i = 0; i < 5; i++) w.prepare('INSERT INTO users VALUES (?, ?)').run(`u${i}`, `u${i}@example.com`);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: db, timeoutMs: 15_000 })).confirmed);
    cpSync(join(dir, 'replica'), join(dir, 'replica-then'), { recursive: true });
    // Later writes: enough pages that Litestream checkpoints and the local WAL index moves on.
    for (let i = 0; i < 1500; i++) w.prepare('INSERT INTO ciphers VALUES (?, randomblob(3000))').run(`c${i}`);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: db, timeoutMs: 30_000 })).confirmed);
    cpSync(join(dir, 'replica'), join(dir, 'replica-mid'), { recursive: true });
    midIndex = (await shadowPosition(db))!.index;
    // A few more writes in the same WAL index.
    for (let i = 0; i < 20; i++) w.prepare('INSERT INTO ciphers VALUES (?, randomblob(300))').run(`d${i}`);
    assert.ok((await waitReplicaConfirmed({ metricsAddr: rt.metricsAddr, dbPath: db, timeoutMs: 30_000 })).confirmed);
  } finally {
    proc.kill('SIGTERM');
    await proc;
  }
  w.close();
  // Caught up, the replica's position (last segment's offset + its decoded length) is the local one.
  const now = (await shadowPosition(db))!;
  assert.equal(now.index, midIndex, 'no checkpoint during the last writes');
  const caughtUp = (await replicaPosition(cfg, rt, now.generation))!;
  assert.deepEqual({ index: caughtUp.index, end: caughtUp.end }, { index: now.index, end: now.size });
  assert.ok(caughtUp.offset < now.size);
  // The replica loses everything after the first sync.
  useReplica('replica-then');
  const local = (await shadowPosition(db))!;
  const replicaMax = Math.max(...(await listWalSegments(conf, db, LITESTREAM)).map((s) => s.index));
  assert.ok(local.index > replicaMax, `local WAL index ${local.index} is past the replica's ${replicaMax}`);
  pristine = join(dir, 'pristine');
  cpSync(data, pristine, { recursive: true });
});

function useReplica(name: string): void {
  rmSync(join(dir, 'replica'), { recursive: true, force: true });
  cpSync(join(dir, name), join(dir, 'replica'), { recursive: true });
}

function corruptMainFile(): void {
  // Garbage over most pages of the main file (the WAL was checkpointed into it).
  const size = statSync(db).size;
  const fd = openSync(db, 'r+');
  const junk = Buffer.alloc(size - 4096 * 2, 0x5a);
  writeSync(fd, junk, 0, junk.length, 4096 * 2);
  closeSync(fd);
}

function reset(): void {
  rmSync(data, { recursive: true, force: true });
  cpSync(pristine, data, { recursive: true });
}

test('a local vault without users (deleted here, later) that is ahead of the replica is kept, not replaced', async () => {
  reset();
  const w = new DatabaseSync(db);
  w.exec('DELETE FROM users');
  w.close();
  const p = paths('untouched');
  const outcome = await restoreOnStart(cfg, rt, { paths: p });
  assert.equal(outcome.decision.action, 'keep');
  assert.match(outcome.decision.action === 'keep' ? outcome.decision.reason : '', /continues replica generation [0-9a-f]{16} and is not behind it/);
  const r = new DatabaseSync(db, { readOnly: true });
  assert.equal((r.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 0);
  assert.equal((r.prepare('SELECT count(*) AS n FROM ciphers').get() as { n: number }).n, 1520);
  r.close();
  assert.ok(!existsSync(p.asideRoot));
});

test('a corrupt local copy ahead of the replica: the start refuses and touches nothing', async () => {
  reset();
  corruptMainFile();
  const before = sha(db);
  assert.ok(!existsSync(`${db}-wal`)); // checkpointed and removed at the last close
  const p = paths('corrupt');
  await assert.rejects(restoreOnStart(cfg, rt, { paths: p }), (err: unknown) => {
    assert.ok(err instanceof AgentError);
    assert.equal(err.exitCode, EXIT.REFUSED);
    assert.match(err.message, /fails integrity_check \(.+\) but holds writes the replica at file:\/\/.+ lacks \(local WAL index \d+, \d+ bytes; replica WAL index \d+, \d+ bytes of generation [0-9a-f]{16}\); refusing to replace it with the older replica$/);
    return true;
  });
  assert.equal(sha(db), before);
  assert.equal(existsSync(`${db}-wal`) ? statSync(`${db}-wal`).size : 0, 0); // at most the empty WAL a read-only check opens
  assert.ok(!existsSync(p.asideRoot));
  assert.ok(!existsSync(p.opFile));
});

test('the same WAL index, the local copy further: the last replica segment is read to its end, and the start refuses', async () => {
  reset();
  useReplica('replica-mid');
  try {
    const local = (await shadowPosition(db))!;
    const rp = (await replicaPosition(cfg, rt, local.generation))!;
    assert.equal(rp.index, local.index);
    assert.ok(rp.end! < local.size, `replica ends at ${rp.end}, local at ${local.size}`);
    corruptMainFile();
    const before = sha(db);
    const p = paths('same-index');
    await assert.rejects(restoreOnStart(cfg, rt, { paths: p }), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.exitCode, EXIT.REFUSED);
      assert.ok(err.message.includes(`(local WAL index ${local.index}, ${local.size} bytes; replica WAL index ${rp.index}, ${rp.end} bytes of generation ${local.generation})`), err.message);
      return true;
    });
    assert.equal(sha(db), before);
    assert.ok(!existsSync(p.asideRoot));
  } finally {
    useReplica('replica-then');
  }
});
