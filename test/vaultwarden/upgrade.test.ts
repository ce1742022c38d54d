import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { compareRows, describeChanges, hasVaultwardenData, migrationsFingerprint, parseVersionLine, pinRows, readMarker, rowDigests, takeUpgradeSnapshot, writeMarker } from '../../agent/vaultwarden/upgrade.ts';
import { VaultwardenLifecycle, compareVersions } from '../../agent/vaultwarden/lifecycle.ts';
import type { VaultwardenState } from '../../agent/state-file.ts';

function vault(dir: string): string {
  const path = join(dir, 'db.sqlite3');
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA journal_mode=WAL;
    CREATE TABLE users (uuid TEXT PRIMARY KEY, email TEXT);
    CREATE TABLE devices (uuid TEXT PRIMARY KEY, user_uuid TEXT, updated_at TEXT);
    CREATE TABLE __diesel_schema_migrations (version TEXT PRIMARY KEY, run_on TEXT);
    CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);
    INSERT INTO users VALUES ('u1','a@x'),('u2','b@x');
    INSERT INTO devices VALUES ('d1','u1','t0');
    INSERT INTO __diesel_schema_migrations VALUES ('2024-01-01-000000_initial', 't');`);
  db.close();
  return path;
}

test('parseVersionLine', () => {
  assert.equal(parseVersionLine('Vaultwarden 1.32.7\n'), '1.32.7');
  assert.equal(parseVersionLine('Vaultwarden v1.33.0-rc1 (test)'), '1.33.0-rc1');
  assert.equal(parseVersionLine('vaultwarden stand-in'), undefined);
});

test('the snapshot: VACUUM INTO a kept-aside folder named with the reason, integrity checked, 0600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-up-'));
  const db = vault(dir);
  // A writer holding the WAL open beside it (as Vaultwarden and Litestream do).
  const live = new DatabaseSync(db);
  live.exec("INSERT INTO users VALUES ('u3','c@x')");
  const aside = join(dir, 'aside');
  const snap = await takeUpgradeSnapshot(db, '1.32.7', '1.33.0', aside, new Date('2026-12-01T10:00:00.123Z'));
  live.close();
  assert.equal(snap.dir, join(aside, '2026-12-01T10-00-00-123Z-vaultwarden-upgrade'));
  assert.deepEqual(readdirSync(snap.dir).sort(), ['db.sqlite3', 'upgrade.json']);
  assert.equal(statSync(join(snap.dir, 'db.sqlite3')).mode & 0o777, 0o600);
  assert.equal(snap.counts.users, 3);
  assert.equal(snap.counts._litestream_seq, undefined);
  const copy = new DatabaseSync(join(snap.dir, 'db.sqlite3'), { readOnly: true });
  assert.equal((copy.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 3);
  copy.close();
  assert.ok(hasVaultwardenData(db));
  // A database that cannot be read: nothing is left behind.
  await assert.rejects(takeUpgradeSnapshot(join(dir, 'missing.sqlite3'), null, '1.33.0', aside), /could not take the snapshot before upgrading Vaultwarden \(unknown version\) → 1\.33\.0/);
  assert.equal(readdirSync(aside).length, 1);
});

test('rows changed since the marker: added, changed, removed, as far as hashes tell', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-rows-'));
  const db = vault(dir);
  const marker = join(dir, 'm.rows');
  await writeMarker(marker, rowDigests(db));
  assert.deepEqual(compareRows(await readMarker(marker), rowDigests(db)), { total: 0, byTable: {} });
  const w = new DatabaseSync(db);
  w.exec("INSERT INTO users VALUES ('u9','z@x'); UPDATE devices SET updated_at='t1' WHERE uuid='d1'; INSERT INTO _litestream_seq VALUES (1, 5); INSERT INTO __diesel_schema_migrations VALUES ('x','t')");
  w.close();
  const c = compareRows(await readMarker(marker), rowDigests(db));
  assert.deepEqual(c, { total: 2, byTable: { devices: 1, users: 1 } });
  assert.equal(describeChanges(c), '2 rows (devices 1, users 1)');
});

test('lifecycle: a snapshot only when the version changes on a database with data; the marker once it answers', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-life-'));
  const db = vault(dir);
  const state: VaultwardenState = { lastRan: { version: '1.32.7', at: 't', bin: '/b' } };
  const make = (version: string) => new VaultwardenLifecycle({
    prepared: { source: 'installed', bin: `/x/${version}/vaultwarden` }, probe: async () => version, dbPath: db, asideRoot: join(dir, 'aside'),
    readState: () => state, updateState: async (ch) => { Object.assign(state, ch({ ...state })); }, now: () => new Date(),
  });
  const same = make('1.32.7');
  await same.beforeStart();
  assert.equal(existsSync(join(dir, 'aside')), false);
  const up = make('1.33.0');
  await up.beforeStart();
  assert.equal(state.upgrade?.from, '1.32.7');
  assert.equal(state.upgrade?.to, '1.33.0');
  assert.ok(existsSync(join(state.upgrade!.snapshot, 'db.sqlite3')));
  await up.started();
  assert.equal(state.lastRan?.version, '1.33.0');
  assert.ok(state.upgrade?.marker && existsSync(state.upgrade.marker));
  // A new vault (no tables): no snapshot.
  const empty = join(dir, 'empty.sqlite3');
  new DatabaseSync(empty).close();
  const s2: VaultwardenState = {};
  const fresh = new VaultwardenLifecycle({ prepared: { source: 'installed', bin: '/b' }, probe: async () => '1.34.0', dbPath: empty, asideRoot: join(dir, 'aside2'), readState: () => s2, updateState: async (ch) => { Object.assign(s2, ch({ ...s2 })); }, now: () => new Date() });
  await fresh.beforeStart();
  await fresh.started();
  assert.equal(s2.upgrade, undefined);
  assert.equal(s2.lastRan?.version, '1.34.0');
});

function lifecycleOn(dir: string, db: string, state: VaultwardenState, version: string | undefined, bin = `/x/${version}/vaultwarden`) {
  return new VaultwardenLifecycle({
    prepared: { source: 'installed', bin }, probe: async () => version, dbPath: db, asideRoot: join(dir, 'aside'),
    readState: () => state, updateState: async (ch) => { const next = ch({ ...state }); for (const k of Object.keys(state)) delete (state as Record<string, unknown>)[k]; Object.assign(state, next); }, now: () => new Date(),
  });
}
const asideCount = (dir: string) => (existsSync(join(dir, 'aside')) ? readdirSync(join(dir, 'aside')).length : 0);

test('lifecycle: a start that migrates and dies before answering does not snapshot the migrated database again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-crash-'));
  const db = vault(dir);
  const state: VaultwardenState = { lastRan: { version: '1.32.7', at: 't', bin: '/b', migrations: migrationsFingerprint(db) } };
  await lifecycleOn(dir, db, state, '1.33.0').beforeStart();
  assert.equal(asideCount(dir), 1);
  const first = state.upgrade!.snapshot;
  // 1.33.0 migrates, then dies before /alive; systemd starts the agent again.
  const w = new DatabaseSync(db);
  w.exec("INSERT INTO __diesel_schema_migrations VALUES ('2024-09-01-000000_add_sso_users', 't')");
  w.close();
  await lifecycleOn(dir, db, state, '1.33.0').beforeStart();
  assert.equal(asideCount(dir), 1, 'no second snapshot');
  assert.equal(state.upgrade!.snapshot, first);
  assert.ok(!(await import('node:fs')).readFileSync(join(first, 'upgrade.json'), 'utf8').includes('sso_users'));
});

test('lifecycle: an older version on a database a newer one migrated is refused (78); a replaced database is not the one that ran', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-down-'));
  const db = vault(dir);
  const state: VaultwardenState = { lastRan: { version: '1.33.0', at: 't', bin: '/b', migrations: migrationsFingerprint(db) } };
  await assert.rejects(lifecycleOn(dir, db, state, '1.32.7').beforeStart(), (e: any) => e.exitCode === 78 && /Vaultwarden 1\.32\.7 is older than 1\.33\.0, which ran on this database/.test(e.message) && /vaultwarden rollback/.test(e.hint));
  assert.equal(asideCount(dir), 0);
  // The database was replaced (a restore from a replica another version wrote): its
  // migrations differ, so what last ran here says nothing about it: a snapshot from "unknown".
  const state2: VaultwardenState = { lastRan: { version: '1.34.0', at: 't', bin: '/b', migrations: 'ffffffffffffffff' } };
  await lifecycleOn(dir, db, state2, '1.33.0').beforeStart();
  assert.equal(state2.upgrade?.from, null);
  assert.equal(state2.upgrade?.to, '1.33.0');
});

test('lifecycle: a binary that does not say its version is told apart by its digest, and still snapshotted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-sha-'));
  const db = vault(dir);
  const bin = join(dir, 'vaultwarden');
  (await import('node:fs')).writeFileSync(bin, '#!/bin/sh\necho "Vaultwarden (Version info from Git not present)"\n', { mode: 0o755 });
  const state: VaultwardenState = { lastRan: { version: '1.32.7', at: 't', bin: '/b', migrations: migrationsFingerprint(db) } };
  const l = lifecycleOn(dir, db, state, undefined, bin);
  await l.beforeStart();
  assert.match(l.version!, /^sha256:[0-9a-f]{12}$/);
  assert.equal(state.upgrade?.to, l.version);
  assert.equal(state.lastRan?.version, l.version);
  // The same binary again: nothing more.
  await lifecycleOn(dir, db, state, undefined, bin).beforeStart();
  assert.equal(asideCount(dir), 1);
});

test('compareVersions', () => {
  assert.equal(compareVersions('1.33.0', '1.32.7'), 1);
  assert.equal(compareVersions('1.32.7', '1.33.0'), -1);
  assert.equal(compareVersions('1.33.0-rc1', '1.33.0'), -1);
  assert.equal(compareVersions('1.33.0', '1.33.0'), 0);
  assert.equal(compareVersions('sha256:abc', '1.33.0'), 0);
});

test('lifecycle: a database brought back to migrations a newer version left (restore to a point in time) is refused to an older one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-ranon-'));
  const db = vault(dir);
  // 1.33.0 answered on this schema once; since then a rollback made 1.32.7 the last to run (on another schema).
  const state: VaultwardenState = { lastRan: { version: '1.32.7', at: 't', bin: '/b', migrations: 'other', before: [] }, ranOn: { [migrationsFingerprint(db)!]: '1.33.0' } };
  await assert.rejects(lifecycleOn(dir, db, state, '1.32.7').beforeStart(), (e: any) => e.exitCode === 78 && /older than 1\.33\.0/.test(e.message));
  // 1.33.0 itself on it: it answered on these migrations before, nothing to snapshot.
  await lifecycleOn(dir, db, state, '1.33.0').beforeStart();
  assert.equal(asideCount(dir), 0);
  // started() records the newest version per fingerprint.
  const l = lifecycleOn(dir, db, state, '1.34.0');
  await l.beforeStart();
  await l.started();
  assert.equal(state.ranOn![migrationsFingerprint(db)!], '1.34.0');
});

test('pinRows: the rows as they were when pinned, whatever is written before they are hashed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-pin-'));
  const db = vault(dir);
  const before = rowDigests(db);
  const pinned = pinRows(db);
  const w = new DatabaseSync(db);
  w.exec("INSERT INTO users VALUES ('u9','z@x'); UPDATE devices SET updated_at='t1' WHERE uuid='d1'");
  w.close();
  try {
    assert.deepEqual(pinned.digests(), before);
  } finally {
    pinned.close();
  }
  assert.deepEqual(compareRows(before, rowDigests(db)), { total: 2, byTable: { devices: 1, users: 1 } });
});

test('lifecycle: deferMarker fixes the marker\'s rows when Vaultwarden answers and writes them only with writeDeferredMarker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-defer-'));
  const db = vault(dir);
  const state: VaultwardenState = { lastRan: { version: '1.32.7', at: 't', bin: '/b' } };
  const up = lifecycleOn(dir, db, state, '1.33.0');
  await up.beforeStart();
  const answered = rowDigests(db);
  await up.started({ deferMarker: true });
  assert.equal(state.lastRan?.version, '1.33.0');
  assert.equal(state.upgrade?.marker, undefined); // not yet written
  const w = new DatabaseSync(db);
  w.exec("INSERT INTO users VALUES ('u7','late@x')"); // written after it answered, before the marker is hashed
  w.close();
  await up.writeDeferredMarker();
  const marker = state.upgrade!.marker!;
  assert.deepEqual(await readMarker(marker), answered);
  assert.deepEqual(compareRows(await readMarker(marker), rowDigests(db)), { total: 1, byTable: { users: 1 } }); // the rollback check sees the late row
  await up.writeDeferredMarker(); // nothing waits: no-op
  assert.equal(state.upgrade!.marker, marker);
});

test('lifecycle: right after a restore, the snapshot is a byte copy of the closed database; the start then takes none and writes the marker', async () => {
  const { createHash } = await import('node:crypto');
  const { readFileSync, writeFileSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'vw-early-'));
  const db = vault(dir);
  assert.ok(!existsSync(`${db}-wal`), 'closed: no WAL beside it');
  const bin = join(dir, 'vaultwarden');
  writeFileSync(bin, 'binary one');
  const state: VaultwardenState = {};
  let probes = 0;
  const life = new VaultwardenLifecycle({
    prepared: { source: 'operator', bin }, probe: async () => { probes++; return '1.33.0'; }, dbPath: db, asideRoot: join(dir, 'aside'),
    readState: () => state, updateState: async (ch) => { Object.assign(state, ch({ ...state })); }, now: () => new Date('2026-12-01T10:00:00.000Z'),
  });
  await life.afterRestore();
  assert.equal(asideCount(dir), 1);
  assert.deepEqual([state.upgrade?.from, state.upgrade?.to], [null, '1.33.0']);
  const snapDb = join(state.upgrade!.snapshot, 'db.sqlite3');
  const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
  assert.equal(sha(snapDb), sha(db), 'the same bytes as the restored database');
  assert.equal(statSync(snapDb).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(state.upgrade!.snapshot).sort(), ['db.sqlite3', 'upgrade.json']);
  assert.equal(JSON.parse(readFileSync(join(state.upgrade!.snapshot, 'upgrade.json'), 'utf8')).counts.users, 2);
  // Litestream then opens it (its tables), Vaultwarden is about to start.
  const ls = new DatabaseSync(db);
  ls.exec('INSERT INTO _litestream_seq VALUES (1, 1)');
  ls.close();
  await life.beforeStart();
  assert.equal(asideCount(dir), 1, 'no second snapshot');
  assert.equal(probes, 1, 'the binary was asked once');
  assert.equal(state.lastRan?.version, '1.33.0');
  await life.started();
  assert.ok(state.upgrade?.marker && existsSync(state.upgrade.marker), 'the marker after the upgrade');
  // Another binary at the same path: asked again.
  writeFileSync(bin, 'binary two, longer');
  await life.beforeStart();
  assert.equal(probes, 2);
});

test('lifecycle: no early snapshot of a database with a WAL, one the running version already answered on, or one already taken', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vw-early-no-'));
  const db = vault(dir);
  const writer = new DatabaseSync(db);
  writer.exec("INSERT INTO users VALUES ('u3','c@x')"); // frames in the WAL while it stays open
  const state: VaultwardenState = {};
  await lifecycleOn(dir, db, state, '1.33.0').afterRestore();
  assert.equal(asideCount(dir), 0, 'left to beforeStart');
  await assert.rejects(takeUpgradeSnapshot(db, null, '1.33.0', join(dir, 'aside'), new Date(), { byteCopy: true }), /-wal|WAL or journal beside it/);
  assert.equal(readdirSync(join(dir, 'aside')).length, 0, 'nothing left behind');
  const life = lifecycleOn(dir, db, state, '1.33.0');
  await life.beforeStart();
  assert.equal(asideCount(dir), 1, 'beforeStart took it (VACUUM INTO)');
  const snapDb = join(state.upgrade!.snapshot, 'db.sqlite3');
  const copy = new DatabaseSync(snapDb, { readOnly: true });
  assert.equal((copy.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 3);
  copy.close();
  writer.close();
  // Taken already for this upgrade (an earlier start): not again.
  delete state.lastRan;
  await lifecycleOn(dir, db, state, '1.33.0').afterRestore();
  assert.equal(asideCount(dir), 1);
  // This version answered on these migrations: beforeStart takes none, nor does afterRestore.
  const dir2 = mkdtempSync(join(tmpdir(), 'vw-early-ran-'));
  const db2 = vault(dir2);
  const s2: VaultwardenState = { ranOn: { [migrationsFingerprint(db2)!]: '1.33.0' } };
  await lifecycleOn(dir2, db2, s2, '1.33.0').afterRestore();
  await lifecycleOn(dir2, db2, s2, '1.33.0').beforeStart();
  assert.equal(asideCount(dir2), 0);
});
