import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chownSync, createWriteStream, linkSync, symlinkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, test } from 'node:test';
import { createBackupArchive, integrityCheck } from '../../agent/backup/archive.ts';
import { run } from '../../agent/exec.ts';
import { AgentError } from '../../agent/errors.ts';
import { scopeOf } from '../../agent/files/scope.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-archive-'));
const data = join(root, 'data');
const tmp = join(root, 'tmp');
mkdirSync(tmp);
const scope = scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const files: Record<string, Buffer> = {
  'attachments/cipher1/att1': randomBytes(200_000),
  'attachments/cipher2/att2': Buffer.from('second attachment'),
  'sends/send1/file': randomBytes(1234),
  'config.json': Buffer.from('{"domain":"https://vault.example"}'),
  'rsa_key.pem': Buffer.from('-----BEGIN PRIVATE KEY-----\nabc\n'),
  'empty/nothing': Buffer.alloc(0),
};
for (const [rel, b] of Object.entries(files)) {
  mkdirSync(join(data, rel, '..'), { recursive: true });
  writeFileSync(join(data, rel), b);
}
mkdirSync(join(data, 'icon_cache'));
writeFileSync(join(data, 'icon_cache', 'x.png'), 'not in scope');
writeFileSync(join(data, 'attachments', 'cipher2', 'empty.bin'), '');
files['attachments/cipher2/empty.bin'] = Buffer.alloc(0);
delete files['empty/nothing'];

// The live database: WAL mode, held open by "Vaultwarden", writes not checkpointed.
const live = new DatabaseSync(join(data, 'db.sqlite3'));
live.exec('PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE users (uuid TEXT PRIMARY KEY, email TEXT)');
for (let i = 0; i < 30; i++) live.prepare('INSERT INTO users VALUES (?, ?)').run(`u${i}`, `u${i}@example.com`);
// A reader holding a transaction open, as Litestream does.
const reader = new DatabaseSync(join(data, 'db.sqlite3'));
reader.exec('BEGIN');
reader.prepare('SELECT count(*) FROM users').get();

after(() => {
  reader.exec('COMMIT');
  reader.close();
  live.close();
  rmSync(root, { recursive: true, force: true });
});

const PASSWORD = 'archive pass phrase';
const passFile = join(root, 'pass');
writeFileSync(passFile, PASSWORD, { mode: 0o600 });

