/**
 * Issue 5, end to end on real parts (contract behaviours 5 and 6): the .deb installed by apt
 * on fresh Debian 12 hosts (systemd-nspawn), the real litestream, fauxqs S3 on loopback
 * (conditional writes accepted but ignored: the lease must work without them), the
 * Vaultwarden stand-in.
 *
 * 1. A secondary restores and serves the primary's rows and attachment, follows new writes
 *    within one SECONDARY_SYNC_INTERVAL plus restore time, never runs Litestream nor takes the
 *    lease, and keeps local writes aside at the next refresh.
 * 2. A second primary on the same prefix never serves while the first lives and says who
 *    holds the lease; when the holder loses power it takes over after LEASE_TTL with no
 *    manual step and has every row.
 * 3. An orderly stop releases the lease: a replacement primary starts at once.
 * 4. Failover: the primary crashes, `promote` is refused while its lease is alive,
 *    `promote --force` turns the secondary into the primary (persisted), its writes survive
 *    the loss of the promoted host on a fresh primary.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startS3, type Host, type S3Server } from './harness.ts';
import { agentHost, agentMessages, journalTail, startAgentQuick, statusJson, userUuids, waitDbSynced, waitFilesSynced, waitFor, type AgentHost } from './common.ts';

const LEASE_TTL_S = 10;
const SYNC_INTERVAL_S = 5;
const AGENT = 'vwstream-agent.service';
const VW = 'vwstream-vaultwarden.service';
const LS = 'vwstream-litestream.service';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function s3Env(s3: S3Server, bucket: string, prefix: string): Record<string, string> {
  return {
    S3_BUCKET: bucket, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'standby-key',
    S3_SECRET_ACCESS_KEY: 'standby-secret-5e6f7a8b', S3_REGION: 'us-east-1', S3_PREFIX: prefix,
    LEASE_TTL: String(LEASE_TTL_S),
  };
}
const secondaryEnv = (env: Record<string, string>) => ({ ...env, NODE_ROLE: 'secondary', SECONDARY_SYNC_INTERVAL: String(SYNC_INTERVAL_S) });

interface Lease { holder: string; instance: string; machineId: string; bootId: string; token: string; expiresAt: string; ttlMs: number }

/**
 * What could identify a host: /etc/machine-id, the boot id as the agent reads it, and the
 * agent's instance id (both from /run/vwstream/instance.json). nspawn lays a per-container
 * boot id over /proc/sys/kernel/random/boot_id for a shell, but inside the agent's sandbox
 * /proc/sys is mounted afresh and shows the kernel's own: shared by every container.
 */
async function ids(host: Host): Promise<{ machineId: string; bootId: string; instance: string }> {
  const machineId = (await host.readFile('/etc/machine-id')).trim();
  const rec = JSON.parse(await host.readFile('/run/vwstream/instance.json')) as { id: string; bootId: string };
  return { machineId, bootId: rec.bootId, instance: rec.id };
}

/** The lease object in the bucket as it is (unsigned GET: fauxqs does not check signatures); null when absent. */
async function readLease(s3: S3Server, bucket: string, prefix: string): Promise<Lease | null> {
  const r = await fetch(`${s3.endpoint}/${bucket}/${prefix}/lease.json`, { signal: AbortSignal.timeout(10_000) });
  const body = await r.text();
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`GET lease.json: HTTP ${r.status} ${body}`);
  return JSON.parse(body) as Lease;
}

/** Creates agent hosts in parallel (unpack + apt install dominate; the agent is not started with this env). */
async function makeHosts(specs: [string, Record<string, string>][]): Promise<AgentHost[]> {
  const made = await Promise.all(specs.map(async ([name, env]) => {
    const h = await agentHost(name, env);
    hosts.push(h);
    return h;
  }));
  return made;
}

async function destroy(h: AgentHost): Promise<void> {
  await h.host.destroy();
  hosts.splice(hosts.indexOf(h), 1);
}

