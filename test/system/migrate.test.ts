/**
 * Issue 13, items 6 and 8: upgrading a zero-config host from release 0.1.0, whose
 * default directory replica is /var/lib/vwstream/replica and whose Litestream runs as
 * vaultwarden, to this package (installed by apt over it, as an operator upgrades):
 * - the upgrade drains, moves the replica to /var/backups/vwstream/replica and says so;
 * - Litestream then runs as vwstream-litestream, which owns every file of the replica and
 *   of .db.sqlite3-litestream/, and it goes on replicating the same vault;
 * - nothing is stranded: with the vault wiped, the next start restores every row written
 *   before and after the upgrade, and the attachment, from the moved replica.
 * VWS_OLD_DEB: the 0.1.0 package; without it the test builds it from git (ref OLD_REF).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { bootHost, freePort, installPackage, installStandin, standin, type Host } from './harness.ts';
import { debPath, startAgent, statusJson, userUuids, waitDbSynced, waitServing, writeEnv } from './common.ts';

const REPO = new URL('../..', import.meta.url).pathname;
/** The last commit with the 0.1.0 layout (before issue 13's packaging changes). */
const OLD_REF = '0c28d44';
const hosts: Host[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pa-migrate-'));
after(async () => {
  for (const h of hosts) await h.destroy().catch(() => undefined);
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function oldDeb(): Promise<string> {
  if (process.env.VWS_OLD_DEB) return process.env.VWS_OLD_DEB;
  const src = path.join(tmp, 'old-src');
  fs.mkdirSync(src);
  await execa('sh', ['-c', `git -C "${REPO}" archive ${OLD_REF} | tar -x -C "${src}"`]);
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(src, 'node_modules'));
  await execa('packaging/build-deb.sh', [], { cwd: src, env: { DEB_COMPRESS: '-Zgzip -z1' } });
  return path.join(src, 'dist', 'vwstream-agent_0.1.0_amd64.deb');
}

/** This package repacked with a version above 0.1.0: what the upgrade installs. */
async function newerDeb(deb: string): Promise<string> {
  const dir = path.join(tmp, 'pkg');
  await execa('dpkg-deb', ['-R', deb, dir]);
  const control = fs.readFileSync(path.join(dir, 'DEBIAN', 'control'), 'utf8');
  const version = `${/^Version: (.+)$/m.exec(control)![1]!}+layout1`;
  fs.writeFileSync(path.join(dir, 'DEBIAN', 'control'), control.replace(/^Version: .+$/m, `Version: ${version}`));
  const file = path.join(tmp, `vwstream-agent_${version}_amd64.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', dir, file]);
  fs.rmSync(dir, { recursive: true, force: true });
  return file;
}

const OLD = '/var/lib/vwstream/replica';
const NEW = '/var/backups/vwstream/replica';
const META = '/var/lib/vaultwarden/.db.sqlite3-litestream';

test('an upgrade from 0.1.0 moves the default replica, hands it to vwstream-litestream, and strands nothing', async () => {
  const [old, newer] = await Promise.all([oldDeb(), newerDeb(debPath())]);
  const host = await bootHost('mig-a');
  hosts.push(host);
  await installPackage(host, old);
  await installStandin(host);
  const port = await freePort();
  await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(port) });
  await startAgent(host);
  const vw = standin(host, port);
  const before = await vw.addUsers(20);
  const attSha = await vw.addAttachment('layout.bin', 30_000);
  await waitDbSynced(host, Date.now());
  assert.equal((await statusJson(host)).replica, `file://${OLD}`, 'the 0.1.0 default');
  assert.equal((await host.exec(['stat', '-c', '%U', `${OLD}/db`])).stdout, 'vaultwarden', '0.1.0: Litestream writes as vaultwarden');
  const oldFiles = Number((await host.sh(`find ${OLD} -type f | wc -l`)).stdout);

  await host.copyIn(newer, '/tmp/newer.deb', 0o644);
  // The shipped config's commented default changed (LOCAL_REPLICA_PATH): dpkg asks about
  // a modified config; the operator keeps theirs (the prompt's default; --force-confold
  // is that answer without a terminal, as the Ansible role's apt module gives it).
  const conf = await host.readFile('/etc/vwstream/vwstream.env');
  const up = await host.exec(['apt-get', 'install', '-y', '--no-install-recommends', '-o', 'Dpkg::Options::=--force-confold', '/tmp/newer.deb'], { env: { DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: 600_000 });
  assert.equal(await host.readFile('/etc/vwstream/vwstream.env'), conf, 'the operator\'s config is kept');
  assert.match(up.stdout + up.stderr, new RegExp(`moved the directory replica from ${OLD} to ${NEW}`));
  const s = await waitServing(host);
  assert.equal(s.replica, `file://${NEW}`);
  assert.notEqual((await host.exec(['test', '-e', OLD], { check: false })).exitCode, 0, `${OLD} is left`);
  assert.equal(Number((await host.sh(`find ${NEW} -type f | wc -l`)).stdout) >= oldFiles, true, 'every replica file moved');
  // Litestream's files are its user's (files/ and the lease are the agent's, written as
  // root since), and Vaultwarden's user cannot reach into the replica any more.
  assert.equal((await host.sh(`find ${NEW}/db ${META} ! -user vwstream-litestream`)).stdout, '', 'Litestream files not handed to vwstream-litestream');
  assert.equal((await host.exec(['stat', '-c', '%a %U', NEW])).stdout, '700 vwstream-litestream');
  const peek = await host.exec(['runuser', '-u', 'vaultwarden', '--', 'ls', `${NEW}/db`], { check: false });
  assert.match(peek.stderr, /Permission denied/, 'vaultwarden reads the replica');
  const lsPid = (await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-litestream.service'])).stdout;
  const uid = /^Uid:\s+(\d+)/m.exec(await host.readFile(`/proc/${lsPid}/status`))?.[1];
  assert.equal(uid, (await host.exec(['id', '-u', 'vwstream-litestream'])).stdout);
  assert.equal((await host.exec(['stat', '-c', '%a %U', '/run/vwstream/litestream.yml'])).stdout, '600 vwstream-litestream');
  const journal = (await host.exec(['journalctl', '-u', 'vwstream-agent.service', '-o', 'cat', '-n', '300'])).stdout;
  assert.match(journal, new RegExp(`handed the directory replica ${NEW} to vwstream-litestream`));

  // Litestream goes on replicating, into the moved replica, as its own user.
  const after = await vw.addUsers(10);
  await waitDbSynced(host, Date.now());
  const lsJournal = (await host.exec(['journalctl', '-u', 'vwstream-litestream.service', '-o', 'cat', '--since', '-2min'])).stdout;
  assert.doesNotMatch(lsJournal, /permission denied|readonly database/i);

  // Nothing stranded: a wiped vault comes back from the moved replica.
  await host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 180_000 });
  await host.sh('rm -rf /var/lib/vaultwarden/* /var/lib/vaultwarden/.db.sqlite3-litestream');
  await startAgent(host);
  const s2 = await waitServing(host);
  assert.equal(s2.restore.action, 'restore', JSON.stringify(s2.restore));
  const present = await userUuids(host);
  assert.deepEqual([...before, ...after].filter((u) => !present.has(u)), [], 'rows missing after the restore from the moved replica');
  assert.ok((await host.sh('find /var/lib/vaultwarden/attachments -type f -exec sha256sum {} +')).stdout.includes(attSha), 'attachment restored');
  console.log(`# measured: 0.1.0 → this package: ${oldFiles} replica files moved from ${OLD} to ${NEW} and handed to vwstream-litestream; ${after.length} rows replicated after the upgrade; a wiped vault restored ${present.size} rows (${before.length + after.length} written) and the attachment`);
});
