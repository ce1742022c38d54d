/**
 * The lease on a real S3 that enforces preconditions: Ceph RGW from Debian 12 (harness
 * startRgw), with the .deb installed by apt on cloned Debian 12 hosts (same machine id).
 *
 * 1. Two cloned primaries on one bucket: the first serves, the second waits; renewals by
 *    If-Match succeed over several TTLs; the first loses power → the second takes over after
 *    expiry + margin, with every row.
 * 2. Failover by `promote --force` of a secondary on RGW; the promoted primary keeps renewing.
 * 3. Fencing with RGW frozen (SIGSTOP): Litestream is stopped at least 1 s before the
 *    lease's expiry, and the host sends no write to any replica object from then until it
 *    has the lease again (a recording proxy between the host and RGW logs every request with
 *    the time it was sent).
 * Every test prints what it measured.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { s3ClientFor, startRgw, type Host, type S3Server } from './harness.ts';
import { recordingProxy } from './s3-proxy.ts';
import { agentHost, journalTail, s3Env, startAgentQuick, statusJson, userUuids, waitDbSynced, waitFilesSynced, waitFor, type AgentHost } from './common.ts';

const AGENT = 'vwstream-agent.service';
const LS = 'vwstream-litestream.service';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Lease { holder: string; instance: string; token: string; acquiredAt: string; expiresAt: string; ttlMs: number }

const hosts: AgentHost[] = [];
let rgw: S3Server;
let client: S3Client;
before(async () => {
  rgw = await startRgw();
  client = s3ClientFor(rgw);
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  client?.destroy();
  await rgw?.stop();
});

async function makeHosts(specs: [string, Record<string, string>][]): Promise<AgentHost[]> {
  return Promise.all(specs.map(async ([name, env]) => {
    const h = await agentHost(name, env);
    hosts.push(h);
    return h;
  }));
}

async function readLease(bucket: string, prefix: string): Promise<Lease | null> {
  try {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/lease.json` }), { abortSignal: AbortSignal.timeout(10_000) });
    return JSON.parse(await r.Body!.transformToString()) as Lease;
  } catch (e) {
    if ((e as { name?: string }).name === 'NoSuchKey') return null;
    throw e;
  }
}

/** The agent's pino lines with their time. */
async function agentLines(host: Host): Promise<{ t: number; msg: string; level: string }[]> {
  const out = await host.journal(['-u', AGENT, '-o', 'cat']);
  const lines: { t: number; msg: string; level: string }[] = [];
  for (const l of out.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as { time?: string; msg?: string; level?: string | number };
      if (j.time && j.msg) lines.push({ t: Date.parse(j.time), msg: j.msg, level: String(j.level) });
    } catch { /* not ours */ }
  }
  return lines;
}

async function instanceOf(host: Host): Promise<string> {
  return (JSON.parse(await host.readFile('/run/vwstream/instance.json')) as { id: string }).id;
}

const renewalTrouble = (msgs: string[]) => msgs.filter((m) => /lease renewal failed|SUSPENDED|FENCED|lease changed under us/.test(m));

// ---------------------------------------------------------------------------------------

