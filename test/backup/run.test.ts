import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, test } from 'node:test';
import { archiveName } from '../../agent/backup/retention.ts';
import { runBackup } from '../../agent/backup/run.ts';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { run } from '../../agent/exec.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-run-'));
const data = join(root, 'data');
mkdirSync(join(data, 'attachments', 'c1'), { recursive: true });
writeFileSync(join(data, 'attachments', 'c1', 'a1'), 'attachment');
writeFileSync(join(data, 'rsa_key.pem'), 'KEY');
const live = new DatabaseSync(join(data, 'db.sqlite3'));
live.exec('PRAGMA journal_mode=WAL; CREATE TABLE users (uuid TEXT)');
for (let i = 0; i < 30; i++) live.prepare('INSERT INTO users VALUES (?)').run(`u${i}`);

const pings: string[] = [];
let server: Server;
let port = 0;
before(async () => {
  server = createServer((req, res) => { pings.push(req.url!); res.end('OK'); }).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  port = (server.address() as AddressInfo).port;
});
after(() => {
  server.closeAllConnections();
  server.close();
  live.close();
  rmSync(root, { recursive: true, force: true });
});

const now = new Date('2025-06-30T12:00:00Z');
function config(remotes: string) {
  const text = [
    'BACKUP_ENABLED=true', `BACKUP_REMOTES=${remotes}`, 'BACKUP_PASSWORD=run-test-password', 'BACKUP_RETENTION_DAYS=30', 'BACKUP_MIN_KEEP=2',
    'RCLONE_CONFIG_LOCALA_TYPE=local', 'RCLONE_CONFIG_LOCALB_TYPE=local', `NOTIFICATION_URL=http://127.0.0.1:${port}/ping/abc`, 'NOTIFICATION_TIMEOUT=2',
  ].join('\n');
  return buildConfig(parseEnvFile(text, 'test.env'), 'test.env', { dataFolder: data });
}
const opts = { dbPath: join(data, 'db.sqlite3'), dataFolder: data, tmpDir: join(root, 'tmp'), now: () => now };

test('two destinations receive the encrypted archive; retention runs on each; success is pinged', async () => {
  const a = join(root, 'a');
  const b = join(root, 'b');
  mkdirSync(a);
  const DAY = 86_400_000;
  const old = [40, 50, 60].map((d) => archiveName(new Date(now.getTime() - d * DAY), 'tar.gz', true));
  for (const n of old) writeFileSync(join(a, n), 'old');
  pings.length = 0;
  const report = await runBackup(config(`LOCALA:${a},localb:${b}/nested`), opts);
  assert.equal(report.ok, true, report.error);
  assert.equal(report.name, 'vaultwarden-20250630-120000.tar.gz.enc');
  assert.deepEqual(readdirSync(a).sort(), [old[0], report.name].sort());
  assert.deepEqual(readdirSync(join(b, 'nested')), [report.name]);
  assert.deepEqual(report.destinations[0]!.retention!.deleted, [old[2], old[1]]);
  assert.deepEqual(pings, ['/ping/abc']);
  assert.deepEqual(readdirSync(join(root, 'tmp')), []);
  // openssl + tar restore it.
  writeFileSync(join(root, 'pw'), 'run-test-password', { mode: 0o600 });
  await run('openssl', ['enc', '-d', '-aes-256-cbc', '-pbkdf2', '-pass', `file:${join(root, 'pw')}`, '-in', join(a, report.name), '-out', join(root, 'x.tar.gz')]);
  mkdirSync(join(root, 'x'));
  await run('tar', ['-xzf', join(root, 'x.tar.gz'), '-C', join(root, 'x')]);
  assert.deepEqual(readdirSync(join(root, 'x')).sort(), ['attachments', 'db.sqlite3', 'rsa_key.pem']);
  const db = new DatabaseSync(join(root, 'x', 'db.sqlite3'), { readOnly: true });
  assert.equal((db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 30);
  db.close();
});

test('a failing destination fails the run, is named, and /fail is pinged; the others still get the archive', async () => {
  const c = join(root, 'c');
  writeFileSync(join(root, 'blocker'), '');
  pings.length = 0;
  const report = await runBackup(config(`localb:${join(root, 'blocker')}/x,LOCALA:${c}`), opts);
  assert.equal(report.ok, false);
  assert.match(report.error!, /1 of 2 destinations failed: localb:.*blocker\/x: upload of vaultwarden-20250630-120000\.tar\.gz\.enc failed/);
  assert.deepEqual(readdirSync(c), [report.name]);
  assert.deepEqual(pings, ['/ping/abc/fail']);
});

test('a dead notification endpoint does not fail or block the backup', async () => {
  const cfg = config(`LOCALA:${join(root, 'd')}`);
  cfg.notification = { url: 'http://127.0.0.1:1/ping', timeoutMs: 500 };
  const report = await runBackup(cfg, opts);
  assert.equal(report.ok, true);
  assert.equal(report.notification.sent, false);
});

test('an abandoned run (shutdown budget spent) stops the uploads and leaves no partial archive behind', async () => {
  const e = join(root, 'e');
  const big = join(data, 'attachments', 'c1', 'big');
  writeFileSync(big, randomBytes(3 << 20)); // incompressible
  try {
    const cfg = config(`LOCALA:${e}`);
    cfg.rcloneFlags = '--bwlimit 256k'; // ~12 s for the archive: still running when we stop it
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error('shutdown: BACKUP_SHUTDOWN_TIMEOUT reached')), 1500);
    pings.length = 0;
    const t = Date.now();
    const report = await runBackup(cfg, { ...opts, signal: stop.signal });
    assert.equal(report.ok, false);
    assert.equal(report.error, 'abandoned: shutdown: BACKUP_SHUTDOWN_TIMEOUT reached');
    assert.ok(Date.now() - t < 10_000, `stopped promptly (${Date.now() - t} ms)`);
    assert.deepEqual(readdirSync(e, { recursive: true }).filter((n) => String(n).startsWith('vaultwarden-')), []);
    assert.deepEqual(pings, ['/ping/abc/fail']);
  } finally {
    rmSync(big);
  }
});

test('a data folder path that cannot be read fails the run as incomplete: shipped without it, retention not applied, /fail pinged', async () => {
  const f = join(root, 'f');
  mkdirSync(f);
  const DAY = 86_400_000;
  const old = [40, 50, 60].map((d) => archiveName(new Date(now.getTime() - d * DAY), 'tar.gz', true));
  for (const o of old) writeFileSync(join(f, o), 'old');
  writeFileSync(join(data, 'sends'), 'a file where the sends folder belongs');
  try {
    pings.length = 0;
    const report = await runBackup(config(`LOCALA:${f}`), opts);
    assert.equal(report.ok, false);
    assert.match(report.error!, /^incomplete: 1 paths of the data folder could not be read \(sends\); shipped without them, retention not applied$/);
    assert.deepEqual(report.archive!.unreadable.map((u) => u.rel), ['sends']);
    assert.deepEqual(readdirSync(f).sort(), [...old, report.name].sort());
    assert.equal(report.destinations[0]!.ok, true);
    assert.equal(report.destinations[0]!.retention, undefined);
    assert.deepEqual(pings, ['/ping/abc/fail']);
  } finally {
    rmSync(join(data, 'sends'));
  }
});