async function activeState(host: Host, unit: string): Promise<string> {
  return (await host.exec(['systemctl', 'show', '-P', 'ActiveState', unit])).stdout.trim();
}

/** Waits until status --json says state serving with the given role. */
function waitServing(h: AgentHost, role: 'primary' | 'secondary', timeoutMs: number) {
  return waitFor(`${h.host.name} serving as ${role}`, timeoutMs, async () => {
    const s = await statusJson(h.host);
    return s.state === 'serving' && s.role === role ? s : undefined;
  }, h.host);
}

async function attachmentShas(host: Host): Promise<string> {
  return (await host.sh('cd /var/lib/vaultwarden/attachments && find . -type f -print0 | sort -z | xargs -0 -r sha256sum')).stdout;
}

// ---------------------------------------------------------------------------------------

describe('lease and secondary on one prefix', () => {
  const BUCKET = 'vault-standby';
  const PREFIX = 'sb/vw';
  let s3: S3Server;
  let a: AgentHost; // primary
  let b: AgentHost; // secondary
  let c: AgentHost; // a second primary on the same prefix
  let d: AgentHost; // a replacement primary after an orderly stop
  let bReadyMs = 0;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket(BUCKET);
    const env = s3Env(s3, BUCKET, PREFIX);
    [a, b, c, d] = await makeHosts([['vws-sb-a', env], ['vws-sb-b', secondaryEnv(env)], ['vws-sb-c', env], ['vws-sb-d', env]]) as [AgentHost, AgentHost, AgentHost, AgentHost];
  });
  after(async () => {
    for (const h of [a, c, d]) if (h && hosts.includes(h)) await destroy(h).catch(() => undefined);
    await s3?.stop();
  });

  test('secondary serves the primary\'s 50 rows and attachment, follows 50 more within an interval, keeps local writes aside', async () => {
    await startAgentQuick(a.host);
    const sa = await statusJson(a.host);
    assert.equal(sa.role, 'primary');
    assert.equal(sa.state, 'serving');
    assert.equal(sa.lease?.ours, true, `primary's status.lease: ${JSON.stringify(sa.lease)}`);
    const lease = await readLease(s3, BUCKET, PREFIX);
    assert.ok(lease, 'no lease.json under the prefix while a primary serves');
    assert.equal(lease.holder, 'vws-sb-a');
    assert.equal(lease.ttlMs, LEASE_TTL_S * 1000);
    assert.ok(lease.bootId && lease.token, `lease without bootId/token: ${JSON.stringify(lease)}`);
    const idsA = await ids(a.host);
    assert.deepEqual({ instance: lease.instance, machineId: lease.machineId, bootId: lease.bootId }, idsA, 'the lease names the holder\'s instance, machine id and boot id');
    assert.equal(sa.lease.self, idsA.instance);
    const leftMs = Date.parse(lease.expiresAt) - Date.now();
    assert.ok(leftMs > 0 && leftMs <= LEASE_TTL_S * 1000 + 2000, `lease expiresAt ${lease.expiresAt} is not within LEASE_TTL of now`);

    const first = await a.vw.addUsers(50);
    const sha = await a.vw.addAttachment('standby.bin', 40_000);
    const since = Date.now();
    await waitDbSynced(a.host, since);
    await waitFilesSynced(a.host, since);

    bReadyMs = await startAgentQuick(b.host);
    const { value: sb } = await waitServing(b, 'secondary', 30_000);
    assert.equal(sb.role, 'secondary');
    const swappedAtStart: number = sb.refreshes?.swapped ?? 0; // the start-up restore may count as a swap
    assert.deepEqual(await b.vw.counts(), { users: 50, ciphers: 1, attachments: 1 });
    assert.ok((await attachmentShas(b.host)).includes(sha), 'attachment content on the secondary');
    assert.equal(await b.vw.integrity(), 'ok');
    const onB = await userUuids(b.host);
    for (const u of first) assert.ok(onB.has(u), `row ${u} missing on the secondary`);
    // A secondary never replicates and never takes the lease.
    assert.equal(await activeState(b.host, VW), 'active');
    assert.equal(await activeState(b.host, LS), 'inactive');
    assert.equal((await readLease(s3, BUCKET, PREFIX))?.holder, 'vws-sb-a', 'the secondary took the lease');

    // The primary writes 50 more: the secondary serves them within one interval plus restore time.
    const more = await a.vw.addUsers(50);
    const wroteAt = Date.now();
    const { ms: followMs } = await waitFor('secondary serves 100 users', 30_000, async () => ((await b.vw.counts()).users === 100 ? true : undefined), b.host);
    const followTotal = Date.now() - wroteAt;
    const followBound = SYNC_INTERVAL_S * 1000 + bReadyMs + 5_000;
    assert.ok(followTotal <= followBound, `the secondary served the new rows ${followTotal} ms after the write: more than one interval + restore time + 5 s (${followBound} ms)`);
    const s2 = await statusJson(b.host);
    assert.equal(s2.role, 'secondary');
    assert.equal(s2.state, 'serving');
    assert.ok(s2.lastRefresh && Number.isFinite(Date.parse(s2.lastRefresh)), `status.lastRefresh: ${JSON.stringify(s2.lastRefresh)}`);
    assert.ok(s2.lastRefreshDowntimeMs === null || typeof s2.lastRefreshDowntimeMs === 'number', `status.lastRefreshDowntimeMs: ${JSON.stringify(s2.lastRefreshDowntimeMs)}`);
    assert.equal(typeof s2.lastRefreshDowntimeMs, 'number', 'a swap happened, so the refresh downtime is known');
    assert.ok(s2.refreshes && typeof s2.refreshes.swapped === 'number' && typeof s2.refreshes.skipped === 'number', `status.refreshes: ${JSON.stringify(s2.refreshes)}`);
    assert.ok(s2.refreshes.swapped > swappedAtStart, `the refresh that brought 50 new rows was not counted as a swap: ${JSON.stringify(s2.refreshes)} (at start ${swappedAtStart})`);
    const onB2 = await userUuids(b.host);
    for (const u of more) assert.ok(onB2.has(u), `row ${u} missing on the secondary after the refresh`);
    assert.equal(await activeState(b.host, LS), 'inactive');
    // Nothing changed since: the next refreshes are skipped, not swapped.
    const swapped = s2.refreshes.swapped;
    const { value: s3b } = await waitFor('a skipped refresh', (SYNC_INTERVAL_S + 15) * 1000, async () => {
      const s = await statusJson(b.host);
      return s.refreshes.skipped > s2.refreshes.skipped ? s : undefined;
    }, b.host);
    assert.equal(s3b.refreshes.swapped, swapped, `an unchanged replica was swapped in: ${JSON.stringify(s3b.refreshes)}`);
    console.log(`# measured: secondary READY (restore 50 rows + attachment) ${bReadyMs} ms; serves the primary's 50 new rows ${followTotal} ms after the write (SECONDARY_SYNC_INTERVAL=${SYNC_INTERVAL_S}s; poll ${followMs} ms)`);
    console.log(`# measured: refresh downtime per swap ${s2.lastRefreshDowntimeMs} ms (refreshes ${JSON.stringify(s3b.refreshes)})`);

    // A write on the secondary is set aside (kept, not lost) at the next refresh.
    const { value: [local] } = await waitFor('a local write on the secondary', 15_000, () => b.vw.addUsers(1), b.host);
    const [newer] = await a.vw.addUsers(1);
    await waitDbSynced(a.host, Date.now());
    const { value: asideMsg } = await waitFor('"local changes on the secondary kept at" in the journal', (SYNC_INTERVAL_S + 30) * 1000, async () => (await agentMessages(b.host)).find((m) => m.includes('local changes on the secondary kept at')), b.host, 1000);
    await waitFor('secondary serves the primary\'s newest row', 30_000, async () => ((await userUuids(b.host)).has(newer!) ? true : undefined), b.host);
    const onB3 = await userUuids(b.host);
    assert.ok(!onB3.has(local!), 'the secondary still serves its local write after the refresh');
    // The file is swapped before Vaultwarden is back: wait for it to answer (0.3 s or so).
    await waitFor('the secondary answering with 101 users', 30_000, async () => ((await b.vw.counts().catch(() => undefined))?.users === 101 ? true : undefined), b.host);
    const asideFiles = (await b.host.sh('find /var/lib/vwstream/aside -type f', { check: false })).stdout.trim();
    assert.ok(asideFiles, 'nothing kept under /var/lib/vwstream/aside');
    // The local row is in the kept copy (database or its WAL: grep the bytes).
    const holding = (await b.host.sh(`grep -rla -- '${local}' /var/lib/vwstream/aside`, { check: false })).stdout.trim();
    assert.ok(holding, `the local row ${local} is in no file under /var/lib/vwstream/aside:\n${asideFiles}`);
    console.log(`# secondary journal: ${asideMsg} (local row found in ${holding.split('\n').join(', ')})`);
    await destroy(b); // it has shown what it should; it would only load the machine below
  });

  test('a second primary on the same prefix (a clone: same machine id and boot id) never serves while the first lives; takes over after LEASE_TTL when it dies', async () => {
    const cReadyMs = await startAgentQuick(c.host);
    // The two hosts are clones of one image on one kernel: only the agent's instance id differs.
    const [idsA, idsC] = [await ids(a.host), await ids(c.host)];
    assert.match(idsA.machineId, /^[0-9a-f]{32}$/);
    assert.equal(idsC.machineId, idsA.machineId, 'the test hosts do not share /etc/machine-id: this test would not show the clone case');
    assert.equal(idsC.bootId, idsA.bootId, 'the agents on the test hosts do not see the same boot id');
    assert.equal(idsA.bootId, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'the agents do not see the kernel\'s boot id');
    assert.notEqual(idsC.instance, idsA.instance, 'two hosts got the same instance id');
    const checks: string[] = [];
    const expiries: number[] = [];
    for (let i = 0; i < 5; i++) {
      if (i) await sleep(3_000);
      const s = await statusJson(c.host);
      assert.equal(s.role, 'primary');
      if (s.state !== 'waiting') {
        await sleep(LEASE_TTL_S * 1000 / 2); // one renewal of the first primary: what did it do?
        assert.fail(`check ${i}: the second primary is ${s.state} while the first lives (status.lease ${JSON.stringify(s.lease)}; lease.json ${JSON.stringify(await readLease(s3, BUCKET, PREFIX))})\n--- ${c.host.name} ---\n${await journalTail(c.host, 20)}\n--- ${a.host.name} (Vaultwarden ${await activeState(a.host, VW)}, Litestream ${await activeState(a.host, LS)}) ---\n${await journalTail(a.host, 15)}`);
      }
      assert.equal(s.lease?.holder, 'vws-sb-a', `check ${i}: status.lease ${JSON.stringify(s.lease)}`);
      assert.equal(s.lease.ours, false);
      assert.ok(s.lease.bootId, 'status.lease.bootId');
      assert.ok(Number.isFinite(Date.parse(s.lease.expiresAt)), `status.lease.expiresAt ${s.lease.expiresAt}`);
      assert.equal(await activeState(c.host, VW), 'inactive', `check ${i}: Vaultwarden runs on the waiting primary`);
      assert.equal(await activeState(c.host, LS), 'inactive', `check ${i}: Litestream runs on the waiting primary`);
      assert.equal(await c.vw.alive(), false, `check ${i}: the stand-in answers on the waiting primary`);
      const lease = await readLease(s3, BUCKET, PREFIX);
      assert.equal(lease?.holder, 'vws-sb-a', `check ${i}: lease.json ${JSON.stringify(lease)}`);
      assert.equal(lease.bootId, s.lease.bootId);
      assert.equal(lease.instance, idsA.instance, `check ${i}: lease.json names instance ${lease.instance}, not the first primary's ${idsA.instance}`);
      assert.equal(s.lease.instance, idsA.instance);
      assert.equal(s.lease.self, idsC.instance);
      // Never both primaries serving: the holder serves, the clone waits.
      const sa = await statusJson(a.host);
      assert.equal(`${sa.role} ${sa.state} ${sa.lease?.ours}`, 'primary serving true', `check ${i}: the first primary's status`);
      expiries.push(Date.parse(lease.expiresAt));
      checks.push(`${new Date().toISOString()} ${s.state} holder=${s.lease.holder} until ${s.lease.expiresAt}`);
    }
    // Renewed every LEASE_TTL/3: over ≥ 12 s of checks its expiry moved forward by well over 6 s.
    const moved = expiries.at(-1)! - expiries[0]!;
    assert.ok(moved >= 6_000, `the holder's lease expiry moved ${moved} ms over the checks (LEASE_TTL=${LEASE_TTL_S}s, renewal every TTL/3): ${expiries.map((e) => new Date(e).toISOString()).join(', ')}`);
    const waitingLine = `waiting: lease held by vws-sb-a (instance ${idsA.instance.slice(0, 8)}) until `;
    const waiting = (await agentMessages(c.host)).find((m) => m.startsWith(waitingLine));
    assert.ok(waiting, `no "${waitingLine}…" in the journal:\n${await journalTail(c.host)}`);
    const cMsgs = await agentMessages(c.host);
    assert.ok(!cMsgs.some((m) => /earlier run of this agent/.test(m)), `the clone took the first primary's lease as its own:\n${cMsgs.join('\n')}`);

    // The holder's last writes are in the replica, then it loses power.
    const last = await a.vw.addUsers(10);
    await waitDbSynced(a.host, Date.now());
    const rowsOnA = await userUuids(a.host);
    assert.equal(rowsOnA.size, 111);
    const leaseBefore = (await readLease(s3, BUCKET, PREFIX))!;
    const killAt = Date.now();
    await a.host.kill9();
    const expiry = Date.parse(leaseBefore.expiresAt);

    // No manual step: the waiting primary takes over once the lease has expired.
    let early = '';
    await waitFor('the waiting primary serves after the holder died', (LEASE_TTL_S + 60) * 1000, async () => {
      const s = await statusJson(c.host);
      if (s.state === 'serving' && Date.now() < expiry) early ||= `serving at ${new Date().toISOString()}, before the dead holder's lease expired (${leaseBefore.expiresAt})`;
      return s.state === 'serving' && s.role === 'primary' ? s : undefined;
    }, c.host, 250);
    assert.equal(early, '', early);
    const takeoverAfterKill = Date.now() - killAt;
    const bound = LEASE_TTL_S * 1000 + Math.max(bReadyMs, 5_000) + 10_000;
    assert.ok(takeoverAfterKill <= bound, `takeover ${takeoverAfterKill} ms after the crash > LEASE_TTL + restore time + 10 s = ${bound} ms`);
    assert.ok(c.host.running);
    assert.equal(await c.vw.integrity(), 'ok');
    const onC = await userUuids(c.host);
    assert.equal(onC.size, rowsOnA.size);
    for (const u of rowsOnA) assert.ok(onC.has(u), `row ${u} (on the dead holder, synced) missing on the new primary`);
    for (const u of last) assert.ok(onC.has(u));
    assert.equal(await activeState(c.host, LS), 'active');
    const sc = await statusJson(c.host);
    assert.equal(sc.lease?.ours, true, `status.lease after the takeover: ${JSON.stringify(sc.lease)}`);
    assert.equal((await readLease(s3, BUCKET, PREFIX))?.holder, 'vws-sb-c');
    // It replicates: a write reaches the replica.
    await c.vw.addUsers(5);
    await waitDbSynced(c.host, Date.now());
    console.log(`# waiting primary: ${checks.join(' | ')}\n# journal: ${waiting}`);
    console.log(`# measured: second primary READY (waiting) ${cReadyMs} ms; takeover after the holder's power loss ${takeoverAfterKill} ms (its lease expired ${expiry - killAt} ms after the crash; LEASE_TTL=${LEASE_TTL_S}s)`);
  });

  test('an orderly stop releases the lease: a replacement primary starts at once', async () => {
    const rowsOnC = await userUuids(c.host);
    const t0 = Date.now();
    await c.host.exec(['systemctl', 'stop', AGENT], { timeoutMs: 120_000 });
    const stopMs = Date.now() - t0;
    const lease = await readLease(s3, BUCKET, PREFIX);
    assert.ok(lease === null || Date.parse(lease.expiresAt) <= Date.now(), `lease not released by the orderly stop: ${JSON.stringify(lease)}`);
    const stopMsgs = await agentMessages(c.host, ['-n', '60']);
    const readyMs = await startAgentQuick(d.host);
    const sd = await statusJson(d.host);
    assert.equal(sd.state, 'serving', `replacement primary is ${sd.state} (lease ${JSON.stringify(sd.lease)}); the stopped host's journal:\n${stopMsgs.slice(-25).join('\n')}`);
    assert.equal(sd.role, 'primary');
    assert.ok(readyMs < LEASE_TTL_S * 1000, `replacement READY after ${readyMs} ms: it waited for a lease that should have been released`);
    assert.equal((await readLease(s3, BUCKET, PREFIX))?.holder, 'vws-sb-d');
    const onD = await userUuids(d.host);
    assert.equal(onD.size, rowsOnC.size);
    for (const u of rowsOnC) assert.ok(onD.has(u), `row ${u} missing on the replacement`);
    console.log(`# measured: orderly stop of the lease holder ${stopMs} ms; replacement primary serving (restore included) ${readyMs} ms later`);
  });
});

