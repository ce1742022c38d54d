/**
 * Faults, end to end on real parts (contract behaviour 4 and the "RPO about one second"
 * promise): the .deb installed by apt on fresh Debian 12 hosts (systemd-nspawn), the real
 * litestream, fauxqs S3 on loopback, the Vaultwarden stand-in.
 *
 * 1. Power loss in the middle of a steady write load: how many acknowledged rows are lost.
 * 2. S3 hangs during an orderly poweroff: the drain stays within STOP_GRACE_PERIOD, the
 *    journal names the step that ran out of time, the next boot re-syncs and nothing is lost.
 *
 * (An orderly poweroff with a healthy S3 losing nothing, with the stop order read from the
 * journal, is drain.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startS3, type Host } from './harness.ts';
import { agentHost, s3Env, startAgent, statusJson, userUuids, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until vwstream-agent.service is active (Type=notify: READY=1 was sent). */
async function waitAgentActive(host: Host, timeoutMs = 180_000): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const st = (await host.exec(['systemctl', 'is-active', 'vwstream-agent.service'], { check: false })).stdout.trim();
    if (st === 'active') return Date.now() - t0;
    if (st === 'failed') throw new Error(`vwstream-agent.service failed:\n${await host.journal(['-b', '0', '-u', 'vwstream-agent.service', '-n', '40', '-o', 'cat'])}`);
    await sleep(250);
  }
  throw new Error(`vwstream-agent.service not active after ${timeoutMs} ms:\n${await host.journal(['-b', '0', '-u', 'vwstream-agent.service', '-n', '40', '-o', 'cat'])}`);
}

/** The `msg` of every pino JSON line (other lines as they are), from `journalctl -o cat`. */
function messages(journal: string): string[] {
  return journal.split('\n').filter(Boolean).map((l) => {
    if (!l.startsWith('{')) return l;
    try { return String((JSON.parse(l) as { msg?: unknown }).msg ?? l); } catch { return l; }
  });
}

const drainLines = (msgs: string[]) => msgs.filter((m) => /drain|confirm-sync|Stopp|re-sync|timed out|Killing process/.test(m)).join('\n');

test('power loss under a steady write load loses at most ~2 s of acknowledged writes', async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-crash');
    const env = s3Env(s3, 'vault-crash', 'crash/vw');
    const a = await agentHost('vws-ft-a', env);
    hosts.push(a);
    await startAgent(a.host);

    // ~20 rows/s for 8 s, one committed transaction per request, each ack recorded.
    const acked: { uuid: string; at: number }[] = [];
    const t0 = Date.now();
    for (let i = 0; Date.now() - t0 < 8_000; i++) {
      const wait = t0 + i * 50 - Date.now();
      if (wait > 0) await sleep(wait);
      const [uuid] = await a.vw.addUsers(1);
      acked.push({ uuid: uuid!, at: Date.now() });
    }
    const killAt = Date.now();
    await a.host.kill9();
    const writeSpanS = (acked.at(-1)!.at - acked[0]!.at) / 1000;

    const b = await agentHost('vws-ft-b', env);
    hosts.push(b);
    await startAgent(b.host);
    await waitServing(b.host, 60_000); // the crashed holder's lease expires first (LEASE_TTL=10)
    assert.equal((await statusJson(b.host)).restore.action, 'restore');
    assert.equal(await b.vw.integrity(), 'ok');
    const present = await userUuids(b.host);
    assert.equal((await b.vw.counts()).users, present.size);

    const lostIdx = acked.flatMap((r, i) => (present.has(r.uuid) ? [] : [i]));
    const lost = lostIdx.length;
    // Only the newest writes may be missing: a hole in the middle would be corruption.
    if (lost > 0) assert.deepEqual(lostIdx, acked.slice(acked.length - lost).map((_, k) => acked.length - lost + k), 'lost rows are not the newest ones');
    assert.equal(present.size, acked.length - lost, 'rows on the new host that were never acknowledged');
    // Seconds of writes lost: from the first lost row's ack to the power loss.
    const lostMs = lost > 0 ? killAt - acked[lostIdx[0]!]!.at : 0;
    console.log(`# measured: crash lost ${lost} of ${acked.length} acknowledged rows (≈${(lostMs / 1000).toFixed(2)} s of writes; ${(acked.length / writeSpanS).toFixed(1)} rows/s)`);
    // The goal is ≤ 1 s (LITESTREAM_SYNC_INTERVAL=1s). Litestream's shadow WAL trails the real
    // WAL by up to one monitor tick (1 s) before the sync interval applies, so up to ~2 s can
    // be in flight at the moment of a power loss: assert 2 s, the margin over the goal on purpose.
    assert.ok(lostMs <= 2_000, `crash lost ${lost} rows = ${lostMs} ms of writes (> 2 s)`);
    for (const h of [a, b]) await h.host.destroy();
  } finally {
    await s3.stop();
  }
});

