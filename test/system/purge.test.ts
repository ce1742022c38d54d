/**
 * Issue 13, item 6: `apt purge` keeps the data. On a Debian 12 host with the .deb
 * installed by apt and the embedded default replica (zero config):
 * - the default directory replica is /var/backups/vwstream/replica, owned by
 *   vwstream-litestream, 0700;
 * - a corrupted local database is set aside (a real aside/ entry) and restored;
 * - after `apt-get purge` the replica and aside/ are there byte for byte (sha256 of every
 *   file), agent state, config and /run/vwstream are gone, and purge said where the data is;
 * - with the vault wiped as well, a reinstall restores it from the kept replica: every
 *   row and the attachment.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { installPackage } from './harness.ts';
import { agentHost, debPath, startAgent, statusJson, userUuids, waitDbSynced, waitServing, writeEnv, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

const REPLICA = '/var/backups/vwstream/replica';
const ASIDE = '/var/lib/vwstream/aside';

test('purge keeps the directory replica and aside/ byte for byte and says where; a reinstall restores from it', async () => {
  const a = await agentHost('purge-a', {});
  hosts.push(a);
  const { host } = a;
  await startAgent(host);
  const s0 = await statusJson(host);
  assert.equal(s0.replica, `file://${REPLICA}`);
  assert.equal((await host.exec(['stat', '-c', '%a %U', REPLICA])).stdout, '700 vwstream-litestream');
  const rows = await a.vw.addUsers(25);
  const attSha = await a.vw.addAttachment('kept.bin', 40_000);
  await waitDbSynced(host, Date.now());

  // A real aside/ entry: the agent sets a corrupted local database aside and restores.
  await host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 180_000 });
  await host.exec(['sqlite3', '/var/lib/vaultwarden/db.sqlite3', 'PRAGMA wal_checkpoint(TRUNCATE);']);
  await host.sh('dd if=/dev/urandom of=/var/lib/vaultwarden/db.sqlite3 bs=4096 count=2 conv=notrunc status=none');
  await startAgent(host);
  const s1 = await waitServing(host);
  assert.equal(s1.restore.action, 'restore', JSON.stringify(s1.restore));
  const more = await a.vw.addUsers(5);
  await waitDbSynced(host, Date.now());
  await host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 180_000 });

  const fingerprint = async () => (await host.sh(`find ${REPLICA} ${ASIDE} -type f -print0 | sort -z | xargs -0 sha256sum`)).stdout;
  const owners = async () => (await host.sh(`find ${REPLICA} ${ASIDE} -printf '%m %u:%g %p\\n' | sort`)).stdout;
  const before = await fingerprint();
  const ownersBefore = await owners();
  const replicaFiles = before.split('\n').filter((l) => l.includes(REPLICA)).length;
  const asideFiles = before.split('\n').filter((l) => l.includes(ASIDE)).length;
  assert.ok(replicaFiles >= 3, `replica files: ${replicaFiles}\n${before}`);
  assert.ok(before.includes(`${REPLICA}/files/attachments/`), 'the file mirror is in the replica');
  assert.ok(asideFiles >= 1 && /-corrupt\/db\.sqlite3/.test(before), `aside files: ${asideFiles}\n${before}`);

  const purge = await host.exec(['apt-get', 'purge', '-y', 'vwstream-agent'], { env: { DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: 300_000 });
  const said = purge.stdout + purge.stderr;
  assert.match(said, /your data is kept:/);
  assert.match(said, new RegExp(`^  ${REPLICA} \\(directory replica\\)$`, 'm'));
  assert.match(said, new RegExp(`^  ${ASIDE} \\(databases and files the agent set aside\\)$`, 'm'));
  assert.match(said, /^  \/var\/lib\/vaultwarden \(the vault: Vaultwarden's data folder\)$/m);

  assert.equal(await fingerprint(), before, 'replica and aside/ changed by purge');
  assert.equal(await owners(), ownersBefore, 'owners or modes changed by purge');
  for (const p of ['/etc/vwstream', '/run/vwstream', '/var/lib/vwstream/state.json', '/var/lib/vwstream/files-manifest.json', '/var/lib/vwstream/tmp', '/usr/lib/vwstream-agent']) {
    assert.notEqual((await host.exec(['test', '-e', p], { check: false })).exitCode, 0, `${p} left after purge`);
  }
  assert.equal((await host.exec(['ls', '-A', '/var/lib/vwstream'])).stdout, 'aside', 'only aside/ is left of the agent state');
  assert.notEqual((await host.exec(['dpkg', '-s', 'vwstream-agent'], { check: false })).exitCode, 0, 'dpkg still knows the package (config-files?)');

  // The vault is lost as well (a wiped data disk): a reinstall restores from the kept replica.
  await host.exec(['rm', '-rf', '/var/lib/vaultwarden']);
  await installPackage(host, debPath());
  const journal = (await host.exec(['journalctl', '-u', 'vwstream-agent.service', '-o', 'cat', '-n', '400'])).stdout;
  assert.match(journal, /restore decision: restore/, 'the first start after the reinstall restores');
  await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port) });
  await startAgent(host);
  const s2 = await waitServing(host);
  assert.equal(s2.replica, `file://${REPLICA}`);
  const present = await userUuids(host);
  const wanted = [...rows, ...more];
  assert.deepEqual(wanted.filter((u) => !present.has(u)), [], 'rows missing after the reinstall');
  const files = (await host.sh('find /var/lib/vaultwarden/attachments -type f -exec sha256sum {} +')).stdout;
  assert.ok(files.includes(attSha), `attachment restored:\n${files}`);
  assert.equal(await a.vw.integrity(), 'ok');
  console.log(`# measured: purge kept ${replicaFiles} replica files and ${asideFiles} aside files, sha256 unchanged; a reinstall restored ${present.size} rows (${wanted.length} written) and the attachment from ${REPLICA}`);
});
