/**
 * Links planted in the data folder by Vaultwarden's user never make root read or write
 * outside it: a backup leaves `sends -> /etc/vwstream` and `attachments/x -> /etc/shadow`
 * out (one journal warning each, not a byte of either target in the archive), and
 * `restore --backup` refuses, changing nothing, while `attachments` is a link to a
 * root-owned folder; once the link is gone it restores, replacing a file-level link
 * without writing through it. Operator's order: install, configure, restart.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startS3, type S3Server } from './harness.ts';
import { agentHost, startAgent, waitServing, type AgentHost } from './common.ts';

const PASSWORD = 'links-backup-pass-5e1f';
const S3_SECRET = 'links-s3-secret-d41d8cd98f00';
const SHADOW_MARK = '$6$plantedlinktest$NotARealHashButUniqueEnoughToFindInAnArchive0123456789';
const hosts: AgentHost[] = [];
let s3: S3Server;
let archiveName = '';
let archiveBytes: Buffer;
let attachmentSha = '';
let rsaSha = '';

function env(prefix: string): Record<string, string> {
  return {
    S3_BUCKET: 'vault-links', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'links-key', S3_SECRET_ACCESS_KEY: S3_SECRET, S3_PREFIX: prefix, LEASE_TTL: '10',
    BACKUP_ENABLED: 'true', BACKUP_PASSWORD: PASSWORD, BACKUP_REMOTES: 'LOCALBK:/var/backups/vw', RCLONE_CONFIG_LOCALBK_TYPE: 'local',
  };
}

/** Owner, group, mode, and every entry with its owner, mode and content hash, of a folder tree. */
async function treeState(h: AgentHost, dir: string): Promise<string> {
  return (await h.host.sh(`cd ${dir} && stat -c '%n %u %g %a %F' . && find . -mindepth 1 | sort | while read -r f; do stat -c '%n %u %g %a %F' "$f"; [ -f "$f" ] && sha256sum < "$f"; done; true`)).stdout;
}

/** Owner, group, mode, type and content hash of one file. */
async function fileState(h: AgentHost, path: string): Promise<string> {
  return (await h.host.sh(`stat -c '%u %g %a %F' ${path} && sha256sum < ${path}`)).stdout;
}

before(async () => {
  s3 = await startS3();
  await s3.createBucket('vault-links');
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  await s3?.stop();
});

test('backup: links planted by the vaultwarden user are left out, one warning each; the archive holds no byte of their targets', async () => {
  const a = await agentHost('vws-links-a', env('links-a'));
  hosts.push(a);
  await startAgent(a.host);
  await waitServing(a.host);
  await a.vw.addUsers(5);
  attachmentSha = await a.vw.addAttachment('real.pdf', 30_000);
  rsaSha = (await a.host.sh('sha256sum < /var/lib/vaultwarden/rsa_key.pem')).stdout.split(' ')[0]!;
  // A distinctive line in the real /etc/shadow, to look for in the archive.
  await a.host.exec(['useradd', '-M', '-p', SHADOW_MARK, 'planted-mark']);
  const shadow = await a.host.readFile('/etc/shadow');
  const envFile = await a.host.readFile('/etc/vwstream/vwstream.env');
  assert.ok(shadow.includes(SHADOW_MARK) && envFile.includes(S3_SECRET));
  // What a compromised Vaultwarden can do in its own data folder.
  await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'sh', '-ec',
    'cd /var/lib/vaultwarden && rm -rf sends && ln -s /etc/vwstream sends && ln -s /etc/shadow attachments/x']);
  assert.equal((await a.host.exec(['stat', '-c', '%U %F', '/var/lib/vaultwarden/sends'])).stdout, 'vaultwarden symbolic link');

  const since = Math.floor(Date.now() / 1000);
  await new Promise((r) => setTimeout(r, 1100));
  const r = await a.host.exec(['systemctl', 'start', 'vwstream-backup.service'], { timeoutMs: 300_000, check: false });
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal((await a.host.exec(['systemctl', 'show', '-P', 'Result', 'vwstream-backup.service'])).stdout.trim(), 'success');
  archiveName = (await a.host.sh('ls /var/backups/vw')).stdout.trim();
  assert.match(archiveName, /^vaultwarden-\d{8}-\d{6}\.tar\.gz\.enc$/);

  await a.host.writeFile('/root/pw', PASSWORD, 0o600);
  await a.host.sh(`openssl enc -d -aes-256-cbc -pbkdf2 -pass file:/root/pw -in /var/backups/vw/${archiveName} | gunzip > /root/x.tar`);
  const tarBytes = readFileSync(join(a.host.dir, 'root/x.tar'));
  archiveBytes = readFileSync(join(a.host.dir, 'var/backups/vw', archiveName));
  // Not a byte of the link targets: neither file whole, nor their secrets.
  for (const [what, s] of [['the S3 secret', S3_SECRET], ['the backup password', PASSWORD], ['the shadow line', SHADOW_MARK], ['vwstream.env', envFile], ['/etc/shadow', shadow]] as const) {
    assert.equal(tarBytes.includes(Buffer.from(s)), false, `the archive holds ${what}`);
  }
  const listing = (await a.host.sh('tar -tf /root/x.tar')).stdout.split('\n').filter(Boolean).sort();
  assert.ok(!listing.some((n) => n.startsWith('sends') || n === 'attachments/x'), listing.join(' '));
  assert.ok(listing.includes('db.sqlite3') && listing.includes('rsa_key.pem'), listing.join(' '));
  // The real data is in it.
  await a.host.sh('mkdir -p /root/x && tar -xf /root/x.tar -C /root/x');
  assert.ok((await a.host.sh('find /root/x/attachments -type f -exec sha256sum {} +')).stdout.includes(attachmentSha));
  assert.equal((await a.host.exec(['sqlite3', '/root/x/db.sqlite3', 'select count(*) from users'])).stdout, '5');

  // One warning per link, naming it.
  const journal = (await a.host.journal(['-o', 'cat', '--since', `@${since}`, '-u', 'vwstream-backup.service'])).split('\n');
  const warned = journal.filter((l) => /backup: left out .*: a symbolic link in the data folder \(not followed\)/.test(l));
  assert.equal(warned.filter((l) => l.includes('"msg":"backup: left out sends: a symbolic link')).length, 1, warned.join('\n'));
  assert.equal(warned.filter((l) => l.includes('"msg":"backup: left out attachments/x: a symbolic link')).length, 1, warned.join('\n'));
  assert.equal(warned.length, 2, warned.join('\n'));
  assert.ok(warned.every((l) => JSON.parse(l).level === 'warn'));
  console.log(`# measured: archive ${archiveBytes.length} bytes, ${listing.length} entries; 2 links left out, 2 warnings`);
});

