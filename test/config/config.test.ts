import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildConfig, replicaUrl } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { ALL_KEYS, SCHEMA } from '../../agent/config/schema.ts';
import { ConfigError } from '../../agent/errors.ts';

const SRC = '/etc/vwstream/vwstream.env';
const NO_RCLONE_CONF = '/nonexistent/rclone.conf';
const build = (text: string) => buildConfig(parseEnvFile(text, SRC), SRC, { dataFolder: '/var/lib/vaultwarden', rcloneConfigPath: NO_RCLONE_CONF });
const S3 = 'S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=AKIA1234\nS3_SECRET_ACCESS_KEY=s3cr3t/with$dollar\n';

function configError(text: string): ConfigError {
  try {
    build(text);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  assert.fail(`expected a ConfigError for:\n${text}`);
}

test('an empty file is the embedded default: local directory replica, primary', () => {
  const c = build('');
  assert.equal(c.s3, null);
  assert.equal(c.role, 'primary');
  assert.equal(c.localReplicaPath, '/var/backups/vwstream/replica');
  assert.equal(replicaUrl(c), 'file:///var/backups/vwstream/replica');
  assert.equal(c.litestream.syncIntervalMs, 1000);
  assert.equal(c.litestream.profile, 'standard');
  assert.equal(c.litestream.snapshotIntervalMs, 6 * 3_600_000);
  assert.equal(c.litestream.retentionMs, 168 * 3_600_000);
  assert.equal(c.stopGracePeriodMs, 300_000);
  assert.equal(c.primarySyncIntervalMs, 300_000);
  assert.equal(c.secondarySyncIntervalMs, 3_600_000);
  assert.ok(c.leaseTtlMs <= 60_000);
  assert.equal(c.vaultwardenEnv.DATA_FOLDER, '/var/lib/vaultwarden');
  assert.equal(c.vaultwardenEnv.ROCKET_PORT, '8000');
});

test('every key has a default that passes its own validation', () => {
  for (const d of ALL_KEYS) {
    if (d.default === undefined || d.default === '') continue;
    assert.notEqual(d.parse(d.default), undefined, `${d.key} default ${d.default}`);
  }
});

test('S3 settings with a custom endpoint imply path style', () => {
  const c = build(S3 + 'S3_ENDPOINT=http://127.0.0.1:4599/\nS3_PREFIX=/prod/vault/\nS3_REGION=auto\n');
  assert.deepEqual(c.s3, {
    provider: 'Other', bucket: 'vault-bucket', endpoint: 'http://127.0.0.1:4599', region: 'auto',
    accessKeyId: 'AKIA1234', secretAccessKey: 's3cr3t/with$dollar', prefix: 'prod/vault', acl: undefined,
    noCheckBucket: false, forcePathStyle: true, skipVerify: false,
  });
  assert.equal(replicaUrl(c), 's3://vault-bucket/prod/vault/db');
  assert.equal(build(S3 + 'LITESTREAM_FORCE_PATH_STYLE=false\nS3_ENDPOINT=https://s3.example.com').s3!.forcePathStyle, false);
  assert.equal(build(S3).s3!.forcePathStyle, false);
  assert.ok(c.secrets.includes('s3cr3t/with$dollar'));
});

test('a missing secret with a bucket set is exit-78 material naming the key', () => {
  assert.equal(configError('S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=x\n').message,
    'S3_SECRET_ACCESS_KEY=(unset) is not valid: a value is required when S3_BUCKET is set (S3_BUCKET=vault-bucket)');
  assert.equal(configError('S3_BUCKET=vault-bucket\n').key, 'S3_ACCESS_KEY_ID');
});

test('the examples of the issue: role, interval, endpoint', () => {
  assert.equal(configError('NODE_ROLE=banana').message, `NODE_ROLE="banana" is not valid: expected one of primary, secondary (${SRC} line 1)`);
  const e = configError('\nPRIMARY_SYNC_INTERVAL=5 minutes');
  assert.equal(e.key, 'PRIMARY_SYNC_INTERVAL');
  assert.match(e.message, /^PRIMARY_SYNC_INTERVAL="5 minutes" is not valid: expected a duration: seconds \(e\.g\. 300\) or with units/);
  assert.match(e.message, /line 2\)$/);
  assert.equal(configError(S3 + 'S3_ENDPOINT=minio:9000').message, `S3_ENDPOINT="minio:9000" is not valid: expected an http:// or https:// URL (${SRC} line 4)`);
});