test('two cloned primaries on RGW: one serves, the other waits; renewals hold over 3 TTLs; power loss → take-over after expiry + margin with every row', async () => {
  const BUCKET = 'vault-rgw-pair';
  const PREFIX = 'pair/vw';
  await rgw.createBucket(BUCKET);
  const env = s3Env(rgw, BUCKET, PREFIX); // LEASE_TTL=10: margin 2.5 s
  const ttl = 10_000;
  const margin = 2_500;
  const [a, b] = await makeHosts([['vws-rg-a', env], ['vws-rg-b', env]]) as [AgentHost, AgentHost];
  assert.equal((await a.host.readFile('/etc/machine-id')), await b.host.readFile('/etc/machine-id'), 'the hosts are not clones');

  const aReady = await startAgentQuick(a.host);
  const sa = await statusJson(a.host);
  assert.equal(sa.state, 'serving', JSON.stringify(sa));
  assert.equal(sa.lease?.ours, true);
  const aLines = (await agentLines(a.host)).map((l) => l.msg);
  assert.ok(aLines.some((m) => /conditional writes enforced/.test(m)), `no "conditional writes enforced" in the journal:\n${await journalTail(a.host)}`);
  const rows = await a.vw.addUsers(30);
  await waitDbSynced(a.host, Date.now());

  const bReady = await startAgentQuick(b.host);
  const sb = await statusJson(b.host);
  assert.equal(sb.state, 'waiting', `second primary: ${JSON.stringify(sb)}`);
  const instA = await instanceOf(a.host);
  assert.match(String(sb.detail), new RegExp(`lease held by vws-rg-a \\(instance ${instA.slice(0, 8)}\\)`));

  // Three TTLs: the lease stays a's and its expiry moves on; b keeps waiting; no renewal trouble.
  const first = (await readLease(BUCKET, PREFIX))!;
  const t0 = Date.now();
  const seenExpiries = new Set<string>();
  while (Date.now() - t0 < 3 * ttl) {
    const l = (await readLease(BUCKET, PREFIX))!;
    assert.equal(l.instance, instA, `the lease changed hands while a lives: ${JSON.stringify(l)}`);
    seenExpiries.add(l.expiresAt);
    assert.equal((await statusJson(b.host)).state, 'waiting');
    await sleep(1_000);
  }
  const last = (await readLease(BUCKET, PREFIX))!;
  assert.ok(Date.parse(last.expiresAt) - Date.parse(first.expiresAt) >= 2 * ttl, `expiry moved only ${Date.parse(last.expiresAt) - Date.parse(first.expiresAt)} ms in ${3 * ttl} ms`);
  assert.ok(seenExpiries.size >= 8, `only ${seenExpiries.size} distinct expiries in 3 TTLs (renewal every TTL/3)`);
  assert.deepEqual(renewalTrouble((await agentLines(a.host)).map((l) => l.msg)), []);

  // Power loss of a.
  const before = (await readLease(BUCKET, PREFIX))!;
  const killAt = Date.now();
  await a.host.kill9();
  const { ms } = await waitFor('b serving after a lost power', 120_000, async () => ((await statusJson(b.host)).state === 'serving' ? true : undefined), b.host, 200);
  const takeoverMs = Date.now() - killAt;
  const taken = (await readLease(BUCKET, PREFIX))!;
  const instB = await instanceOf(b.host);
  assert.equal(taken.instance, instB);
  // a may have renewed once more after `before` was read: its last expiry is `before`'s or later.
  const earliest = Date.parse(before.expiresAt) + margin;
  assert.ok(Date.parse(taken.acquiredAt) > earliest, `b took the lease at ${taken.acquiredAt}, before a's expiry + margin (${new Date(earliest).toISOString()})`);
  const onB = await userUuids(b.host);
  for (const u of rows) assert.ok(onB.has(u), `row ${u} written on a is missing on b`);
  assert.deepEqual(renewalTrouble((await agentLines(b.host)).map((l) => l.msg)), []);
  console.log(`# measured (RGW): a READY ${aReady} ms, b READY (waiting) ${bReady} ms; ${seenExpiries.size} renewals seen in ${3 * ttl} ms`);
  console.log(`# measured (RGW): take-over after power loss ${takeoverMs} ms (LEASE_TTL=10 s, margin 2.5 s; lease taken ${Date.parse(taken.acquiredAt) - killAt} ms after the kill, ${Date.parse(taken.acquiredAt) - Date.parse(before.expiresAt)} ms after the expiry read before it; poll ${ms} ms)`);
  await b.host.destroy();
});

