/**
 * Issue 3, end to end on real parts: the .deb installed by apt on fresh Debian 12 hosts
 * (systemd-nspawn), the real litestream, fauxqs S3 on loopback, the Vaultwarden stand-in.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startS3, type S3Server } from './harness.ts';
import { agentHost, startAgent, statusJson, unitProp, waitDbSynced, waitServing, writeEnv, type AgentHost } from './common.ts';

const SECRET = 'sEcReT-9f8e7d6c5b4a-$dollar';
const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

describe('S3 replica: power loss of the primary, a new host restores', () => {
  let s3: S3Server;
  let env: Record<string, string>;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket('vault-test');
    env = {
      S3_BUCKET: 'vault-test', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'test-key', S3_SECRET_ACCESS_KEY: SECRET,
      S3_REGION: 'us-east-1', S3_PREFIX: 'prod/vw', LEASE_TTL: '10',
    };
  });
  after(async () => { await s3?.stop(); });

  test('200 rows written on host 1 are served by host 2 after host 1 loses power', async () => {
    const a = await agentHost('vws-sk-a', env);
    hosts.push(a);
    // Installed as the contract says.
    assert.equal((await a.host.exec(['stat', '-c', '%a %U', '/etc/vwstream/vwstream.env'])).stdout, '600 root');
    assert.match((await a.host.exec(['id', 'vaultwarden'])).stdout, /uid=\d+\(vaultwarden\)/);
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'Type'), 'notify');
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'UnitFileState'), 'enabled');

    const readyEmptyMs = await startAgent(a.host);
    const s = await statusJson(a.host);
    assert.equal(s.role, 'primary');
    assert.equal(s.state, 'serving');
    assert.equal(s.replica, 's3://vault-test/prod/vw/db');
    assert.equal(s.restore.action, 'new-vault');
    assert.equal(s.units['vwstream-vaultwarden.service'].activeState, 'active');
    assert.equal(s.units['vwstream-litestream.service'].activeState, 'active');
    assert.match(await unitProp(a.host, 'vwstream-agent.service', 'StatusText'), /^serving: new vault: no replica at s3:\/\/vault-test\/prod\/vw\/db/);
    // The S3 keys: Litestream's own user's, never Vaultwarden's.
    assert.equal((await a.host.exec(['stat', '-c', '%a %U', '/run/vwstream/litestream.yml'])).stdout, '600 vwstream-litestream');
    assert.equal((await a.host.exec(['stat', '-c', '%a', '/run/vwstream/agent.sock'])).stdout, '660');

    await a.vw.addUsers(200);
    const written = Date.now();
    const lagMs = await waitDbSynced(a.host, written);
    assert.equal((await a.vw.counts()).users, 200);

    // No secret in the journal or any process's argv.
    const journal = await a.host.journal(['-o', 'cat']);
    assert.ok(!journal.includes(SECRET), 'secret in the journal');
    const argv = await a.host.sh('cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "');
    assert.ok(!argv.stdout.includes(SECRET), 'secret in a command line');
    // One JSON line per state change in the journal.
    assert.match(journal, /"msg":"serving: new vault: no replica at s3:\/\/vault-test\/prod\/vw\/db"/);

    await a.host.kill9();

    const b = await agentHost('vws-sk-b', env);
    hosts.push(b);
    // Host 1's lease outlives its power loss by LEASE_TTL: host 2 waits (READY, state
    // "waiting", naming the holder), then takes over by itself.
    const t0 = Date.now();
    await startAgent(b.host);
    const first = await statusJson(b.host);
    // Installing host 2 may take longer than the lease's remaining life.
    if (first.state === 'waiting') assert.match(first.detail, /^lease held by vws-sk-a \(instance [0-9a-f]{8}\) until /);
    else assert.equal(first.state, 'serving');
    const sb = await waitServing(b.host, 60_000);
    const readyRestoreMs = Date.now() - t0;
    assert.equal(sb.state, 'serving');
    assert.equal(sb.restore.action, 'restore');
    assert.deepEqual(await b.vw.counts(), { users: 200, ciphers: 0, attachments: 0 });
    assert.equal(await b.vw.integrity(), 'ok');
    // Group vaultwarden may write it: Litestream's user is the group's other member.
    assert.equal((await b.host.exec(['stat', '-c', '%U %G %a', '/var/lib/vaultwarden/db.sqlite3'])).stdout, 'vaultwarden vaultwarden 660');
    console.log(`# measured: READY on an empty host ${readyEmptyMs} ms; serving on a new host that waited for the dead holder's lease (LEASE_TTL=10) and restored 200 rows ${readyRestoreMs} ms; sync confirmed ${lagMs} ms after the last write`);
  });
});

describe('local directory replica (embedded default)', () => {
  let a: AgentHost;
  before(async () => {
    a = await agentHost('vws-sk-local', { LEASE_TTL: '10' });
    hosts.push(a);
    await startAgent(a.host);
  });

  test('rows survive a power loss and the loss of the data folder', async () => {
    assert.equal((await statusJson(a.host)).replica, 'file:///var/backups/vwstream/replica');
    await a.vw.addUsers(50);
    await waitDbSynced(a.host, Date.now());
    await a.host.kill9();
    await a.host.boot();
    // Enabled at boot: it comes back by itself (after its pre-crash lease ran out,
    // LEASE_TTL=10) and keeps the local database.
    await waitActive(a);
    assert.equal((await waitServing(a.host, 60_000)).restore.action, 'keep');
    assert.equal((await a.vw.counts()).users, 50);

    // The data folder is lost: the next start restores it from the directory replica.
    await a.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
    await a.host.sh('rm -rf /var/lib/vaultwarden/db.sqlite3* /var/lib/vaultwarden/.db.sqlite3-litestream');
    await startAgent(a.host, 'start');
    assert.equal((await statusJson(a.host)).restore.action, 'restore');
    assert.equal((await a.vw.counts()).users, 50);
  });

  test('bad NODE_ROLE: exit 78, key named in the journal, data and replica untouched, no restart loop', async () => {
    await a.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
    const fingerprint = 'cd /var && find lib/vaultwarden backups/vwstream/replica -type f -print0 | sort -z | xargs -0 sha256sum';
    const before = (await a.host.sh(fingerprint)).stdout;
    await writeEnv(a.host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), LEASE_TTL: '10', NODE_ROLE: 'banana' });
    const check = await a.host.exec(['vwstream-agent', 'check-config'], { check: false });
    assert.equal(check.exitCode, 78);
    assert.equal(check.stderr.trim(), 'vwstream-agent: config error: NODE_ROLE="banana" is not valid: expected one of primary, secondary (/etc/vwstream/vwstream.env line 4)');
    const start = await a.host.exec(['systemctl', 'start', 'vwstream-agent.service'], { check: false, timeoutMs: 60_000 });
    assert.notEqual(start.exitCode, 0);
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'ExecMainStatus'), '78');
    await new Promise((r) => setTimeout(r, 7000)); // longer than RestartSec
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'NRestarts'), '0');
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'ActiveState'), 'failed');
    const journal = await a.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat']);
    assert.match(journal, /NODE_ROLE="banana" is not valid: expected one of primary, secondary/);
    assert.equal((await a.host.sh(fingerprint)).stdout, before);
    assert.equal(await unitProp(a.host, 'vwstream-vaultwarden.service', 'ActiveState'), 'inactive');
  });
});

async function waitActive(a: AgentHost, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = (await a.host.exec(['systemctl', 'is-active', 'vwstream-agent.service'], { check: false })).stdout.trim();
    if (st === 'active') return;
    if (st === 'failed') throw new Error((await a.host.journal(['-u', 'vwstream-agent.service', '-n', '30', '-o', 'cat'])));
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('agent not active');
}