test('every key rejects a bad value with a message naming key, value and what is allowed', () => {
  const bad: Record<string, string> = {
    S3_PROVIDER: 'not a provider', S3_BUCKET: 'A', S3_ENDPOINT: 'ftp://x', S3_REGION: 'US EAST', S3_PREFIX: 'a/../b', S3_ACL: 'Public Read',
    S3_NO_CHECK_BUCKET: 'maybe', RCLONE_REMOTE_NAME: 'my remote', LOCAL_REPLICA_PATH: 'relative/path', NODE_ROLE: 'leader',
    DEPLOYMENT_MODE: 'cloud', SECONDARY_SERVE: 'perhaps', PRIMARY_SYNC_INTERVAL: '0', SECONDARY_SYNC_INTERVAL: 'soon',
    SYNC_INCLUDE_ATTACHMENTS: 'y', SYNC_INCLUDE_SENDS: 'n', SYNC_INCLUDE_CONFIG: '2', SYNC_INCLUDE_RSA_KEY: 'tru', SYNC_INCLUDE_ICON_CACHE: 'nope',
    SYNC_SHUTDOWN_TIMEOUT: '-5', LITESTREAM_SYNC_INTERVAL: '2 hours', LITESTREAM_SNAPSHOT_INTERVAL: '10s', LITESTREAM_RETENTION: '5m',
    LITESTREAM_SHUTDOWN_TIMEOUT: 'x', LITESTREAM_FORCE_PATH_STYLE: 'yesplease', LITESTREAM_SKIP_VERIFY: 'sure', LITESTREAM_PROFILE: 'paranoid',
    BACKUP_ENABLED: 'on please', BACKUP_CRON: '61 * * * *', BACKUP_FORMAT: 'zip', BACKUP_REMOTES: 'no-colon-here', BACKUP_RETENTION_DAYS: '-1',
    BACKUP_MIN_KEEP: 'few', BACKUP_ON_STARTUP: 'maybe', BACKUP_SHUTDOWN_TIMEOUT: '0', NOTIFICATION_URL: 'mailto:x@y', NOTIFICATION_TIMEOUT: '1d',
    TAILSCALE_ENABLED: 'yep', TAILSCALE_HOSTNAME: 'bad_name!', TAILSCALE_LOGIN_SERVER: 'headscale', TAILSCALE_TAGS: 'vault', TAILSCALE_SERVE_MODE: 'http',
    TAILSCALE_SERVE_PORT: '70000', TAILSCALE_FUNNEL: 'open', VAULTWARDEN_BIN: 'vaultwarden', STOP_GRACE_PERIOD: '5', LEASE_TTL: '1',
    HEALTHCHECK_MAX_SYNC_AGE: 'old', VERIFY_CRON: 'weekly', METRICS_LISTEN: '9101', LOG_LEVEL: 'verbose', ROCKET_PORT: '0', ROCKET_ADDRESS: 'localhost',
    ASIDE_MIN_KEEP: '0', ASIDE_RETENTION_DAYS: '30d', VAULTWARDEN_VERSION: 'latest', VAULTWARDEN_IMAGE: 'Vaultwarden Server', VAULTWARDEN_TAG_SUFFIX: 'alpine',
  };
  const base = S3; // so S3_* keys are checked in their live path
  const untested = ALL_KEYS.map((d) => d.key).filter((k) => !(k in bad) && !['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'RCLONE_FLAGS', 'BACKUP_PASSWORD', 'TAILSCALE_AUTHKEY', 'VAULTWARDEN_REGISTRY_USERNAME', 'VAULTWARDEN_REGISTRY_PASSWORD'].includes(k));
  assert.deepEqual(untested, [], 'every validated key has a bad example');
  for (const [key, value] of Object.entries(bad)) {
    const text = key === 'S3_BUCKET' ? `${key}=${value}\nS3_ACCESS_KEY_ID=a\nS3_SECRET_ACCESS_KEY=b\n` : `${base}${key}=${value}\n`;
    const e = configError(text);
    const def = SCHEMA[key as keyof typeof SCHEMA];
    assert.equal(e.key, key, `${key}: ${e.message}`);
    assert.equal(e.message, `${key}=${def.secret ? '"<hidden>"' : JSON.stringify(value)} is not valid: ${def.explain?.(value) ?? `expected ${def.allowed}`} (${SRC} line ${text.split('\n').findIndex((l) => l.startsWith(key + '=')) + 1})`);
  }
});

test('Vaultwarden from an image: the pin, the image, credentials, and not together with VAULTWARDEN_BIN', () => {
  const c = build('VAULTWARDEN_VERSION=v1.33.0\nVAULTWARDEN_IMAGE=127.0.0.1:5000/vw/server\nVAULTWARDEN_REGISTRY_USERNAME=bot\nVAULTWARDEN_REGISTRY_PASSWORD=reg-secret-77\n');
  assert.deepEqual(c.vaultwarden, { binGiven: false, version: '1.33.0', image: '127.0.0.1:5000/vw/server', tagSuffix: '-alpine', registryAuth: { username: 'bot', password: 'reg-secret-77' } });
  assert.equal(build('VAULTWARDEN_TAG_SUFFIX=\n').vaultwarden.tagSuffix, '', 'empty: bare version tags');
  assert.equal(build('VAULTWARDEN_TAG_SUFFIX=-static\n').vaultwarden.tagSuffix, '-static');
  assert.ok(c.secrets.includes('reg-secret-77'));
  assert.equal(build('').vaultwarden.image, 'vaultwarden/server');
  assert.equal(build('VAULTWARDEN_BIN=/opt/vw/vaultwarden\n').vaultwarden.binGiven, true);
  const both = configError('VAULTWARDEN_BIN=/opt/vw/vaultwarden\nVAULTWARDEN_VERSION=1.32.7\n');
  assert.equal(both.key, 'VAULTWARDEN_VERSION');
  assert.match(both.message, /VAULTWARDEN_BIN=\/opt\/vw\/vaultwarden is set too.*remove one of the two lines/);
  assert.match(configError('VAULTWARDEN_VERSION=1.32.7\nVAULTWARDEN_IMAGE=vaultwarden/server:1.30.0\n').message, /names the tag 1\.30\.0 and VAULTWARDEN_VERSION=1\.32\.7 another pin/);
  assert.equal(build('VAULTWARDEN_VERSION=1.32.7\nVAULTWARDEN_IMAGE=vaultwarden/server:1.32.7\n').vaultwarden.version, '1.32.7');
  assert.equal(configError('VAULTWARDEN_REGISTRY_PASSWORD=x\n').key, 'VAULTWARDEN_REGISTRY_USERNAME');
  assert.match(build('VAULTWARDEN_BIN=/opt/vw/vaultwarden\nVAULTWARDEN_IMAGE=ghcr.io/dani-garcia/vaultwarden\n').warnings.join('\n'), /VAULTWARDEN_IMAGE is set .* but VAULTWARDEN_BIN=\/opt\/vw\/vaultwarden is the operator's binary/);
});

test('a bad value of an unused S3 key is still an error', () => {
  assert.equal(configError('S3_ENDPOINT=nope').key, 'S3_ENDPOINT');
});

test('Vaultwarden settings that defeat replication are config errors', () => {
  assert.equal(configError('DATABASE_URL=postgresql://u:p@db/vw').key, 'DATABASE_URL');
  assert.equal(configError('DATABASE_URL=/data/db.sqlite3').key, 'DATABASE_URL');
  assert.equal(build('DATABASE_URL=/var/lib/vaultwarden/db.sqlite3').vaultwardenEnv.DATABASE_URL, '/var/lib/vaultwarden/db.sqlite3');
  assert.equal(configError('ENABLE_DB_WAL=false').message, `ENABLE_DB_WAL="false" is not valid: expected true: Litestream replicates the WAL (${SRC} line 1)`);
  assert.equal(configError('DATABASE_CONN_INIT=PRAGMA journal_mode=DELETE;').key, 'DATABASE_CONN_INIT');
  assert.equal(configError('DATA_FOLDER=/data').key, 'DATA_FOLDER');
  assert.doesNotThrow(() => build('DATA_FOLDER=/var/lib/vaultwarden/'));
});

test('other keys pass to Vaultwarden unchanged; agent secrets do not', () => {
  const c = build(S3 + 'DOMAIN=https://vault.example.com\nADMIN_TOKEN=$argon2id$v=19$abc\nSIGNUPS_ALLOWED=false\nRCLONE_CONFIG_OFFSITE_TYPE=local\nBACKUP_PASSWORD=hunter22\n');
  assert.equal(c.vaultwardenEnv.DOMAIN, 'https://vault.example.com');
  assert.equal(c.vaultwardenEnv.ADMIN_TOKEN, '$argon2id$v=19$abc');
  assert.equal(c.vaultwardenEnv.SIGNUPS_ALLOWED, 'false');
  for (const k of ['S3_SECRET_ACCESS_KEY', 'S3_BUCKET', 'BACKUP_PASSWORD', 'RCLONE_CONFIG_OFFSITE_TYPE']) assert.equal(c.vaultwardenEnv[k], undefined, k);
  assert.deepEqual(c.rcloneEnv, { RCLONE_CONFIG_OFFSITE_TYPE: 'local' });
  assert.ok(c.secrets.includes('$argon2id$v=19$abc'));
  assert.ok(c.secrets.includes('hunter22'));
  assert.ok(!c.secrets.includes('false'));
});

test('an unknown key with an agent prefix is reported as a likely typo', () => {
  const c = build('LITESTREAM_SYNC_INTERVALL=1s\nS3_STORAGE_CLASS_XYZ=1\n');
  assert.deepEqual(c.warnings, [
    `LITESTREAM_SYNC_INTERVALL (${SRC} line 1) is not a vwstream-agent or Vaultwarden setting (it is passed to Vaultwarden, which ignores it); did you mean LITESTREAM_SYNC_INTERVAL?`,
    `S3_STORAGE_CLASS_XYZ (${SRC} line 2) is not a vwstream-agent setting and is passed to Vaultwarden; is it a typo?`,
  ]);
});

test('profiles set snapshot interval and retention; explicit values win', () => {
  const crit = build('LITESTREAM_PROFILE=critical');
  assert.equal(crit.litestream.snapshotIntervalMs, 3_600_000);
  assert.equal(crit.litestream.retentionMs, 336 * 3_600_000);
  const relaxed = build('LITESTREAM_PROFILE=relaxed\nLITESTREAM_RETENTION=96h');
  assert.equal(relaxed.litestream.snapshotIntervalMs, 24 * 3_600_000);
  assert.equal(relaxed.litestream.retentionMs, 96 * 3_600_000);
});

test('backups enabled without a destination is an error', () => {
  assert.equal(configError('BACKUP_ENABLED=true').key, 'BACKUP_REMOTES');
  assert.deepEqual(build(S3 + 'BACKUP_ENABLED=true\nBACKUP_PASSWORD=pw12\nBACKUP_REMOTES=S3:backups, offsite:vw\nRCLONE_CONFIG_OFFSITE_TYPE=local\n').backup.remotes, ['S3:backups', 'offsite:vw']);
});