describe('failover by promote', () => {
  const BUCKET = 'vault-failover';
  const PREFIX = 'fo/vw';
  let s3: S3Server;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket(BUCKET);
  });
  after(async () => { await s3?.stop(); });

  test('primary crashes; promote refused while its lease lives; promote --force; 10 writes survive the promoted host\'s crash', async () => {
    const env = s3Env(s3, BUCKET, PREFIX);
    const [p, s, f] = await makeHosts([['vws-sb-p', env], ['vws-sb-s', secondaryEnv(env)], ['vws-sb-f', env]]) as [AgentHost, AgentHost, AgentHost];
    await startAgentQuick(p.host);
    await waitServing(p, 'primary', 10_000);
    const onP = await p.vw.addUsers(100);
    await waitDbSynced(p.host, Date.now());
    await startAgentQuick(s.host);
    await waitServing(s, 'secondary', 30_000);
    assert.equal((await s.vw.counts()).users, 100);
    assert.equal(await activeState(s.host, LS), 'inactive');

    const leaseP = (await readLease(s3, BUCKET, PREFIX))!;
    assert.equal(leaseP.holder, 'vws-sb-p');
    const crashAt = Date.now();
    await p.host.kill9();

    // Right after the crash the lease is still alive: a plain promote is refused and names the holder.
    const refused = await s.host.exec(['vwstream-agent', 'promote'], { check: false, timeoutMs: 60_000 });
    const refusedAt = Date.now();
    const leaseNow = await readLease(s3, BUCKET, PREFIX);
    assert.ok(refusedAt < Date.parse(leaseNow?.expiresAt ?? leaseP.expiresAt), `promote took until ${new Date(refusedAt).toISOString()}, after the lease expired (${leaseNow?.expiresAt}): the test cannot check the refusal`);
    assert.equal(refused.exitCode, 1, `promote while the lease is alive: exit ${refused.exitCode}\n${refused.stdout}\n${refused.stderr}`);
    assert.match(`${refused.stdout}\n${refused.stderr}`, /vws-sb-p/, 'the refusal names the lease holder');
    assert.equal((await statusJson(s.host)).role, 'secondary', 'a refused promote changed the role');
    assert.equal((await s.host.exec(['test', '-e', '/var/lib/vwstream/role-override'], { check: false })).exitCode, 1, 'a refused promote wrote the role override');

    const tPromote = Date.now();
    const forced = await s.host.exec(['vwstream-agent', 'promote', '--force'], { check: false, timeoutMs: 120_000 });
    const promoteMs = Date.now() - tPromote;
    assert.equal(forced.exitCode, 0, `promote --force: exit ${forced.exitCode}\n${forced.stdout}\n${forced.stderr}\n--- agent journal ---\n${await journalTail(s.host)}`);
    await waitServing(s, 'primary', 60_000);
    const { value: firstWrite } = await waitFor('the promoted host accepts a write', 30_000, () => s.vw.addUsers(1), s.host);
    const failoverMs = Date.now() - crashAt;
    const onS = [...firstWrite, ...await s.vw.addUsers(9)];
    const written = Date.now();
    assert.equal((await s.vw.counts()).users, 110);
    assert.match(await s.host.readFile('/var/lib/vwstream/role-override'), /primary/);
    assert.equal(await activeState(s.host, LS), 'active');
    const ss = await statusJson(s.host);
    assert.equal(ss.lease?.ours, true, `status.lease after promote: ${JSON.stringify(ss.lease)}`);
    assert.equal((await readLease(s3, BUCKET, PREFIX))?.holder, 'vws-sb-s');
    await waitDbSynced(s.host, written);
    console.log(`# measured: failover (crash → promoted host serves writes) ${failoverMs} ms (promote --force returned after ${promoteMs} ms; refused promote took ${refusedAt - crashAt} ms)`);
    console.log(`# refused promote said: ${(refused.stderr || refused.stdout).trim()}`);

    // The role persists across a restart of the agent (the env file still says secondary).
    assert.match(await s.host.readFile('/etc/vwstream/vwstream.env'), /^NODE_ROLE=secondary$/m);
    const restartMs = await startAgentQuick(s.host);
    const sr = await statusJson(s.host);
    assert.equal(sr.role, 'primary', `role after a restart: ${sr.role}`);
    assert.equal(sr.state, 'serving');
    assert.equal((await s.vw.counts()).users, 110);
    await waitDbSynced(s.host, Date.now());

    // The promoted host crashes too: a fresh primary restores every row (after its lease expires).
    const leaseS = (await readLease(s3, BUCKET, PREFIX))!;
    assert.equal(leaseS.holder, 'vws-sb-s');
    const sDiedAt = Date.now();
    await s.host.kill9();
    const fReadyMs = await startAgentQuick(f.host);
    const { ms: fServeMs } = await waitServing(f, 'primary', (LEASE_TTL_S + 60) * 1000);
    // Single writer: the fresh host is another machine; it may serve only once the dead holder's lease expired.
    const fServedAt = Date.now();
    assert.ok(fServedAt >= Date.parse(leaseS.expiresAt), `the fresh primary served at ${new Date(fServedAt).toISOString()}, ${fServedAt - sDiedAt} ms after the holder died, before its lease expired (${leaseS.expiresAt})\n--- ${f.host.name} ---\n${await journalTail(f.host, 12)}`);
    assert.equal(await f.vw.integrity(), 'ok');
    const onF = await userUuids(f.host);
    assert.equal(onF.size, 110);
    for (const u of [...onP, ...onS]) assert.ok(onF.has(u), `row ${u} missing on the fresh primary`);
    console.log(`# measured: promoted host restart ${restartMs} ms; fresh primary after its crash: READY ${fReadyMs} ms, serving ${fServeMs} ms later`);
  });
});
