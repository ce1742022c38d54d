/**
 * Issue 6 end to end: scheduled, encrypted, multi-destination backups from the package on
 * a Debian 12 host; stock openssl decrypts; retention keeps the newest; a failing
 * destination fails the run and pings /fail; the timer is visible.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { freePort, startS3, type S3Server } from './harness.ts';
import { agentHost, startAgent, unitProp, waitServing, writeEnv, type AgentHost } from './common.ts';

const PASSWORD = 'backup-pass-$ecret-7f3e';
const hosts: AgentHost[] = [];
let s3: S3Server;
let pings: string[] = [];
let server: Server;
let notifyUrl = '';
let archive = '';
let attachmentSha = '';

before(async () => {
  s3 = await startS3();
  await s3.createBucket('vault-bk');
  await s3.createBucket('vault-backups');
  const port = await freePort();
  server = createServer((req, res) => { pings.push(req.url ?? ''); req.resume(); res.end('ok'); });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  notifyUrl = `http://127.0.0.1:${port}/ping/abc`;
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  server?.close();
  await s3?.stop();
});

test('backup: encrypted archive on two destinations, openssl decrypts it, retention, timer, notification', async () => {
  const env = {
    S3_BUCKET: 'vault-bk', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'bk-secret-99aa', S3_PREFIX: 'vw', LEASE_TTL: '10',
    BACKUP_ENABLED: 'true', BACKUP_CRON: '30 2 * * *', BACKUP_PASSWORD: PASSWORD,
    BACKUP_REMOTES: 'LOCALBK:/var/backups/vw,S3:vault-backups/archives', BACKUP_RETENTION_DAYS: '30', BACKUP_MIN_KEEP: '3',
    RCLONE_CONFIG_LOCALBK_TYPE: 'local', NOTIFICATION_URL: notifyUrl,
  };
  const a = await agentHost('vws-bk-a', env);
  hosts.push(a);
  await startAgent(a.host);
  await waitServing(a.host);
  const timers = (await a.host.exec(['systemctl', 'list-timers', '--all', 'vwstream-backup.timer'])).stdout;
  assert.match(timers, /vwstream-backup\.timer/);
  assert.match((await a.host.exec(['systemctl', 'show', '-P', 'TimersCalendar', 'vwstream-backup.timer'])).stdout, /02:30:00/);

  await a.vw.addUsers(30);
  const sha = await a.vw.addAttachment('doc.pdf', 20_000);
  // Five old archives from earlier runs, and a file that is not ours: retention must keep
  // the 3 newest in all and never touch the foreign file.
  await a.host.sh('mkdir -p /var/backups/vw && cd /var/backups/vw && for d in 20250101 20250201 20250301 20250401 20250501; do echo old > vaultwarden-$d-030000.tar.gz.enc; done && echo mine > notes.txt');
  pings = [];
  const r = await a.host.exec(['systemctl', 'start', 'vwstream-backup.service'], { timeoutMs: 300_000 });
  assert.equal(r.exitCode, 0);
  const listing = (await a.host.sh('ls /var/backups/vw')).stdout.split('\n').sort();
  const fresh = listing.find((n) => /^vaultwarden-\d{8}-\d{6}\.tar\.gz\.enc$/.test(n) && !n.startsWith('vaultwarden-2025'))!;
  assert.ok(fresh, listing.join(' '));
  archive = fresh;
  attachmentSha = sha;
  assert.deepEqual(listing.filter((n) => n !== fresh), ['notes.txt', 'vaultwarden-20250401-030000.tar.gz.enc', 'vaultwarden-20250501-030000.tar.gz.enc']);
  assert.deepEqual(pings, ['/ping/abc']);

  // Stock openssl (password from a 0600 file, never argv) decrypts; tar extracts the data.
  await a.host.writeFile('/root/pw', PASSWORD, 0o600);
  await a.host.sh(`mkdir -p /tmp/x && cd /tmp/x && openssl enc -d -aes-256-cbc -pbkdf2 -pass file:/root/pw -in /var/backups/vw/${fresh} | tar xz`);
  assert.equal((await a.host.exec(['sqlite3', '/tmp/x/db.sqlite3', 'select count(*) from users'])).stdout, '30');
  assert.equal((await a.host.exec(['sqlite3', '/tmp/x/db.sqlite3', 'pragma integrity_check'])).stdout, 'ok');
  assert.ok((await a.host.sh('find /tmp/x/attachments -type f -exec sha256sum {} +')).stdout.includes(sha));
  // The RSA key is in it, byte for byte (a restore with another key logs every user out).
  assert.equal((await a.host.sh('sha256sum < /tmp/x/rsa_key.pem')).stdout, (await a.host.sh('sha256sum < /var/lib/vaultwarden/rsa_key.pem')).stdout);
  // The S3 destination got the same archive.
  const s3list = await fetch(`${s3.endpoint}/vault-backups?list-type=2&prefix=archives/`).then((x) => x.text());
  assert.ok(s3list.includes(`archives/${fresh}`), s3list);
  // The password never reached the journal.
  assert.ok(!(await a.host.journal(['-o', 'cat'])).includes(PASSWORD));
  // status shows the schedule and the last run.
  const st = JSON.parse((await a.host.exec(['vwstream-agent', 'status', '--json'])).stdout);
  assert.equal(st.backup.last.ok, true);
  assert.match(st.backup.nextRun, /T\d\d:30:00/);

  // A destination that fails makes the run fail, names it, pings /fail; the good one still gets it.
  await a.host.sh(`sed -i 's#^BACKUP_REMOTES=.*#BACKUP_REMOTES=LOCALBK:/var/backups/vw,DEAD:bucket/x#' /etc/vwstream/vwstream.env && printf 'RCLONE_CONFIG_DEAD_TYPE=s3\\nRCLONE_CONFIG_DEAD_PROVIDER=Other\\nRCLONE_CONFIG_DEAD_ENDPOINT=http://127.0.0.1:9\\nRCLONE_CONFIG_DEAD_ACCESS_KEY_ID=x\\nRCLONE_CONFIG_DEAD_SECRET_ACCESS_KEY=y\\n' >> /etc/vwstream/vwstream.env`);
  pings = [];
  const bad = await a.host.exec(['vwstream-agent', 'backup'], { check: false, timeoutMs: 300_000 });
  assert.equal(bad.exitCode, 1);
  assert.match(bad.stderr, /FAILED: 1 of 2 destinations failed: DEAD:bucket\/x/);
  assert.deepEqual(pings, ['/ping/abc/fail']);
});

test('restore --backup from the S3 destination on a fresh host: refused over data without --force, then 30 rows and the attachment', async () => {
  const b = await agentHost('vws-bk-b', {
    S3_BUCKET: 'vault-bk', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'bk-secret-99aa', S3_PREFIX: 'vw-b', LEASE_TTL: '10',
    BACKUP_PASSWORD: PASSWORD,
  });
  hosts.push(b);
  await startAgent(b.host);
  await b.vw.addUsers(2); // local data that must not be replaced silently
  await b.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
  const src = `S3:vault-backups/archives/${archive}`;
  const refused = await b.host.exec(['vwstream-agent', 'restore', '--backup', src], { check: false, timeoutMs: 120_000 });
  assert.equal(refused.exitCode, 1);
  assert.match(refused.stderr, /holds 2 users; refusing to replace it without --force/);
  const ok = await b.host.exec(['vwstream-agent', 'restore', '--backup', src, '--force'], { timeoutMs: 300_000 });
  assert.match(ok.stdout, /\(30 users, \d+ ms\)/);
  assert.match(ok.stdout, /the previous data is kept at \/var\/lib\/vwstream\/aside\//);
  await startAgent(b.host, 'start');
  const st = await waitServing(b.host);
  assert.equal(st.restore.action, 'keep'); // the operator's restore is kept and replicated, not refused
  assert.equal((await b.vw.counts()).users, 30);
  assert.ok((await b.host.sh('find /var/lib/vaultwarden/attachments -type f -exec sha256sum {} +')).stdout.includes(attachmentSha));
  assert.equal((await b.host.exec(['stat', '-c', '%U', '/var/lib/vaultwarden/db.sqlite3'])).stdout, 'vaultwarden');
});

/** Waits for the backup's first log line (the run is under way, not still loading). */
async function backupStarted(h: AgentHost, since: number): Promise<void> {
  for (let i = 0; i < 120; i++) {
    const j = await h.host.journal(['-o', 'cat', '--since', `@${since}`, '-u', 'vwstream-backup.service']);
    if (/"msg":"backup vaultwarden-\d{8}-\d{6}\.tar\.gz\.enc: started"/.test(j)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('the backup did not start within 30 s');
}

test('BACKUP_ON_STARTUP runs one at start; at stop a running backup finishes first, within BACKUP_SHUTDOWN_TIMEOUT, then the drain', async () => {
  const env: Record<string, string> = {
    S3_BUCKET: 'vault-bk', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'bk-secret-99aa', S3_PREFIX: 'vw-c', LEASE_TTL: '10',
    BACKUP_ENABLED: 'true', BACKUP_CRON: '0 3 * * *', BACKUP_PASSWORD: PASSWORD, BACKUP_REMOTES: 'LOCALBK:/var/backups/vw',
    RCLONE_CONFIG_LOCALBK_TYPE: 'local', NOTIFICATION_URL: notifyUrl, STOP_GRACE_PERIOD: '240', BACKUP_SHUTDOWN_TIMEOUT: '60',
  };
  const c = await agentHost('vws-bk-c', env);
  hosts.push(c);
  await startAgent(c.host);
  await c.vw.addUsers(12);
  const sha = await c.vw.addAttachment('big.bin', 6 << 20); // random: the archive is ~6 MiB
  // A slow link (1 MiB/s): the startup backup takes several seconds and is still running
  // when the stop below begins.
  await writeEnv(c.host, { ...env, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(c.port), BACKUP_ON_STARTUP: 'true', RCLONE_FLAGS: '--bwlimit 1M' });
  const since = Math.floor(Date.now() / 1000);
  pings = [];
  await startAgent(c.host); // restart: drain, then start with the new settings
  assert.equal(await unitProp(c.host, 'vwstream-backup.service', 'ActiveState'), 'activating', 'the startup backup runs after READY');
  await backupStarted(c, since);
  const t = Date.now();
  await c.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 300_000 });
  const stopMs = Date.now() - t;
  const lines = (await c.host.journal(['-o', 'cat', '--since', `@${since}`, '-u', 'vwstream-agent.service', '-u', 'vwstream-backup.service'])).split('\n');
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  const started = at(/BACKUP_ON_STARTUP: backup started/);
  const finished = at(/"msg":"backup vaultwarden-\d{8}-\d{6}\.tar\.gz\.enc: \d+ bytes to 1 destinations/);
  const drain = lines.findIndex((l, i) => i > started && /"msg":"received SIGTERM: draining"/.test(l));
  const complete = lines.findLastIndex((l) => /"msg":"drain complete in \d+ ms"/.test(l));
  assert.ok(started >= 0 && finished > started && drain > finished && complete > drain,
    `expected startup backup → backup done → drain → drain complete:\n${lines.filter((l) => /backup|drain|BACKUP/.test(l)).join('\n')}`);
  assert.ok(stopMs < 60_000 + 60_000, `stop took ${stopMs} ms`);
  console.log(`# measured: stop with a backup running took ${stopMs} ms (backup finished first, then the drain)`);
  // The archive is whole: it decrypts and holds the attachment.
  const listing = (await c.host.sh('ls /var/backups/vw')).stdout.split('\n').filter(Boolean);
  assert.equal(listing.length, 1, listing.join(' '));
  await c.host.writeFile('/root/pw', PASSWORD, 0o600);
  await c.host.sh(`mkdir -p /tmp/c && cd /tmp/c && openssl enc -d -aes-256-cbc -pbkdf2 -pass file:/root/pw -in /var/backups/vw/${listing[0]} | tar xz`);
  assert.equal((await c.host.exec(['sqlite3', '/tmp/c/db.sqlite3', 'select count(*) from users'])).stdout, '12');
  assert.ok((await c.host.sh('find /tmp/c/attachments -type f -exec sha256sum {} +')).stdout.includes(sha));
  assert.deepEqual(pings, ['/ping/abc']);

  // A budget too small for the backup: it is abandoned cleanly (no partial archive, /fail),
  // and the drain still completes.
  await writeEnv(c.host, { ...env, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(c.port), BACKUP_SHUTDOWN_TIMEOUT: '8', RCLONE_FLAGS: '--bwlimit 256k' });
  await startAgent(c.host, 'start');
  await c.host.sh('rm -f /var/backups/vw/*');
  const since2 = Math.floor(Date.now() / 1000) + 1;
  await new Promise((r) => setTimeout(r, 1100));
  pings = [];
  await c.host.exec(['systemctl', 'start', '--no-block', 'vwstream-backup.service']);
  await backupStarted(c, since2);
  const t2 = Date.now();
  await c.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 300_000 });
  const stop2 = Date.now() - t2;
  const j2 = await c.host.journal(['-o', 'cat', '--since', `@${since2}`, '-u', 'vwstream-agent.service', '-u', 'vwstream-backup.service']);
  assert.match(j2, /backup failed: vaultwarden-\d{8}-\d{6}\.tar\.gz\.enc: abandoned: shutdown: BACKUP_SHUTDOWN_TIMEOUT reached/);
  assert.match(j2, /"msg":"drain complete in \d+ ms"/);
  assert.equal((await c.host.sh('ls -A /var/backups/vw')).stdout, '', 'no partial archive is left');
  assert.deepEqual(pings, ['/ping/abc/fail']);
  assert.equal(await unitProp(c.host, 'vwstream-backup.service', 'Result'), 'exit-code'); // it gave up itself, not SIGKILLed
  console.log(`# measured: stop with a backup over budget (BACKUP_SHUTDOWN_TIMEOUT=8) took ${stop2} ms`);
});

test('a bad BACKUP_CRON is a config error naming it', async () => {
  const a = hosts[0]!;
  await a.host.sh(`sed -i 's#^BACKUP_CRON=.*#BACKUP_CRON=0 0 ? * 1#' /etc/vwstream/vwstream.env`);
  const r = await a.host.exec(['vwstream-agent', 'check-config'], { check: false });
  assert.equal(r.exitCode, 78);
  assert.match(r.stderr, /^vwstream-agent: config error: BACKUP_CRON="0 0 \? \* 1" is not valid/);
});
