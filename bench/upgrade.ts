/**
 * The cost of an upgrade's safety net (issue 16) on a generated Vaultwarden database of
 * BENCH_DB_MIB (default 100) MiB, a writer holding it open with inserts still in the WAL:
 *   (a) the agent's snapshot before an upgrade: VACUUM INTO + integrity_check on the copy
 *       (takeUpgradeSnapshot), and the row marker taken once the new version answers
 *       (rowDigests + writeMarker), and the rollback's comparison against it;
 *   (b) what an operator would run by hand: `sqlite3 db ".backup copy"` then
 *       `sqlite3 copy "PRAGMA integrity_check"`.
 *
 *   make bench-upgrade                  # 100 MiB
 *   BENCH_DB_MIB=20 make bench-upgrade  # quick
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { compareRows, readMarker, rowDigests, takeUpgradeSnapshot, writeMarker } from '../agent/vaultwarden/upgrade.ts';

const MIB = Number(process.env.BENCH_DB_MIB ?? 100);
const dir = await mkdtemp(join(process.env.BENCH_TMPDIR ?? '/var/tmp', 'vws-bench-upgrade-'));
const dbPath = join(dir, 'db.sqlite3');
const mib = (b: number) => (b / 1048576).toFixed(1);

try {
  const db = new DatabaseSync(dbPath);
  db.exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
    CREATE TABLE users (uuid TEXT PRIMARY KEY, email TEXT, created_at TEXT);
    CREATE TABLE ciphers (uuid TEXT PRIMARY KEY, user_uuid TEXT, data TEXT, created_at TEXT);
    CREATE TABLE devices (uuid TEXT PRIMARY KEY, user_uuid TEXT, updated_at TEXT);
    CREATE TABLE __diesel_schema_migrations (version TEXT PRIMARY KEY, run_on TEXT);`);
  const addUser = db.prepare('INSERT INTO users VALUES (?, ?, ?)');
  const addCipher = db.prepare('INSERT INTO ciphers VALUES (?, ?, ?, ?)');
  const addDevice = db.prepare('INSERT INTO devices VALUES (?, ?, ?)');
  const target = MIB * 1048576;
  let rows = 0;
  db.exec('BEGIN');
  for (let u = 0; ; u++) {
    const user = randomUUID();
    addUser.run(user, `u${u}@bench.test`, new Date().toISOString());
    addDevice.run(randomUUID(), user, new Date().toISOString());
    for (let c = 0; c < 50; c++) { addCipher.run(randomUUID(), user, randomBytes(1500).toString('base64'), new Date().toISOString()); rows++; }
    if (u % 10 === 9) {
      db.exec('COMMIT');
      db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
      if ((await stat(dbPath)).size >= target) break;
      db.exec('BEGIN');
    }
  }
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  db.exec("INSERT INTO users VALUES ('late', 'late@bench.test', 'now')"); // stays in the WAL
  const size = (await stat(dbPath)).size;
  console.log(`database: ${mib(size)} MiB, ${rows} ciphers (a writer keeps it open with its last insert in the WAL)`);

  let t = performance.now();
  const snap = await takeUpgradeSnapshot(dbPath, '1.32.7', '1.33.0', join(dir, 'aside'));
  const snapMs = performance.now() - t;
  t = performance.now();
  const digests = rowDigests(dbPath);
  await writeMarker(join(dir, 'marker.rows'), digests);
  const markerMs = performance.now() - t;
  const markerBytes = (await stat(join(dir, 'marker.rows'))).size;
  t = performance.now();
  const changes = compareRows(await readMarker(join(dir, 'marker.rows')), rowDigests(dbPath));
  const compareMs = performance.now() - t;
  if (changes.total !== 0) throw new Error(`compare found ${changes.total} changes on an unchanged database`);

  const copy = join(dir, 'by-hand.sqlite3');
  t = performance.now();
  execFileSync('sqlite3', [dbPath, `.backup '${copy}'`]);
  const backupMs = performance.now() - t;
  t = performance.now();
  const check = execFileSync('sqlite3', [copy, 'PRAGMA integrity_check']).toString().trim();
  const checkMs = performance.now() - t;
  if (check !== 'ok') throw new Error(`by-hand copy: ${check}`);
  db.close();

  const row = (what: string, ms: number, note = '') => console.log(`  ${what.padEnd(60)} ${ms.toFixed(0).padStart(7)} ms  ${note}`);
  console.log(`\nupgrade safety net on ${mib(size)} MiB (${new Date().toISOString().slice(0, 10)}, ${process.arch}, node ${process.version}):`);
  row('agent: snapshot (VACUUM INTO + integrity_check)', snapMs, `${mib(snap.bytes)} MiB copy`);
  row('by hand: sqlite3 .backup + PRAGMA integrity_check', backupMs + checkMs, `${backupMs.toFixed(0)} + ${checkMs.toFixed(0)} ms`);
  row('agent: row marker after the upgrade (rowDigests + write)', markerMs, `${mib(markerBytes)} MiB, ${[...digests.values()].reduce((n, h) => n + h.length, 0)} rows`);
  row('agent: rollback check (read marker + rowDigests + compare)', compareMs);
} finally {
  await rm(dir, { recursive: true, force: true });
}
