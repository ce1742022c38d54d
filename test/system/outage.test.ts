/**
 * Issue 7, faults a primary must survive, on a Debian 12 host from the package:
 * 1. S3 unreachable for 5 minutes (SIGSTOP of the emulator) while Vaultwarden takes
 *    writes: it keeps serving, /health turns 503 naming the reason, one sync_error
 *    notification goes out, and after S3 returns a fresh host restores every row.
 * 2. A corrupted local database at start: quarantined (kept), restored from the replica.
 * VWS_OUTAGE_S shortens the outage for local runs (default 300).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { freePort, startS3, type S3Server } from './harness.ts';
import { agentHost, s3Env, startAgent, statusJson, userUuids, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const OUTAGE_MS = Number(process.env.VWS_OUTAGE_S ?? 300) * 1000;
const hosts: AgentHost[] = [];
let s3: S3Server;
let server: Server;
let notifyUrl = '';
const pings: { at: number; path: string; body: string }[] = [];

before(async () => {
  s3 = await startS3();
  await s3.createBucket('vault-out');
  const port = await freePort();
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => { pings.push({ at: Date.now(), path: req.url ?? '', body }); res.end('ok'); });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  notifyUrl = `http://127.0.0.1:${port}/ping/out`;
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  server?.close();
  s3?.resume();
  await s3?.stop();
});

interface Health { ok: boolean; checks: { name: string; ok: boolean; detail: string }[] }
async function health(h: AgentHost): Promise<{ exitCode: number; report: Health }> {
  const r = await h.host.exec(['vwstream-agent', 'health', '--json'], { check: false });
  return { exitCode: r.exitCode, report: JSON.parse(r.stdout) as Health };
}

test('S3 unreachable for 5 minutes under writes: keeps serving, 503 with the reason, one sync_error, then everything catches up', async () => {
  const maxAge = 30;
  const env = { ...s3Env(s3, 'vault-out', 'outage/vw'), LEASE_TTL: '30', HEALTHCHECK_MAX_SYNC_AGE: String(maxAge), NOTIFICATION_URL: notifyUrl, NOTIFICATION_TIMEOUT: '2' };
  const a = await agentHost('vws-out-a', env);
  hosts.push(a);
  await startAgent(a.host);
  const acked = await a.vw.addUsers(20);
  await waitDbSynced(a.host, Date.now());
  assert.equal((await health(a)).exitCode, 0);

  pings.length = 0;
  s3.pause();
  const start = Date.now();
  let unhealthyAt = 0;
  let unhealthyReason = '';
  let suspendedSeen = '';
  let writes = 0;
  let lastCheck = 0;
  let unhealthyAfterS = 0;
  try {
    while (Date.now() - start < OUTAGE_MS) {
      acked.push(...(await a.vw.addUsers(1))); // every write acknowledged: Vaultwarden serves
      writes++;
      if (Date.now() - lastCheck >= 5_000) {
        lastCheck = Date.now();
        const h = await health(a);
        if (h.exitCode !== 0 && !unhealthyAt) {
          unhealthyAt = Date.now();
          unhealthyReason = h.report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ');
        }
        const s = await statusJson(a.host);
        if (s.replicationSuspended && !suspendedSeen) suspendedSeen = s.replicationSuspended;
      }
      await sleep(1_000);
    }
    const during = await health(a);
    assert.equal(during.exitCode, 1, 'still unhealthy at the end of the outage');
    assert.ok(unhealthyAt > 0, 'health never failed during the outage');
    unhealthyAfterS = (unhealthyAt - start) / 1000;
    assert.ok(unhealthyAfterS <= maxAge + 20, `health failed only ${unhealthyAfterS} s into the outage`);
    // The first failing checks name the outage (the sync age, or the lease when it expires first).
    assert.match(unhealthyReason, /db_sync_age: replica confirmed in sync \d+s ago \(max 30s\)|lease: not renewed: lease not renewed before its expiry minus \d+ ms \([^;]*; s3:\/\/vault-out\//);
    const failing = during.report.checks.filter((c) => !c.ok).map((c) => c.name);
    assert.deepEqual(failing.filter((n) => ['db_sync_age', 'lease', 'litestream'].includes(n)), ['litestream', 'db_sync_age', 'lease'], JSON.stringify(during.report));
    assert.match(suspendedSeen, /lease not renewed before its expiry/);
    assert.equal((await a.vw.counts()).users, acked.length);
  } finally {
    s3.resume(); // also when an assertion above failed: the next test needs S3
  }
  const resumed = Date.now();
  const recovered = await (async () => {
    for (;;) {
      const h = await health(a);
      if (h.exitCode === 0) return Date.now() - resumed;
      if (Date.now() - resumed > 180_000) throw new Error(`not healthy 180 s after S3 returned: ${JSON.stringify(h.report)}`);
      await sleep(1_000);
    }
  })();
  const failPings = pings.filter((p) => p.path === '/ping/out/fail');
  assert.equal(failPings.length, 1, `sync_error notifications: ${JSON.stringify(pings)}`);
  acked.push(...(await a.vw.addUsers(5)));
  await waitDbSynced(a.host, Date.now(), 60_000);
  const journal = await a.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat']);
  assert.match(journal, /REPLICATION SUSPENDED: lease not renewed before its expiry/);
  assert.match(journal, /lease renewed: restarting Litestream to catch up/);

  // A fresh host (a secondary: no lease needed) restores every acknowledged row.
  const b = await agentHost('vws-out-b', { ...env, NODE_ROLE: 'secondary', NOTIFICATION_URL: '' });
  hosts.push(b);
  await startAgent(b.host);
  await waitServing(b.host);
  const present = await userUuids(b.host);
  const missing = acked.filter((u) => !present.has(u));
  assert.deepEqual(missing, [], `${missing.length} of ${acked.length} acknowledged rows missing on the fresh host`);
  console.log(`# measured: S3 outage ${OUTAGE_MS / 1000} s, ${writes} writes during it all acknowledged; health 503 after ${unhealthyAfterS.toFixed(1)} s (${unhealthyReason}); healthy again ${recovered} ms after S3 returned; ${failPings.length} sync_error notification; a fresh host restored all ${acked.length} rows`);
});

test('a corrupted local database at start is quarantined (kept), restored from the replica, and the journal says so', async () => {
  const c = await agentHost('vws-out-c', s3Env(s3, 'vault-out', 'corrupt/vw'));
  hosts.push(c);
  await startAgent(c.host);
  const rows = await c.vw.addUsers(25);
  await waitDbSynced(c.host, Date.now());
  await c.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
  // Everything into the main file (a WAL still holding page 1 would hide the damage),
  // then garbage over its first 8 KiB (the header and the first pages).
  await c.host.exec(['sqlite3', '/var/lib/vaultwarden/db.sqlite3', 'PRAGMA wal_checkpoint(TRUNCATE);']);
  await c.host.sh('dd if=/dev/urandom of=/var/lib/vaultwarden/db.sqlite3 bs=4096 count=2 conv=notrunc status=none');
  const badSha = (await c.host.sh('sha256sum < /var/lib/vaultwarden/db.sqlite3')).stdout;
  await startAgent(c.host);
  const s = await waitServing(c.host);
  assert.equal(s.restore.action, 'restore');
  assert.match(s.restore.reason, /local database fails integrity_check/);
  assert.equal(await c.vw.integrity(), 'ok');
  assert.equal((await c.host.sh('ls -A /var/lib/vaultwarden | grep -c vwstream-restore || true')).stdout, '0', 'no temporary restore files left in the data folder');
  const present = await userUuids(c.host);
  assert.deepEqual(rows.filter((u) => !present.has(u)), []);
  // The bad file is kept, byte for byte, under a timestamped name.
  const kept = (await c.host.sh('ls -d /var/lib/vwstream/aside/*-corrupt')).stdout.split('\n').filter(Boolean);
  assert.equal(kept.length, 1, kept.join(' '));
  assert.match(kept[0]!, /\/aside\/\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z-corrupt$/);
  assert.equal((await c.host.sh(`sha256sum < ${kept[0]}/db.sqlite3`)).stdout, badSha);
  const journal = await c.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat']);
  assert.match(journal, /restore decision: restore: local database fails integrity_check[^"]*; setting it aside and restoring/);
});