test('failover by promote --force of a secondary on RGW; the promoted primary renews by If-Match', async () => {
  const BUCKET = 'vault-rgw-fo';
  const PREFIX = 'fo/vw';
  await rgw.createBucket(BUCKET);
  const env = s3Env(rgw, BUCKET, PREFIX);
  const [p, s] = await makeHosts([['vws-rg-p', env], ['vws-rg-s', { ...env, NODE_ROLE: 'secondary', SECONDARY_SYNC_INTERVAL: '5' }]]) as [AgentHost, AgentHost];
  await startAgentQuick(p.host);
  assert.equal((await statusJson(p.host)).state, 'serving');
  const rows = await p.vw.addUsers(40);
  await waitDbSynced(p.host, Date.now());
  await startAgentQuick(s.host);
  await waitFor('secondary serving 40 rows', 60_000, async () => ((await s.vw.counts().catch(() => undefined))?.users === 40 ? true : undefined), s.host);

  const crashAt = Date.now();
  await p.host.kill9();
  const tPromote = Date.now();
  const forced = await s.host.exec(['vwstream-agent', 'promote', '--force'], { check: false, timeoutMs: 120_000 });
  const promoteMs = Date.now() - tPromote;
  assert.equal(forced.exitCode, 0, `promote --force: exit ${forced.exitCode}\n${forced.stdout}\n${forced.stderr}\n${await journalTail(s.host)}`);
  await waitFor('promoted host serving as primary', 60_000, async () => {
    const st = await statusJson(s.host);
    return st.state === 'serving' && st.role === 'primary' ? st : undefined;
  }, s.host, 200);
  const { value: w } = await waitFor('the promoted host accepts a write', 30_000, () => s.vw.addUsers(1), s.host, 200);
  const failoverMs = Date.now() - crashAt;
  const onS = await userUuids(s.host);
  for (const u of [...rows, ...w]) assert.ok(onS.has(u), `row ${u} missing on the promoted host`);
  const lease = (await readLease(BUCKET, PREFIX))!;
  assert.equal(lease.instance, await instanceOf(s.host));
  await waitDbSynced(s.host, Date.now());
  // Two TTLs of renewals on the store that enforces If-Match.
  const e1 = Date.parse(lease.expiresAt);
  await sleep(20_000);
  const later = (await readLease(BUCKET, PREFIX))!;
  assert.equal(later.instance, lease.instance);
  assert.ok(Date.parse(later.expiresAt) - e1 >= 15_000, `the promoted primary's lease moved ${Date.parse(later.expiresAt) - e1} ms in 20 s`);
  assert.deepEqual(renewalTrouble((await agentLines(s.host)).map((l) => l.msg)), []);
  console.log(`# measured (RGW): failover (crash → promoted host accepts a write) ${failoverMs} ms; promote --force returned after ${promoteMs} ms`);
  await s.host.destroy();
});

// ---------------------------------------------------------------------------------------

