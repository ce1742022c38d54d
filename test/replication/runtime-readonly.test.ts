import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { prepareReadOnlyRuntime } from '../../agent/replication/runtime.ts';
import { renderLitestreamConfig } from '../../agent/replication/litestream.ts';

// The runtime of read-only commands (generations, snapshots, restore --to): its
// litestream.yml in a private temporary directory; the live one is read, never written.
const dir = mkdtempSync(join(tmpdir(), 'vws-ro-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const passwd = join(dir, 'passwd');
const group = join(dir, 'group');
writeFileSync(passwd, 'vaultwarden:x:990:990::/var/lib/vaultwarden:/usr/sbin/nologin\nvwstream-litestream:x:991:991::/nonexistent:/usr/sbin/nologin\n');
writeFileSync(group, 'vwstream:x:992:\n');
const cfg = buildConfig(parseEnvFile('S3_BUCKET=bkt-new\nS3_ENDPOINT=http://127.0.0.1:9\nS3_ACCESS_KEY_ID=k\nS3_SECRET_ACCESS_KEY=ro-secret-1234\nS3_PREFIX=p\n'), 'test.env');

test('renders the config into a new 0700 directory (file 0600), keeps the live metrics port, leaves the live file as it was, dispose removes it', async () => {
  const tmpRoot = join(dir, 'root');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(tmpRoot);
  const live = join(dir, 'live-litestream.yml');
  const liveText = renderLitestreamConfig(buildConfig(parseEnvFile('S3_BUCKET=bkt-old\nS3_ACCESS_KEY_ID=k\nS3_SECRET_ACCESS_KEY=old-secret-1234\n'), 'old.env'), { dbPath: '/var/lib/vaultwarden/db.sqlite3', metricsAddr: '127.0.0.1:45678' });
  writeFileSync(live, liveText, { mode: 0o600 });
  const before = statSync(live);
  const rt = await prepareReadOnlyRuntime(cfg, { tmpRoot, passwd, group, liveConfig: live });
  assert.equal(rt.dir.startsWith(join(tmpRoot, 'vwstream-cli-')), true);
  assert.equal(statSync(rt.dir).mode & 0o777, 0o700);
  assert.equal(rt.litestreamConfig, join(rt.dir, 'litestream.yml'));
  assert.equal(statSync(rt.litestreamConfig).mode & 0o777, 0o600);
  assert.equal(rt.metricsAddr, '127.0.0.1:45678');
  assert.equal(readFileSync(rt.litestreamConfig, 'utf8'), renderLitestreamConfig(cfg, { dbPath: '/var/lib/vaultwarden/db.sqlite3', metricsAddr: '127.0.0.1:45678' }));
  assert.match(readFileSync(rt.litestreamConfig, 'utf8'), /bucket: "bkt-new"/, 'from the config given, not the live file');
  assert.deepEqual(rt.ids, { uid: 990, gid: 990 });
  assert.deepEqual(rt.litestreamIds, { uid: 991, gid: 991 });
  assert.equal(rt.apiGroup, 992);
  assert.equal(rt.litestreamConfigChanged, false);
  const after = statSync(live);
  assert.equal(readFileSync(live, 'utf8'), liveText);
  assert.equal(after.mtimeMs, before.mtimeMs);
  assert.equal(after.ino, before.ino);
  await rt.dispose();
  assert.equal(existsSync(rt.dir), false);
  assert.deepEqual(readdirSync(tmpRoot), []);
  await rt.dispose(); // idempotent
});

test('no live file (agent never started): a free loopback port; two runs get two directories', async () => {
  const tmpRoot = join(dir, 'root2');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(tmpRoot);
  const a = await prepareReadOnlyRuntime(cfg, { tmpRoot, passwd, group, liveConfig: join(dir, 'missing.yml') });
  const b = await prepareReadOnlyRuntime(cfg, { tmpRoot, passwd, group, liveConfig: join(dir, 'missing.yml') });
  assert.match(a.metricsAddr, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(a.dir, b.dir);
  await a.dispose();
  await b.dispose();
  assert.deepEqual(readdirSync(tmpRoot), []);
  assert.equal(existsSync(join(dir, 'missing.yml')), false, 'the live path is never created');
});

test('a missing system user fails before anything is created', async () => {
  const tmpRoot = join(dir, 'root3');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(tmpRoot);
  const empty = join(dir, 'passwd-empty');
  writeFileSync(empty, '');
  await assert.rejects(prepareReadOnlyRuntime(cfg, { tmpRoot, passwd: empty, group }), /system user vaultwarden does not exist/);
  assert.deepEqual(readdirSync(tmpRoot), []);
});
