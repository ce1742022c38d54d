import assert from 'node:assert/strict';
import { chmodSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync, chownSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { classifyDbError, DbUnreadableError, inspectDb } from '../../agent/replication/inspect.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-inspect-'));
chmodSync(dir, 0o755);
after(() => rmSync(dir, { recursive: true, force: true }));

/** A small Vaultwarden-like database in WAL mode with `n` users. */
function vault(path: string, n: number): void {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode=WAL; CREATE TABLE users(uuid TEXT PRIMARY KEY, email TEXT, pad BLOB); CREATE TABLE ciphers(uuid TEXT PRIMARY KEY, data BLOB)');
  for (let i = 0; i < n; i++) db.prepare('INSERT INTO users VALUES (?, ?, randomblob(300))').run(`u${i}`, `u${i}@example.com`);
  for (let i = 0; i < 200; i++) db.prepare('INSERT INTO ciphers VALUES (?, randomblob(500))').run(`c${i}`);
  db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  db.close();
}

test('classification: only SQLITE_CORRUPT and SQLITE_NOTADB (any extended code) are corruption', () => {
  const sqlite = (errcode: number) => Object.assign(new Error('x'), { code: 'ERR_SQLITE_ERROR', errcode });
  assert.equal(classifyDbError(sqlite(11)), 'corrupt'); // SQLITE_CORRUPT
  assert.equal(classifyDbError(sqlite(11 | (1 << 8))), 'corrupt'); // SQLITE_CORRUPT_VTAB
  assert.equal(classifyDbError(sqlite(26)), 'corrupt'); // SQLITE_NOTADB
  for (const code of [5, 5 | (1 << 8), 6, 3, 7, 10, 10 | (13 << 8), 13, 14, 23]) assert.equal(classifyDbError(sqlite(code)), 'unreadable', `code ${code}`);
  for (const errno of ['EMFILE', 'ENFILE', 'EACCES', 'EIO', 'ENOMEM']) assert.equal(classifyDbError(Object.assign(new Error(errno), { code: errno })), 'unreadable');
  assert.equal(classifyDbError('text'), 'unreadable');
});

test('a database locked by another connection is unreadable, not corrupt, and is left as it was', () => {
  const path = join(dir, 'locked.sqlite3');
  vault(path, 3);
  const before = readFileSync(path);
  const holder = new DatabaseSync(path);
  holder.exec('PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO users VALUES (\'held\', \'h@example.com\', NULL)');
  try {
    assert.throws(() => inspectDb(path, { busyTimeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof DbUnreadableError);
      assert.match(err.message, /^cannot read the database .*locked\.sqlite3: database is locked \(SQLite code 5\); it is not treated as damaged and nothing was changed$/);
      assert.equal(err.exitCode, 1);
      return true;
    });
  } finally {
    holder.exec('ROLLBACK');
    holder.close();
  }
  assert.deepEqual(readFileSync(path), before);
  const facts = inspectDb(path);
  assert.equal(facts.intact, true);
  assert.equal(facts.users, 3);
});

test('a file its reader may not open (EACCES, as an unprivileged user) is unreadable, not corrupt', async () => {
  const sub = join(dir, 'perm');
  mkdirSync(sub, { mode: 0o755 });
  const path = join(sub, 'db.sqlite3');
  vault(path, 2);
  chmodSync(path, 0o000);
  chownSync(path, 0, 0);
  const mod = new URL('../../agent/replication/inspect.ts', import.meta.url).href;
  const script = `import { inspectDb } from ${JSON.stringify(mod)};
try { const f = inspectDb(${JSON.stringify(path)}); console.log(JSON.stringify({ facts: f })); }
catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message })); }`;
  const r = await execa('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--no-warnings', '--input-type=module', '-e', script], { cwd: '/' });
  const out = JSON.parse(r.stdout) as { name?: string; message?: string; facts?: unknown };
  assert.equal(out.facts, undefined);
  assert.equal(out.name, 'DbUnreadableError');
  assert.match(out.message!, /^cannot read the database .*db\.sqlite3: unable to open database file \(SQLite code 14\)/);
  assert.equal(statSync(path).mode & 0o777, 0o000);
});

test('garbage pages are corruption: not intact, with integrity_check\'s words', () => {
  const path = join(dir, 'garbage.sqlite3');
  vault(path, 50);
  const size = statSync(path).size;
  assert.ok(size > 8 * 4096);
  const fd = openSync(path, 'r+');
  const junk = Buffer.alloc(4096 * 3);
  for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 7) & 0xff;
  writeSync(fd, junk, 0, junk.length, 4096 * 2); // pages 3-5: b-tree pages of the tables
  closeSync(fd);
  const facts = inspectDb(path);
  assert.equal(facts.exists, true);
  assert.equal(facts.intact, false);
  assert.match(facts.integrityMessage!, /malformed|corrupt|Page|Tree|page/i);
});

test('not a database at all (a text file) is corruption', () => {
  const path = join(dir, 'text.sqlite3');
  const fd = openSync(path, 'w');
  writeSync(fd, 'this is not a database\n'.repeat(400));
  closeSync(fd);
  const facts = inspectDb(path);
  assert.equal(facts.intact, false);
  assert.match(facts.integrityMessage!, /not a database/);
});