test('RGW frozen: Litestream stopped ≥ 1 s before the lease expires; no write to a replica object is sent from then until the lease is ours again', async () => {
  const BUCKET = 'vault-rgw-fence';
  const PREFIX = 'fence/vw';
  const TTL_S = 20; // margin 5 s
  await rgw.createBucket(BUCKET);
  const proxy = await recordingProxy(rgw);
  let paused = false;
  try {
    const env = { ...s3Env(rgw, BUCKET, PREFIX), S3_ENDPOINT: proxy.endpoint, LEASE_TTL: String(TTL_S) };
    const [f] = await makeHosts([['vws-rg-f', env]]) as [AgentHost];
    await startAgentQuick(f.host);
    assert.equal((await statusJson(f.host)).state, 'serving');
    const before = await f.vw.addUsers(20);
    await f.vw.addAttachment('before.bin', 4_000);
    const synced = Date.now();
    await waitDbSynced(f.host, synced);
    await waitFilesSynced(f.host, synced);

    rgw.pause();
    paused = true;
    const frozeAt = Date.now();
    const st = await statusJson(f.host);
    const expiresAt = Date.parse(st.lease.expiresAt);
    // The newest lease the host sent before the freeze (it may have landed unacknowledged).
    const sentExpiries = proxy.log.filter((r) => r.t <= frozeAt && r.body).map((r) => Date.parse((JSON.parse(r.body!) as Lease).expiresAt));
    const newestSent = Math.max(...sentExpiries);
    assert.ok(newestSent >= expiresAt, `status says ${st.lease.expiresAt}, the newest lease sent was ${new Date(newestSent).toISOString()}`);
    const during = await f.vw.addUsers(5); // local writes while the store hangs

    const { value: suspended } = await waitFor('REPLICATION SUSPENDED in the journal', TTL_S * 1000 + 10_000, async () => (await agentLines(f.host)).find((l) => l.t >= frozeAt && /REPLICATION SUSPENDED/.test(l.msg)), f.host, 200);
    // A file changed after the fence: the mirror must not upload it either.
    await f.vw.addAttachment('during.bin', 3_000);
    // Past the point where another host could take the lease (expiry + margin), and a little more.
    await sleep(Math.max(0, expiresAt + 5_000 + 3_000 - Date.now()));
    const lsStop = (await f.host.journal(['-u', LS, '-o', 'short-unix', '--since', `@${Math.floor(frozeAt / 1000)}`]))
      .split('\n').map((l) => ({ t: Math.round(Number(l.split(' ')[0]) * 1000), l }))
      .find((x) => Number.isFinite(x.t) && x.t >= frozeAt && /Main process exited|Failed with result|Deactivated successfully|Stopped /.test(x.l));
    rgw.resume();
    paused = false;
    const resumedAt = Date.now();
    const { value: regained } = await waitFor('lease renewed again after the freeze', 60_000, async () => (await agentLines(f.host)).find((l) => l.t >= resumedAt - 1_000 && /lease renewed: restarting Litestream|lease renewed again/.test(l.msg)), f.host, 200);
    await waitDbSynced(f.host, Date.now(), 60_000);

    const fenceMs = expiresAt - suspended.t;
    console.log(`# measured (RGW, LEASE_TTL=${TTL_S}s): froze ${frozeAt - (expiresAt - TTL_S * 1000)} ms after the last renewal; SUSPENDED ${fenceMs} ms before the lease's expiry (${st.lease.expiresAt}); Litestream unit stopped ${lsStop ? `${expiresAt - lsStop.t} ms before it (${lsStop.l.replace(/^\S+ /, '')})` : 'NOT seen'}; regained ${regained.t - resumedAt} ms after the resume`);
    assert.ok(fenceMs >= 1_000, `SUSPENDED only ${fenceMs} ms before the lease's expiry`);
    assert.ok(lsStop, `no stop of ${LS} in its journal after the freeze`);
    assert.ok(expiresAt - lsStop.t >= 1_000, `Litestream stopped only ${expiresAt - lsStop.t} ms before the lease's expiry: ${lsStop.l}`);

    // No write to a replica object (database or files) sent between the fence and the regain.
    const fence = Math.min(suspended.t, expiresAt - 1_000);
    // Requests to the replica objects in flight at the fence: sent before it (they may land on resume).
    const inFlight = proxy.log.filter((r) => r.t < fence && (r.doneAt === undefined || r.doneAt >= fence) && !/\/lease\.json/.test(r.path));
    console.log(`# requests in flight at the fence (sent before it, may land after the resume): ${inFlight.map((r) => `${r.method} ${r.path.split('?')[0]} sent ${fence - r.t} ms before`).join('; ') || 'none'}`);
    const writes = proxy.log.filter((r) => r.t >= fence && r.t < regained.t && /^(PUT|POST|DELETE)$/.test(r.method) && !/\/lease\.json|\.vwstream-probe-/.test(r.path));
    console.log(`# writes sent between the fence and the regain: ${writes.map((r) => `${r.method} ${r.path.split('?')[0]} ${r.t - fence} ms after the fence`).join('; ') || 'none'}`);
    // The file mirror counts as much as Litestream: both write under the prefix.
    assert.deepEqual(writes.map((r) => `${new Date(r.t).toISOString()} ${r.method} ${r.path}`), [], 'writes sent to the store after the fence, before the lease was regained');
    // Nothing lost: rows written before and during the outage are in the replica once the lease is back.
    const onHost = await userUuids(f.host);
    for (const u of [...before, ...during]) assert.ok(onHost.has(u));
    // The attachment written while fenced went up in the mirror's catch-up pass after the regain.
    await waitFilesSynced(f.host, resumedAt);
  } finally {
    if (paused) rgw.resume();
    await proxy.close();
  }
});