function checkExtracted(dir: string): void {
  const db = new DatabaseSync(join(dir, 'db.sqlite3'), { readOnly: true });
  try {
    assert.equal((db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 30);
  } finally {
    db.close();
  }
  assert.equal(integrityCheck(join(dir, 'db.sqlite3')), 'ok');
  for (const [rel, b] of Object.entries(files)) assert.equal(sha(readFileSync(join(dir, rel))), sha(b), rel);
  assert.throws(() => statSync(join(dir, 'icon_cache')), /ENOENT/);
  assert.throws(() => statSync(join(dir, 'db.sqlite3-wal')), /ENOENT/);
  assert.equal(statSync(join(dir, 'rsa_key.pem')).mode & 0o777, statSync(join(data, 'rsa_key.pem')).mode & 0o777);
}

for (const variant of [{ format: 'tar.gz' as const }, { format: 'tar' as const }, { format: 'tar.gz' as const, password: PASSWORD }, { format: 'tar' as const, password: PASSWORD }]) {
  const label = `${variant.format}${variant.password ? ' encrypted' : ''}`;
  test(`${label}: a live WAL database with uncheckpointed writes + files, extracted by tar (and openssl)`, async () => {
    const walBefore = statSync(join(data, 'db.sqlite3-wal')).size;
    assert.ok(walBefore > 0);
    const out = join(root, `archive-${label.replace(' ', '-')}`);
    const report = await createBackupArchive({ dbPath: join(data, 'db.sqlite3'), dataFolder: data, scope, tmpDir: tmp, out: createWriteStream(out), ...variant });
    const bytes = readFileSync(out);
    assert.equal(report.bytes, bytes.length);
    assert.equal(report.sha256, sha(bytes));
    assert.equal(report.files, 1 + Object.keys(files).length);
    assert.equal(report.encrypted, Boolean(variant.password));
    assert.equal(report.fileBytes, Object.values(files).reduce((n, b) => n + b.length, 0));
    // The WAL was neither checkpointed nor truncated; the stage is gone.
    assert.equal(statSync(join(data, 'db.sqlite3-wal')).size, walBefore);
    assert.deepEqual(readdirSync(tmp), []);

    let tarFile = out;
    if (variant.password) {
      assert.equal(bytes.subarray(0, 8).toString('latin1'), 'Salted__');
      tarFile = `${out}.dec`;
      await run('openssl', ['enc', '-d', '-aes-256-cbc', '-pbkdf2', '-pass', `file:${passFile}`, '-in', out, '-out', tarFile]);
    }
    const x = join(root, `x-${label.replace(' ', '-')}`);
    mkdirSync(x);
    await run('tar', [variant.format === 'tar.gz' ? '-xzf' : '-xf', tarFile, '-C', x]);
    checkExtracted(x);
  });
}

test('writes after the snapshot are not in it; the live database keeps working', async () => {
  live.prepare('INSERT INTO users VALUES (?, ?)').run('u30', 'late@example.com');
  const out = join(root, 'a2.tar');
  await createBackupArchive({ dbPath: join(data, 'db.sqlite3'), dataFolder: data, scope, tmpDir: tmp, format: 'tar', out: createWriteStream(out) });
  live.prepare('INSERT INTO users VALUES (?, ?)').run('u31', 'later@example.com');
  const x = join(root, 'x2');
  mkdirSync(x);
  await run('tar', ['-xf', out, '-C', x]);
  const db = new DatabaseSync(join(x, 'db.sqlite3'), { readOnly: true });
  assert.equal((db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n, 31);
  db.close();
  live.prepare('DELETE FROM users WHERE uuid IN (?, ?)').run('u30', 'u31');
});

test('a missing database fails loudly and leaves no stage behind', async () => {
  await assert.rejects(
    createBackupArchive({ dbPath: join(root, 'nope', 'db.sqlite3'), dataFolder: data, scope, tmpDir: tmp, format: 'tar', out: createWriteStream(join(root, 'never')) }),
    (err: unknown) => err instanceof AgentError && /snapshot of .* failed/.test(err.message),
  );
  assert.deepEqual(readdirSync(tmp), []);
});

test('integrityCheck reports a damaged database', () => {
  const p = join(root, 'bad.sqlite3');
  const db = new DatabaseSync(p);
  db.exec('PRAGMA page_size=1024; CREATE TABLE t (x TEXT); CREATE INDEX ti ON t(x)');
  for (let i = 0; i < 500; i++) db.prepare('INSERT INTO t VALUES (?)').run(`row-${i}-${'x'.repeat(50)}`);
  db.close();
  const buf = readFileSync(p);
  // Overwrite the middle of the index's pages with garbage.
  const idxRoot = buf.length - 4 * 1024;
  randomBytes(2048).copy(buf, idxRoot);
  writeFileSync(p, buf);
  assert.notEqual(integrityCheck(p), 'ok');
});

test('planted links, a FIFO, a foreign hard link and a folder that is a file: nothing outside the data folder is archived', async () => {
  const w = join(root, 'planted');
  const d = join(w, 'data');
  const secretDir = join(w, 'etc-vwstream');
  mkdirSync(join(d, 'attachments', 'c1'), { recursive: true });
  mkdirSync(join(secretDir, 'sub'), { recursive: true });
  const SECRET = 'S3_SECRET_ACCESS_KEY=planted-secret-value';
  writeFileSync(join(secretDir, 'vwstream.env'), SECRET, { mode: 0o600 });
  writeFileSync(join(secretDir, 'sub', 'deep'), SECRET);
  writeFileSync(join(w, 'shadow'), SECRET, { mode: 0o600 });
  writeFileSync(join(d, 'attachments', 'c1', 'real'), 'REAL ATTACHMENT');
  writeFileSync(join(d, 'rsa_key.pem'), 'KEY');
  mkdirSync(join(d, 'attachments', 'c2'));
  writeFileSync(join(d, 'attachments', 'c2', 'theirs'), 'FOREIGN OWNER');
  chownSync(join(d, 'attachments', 'c2'), 1234, 1234); // a real directory of another uid: read (nothing to follow)
  symlinkSync(secretDir, join(d, 'sends')); // a symlinked directory
  symlinkSync(join(w, 'shadow'), join(d, 'attachments', 'x')); // a symlinked file
  symlinkSync(secretDir, join(d, 'attachments', 'hop')); // a link on the way to deeper files
  symlinkSync(join(w, 'shadow'), join(d, 'config.json')); // a root file that is a link
  execFileSync('mkfifo', [join(d, 'attachments', 'c1', 'fifo')]);
  linkSync(join(w, 'shadow'), join(d, 'attachments', 'c1', 'hard')); // root-owned, data folder owned by 4242
  chownSync(d, 4242, 4242);
  writeFileSync(join(d, 'icon_cache'), 'a file where a folder belongs');
  const db = new DatabaseSync(join(d, 'db.sqlite3'));
  db.exec('CREATE TABLE users (uuid TEXT); INSERT INTO users VALUES (1)');
  db.close();
  const out = join(w, 'out.tar');
  const report = await createBackupArchive({
    dbPath: join(d, 'db.sqlite3'), dataFolder: d, scope: scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: true }),
    tmpDir: tmp, format: 'tar', out: createWriteStream(out),
  });
  const bytes = readFileSync(out);
  assert.equal(bytes.includes(Buffer.from('planted-secret-value')), false);
  assert.equal(bytes.includes(Buffer.from('REAL ATTACHMENT')), true);
  const x = join(w, 'x');
  mkdirSync(x);
  await run('tar', ['-xf', out, '-C', x]);
  const listed = (await run('tar', ['-tf', out])).stdout.trim().split('\n').sort();
  assert.deepEqual(listed, ['attachments/c1/real', 'attachments/c2/theirs', 'db.sqlite3', 'rsa_key.pem']);
  assert.equal(report.files, 4);
  assert.deepEqual(report.skipped.map((s) => `${s.rel}:${s.kind}`).sort(), [
    'attachments/c1/fifo:fifo', 'attachments/c1/hard:hardlink', 'attachments/hop:symlink', 'attachments/x:symlink', 'config.json:symlink', 'sends:symlink',
  ]);
  assert.deepEqual(report.unreadable.map((u) => u.rel), ['icon_cache']);
  assert.match(report.unreadable[0]!.error, /icon_cache: is not a directory/);
});
