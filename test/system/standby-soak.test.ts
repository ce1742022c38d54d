/**
 * Issue 14 (4): a primary and a secondary on one bucket with DEFAULT intervals (nothing but
 * the bucket and the role is set: LEASE_TTL 60 s, SECONDARY_SYNC_INTERVAL 3600 s,
 * HEALTHCHECK_* and WatchdogSec=30s as shipped) for SOAK_S seconds. Neither agent is
 * restarted (NRestarts, InvocationID, MainPID unchanged), no watchdog fires, neither
 * Vaultwarden is restarted (its unit's InvocationID unchanged), and `vwstream-agent
 * health` exits 0 on both at least once a minute and at the end. Runs beside the other
 * system tests (Makefile: SLOW_IDLE_TESTS): it mostly waits.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startS3, type Host } from './harness.ts';
import { agentHost, agentMessages, startAgentQuick, unitProp, waitDbSynced, waitFor, statusJson, type AgentHost } from './common.ts';

const SOAK_S = Number(process.env.VWS_SOAK_S ?? 200);
const HEALTH_EVERY_MS = 20_000;
const AGENT = 'vwstream-agent.service';
const VW = 'vwstream-vaultwarden.service';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Ident { nRestarts: string; invocation: string; mainPid: string; vwInvocation: string; vwRestarts: string }
async function ident(host: Host): Promise<Ident> {
  return {
    nRestarts: await unitProp(host, AGENT, 'NRestarts'),
    invocation: await unitProp(host, AGENT, 'InvocationID'),
    mainPid: await unitProp(host, AGENT, 'MainPID'),
    vwInvocation: await unitProp(host, VW, 'InvocationID'),
    vwRestarts: await unitProp(host, VW, 'NRestarts'),
  };
}

interface Sample { host: string; atS: number; exit: number; failing: string[] }
async function health(h: AgentHost, t0: number): Promise<Sample> {
  const r = await h.host.exec(['vwstream-agent', 'health', '--json'], { check: false, timeoutMs: 30_000 });
  let failing: string[] = [];
  try {
    failing = (JSON.parse(r.stdout) as { checks: { name: string; ok: boolean; detail: string }[] }).checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
  } catch { failing = [`unparsable: ${r.stdout.slice(0, 200)} ${r.stderr.slice(0, 200)}`]; }
  return { host: h.host.name, atS: Math.round((Date.now() - t0) / 1000), exit: r.exitCode, failing };
}

test(`standby soak: primary and secondary with default intervals for ${SOAK_S} s — no restart, no watchdog, health 0 every minute`, async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-soak');
    const env = { S3_BUCKET: 'vault-soak', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'soak-key', S3_SECRET_ACCESS_KEY: 'soak-secret-3b4c5d6e', S3_REGION: 'us-east-1', S3_PREFIX: 'soak/vw' };
    const [p, s] = await Promise.all([agentHost('vws-soak-p', env), agentHost('vws-soak-s', { ...env, NODE_ROLE: 'secondary' })]);
    hosts.push(p!, s!);
    const primary = p!, secondary = s!;
    await startAgentQuick(primary.host);
    await primary.vw.addUsers(25);
    await waitDbSynced(primary.host, Date.now());
    await startAgentQuick(secondary.host, 300_000);
    await waitFor('secondary serving', 120_000, async () => {
      const st = await statusJson(secondary.host);
      return st.state === 'serving' && st.role === 'secondary' ? st : undefined;
    }, secondary.host);
    assert.equal((await secondary.vw.counts()).users, 25, 'the secondary serves the primary\'s rows');
    for (const [h, k, v] of [[primary, 'LEASE_TTL', '60'], [secondary, 'SECONDARY_SYNC_INTERVAL', '3600']] as const) {
      assert.doesNotMatch(await h.host.readFile('/etc/vwstream/vwstream.env'), new RegExp(`^${k}=`, 'm'), `${k} is left at its default (${v})`);
    }
    assert.equal(await unitProp(secondary.host, AGENT, 'WatchdogUSec'), '30s');

    const before = { p: await ident(primary.host), s: await ident(secondary.host) };
    const t0 = Date.now();
    const samples: Sample[] = [];
    let wrote = 0;
    while (Date.now() - t0 < SOAK_S * 1000) {
      samples.push(await health(primary, t0), await health(secondary, t0));
      await primary.vw.addUsers(1); // the primary keeps writing a little
      wrote++;
      await sleep(Math.max(0, HEALTH_EVERY_MS - ((Date.now() - t0) % HEALTH_EVERY_MS)));
    }
    samples.push(await health(primary, t0), await health(secondary, t0));
    const soakedS = Math.round((Date.now() - t0) / 1000);
    for (const x of samples) console.log(`# health ${x.host} t=${x.atS}s exit ${x.exit}${x.failing.length ? ` FAILING ${x.failing.join('; ')}` : ''}`);

    const after = { p: await ident(primary.host), s: await ident(secondary.host) };
    assert.ok(soakedS >= 180, `soaked ${soakedS} s`);
    assert.deepEqual(after.s, before.s, 'secondary: agent not restarted (NRestarts, InvocationID, MainPID), Vaultwarden not restarted');
    assert.deepEqual(after.p, before.p, 'primary: agent not restarted, Vaultwarden not restarted');
    for (const h of [primary, secondary]) {
      const m = await agentMessages(h.host);
      const wd = m.filter((l) => /Watchdog timeout|withholding the watchdog ping|watchdog/i.test(l));
      assert.deepEqual(wd, [], `${h.host.name}: watchdog lines in the journal`);
      const mine = samples.filter((x) => x.host === h.host.name);
      assert.deepEqual(mine.filter((x) => x.exit !== 0), [], `${h.host.name}: health not 0`);
      // At least once a minute, first at the start, last at the end.
      assert.ok(mine[0]!.atS <= 5 && mine.at(-1)!.atS >= soakedS - 5, `${h.host.name}: health at start and end`);
      for (let i = 1; i < mine.length; i++) assert.ok(mine[i]!.atS - mine[i - 1]!.atS <= 60, `${h.host.name}: gap ${mine[i - 1]!.atS}→${mine[i]!.atS} s`);
    }
    assert.equal((await primary.vw.counts()).users, 25 + wrote);
    assert.equal((await secondary.vw.counts()).users, 25, 'no refresh within SECONDARY_SYNC_INTERVAL (3600 s): the copy of the start');
    const st = await statusJson(secondary.host);
    assert.equal(st.state, 'serving');
    console.log(`# measured: soak ${soakedS} s, ${samples.length} health samples, all exit 0; secondary refresh age ${st.lastRefreshAgeSeconds} s at the end`);
  } finally {
    await s3.stop();
  }
});
