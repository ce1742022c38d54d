import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { applyRetention, deleteArchive, DestinationError, joinRemote, listArchives, rcloneContext, RCLONE_DEFAULT_FLAGS, rcloneEnvOf, shipArchive } from '../../agent/backup/destinations.ts';
import { archiveName } from '../../agent/backup/retention.ts';
import type { S3Settings } from '../../agent/config/config.ts';

const root = mkdtempSync(join(tmpdir(), 'vws-dest-'));
after(() => rmSync(root, { recursive: true, force: true }));
const DAY = 86_400_000;
const now = new Date('2025-06-30T12:00:00Z');

const s3: S3Settings = {
  provider: 'Minio', bucket: 'vault', endpoint: 'http://127.0.0.1:9000', region: 'us-east-1', accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'SECRETEXAMPLE', prefix: 'p', acl: 'private', noCheckBucket: true, forcePathStyle: true, skipVerify: false,
};

test('the S3 remote is derived from S3_* under RCLONE_REMOTE_NAME; RCLONE_CONFIG_* of the operator win', () => {
  const env = rcloneEnvOf({ s3, rcloneRemoteName: 's3-main', rcloneEnv: { RCLONE_CONFIG_OFFSITE_TYPE: 'local', RCLONE_CONFIG_S3_MAIN_REGION: 'eu-west-1' } });
  assert.deepEqual(env, {
    RCLONE_CONFIG_S3_MAIN_TYPE: 's3', RCLONE_CONFIG_S3_MAIN_PROVIDER: 'Minio', RCLONE_CONFIG_S3_MAIN_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    RCLONE_CONFIG_S3_MAIN_SECRET_ACCESS_KEY: 'SECRETEXAMPLE', RCLONE_CONFIG_S3_MAIN_REGION: 'eu-west-1', RCLONE_CONFIG_S3_MAIN_ENDPOINT: 'http://127.0.0.1:9000',
    RCLONE_CONFIG_S3_MAIN_FORCE_PATH_STYLE: 'true', RCLONE_CONFIG_S3_MAIN_ACL: 'private', RCLONE_CONFIG_S3_MAIN_NO_CHECK_BUCKET: 'true',
    RCLONE_CONFIG_OFFSITE_TYPE: 'local', RCLONE_CONFIG: '/etc/vwstream/rclone.conf',
  });
  // rclone reads /etc/vwstream/rclone.conf (visible in the units), never root's home; the env file's RCLONE_CONFIG wins.
  assert.deepEqual(rcloneEnvOf({ s3: null, rcloneRemoteName: 'S3', rcloneEnv: {} }), { RCLONE_CONFIG: '/etc/vwstream/rclone.conf' });
  assert.deepEqual(rcloneEnvOf({ s3: null, rcloneRemoteName: 'S3', rcloneEnv: { RCLONE_CONFIG: '/srv/rclone.conf' } }), { RCLONE_CONFIG: '/srv/rclone.conf' });
  const ctx = rcloneContext({ s3: null, rcloneRemoteName: 'S3', rcloneEnv: {}, rcloneFlags: ' --transfers 2  --retries 1 ' });
  assert.deepEqual(ctx.flags, [...RCLONE_DEFAULT_FLAGS, '--transfers', '2', '--retries', '1']); // operator flags come last and win
  assert.equal(joinRemote('r:', 'a'), 'r:a');
  assert.equal(joinRemote('r:dir/', 'a'), 'r:dir/a');
  assert.equal(joinRemote('r:dir', 'a'), 'r:dir/a');
});

// A real rclone with a `local`-type remote defined only through env.
const ctx = rcloneContext({ s3: null, rcloneRemoteName: 'S3', rcloneEnv: { RCLONE_CONFIG_LOCALTEST_TYPE: 'local' }, rcloneFlags: '' });
const destDir = join(root, 'dest', 'backups');
const dest = `localtest:${destDir}`;

test('copy, list, then retention deletes only old archives of this product', async () => {
  const file = join(root, 'a.tar.gz');
  writeFileSync(file, Buffer.alloc(5000, 7));
  const name = archiveName(now, 'tar.gz', false);
  assert.deepEqual(await listArchives(ctx, dest), []); // missing directory = empty
  const shipped = await shipArchive(ctx, file, dest, name);
  assert.equal(shipped.bytes, 5000);
  assert.ok(readFileSync(join(destDir, name)).equals(readFileSync(file)));

  const old = [10, 40, 50, 60, 70].map((d) => archiveName(new Date(now.getTime() - d * DAY), 'tar.gz', d % 20 === 0));
  for (const n of old) writeFileSync(join(destDir, n), 'old');
  writeFileSync(join(destDir, 'vaultwarden-19990101-000000.tar.gz.partial'), 'foreign');
  writeFileSync(join(destDir, 'notes.txt'), 'foreign');
  mkdirSync(join(destDir, 'vaultwarden-20000101-000000.tar'));

  const listed = await listArchives(ctx, dest);
  assert.equal(listed.length, 1 + old.length + 2);
  assert.equal(listed.find((a) => a.name === name)!.size, 5000);

  const r = await applyRetention(ctx, dest, { now, retentionDays: 30, minKeep: 3 });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.keep, [name, old[0], old[1]]);
  assert.deepEqual(r.delete, [old[4], old[3], old[2]]);
  assert.deepEqual(readdirSync(destDir).sort(), [name, old[0]!, old[1]!, 'notes.txt', 'vaultwarden-19990101-000000.tar.gz.partial', 'vaultwarden-20000101-000000.tar'].sort());
  await deleteArchive(ctx, dest, old[0]!);
  assert.ok(!readdirSync(destDir).includes(old[0]!));
});

test('an unusable destination fails with an error naming it', async () => {
  const file = join(root, 'b.tar');
  writeFileSync(file, 'x');
  await assert.rejects(shipArchive(ctx, file, 'nosuchremote:backups', archiveName(now, 'tar', false)), (err: unknown) => {
    assert.ok(err instanceof DestinationError);
    assert.equal(err.destination, 'nosuchremote:backups');
    assert.match(err.message, /^nosuchremote:backups: upload of vaultwarden-.* failed \(rclone exited/);
    return true;
  });
  // A local path that cannot be created (a file is in the way).
  writeFileSync(join(root, 'blocker'), '');
  await assert.rejects(shipArchive(ctx, file, `localtest:${join(root, 'blocker', 'sub')}`, 'vaultwarden-20250101-000000.tar'), DestinationError);
});
