import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { compareRows, describeChanges, hasVaultwardenData, parseVersionLine, readMarker, rowDigests, takeUpgradeSnapshot, writeMarker } from '../../agent/vaultwarden/upgrade.ts';
import { VaultwardenLifecycle } from '../../agent/vaultwarden/lifecycle.ts';
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