test('restore --backup: refused while attachments is a link to a root-owned folder (nothing written or chowned there); restored once it is gone', async () => {
  assert.ok(archiveName, 'needs the archive of the first test');
  const b = await agentHost('vws-links-b', env('links-b'));
  hosts.push(b);
  await startAgent(b.host);
  await waitServing(b.host);
  await b.vw.addUsers(2);
  await b.host.sh('mkdir -p /var/backups/vw');
  await b.host.copyIn(join(hosts[0]!.host.dir, 'var/backups/vw', archiveName), `/var/backups/vw/${archiveName}`, 0o600);
  // A root-owned folder the vaultwarden user can only point at.
  await b.host.sh('mkdir -m 0755 /srv/rootdir && echo root-data > /srv/rootdir/keep && chmod 0644 /srv/rootdir/keep');
  await b.host.exec(['runuser', '-u', 'vaultwarden', '--', 'sh', '-ec', 'cd /var/lib/vaultwarden && rm -rf attachments && ln -s /srv/rootdir attachments']);
  const rootBefore = await treeState(b, '/srv/rootdir');
  const shadowBefore = await fileState(b, '/etc/shadow');
  const asideBefore = (await b.host.sh('ls -A /var/lib/vwstream/aside 2>/dev/null; true')).stdout;

  const src = `/var/backups/vw/${archiveName}`;
  const refused = await b.host.exec(['vwstream-agent', 'restore', '--backup', src, '--force'], { check: false, timeoutMs: 300_000 });
  assert.equal(refused.exitCode, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /restore refused: \/var\/lib\/vaultwarden\/attachments: is a symbolic link; refusing to follow or write through it; nothing was changed/);
  assert.match(refused.stderr, /bind mount, not a symlink/);
  // Nothing changed, so the previous vault is served again at once.
  assert.match(refused.stdout, /nothing was changed: vwstream-agent serves the previous data again/);
  assert.equal((await b.host.exec(['systemctl', 'is-active', 'vwstream-agent.service'], { check: false })).stdout.trim(), 'active');
  await waitServing(b.host);
  assert.equal((await b.vw.counts()).users, 2);
  assert.equal(await treeState(b, '/srv/rootdir'), rootBefore);
  assert.equal((await b.host.sh('ls -A /var/lib/vwstream/aside 2>/dev/null; true')).stdout, asideBefore);
  assert.equal((await b.host.exec(['readlink', '/var/lib/vaultwarden/attachments'])).stdout, '/srv/rootdir');

  // The operator removes the link; a file-level link is left for the restore to replace.
  await b.host.exec(['rm', '/var/lib/vaultwarden/attachments']);
  await b.host.exec(['runuser', '-u', 'vaultwarden', '--', 'ln', '-sf', '/etc/shadow', '/var/lib/vaultwarden/rsa_key.pem']);
  const ok = await b.host.exec(['vwstream-agent', 'restore', '--backup', src, '--force'], { timeoutMs: 300_000 });
  assert.match(ok.stdout, /\(5 users, \d+ ms\)/);
  assert.equal(await treeState(b, '/srv/rootdir'), rootBefore);
  assert.equal(await fileState(b, '/etc/shadow'), shadowBefore);
  assert.equal((await b.host.exec(['stat', '-c', '%U %G %a %F', '/var/lib/vaultwarden/rsa_key.pem'])).stdout, 'vaultwarden vaultwarden 600 regular file');
  assert.equal((await b.host.sh('sha256sum < /var/lib/vaultwarden/rsa_key.pem')).stdout.split(' ')[0], rsaSha);
  assert.equal((await b.host.exec(['stat', '-c', '%U %F', '/var/lib/vaultwarden/attachments'])).stdout, 'vaultwarden directory');
  assert.ok((await b.host.sh('find /var/lib/vaultwarden/attachments -type f -exec sha256sum {} +')).stdout.includes(attachmentSha));
  assert.equal((await b.host.sh('find /var/lib/vaultwarden/attachments /var/lib/vaultwarden/sends ! -user vaultwarden 2>/dev/null | wc -l')).stdout, '0');
  // The replaced link is kept aside as the link.
  assert.match((await b.host.sh('find /var/lib/vwstream/aside -name rsa_key.pem -type l -exec readlink {} +')).stdout, /^\/etc\/shadow$/m);
  await startAgent(b.host, 'start');
  await waitServing(b.host);
  assert.equal((await b.vw.counts()).users, 5);
});
