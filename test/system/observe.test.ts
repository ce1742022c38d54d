/**
 * Issue 7, observability on a Debian 12 host from the package: /health and
 * `vwstream-agent health`, /metrics over the socket and METRICS_LISTEN, Vaultwarden and
 * Litestream killed with SIGKILL (restarted, status says so), and the systemd watchdog
 * restarting a hung agent, with Vaultwarden and Litestream stopped in between (stop-writers).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { freePort, startS3, type S3Server } from './harness.ts';
import { agentHost, s3Env, startAgent, statusJson, unitProp, userUuids, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hosts: AgentHost[] = [];
let s3: S3Server | undefined;
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  await s3?.stop();
});

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(500);
  }
}

/** One sample's value from a Prometheus exposition. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('health, metrics, SIGKILLed units restarted and reported, watchdog restarts a hung agent', async () => {
  s3 = await startS3();
  await s3.createBucket('vault-obs');
  const metricsPort = await freePort();
  const a = await agentHost('vws-ob-a', { ...s3Env(s3, 'vault-obs', 'obs/vw'), METRICS_LISTEN: `127.0.0.1:${metricsPort}` });
  hosts.push(a);
  await startAgent(a.host);
  await a.vw.addUsers(10);
  await waitDbSynced(a.host, Date.now());
  // The mirror's first pass at start counts as a file sync.
  await until('a file sync', async () => (await statusJson(a.host)).lastFileSync);

  // health: the CLI exits 0 and lists every check; the socket is 0660 root:vwstream.
  const h = await a.host.exec(['vwstream-agent', 'health', '--json']);
  const report = JSON.parse(h.stdout) as { ok: boolean; checks: { name: string; ok: boolean; detail: string }[] };
  assert.equal(report.ok, true, h.stdout);
  assert.deepEqual(report.checks.map((c) => c.name), ['state', 'vaultwarden', 'litestream', 'db_sync_age', 'file_mirror_lag', 'lease', 'wal_size', 'disk_free', 'aside_size']);
  assert.equal((await a.host.exec(['stat', '-c', '%a %U %G', '/run/vwstream/agent.sock'])).stdout, '660 root vwstream');
  assert.match((await a.host.exec(['vwstream-agent', 'health'])).stdout, /^healthy\n {2}ok {3}state/);

  // metrics: the same exposition over the socket and over METRICS_LISTEN.
  const viaSocket = (await a.host.exec(['curl', '-sf', '--unix-socket', '/run/vwstream/agent.sock', 'http://agent/metrics'])).stdout;
  const tcp = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  assert.equal(tcp.status, 200);
  assert.match(tcp.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const viaTcp = await tcp.text();
  assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/status`)).status, 404, 'only /metrics is served over TCP');
  for (const text of [viaSocket, viaTcp]) {
    assert.equal(sample(text, 'vwstream_state{state="serving"}'), 1);
    assert.equal(sample(text, 'vwstream_lease_held'), 1);
    assert.equal(sample(text, 'vwstream_restores_total{action="new-vault"}'), 1);
    assert.equal(sample(text, 'vwstream_litestream_up'), 1);
    const synced = sample(text, 'vwstream_last_db_sync_timestamp_seconds')!;
    assert.ok(Date.now() / 1000 - synced < 60, `last DB sync ${synced}`);
    assert.match(text, /^litestream_replica_wal_offset\{[^}]*\} \d+$/m);
  }

  // Litestream killed with SIGKILL: the agent restarts it, says so, replication goes on.
  const lsPid = await unitProp(a.host, 'vwstream-litestream.service', 'MainPID');
  await a.host.exec(['systemctl', 'kill', '-s', 'KILL', 'vwstream-litestream.service']);
  const afterLs = await until('Litestream restarted by the agent', async () => {
    const s = await statusJson(a.host);
    return s.unitRestarts['vwstream-litestream.service'] === 1 && s.units['vwstream-litestream.service']?.activeState === 'active' && s.state === 'serving' ? s : undefined;
  });
  assert.notEqual(await unitProp(a.host, 'vwstream-litestream.service', 'MainPID'), lsPid);
  assert.match(afterLs.unitEvents['vwstream-litestream.service'].what, /KILL/i);
  await a.vw.addUsers(5);
  await waitDbSynced(a.host, Date.now()); // replication confirmed again after the restart

  // Vaultwarden killed: restarted, answering again, counted in /metrics.
  await a.host.exec(['systemctl', 'kill', '-s', 'KILL', 'vwstream-vaultwarden.service']);
  await until('Vaultwarden restarted by the agent', async () => {
    const s = await statusJson(a.host);
    return s.unitRestarts['vwstream-vaultwarden.service'] === 1 && s.state === 'serving' && s.vaultwarden.alive;
  });
  assert.equal((await a.vw.counts()).users, 15);
  const m2 = (await a.host.exec(['curl', '-sf', '--unix-socket', '/run/vwstream/agent.sock', 'http://agent/metrics'])).stdout;
  assert.equal(sample(m2, 'vwstream_unit_restarts_total{unit="vwstream-vaultwarden.service"}'), 1);
  assert.equal(sample(m2, 'vwstream_unit_restarts_total{unit="vwstream-litestream.service"}'), 1);
  const journal = await a.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat']);
  assert.match(journal, /"msg":"degraded: vwstream-litestream\.service[^"]*KILL[^"]*; restarting it"/i);

  // Watchdog: the agent hangs (SIGSTOP). systemd kills it after WatchdogSec (4 s here) and
  // restarts it; in between its ExecStopPost (stop-writers) stops Vaultwarden and Litestream
  // (nobody renews the lease while the agent is gone), and the new agent starts them again.
  assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'WatchdogUSec'), '30s', 'the packaged unit sets WatchdogSec=30s');
  await a.host.writeFile('/etc/systemd/system/vwstream-agent.service.d/watchdog-test.conf', '[Service]\nWatchdogSec=4s\nTimeoutAbortSec=3s\n', 0o644);
  await a.host.exec(['systemctl', 'daemon-reload']);
  await startAgent(a.host); // the watchdog setting applies from this start
  const vwPid = await unitProp(a.host, 'vwstream-vaultwarden.service', 'MainPID');
  const agentPid = await unitProp(a.host, 'vwstream-agent.service', 'MainPID');
  const restartsBefore = Number(await unitProp(a.host, 'vwstream-agent.service', 'NRestarts'));
  await sleep(6_000); // pings flow: no watchdog restart while the agent runs
  assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'MainPID'), agentPid);
  const hungAt = Date.now();
  await a.host.exec(['kill', '-STOP', agentPid]);
  const newPid = await until('the agent restarted by the watchdog', async () => {
    const pid = await unitProp(a.host, 'vwstream-agent.service', 'MainPID');
    return pid !== agentPid && pid !== '0' && (await a.host.exec(['systemctl', 'is-active', 'vwstream-agent.service'], { check: false })).stdout === 'active' ? pid : undefined;
  }, 90_000);
  const recoveredMs = Date.now() - hungAt;
  assert.ok(newPid);
  assert.equal(Number(await unitProp(a.host, 'vwstream-agent.service', 'NRestarts')), restartsBefore + 1);
  assert.notEqual(await unitProp(a.host, 'vwstream-vaultwarden.service', 'MainPID'), vwPid, 'Vaultwarden did not outlive the hung agent');
  const wd = await a.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat', '--since', `@${Math.floor(hungAt / 1000)}`]);
  assert.match(wd, /Watchdog timeout/);
  assert.match(wd, /^stop-writers: vwstream-agent stopped without a drain \(result watchdog[^)]*\); stopping vwstream-vaultwarden\.service, then vwstream-litestream\.service/m);
  // LEASE_TTL 10 s: after a 4 s hang plus the kill the lease may be too close to its end for a final sync.
  assert.match(wd, /^stop-writers: (this host holds the lease until \S+: vwstream-litestream\.service stops with its confirmed final sync|.*: vwstream-litestream\.service killed \(SIGKILL\) without a final sync)/m);
  assert.doesNotMatch(wd, /already running: adopting them/);
  await waitServing(a.host);
  const last = await a.vw.addUsers(3);
  await waitDbSynced(a.host, Date.now());
  const present = await userUuids(a.host);
  assert.ok(last.every((u) => present.has(u)));
  console.log(`# measured: watchdog (WatchdogSec=4s) — hung agent replaced, writers stopped and started again, serving ${recoveredMs} ms after SIGSTOP`);
});
