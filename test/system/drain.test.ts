/**
 * Issue 4: an orderly poweroff loses nothing, files included, and systemd's own stop
 * order (read from the powered-off host's journal) is Vaultwarden → Litestream → agent.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startS3 } from './harness.ts';
import { agentHost, startAgent, statusJson, waitDbSynced, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

test('poweroff: 100 rows, 5 attachments and the RSA key reach a fresh host; journal shows the drain order', async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-drain');
    const env = { S3_BUCKET: 'vault-drain', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'drain-secret-1234', S3_PREFIX: 'vw' };
    const a = await agentHost('vws-dr-a', env);
    hosts.push(a);
    await startAgent(a.host);
    // The safety-net timer is scheduled and visible.
    assert.match((await a.host.exec(['systemctl', 'list-timers', '--all', 'vwstream-sync.timer'])).stdout, /vwstream-sync\.timer/);
    await a.vw.addUsers(100);
    const shas: string[] = [];
    for (let i = 0; i < 5; i++) shas.push(await a.vw.addAttachment(`file-${i}.bin`, 50_000 + i));
    const key = (await a.host.exec(['sha256sum', '/var/lib/vaultwarden/rsa_key.pem'])).stdout.split(' ')[0];
    // No waiting for the mirror or the replica: the drain must carry the last writes.
    const off = await a.host.poweroff(120_000);

    const journal = await a.host.journal(['-o', 'cat']);
    const lines = journal.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const vwStopped = at(/Stopped Vaultwarden \(run by vwstream-agent\)|Stopped vwstream-vaultwarden/);
    const confirmed = at(/confirm-sync: final sync confirmed/);
    const lsStopped = at(/Stopped Litestream replication of the Vaultwarden database|Stopped vwstream-litestream/);
    const filesDone = at(/"msg":"drain: files done/);
    const complete = at(/"msg":"drain complete in \d+ ms"/);
    assert.ok(vwStopped >= 0 && confirmed >= 0 && lsStopped >= 0 && filesDone >= 0 && complete >= 0,
      `drain lines missing:\n${lines.filter((l) => /drain|Stopped|confirm-sync/.test(l)).join('\n')}`);
    assert.ok(vwStopped < confirmed && confirmed < lsStopped && lsStopped < complete && filesDone < complete, 'order Vaultwarden → confirmed final sync → Litestream → agent');

    const b = await agentHost('vws-dr-b', env);
    hosts.push(b);
    await startAgent(b.host);
    assert.equal((await statusJson(b.host)).restore.action, 'restore');
    const counts = await b.vw.counts();
    assert.equal(counts.users, 100);
    assert.equal(counts.attachments, 5);
    const found = (await b.host.sh('cd /var/lib/vaultwarden/attachments && find . -type f -print0 | sort -z | xargs -0 sha256sum')).stdout;
    for (const sha of shas) assert.ok(found.includes(sha), `attachment ${sha} restored`);
    assert.equal((await b.host.exec(['sha256sum', '/var/lib/vaultwarden/rsa_key.pem'])).stdout.split(' ')[0], key);
    assert.equal((await b.host.exec(['stat', '-c', '%U %a', '/var/lib/vaultwarden/rsa_key.pem'])).stdout, 'vaultwarden 600');
    await waitDbSynced(b.host, Date.now());
    console.log(`# measured: poweroff with drain took ${off.ms} ms`);
  } finally {
    await s3.stop();
  }
});