test('S3 hangs during poweroff: off within STOP_GRACE_PERIOD, journal names the step, next boot re-syncs, nothing lost', async () => {
  const s3 = await startS3();
  let paused = false;
  try {
    await s3.createBucket('vault-hang');
    const grace = 40;
    // LEASE_TTL=60 (the default): the lease's deadline stays beyond the drain, so each step
    // runs into its own timeout. (With a short TTL the deadline falls inside the drain and
    // Litestream is killed without its final sync: the fencing tests cover that.)
    const env = { ...s3Env(s3, 'vault-hang', 'hang/vw'), LEASE_TTL: '60', STOP_GRACE_PERIOD: String(grace), LITESTREAM_SHUTDOWN_TIMEOUT: '10', SYNC_SHUTDOWN_TIMEOUT: '10' };
    const c = await agentHost('vws-ft-c', env);
    hosts.push(c);
    await startAgent(c.host);

    const before = await c.vw.addUsers(50);
    const shaBefore = await c.vw.addAttachment('before-outage.bin', 40_000);
    const since = Date.now();
    await waitDbSynced(c.host, since);
    for (let i = 0; ; i++) { // the attachment is mirrored within ~1-2 s of the change
      const s = await statusJson(c.host);
      if (s.lastFileSync && Date.parse(s.lastFileSync) >= since) break;
      if (i > 120) throw new Error(`file mirror not in sync: ${JSON.stringify(s)}`);
      await sleep(250);
    }

    // S3 hangs (SIGSTOP): every request stalls, nothing is refused.
    s3.pause();
    paused = true;
    const during = await c.vw.addUsers(10);
    const shaDuring = await c.vw.addAttachment('during-outage.bin', 30_000);
    await sleep(1_500); // one Litestream monitor tick: the new frames are in its shadow WAL, unsent

    let off: { ms: number };
    try {
      off = await c.host.poweroff(150_000);
    } catch (e) {
      throw new Error(`poweroff with S3 hanging: ${(e as Error).message}\n--- agent journal ---\n${drainLines(messages(await c.host.journal(['-o', 'cat'])))}`);
    }
    const journal = messages(await c.host.journal(['-o', 'cat']));
    const excerpt = drainLines(journal);
    console.log(`# measured: poweroff with S3 hanging took ${off.ms} ms (STOP_GRACE_PERIOD=${grace}s)\n# ${excerpt.split('\n').join('\n# ')}`);
    // systemd itself needs a little beyond the agent's drain: 20 s of margin.
    assert.ok(off.ms <= (grace + 20) * 1000, `host off after ${off.ms} ms, more than STOP_GRACE_PERIOD ${grace} s + 20 s`);
    assert.ok(journal.some((m) => /^confirm-sync: final sync NOT confirmed in \d+ ms/.test(m)), `no "confirm-sync: final sync NOT confirmed":\n${excerpt}`);
    assert.ok(journal.some((m) => /^drain: litestream FAILED in \d+ ms: final sync NOT confirmed/.test(m)), `no "drain: litestream FAILED … NOT confirmed":\n${excerpt}`);
    const incomplete = journal.find((m) => /^drain incomplete: /.test(m));
    assert.ok(incomplete, `no "drain incomplete":\n${excerpt}`);
    assert.match(incomplete, /^drain incomplete: [^(]*\blitestream\b[^(]* did not finish \(/);
    assert.ok(!journal.some((m) => /^drain complete in/.test(m)), `"drain complete" although S3 hung:\n${excerpt}`);

    // S3 is back; the host boots again (the agent is enabled) and re-syncs before serving.
    s3.resume();
    paused = false;
    const bootAt = Date.now();
    await c.host.boot();
    await waitAgentActive(c.host);
    // The incomplete drain did not release the lease: this boot's agent (a new instance)
    // may first wait (READY, state waiting) for it to expire, then re-syncs and serves.
    await waitServing(c.host, 180_000);
    const activeMs = Date.now() - bootAt;
    const boot2 = messages(await c.host.journal(['-b', '0', '-u', 'vwstream-agent.service', '-o', 'cat']));
    assert.ok(boot2.some((m) => /^last drain incomplete: .*; re-syncing before serving$/.test(m)), `no "last drain incomplete" at the next boot:\n${drainLines(boot2)}`);
    assert.ok(boot2.includes('database replica confirmed in sync after the incomplete drain'), `re-sync not confirmed at the next boot:\n${drainLines(boot2)}`);
    const present = await userUuids(c.host);
    for (const u of [...before, ...during]) assert.ok(present.has(u), `row ${u} missing on the rebooted host`);
    assert.deepEqual(await c.vw.counts(), { users: 60, ciphers: 1, attachments: 2 });
    const lagMs = await waitDbSynced(c.host, Date.now(), 60_000);
    console.log(`# measured: rebooted host's agent serving ${activeMs} ms after the boot began (lease expiry and re-sync included), replica confirmed ${lagMs} ms later`);

    // An orderly poweroff with S3 healthy now completes its drain (and ends this primary).
    const off2 = await c.host.poweroff(120_000);
    const last = messages(await c.host.journal(['-u', 'vwstream-agent.service', '-o', 'cat'])).filter((m) => /^drain (complete|incomplete)/.test(m)).at(-1);
    assert.match(last ?? '', /^drain complete in \d+ ms$/, `second poweroff (${off2.ms} ms)`);

    // A fresh host with the same config restores everything, outage writes included.
    const d = await agentHost('vws-ft-d', env);
    hosts.push(d);
    await startAgent(d.host);
    assert.equal((await statusJson(d.host)).restore.action, 'restore');
    assert.equal(await d.vw.integrity(), 'ok');
    const restored = await userUuids(d.host);
    assert.equal(restored.size, 60);
    for (const u of [...before, ...during]) assert.ok(restored.has(u), `row ${u} not restored on the fresh host`);
    assert.equal((await d.vw.counts()).attachments, 2);
    const found = (await d.host.sh('cd /var/lib/vaultwarden/attachments && find . -type f -print0 | sort -z | xargs -0 sha256sum')).stdout;
    for (const sha of [shaBefore, shaDuring]) assert.ok(found.includes(sha), `attachment ${sha} restored`);
  } finally {
    if (paused) s3.resume();
    await s3.stop();
  }
});
