/** Typo suggestions, case-insensitive enums and the cross-key checks of buildConfig. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { buildConfig, checkVaultwardenBin, replicaMissingWarning, vaultwardenBinProblem, type Config } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import { suggestKey } from '../../agent/config/keys.ts';
import { VAULTWARDEN_KEYS } from '../../agent/config/vaultwarden-keys.ts';
import { ConfigError } from '../../agent/errors.ts';

const SRC = '/etc/vwstream/vwstream.env';
const dir = mkdtempSync(join(tmpdir(), 'vws-checks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const NO_CONF = join(dir, 'missing-rclone.conf');
const build = (text: string, rcloneConfigPath = NO_CONF, rootRcloneConfigPath = NO_CONF): Config => buildConfig(parseEnvFile(text, SRC), SRC, { dataFolder: '/var/lib/vaultwarden', rcloneConfigPath, rootRcloneConfigPath });
function configError(text: string, rcloneConfigPath = NO_CONF): ConfigError {
  try { build(text, rcloneConfigPath); } catch (e) { if (e instanceof ConfigError) return e; throw e; }
  assert.fail(`expected a ConfigError for:\n${text}`);
}
const S3 = 'S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=AKIA1234\nS3_SECRET_ACCESS_KEY=s3cr3t-value\n';
const unknown = (k: string, line: number, want: string) => `${k} (${SRC} line ${line}) is not a vwstream-agent or Vaultwarden setting (it is passed to Vaultwarden, which ignores it); did you mean ${want}?`;

test('typos of agent and Vaultwarden keys get a "did you mean" warning', () => {
  const c = build('LOGLEVEL=debug\nMETRIC_LISTEN=127.0.0.1:9101\nSTOP_GRACE=600\nVERIFY_CORN="0 4 * * 0"\nSIGNUP_ALLOWED=false\nS3_BUKET=x\nBACKUP_PASSWD=pw\nsignups_allowed=false\n');
  assert.deepEqual(c.warnings, [
    unknown('LOGLEVEL', 1, 'LOG_LEVEL'), unknown('METRIC_LISTEN', 2, 'METRICS_LISTEN'), unknown('STOP_GRACE', 3, 'STOP_GRACE_PERIOD'),
    unknown('VERIFY_CORN', 4, 'VERIFY_CRON'), unknown('SIGNUP_ALLOWED', 5, 'SIGNUPS_ALLOWED'), unknown('S3_BUKET', 6, 'S3_BUCKET'),
    unknown('BACKUP_PASSWD', 7, 'BACKUP_PASSWORD'),
    `signups_allowed (${SRC} line 8): keys are case-sensitive and Vaultwarden ignores signups_allowed; did you mean SIGNUPS_ALLOWED?`,
  ]);
  // They are still passed to Vaultwarden unchanged; the agent keeps its defaults.
  assert.equal(c.vaultwardenEnv.LOGLEVEL, 'debug');
  assert.equal(c.logLevel, 'info');
  assert.equal(c.stopGracePeriodMs, 300_000);
});

test('no real Vaultwarden key (nor a common variable) is flagged', () => {
  const skip = new Set(['DATA_FOLDER', 'DATABASE_URL', 'ENABLE_DB_WAL', 'DATABASE_CONN_INIT', 'LOG_LEVEL', 'ROCKET_PORT', 'ROCKET_ADDRESS']); // checked values
  const keys = [...VAULTWARDEN_KEYS].filter((k) => !skip.has(k));
  assert.ok(keys.length > 130, `${keys.length} keys`);
  const c = build(keys.map((k) => `${k}=1`).join('\n') + '\nHTTPS_PROXY=http://p:3128\nHTTP_PROXY=http://p:3128\nMY_OWN_SETTING=1\n');
  assert.deepEqual(c.warnings, []);
  for (const k of ['DOMAIN', 'ADMIN_TOKEN', 'SIGNUPS_ALLOWED', 'SMTP_HOST', 'SMTP_PASSWORD', 'PUSH_ENABLED', 'PUSH_INSTALLATION_KEY', 'WEB_VAULT_ENABLED', 'DUO_IKEY', 'DUO_SKEY']) {
    assert.equal(suggestKey(k), undefined, k);
    assert.ok(VAULTWARDEN_KEYS.has(k), k);
  }
});

test('an agent key in another case is an error: it would silently not apply', () => {
  const e = configError('s3_bucket=my-vault\n');
  assert.equal(e.key, 's3_bucket');
  assert.equal(e.message, `s3_bucket="my-vault" is not valid: keys are case-sensitive; did you mean S3_BUCKET? (${SRC} line 1)`);
  const secret = configError('A=1\nS3_Secret_Access_Key=hunter2-secret\n');
  assert.equal(secret.message, `S3_Secret_Access_Key="<hidden>" is not valid: keys are case-sensitive; did you mean S3_SECRET_ACCESS_KEY? (${SRC} line 2)`);
});

test('enum values are case-insensitive and normalised to lower case; LOG_LEVEL=warning is warn', () => {
  const c = build('NODE_ROLE=Secondary\nLOG_LEVEL=DEBUG\nLITESTREAM_PROFILE=Critical\nBACKUP_FORMAT=TAR\nDEPLOYMENT_MODE=Serverless\nTAILSCALE_SERVE_MODE=TLS-Terminated-TCP\n');
  assert.deepEqual([c.role, c.logLevel, c.litestream.profile, c.backup.format, c.deploymentMode, c.tailscale.serveMode], ['secondary', 'debug', 'critical', 'tar', 'serverless', 'tls-terminated-tcp']);
  assert.equal(c.litestream.snapshotIntervalMs, 3_600_000, 'the profile applies');
  assert.equal(build('LOG_LEVEL=warning').logLevel, 'warn');
  assert.equal(build('LOG_LEVEL=Warning').logLevel, 'warn');
  assert.equal(configError('NODE_ROLE=Leader').message, `NODE_ROLE="Leader" is not valid: expected one of primary, secondary (${SRC} line 1)`);
});

test('a duplicated key is a warning naming both lines; the last wins', () => {
  const c = build('NODE_ROLE=primary\nLOG_LEVEL=info\nNODE_ROLE=secondary\n');
  assert.equal(c.role, 'secondary');
  assert.deepEqual(c.warnings, [`NODE_ROLE is set twice in ${SRC} (lines 1 and 3); the last one (line 3) wins, as for systemd and bash: remove the others`]);
});

test('BACKUP_REMOTES: each remote must be defined (S3 remote, RCLONE_CONFIG_*_TYPE, rclone.conf); plain paths need none', () => {
  const base = 'BACKUP_ENABLED=true\nBACKUP_PASSWORD=pw-1234\nSTOP_GRACE_PERIOD=360\n';
  const e = configError(`${base}BACKUP_REMOTES=/srv/backups,offsite:vw\n`);
  assert.equal(e.key, 'BACKUP_REMOTES');
  assert.equal(e.message, `BACKUP_REMOTES="/srv/backups,offsite:vw" is not valid: rclone remote "offsite" is not defined: define it with RCLONE_CONFIG_OFFSITE_TYPE=… (and its other RCLONE_CONFIG_OFFSITE_* settings) in ${SRC} or as [offsite] in ${NO_CONF} (${SRC} line 4)`);
  assert.match(configError(`${base}BACKUP_REMOTES=S3:vw\n`).message, /rclone remote "S3" is not defined/, 'no S3 remote without S3_BUCKET');
  assert.match(configError(`${S3}${base}BACKUP_REMOTES=offsite:vw\n`).message, /, or use the S3 remote S3:$|, or use the S3 remote S3: \(/);
  // Defined ones.
  assert.deepEqual(build(`${S3}${base}BACKUP_REMOTES=S3:archives,s3:x\n`).backup.remotes, ['S3:archives', 's3:x']);
  assert.deepEqual(build(`${S3}RCLONE_REMOTE_NAME=store\n${base}BACKUP_REMOTES=store:a\n`).backup.remotes, ['store:a']);
  assert.deepEqual(build(`${base}BACKUP_REMOTES=offsite:vw,my-nas:b\nRCLONE_CONFIG_OFFSITE_TYPE=local\nRCLONE_CONFIG_MY_NAS_TYPE=sftp\n`).backup.remotes, ['offsite:vw', 'my-nas:b']);
  assert.deepEqual(build(`${base}BACKUP_REMOTES=/srv/backups\n`).backup.remotes, ['/srv/backups']);
  const conf = join(dir, 'rclone.conf');
  writeFileSync(conf, '[b2-vault]\ntype = b2\naccount = x\n\n [crypted] \ntype = crypt\n');
  assert.deepEqual(build(`${base}BACKUP_REMOTES=b2-vault:bucket,crypted:\n`, conf).backup.remotes, ['b2-vault:bucket', 'crypted:']);
  assert.match(configError(`${base}BACKUP_REMOTES=b2vault:bucket\n`, conf).message, /rclone remote "b2vault" is not defined/);
  // Defined only in root's own rclone.conf: the units cannot read it (ProtectHome=yes); said why.
  assert.throws(() => build(`${base}BACKUP_REMOTES=b2-vault:bucket\n`, NO_CONF, conf), (err: unknown) => err instanceof ConfigError
    && err.message.includes(`rclone remote "b2-vault" is not defined (it is in ${conf}, which the agent's units cannot read: they run with ProtectHome=yes): define it with RCLONE_CONFIG_B2_VAULT_TYPE=…`));
  // RCLONE_CONFIG in the env file names the file; under a home directory it is a warning.
  const viaEnv = (text: string) => buildConfig(parseEnvFile(text, SRC), SRC, { dataFolder: '/var/lib/vaultwarden', rootRcloneConfigPath: NO_CONF });
  assert.deepEqual(viaEnv(`${base}BACKUP_REMOTES=b2-vault:bucket\nRCLONE_CONFIG=${conf}\n`).rcloneEnv, { RCLONE_CONFIG: conf });
  assert.deepEqual(viaEnv(`${base}BACKUP_REMOTES=/srv/b,x:y\nRCLONE_CONFIG_X_TYPE=local\nRCLONE_CONFIG=/root/rc.conf\n`).warnings,
    ['RCLONE_CONFIG=/root/rc.conf is under a home directory, which the agent\'s units cannot read (ProtectHome=yes): move it to /etc/vwstream/rclone.conf']);
  // An unreadable rclone.conf: remotes not checked, said so.
  const unreadable = join(dir, 'conf-dir');
  mkdirSync(unreadable);
  const c = build(`${base}BACKUP_REMOTES=elsewhere:x\n`, unreadable);
  assert.deepEqual(c.warnings, [`${unreadable} cannot be read: BACKUP_REMOTES remotes defined there were not checked`]);
});

test('a cron that never fires is an error; a # weekday keeps its real reason', () => {
  const never = configError('BACKUP_CRON=0 0 31 4 *\n');
  assert.equal(never.message, `BACKUP_CRON="0 0 31 4 *" is not valid: never fires: no date matches its day-of-month and month (e.g. 31 April, 30 February) (${SRC} line 1)`);
  assert.equal(configError('VERIFY_CRON=0 0 30 2 *\n').key, 'VERIFY_CRON');
  assert.equal(build('BACKUP_CRON=0 0 29 2 *\n').backup.cron, '0 0 29 2 *', 'leap days fire');
  const nth = configError('BACKUP_CRON=0 3 * * 1#2\n');
  assert.match(nth.message, /^BACKUP_CRON="0 3 \* \* 1#2" is not valid: day-of-week "1#2" cannot be expressed exactly by a systemd timer/);
  assert.match(configError('VERIFY_CRON=0 3 * *\n').message, /expected a 5-field cron expression/);
});

test('durations out of range say the bound they break', () => {
  assert.equal(configError('LEASE_TTL=601').message, `LEASE_TTL="601" is not valid: expected at most 600s (601 is 601s) (${SRC} line 1)`);
  assert.equal(configError('LEASE_TTL=1').message, `LEASE_TTL="1" is not valid: expected at least 5s (1 is 1s) (${SRC} line 1)`);
  assert.equal(configError('STOP_GRACE_PERIOD=2h').message, `STOP_GRACE_PERIOD="2h" is not valid: expected at most 3600s (2h is 7200s) (${SRC} line 1)`);
  assert.equal(configError('PRIMARY_SYNC_INTERVAL=500ms').message, `PRIMARY_SYNC_INTERVAL="500ms" is not valid: expected at least 1s (500ms is 0.5s) (${SRC} line 1)`);
  assert.equal(configError('LEASE_TTL=soon').message, `LEASE_TTL="soon" is not valid: expected a duration: seconds (e.g. 300) or with units (500ms, 30s, 5m, 1h), at least 5s, at most 600s (${SRC} line 1)`);
});

test('a snapshot interval longer than the retention is an error naming LITESTREAM_SNAPSHOT_INTERVAL', () => {
  const own = configError('LITESTREAM_PROFILE=relaxed\nLITESTREAM_SNAPSHOT_INTERVAL=100h\n');
  assert.equal(own.message, `LITESTREAM_SNAPSHOT_INTERVAL="100h" is not valid: the snapshot interval (100h) is longer than the retention of LITESTREAM_PROFILE=relaxed (72h): some of the time no snapshot would be kept to restore from; make it at most 72h (${SRC} line 2)`);
  const profile = configError('LITESTREAM_RETENTION=2h\n');
  assert.equal(profile.key, 'LITESTREAM_SNAPSHOT_INTERVAL');
  assert.equal(profile.message, `LITESTREAM_SNAPSHOT_INTERVAL="6h" is not valid: the snapshot interval (6h) is longer than LITESTREAM_RETENTION=2h: some of the time no snapshot would be kept to restore from; make it at most 2h (${SRC} line 1)`);
  assert.equal(build('LITESTREAM_PROFILE=relaxed\nLITESTREAM_SNAPSHOT_INTERVAL=72h\n').litestream.snapshotIntervalMs, 72 * 3_600_000, 'equal is fine');
});

test('warnings: backups without a password, an auth key without Tailscale, a stop grace period too short', () => {
  const c = build('BACKUP_ENABLED=true\nBACKUP_REMOTES=/srv/b\nTAILSCALE_AUTHKEY=tskey-auth-123456\n');
  assert.deepEqual(c.warnings, [
    `BACKUP_ENABLED=true without BACKUP_PASSWORD: the archives hold rsa_key.pem and config.json unencrypted; set BACKUP_PASSWORD in ${SRC}`,
    `TAILSCALE_AUTHKEY is set (${SRC} line 3) but TAILSCALE_ENABLED is not true: Tailscale is not used; set TAILSCALE_ENABLED=true or remove the key`,
  ]);
  // The defaults with backups enabled fit (a backup gets its 90 s, a third of 300 s at most).
  assert.deepEqual(build('BACKUP_ENABLED=true\nBACKUP_REMOTES=/srv/b\nBACKUP_PASSWORD=pw-1234\n').warnings, []);
  // BACKUP_SHUTDOWN_TIMEOUT=120 (the old default) is cut to a third of 300 s: said, with what each step gets.
  assert.deepEqual(build('BACKUP_ENABLED=true\nBACKUP_REMOTES=/srv/b\nBACKUP_PASSWORD=pw-1234\nBACKUP_SHUTDOWN_TIMEOUT=120\n').warnings, [
    "STOP_GRACE_PERIOD=300s is less than the steps need (300s + 10s margin, and a backup may take at most a third): Vaultwarden stop 60s, Litestream final sync 60s, file upload 60s, backup 100s of the 120s asked; set STOP_GRACE_PERIOD=360 or lower the steps' timeouts (LITESTREAM_SHUTDOWN_TIMEOUT, SYNC_SHUTDOWN_TIMEOUT, BACKUP_SHUTDOWN_TIMEOUT)",
  ]);
  assert.deepEqual(build('BACKUP_ENABLED=true\nBACKUP_REMOTES=/srv/b\nBACKUP_PASSWORD=pw-1234\nBACKUP_SHUTDOWN_TIMEOUT=120\nSTOP_GRACE_PERIOD=360\n').warnings, [], 'the suggested value is enough');
  assert.deepEqual(build('STOP_GRACE_PERIOD=60').warnings, ["STOP_GRACE_PERIOD=60s is less than the steps need (180s + 10s margin): Vaultwarden stop 10s of the 60s it may need, Litestream final sync 20s of the 60s asked, file upload 20s of the 60s asked; set STOP_GRACE_PERIOD=190 or lower the steps' timeouts (LITESTREAM_SHUTDOWN_TIMEOUT, SYNC_SHUTDOWN_TIMEOUT)"]);
  assert.deepEqual(build('STOP_GRACE_PERIOD=190').warnings, []);
  assert.deepEqual(build('').warnings, [], 'the defaults fit');
});

test('VAULTWARDEN_BIN missing or not executable: a ConfigError naming it (injected access check)', () => {
  const cfg = build('VAULTWARDEN_BIN=/opt/vw/vaultwarden\n');
  const enoent = () => { throw Object.assign(new Error('x'), { code: 'ENOENT' }); };
  const eacces = () => { throw Object.assign(new Error('x'), { code: 'EACCES' }); };
  assert.throws(() => checkVaultwardenBin(cfg, enoent), (e: unknown) => e instanceof ConfigError && e.key === 'VAULTWARDEN_BIN'
    && e.message === `VAULTWARDEN_BIN="/opt/vw/vaultwarden" is not valid: no Vaultwarden binary there (file not found): install Vaultwarden at /opt/vw/vaultwarden or set VAULTWARDEN_BIN in ${SRC}`);
  assert.throws(() => checkVaultwardenBin(cfg, eacces), /VAULTWARDEN_BIN="\/opt\/vw\/vaultwarden" is not valid: the file is not executable \(EACCES\)/);
  let asked: [string, number] | undefined;
  assert.doesNotThrow(() => checkVaultwardenBin(cfg, (p, m) => { asked = [p, m]; }));
  assert.deepEqual(asked, ['/opt/vw/vaultwarden', 1]);
  assert.equal(vaultwardenBinProblem('/bin/sh'), undefined, 'the real check: /bin/sh is executable');
  assert.match(vaultwardenBinProblem(join(dir, 'none'))!, /file not found/);
  const plain = join(dir, 'plain');
  writeFileSync(plain, '', { mode: 0o644 });
  assert.match(vaultwardenBinProblem(plain)!, /not executable/, 'no x bit (root too needs one for X_OK)');
});

test('replicaMissingWarning: only a secondary without a replica', () => {
  assert.equal(replicaMissingWarning(build('NODE_ROLE=secondary\n' + S3 + 'S3_PREFIX=prod'), false),
    'NODE_ROLE=secondary but the replica s3://vault-bucket/prod/db does not exist yet: there is nothing to restore or follow; check that S3_BUCKET and S3_PREFIX (or LOCAL_REPLICA_PATH) match the primary\'s, or start the primary first');
  assert.equal(replicaMissingWarning(build('NODE_ROLE=secondary'), true), undefined);
  assert.equal(replicaMissingWarning(build('NODE_ROLE=primary'), false), undefined);
});

test('secrets: a miscased secret key is collected for scrubbing; a DATABASE_URL password is never shown', () => {
  const c = buildConfig(parseEnvFile('admin_token=tok-123456789\n', SRC), SRC, { dataFolder: '/var/lib/vaultwarden', rcloneConfigPath: NO_CONF, rootRcloneConfigPath: NO_CONF });
  assert.ok(c.secrets.includes('tok-123456789'), 'admin_token is a token whatever its case');
  const e = configError('DATABASE_URL=mysql://vw:dbpass99@db/vw\n');
  assert.equal(e.key, 'DATABASE_URL');
  assert.ok(!e.message.includes('dbpass99'), e.message);
  assert.match(e.message, /^DATABASE_URL="mysql:\/\/vw:<hidden>@db\/vw" is not valid/);
});
