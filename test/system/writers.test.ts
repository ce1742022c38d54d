/**
 * Issue 14, on real parts (the .deb installed by apt on a Debian 12 host under
 * systemd-nspawn, the real litestream, fauxqs S3, the Vaultwarden stand-in), default
 * intervals (LEASE_TTL 60 s):
 *
 * 1. The writers never outlive the agent: a SIGKILLed agent's ExecStopPost (stop-writers)
 *    stops Vaultwarden, then Litestream with its confirmed final sync (the lease is still
 *    this host's), before systemd restarts the agent; `systemctl restart` drains as before
 *    and stop-writers has nothing to do; an agent that exits 78 (bad config) while writers
 *    started by hand run stops both, Litestream killed without a final sync (the lease
 *    cannot be proven).
 * 2. `restore --force` and `restore --backup` refuse while vwstream-vaultwarden runs with
 *    the agent stopped: one line naming the unit and the command, exit 1, database bytes
 *    unchanged.
 * 3. Read-only commands (generations, snapshots, status, health; status and health also as
 *    a member of group vwstream) write nothing under /run/vwstream, even with a config
 *    edited since the agent's start; the serving agent and its Litestream are untouched.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startS3, type Host, type S3Server } from './harness.ts';
import { agentHost, agentMessages, journalTail, startAgent, unitProp, waitFor, waitServing, writeEnv, type AgentHost } from './common.ts';

const AGENT = 'vwstream-agent.service';
const VW = 'vwstream-vaultwarden.service';
const LS = 'vwstream-litestream.service';

/**
 * Journal lines of the agent and both writer units, in order (msg of JSON lines, others as
 * they are: confirm-sync writes to Litestream's unit, systemd's "Stopped …" lines too).
 */
async function messagesSince(host: Host, sinceMs: number): Promise<string[]> {
  return agentMessages(host, ['-u', VW, '-u', LS, '--since', `@${(sinceMs / 1000).toFixed(3)}`]);
}

/** Index of the first line matching re at or after `from`; -1 when none. */
function indexOf(lines: string[], re: RegExp, from = 0): number {
  for (let i = from; i < lines.length; i++) if (re.test(lines[i]!)) return i;
  return -1;
}

async function dbHash(host: Host): Promise<string> {
  return (await host.sh('cd /var/lib/vaultwarden && sha256sum db.sqlite3 $(ls db.sqlite3-wal 2>/dev/null)')).stdout;
}

/**
 * Every entry under /run/vwstream: type, mode, owner, size, inode, mtime and ctime in
 * nanoseconds, and the sha256 of each regular file (root reads them all).
 */
async function runDirSnapshot(host: Host): Promise<string> {
  return (await host.sh('cd /run/vwstream && find . -mindepth 1 -printf "%p %y %m %u:%g %s %i %T@ %C@\\n" | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum')).stdout;
}

describe('writers bound to the agent; restore refuses under a writer; read-only commands', () => {
  let s3: S3Server;
  let a: AgentHost;
  let env: Record<string, string>;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket('vault-writers');
    // Default intervals: only the bucket is set (LEASE_TTL stays 60 s).
    env = { S3_BUCKET: 'vault-writers', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'writers-key', S3_SECRET_ACCESS_KEY: 'writers-secret-9c8d7e6f', S3_REGION: 'us-east-1', S3_PREFIX: 'wr/vw' };
    a = await agentHost('vws-wr-a', env);
    await startAgent(a.host);
  });
  after(async () => {
    await a?.host.destroy().catch(() => undefined);
    await s3?.stop();
  });

  test('SIGKILLed agent: stop-writers stops Vaultwarden, then Litestream after its confirmed final sync, before the restart; restart drains with nothing left to stop', async () => {
    await a.vw.addUsers(20);
    const vwInv = await unitProp(a.host, VW, 'InvocationID');
    const lsInv = await unitProp(a.host, LS, 'InvocationID');
    const agentPid = await unitProp(a.host, AGENT, 'MainPID');
    const restarts = Number(await unitProp(a.host, AGENT, 'NRestarts'));
    await a.vw.addUsers(30); // not waited for: the final sync must carry them
    const killAt = Date.now();
    await a.host.exec(['kill', '-KILL', agentPid]); // a crash: the main process dies at once
    const { ms: backMs } = await waitFor('the agent restarted by systemd and serving', 120_000, async () => {
      const pid = await unitProp(a.host, AGENT, 'MainPID');
      return pid !== agentPid && pid !== '0' && (await waitServing(a.host, 2_000).catch(() => undefined)) ? pid : undefined;
    }, a.host);
    assert.equal(Number(await unitProp(a.host, AGENT, 'NRestarts')), restarts + 1);
    assert.notEqual(await unitProp(a.host, VW, 'InvocationID'), vwInv, 'Vaultwarden was stopped and started again');
    assert.notEqual(await unitProp(a.host, LS, 'InvocationID'), lsInv, 'Litestream was stopped and started again');

    const m = await messagesSince(a.host, killAt - 1000);
    const excerpt = m.filter((l) => /stop-writers|confirm-sync|Stopp|Started|starting|serving|drain/.test(l)).join('\n');
    const noDrain = indexOf(m, /^stop-writers: vwstream-agent stopped without a drain \(result signal, killed KILL\); stopping vwstream-vaultwarden\.service, then vwstream-litestream\.service: nobody renews the lease now$/);
    const vwDone = indexOf(m, /^stop-writers: vwstream-vaultwarden\.service stop done in \d+ ms$/, noDrain);
    const plan = indexOf(m, /^stop-writers: this host holds the lease until \S+: vwstream-litestream\.service stops with its confirmed final sync, within \d+ s$/, vwDone);
    const confirmed = indexOf(m, /^confirm-sync: final sync confirmed in \d+ ms: replica at [0-9a-f]{16}\/\d+:\d+ = local WAL$/, plan);
    const lsDone = indexOf(m, /^stop-writers: vwstream-litestream\.service stop done in \d+ ms$/, confirmed);
    const restarted = indexOf(m, /^vwstream-agent starting$/, lsDone);
    assert.ok(noDrain >= 0 && vwDone > noDrain && plan > vwDone && confirmed > plan && lsDone > confirmed && restarted > lsDone,
      `expected no drain → Vaultwarden stopped → final sync within the lease → confirmed → Litestream stopped → restart:\n${excerpt}`);
    assert.equal(m.filter((l) => /^drain (complete|incomplete)/.test(l)).length, 0, `no drain ran:\n${excerpt}`);
    assert.equal((await a.vw.counts()).users, 50);
    // systemd's own lines agree on the order, and both came before the agent's restart.
    const vwStopped = indexOf(m, /^Stopped (vwstream-vaultwarden\.service - )?Vaultwarden \(run by vwstream-agent\)/, noDrain);
    const lsStopped = indexOf(m, /^Stopped (vwstream-litestream\.service - )?Litestream replication of the Vaultwarden database/, noDrain);
    assert.ok(vwStopped > noDrain && lsStopped > vwStopped && restarted > lsStopped, `systemd: Vaultwarden stopped, then Litestream, then the restart:\n${excerpt}`);

    // An orderly restart: the drain as before, then stop-writers finds nothing to stop.
    const restartAt = Date.now();
    await startAgent(a.host);
    const r = await messagesSince(a.host, restartAt - 500);
    const complete = indexOf(r, /^drain complete in \d+ ms$/);
    const again = indexOf(r, /^serving: /, complete);
    assert.ok(complete >= 0 && again > complete, `restart: drain complete, then serving:\n${r.filter((l) => /drain|serving|stop-writers/.test(l)).join('\n')}`);
    assert.deepEqual(r.filter((l) => l.startsWith('stop-writers:')), [], 'stop-writers had nothing to do after a drain');
    console.log(`# measured: SIGKILL → serving again in ${backMs} ms (stop-writers, RestartSec 5 s, start)`);
  });

  test('exit 78 (bad config) while writers started by hand run: both stopped, Litestream killed without a final sync; no restart', async () => {
    await a.host.exec(['systemctl', 'stop', AGENT], { timeoutMs: 400_000 });
    await a.host.exec(['systemctl', 'start', LS, VW]);
    assert.equal(await unitProp(a.host, VW, 'ActiveState'), 'active');
    assert.equal(await unitProp(a.host, LS, 'ActiveState'), 'active');
    await writeEnv(a.host, { ...env, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), NODE_ROLE: 'tertiary' });
    try {
      const restarts = Number(await unitProp(a.host, AGENT, 'NRestarts'));
      const t = Date.now();
      const r = await a.host.exec(['systemctl', 'start', AGENT], { check: false, timeoutMs: 300_000 });
      assert.notEqual(r.exitCode, 0);
      await waitFor('the agent failed with 78 and stop-writers done', 60_000, async () =>
        (await unitProp(a.host, AGENT, 'ActiveState')) === 'failed' ? true : undefined, a.host);
      assert.equal(await unitProp(a.host, AGENT, 'ExecMainStatus'), '78');
      assert.equal(await unitProp(a.host, VW, 'ActiveState'), 'inactive');
      assert.match(await unitProp(a.host, LS, 'ActiveState'), /^(inactive|failed)$/);
      const m = await messagesSince(a.host, t - 500);
      const excerpt = m.filter((l) => /stop-writers|confirm-sync|config/.test(l)).join('\n');
      const noDrain = indexOf(m, /^stop-writers: vwstream-agent stopped without a drain \(result exit-code, exited 78\); stopping vwstream-vaultwarden\.service, then vwstream-litestream\.service/);
      const vwDone = indexOf(m, /^stop-writers: vwstream-vaultwarden\.service stop done/, noDrain);
      const killed = indexOf(m, /^stop-writers: the lease cannot be read \(NODE_ROLE="tertiary" is not valid.*\): vwstream-litestream\.service killed \(SIGKILL\) without a final sync/, vwDone);
      assert.ok(noDrain >= 0 && vwDone > noDrain && killed > vwDone, `expected 78 → Vaultwarden stopped → Litestream killed:\n${excerpt}`);
      // SIGKILL: systemd skips ExecStop= after an unclean exit, so no confirm-sync and no final sync at all.
      assert.deepEqual(m.slice(noDrain).filter((l) => /^confirm-sync:/.test(l)), [], `no final sync after the kill:\n${excerpt}`);
      assert.ok(indexOf(m, /^vwstream-litestream\.service: Main process exited, code=killed, status=9\/KILL$/, killed) > killed, `Litestream killed (9) after the plan:\n${m.filter((l) => /stop-writers|litestream/i.test(l)).join('\n')}`);
      await new Promise((res) => setTimeout(res, 6_000)); // RestartSec=5s: a restart would have begun
      assert.equal(Number(await unitProp(a.host, AGENT, 'NRestarts')), restarts, 'RestartPreventExitStatus=78: not restarted');
    } finally {
      await writeEnv(a.host, { ...env, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port) });
      await a.host.exec(['systemctl', 'reset-failed', AGENT, LS], { check: false });
    }
  });

  test('restore --force and --backup refuse while vwstream-vaultwarden runs without the agent; the database bytes stay', async () => {
    assert.match(await unitProp(a.host, AGENT, 'ActiveState'), /^(inactive|failed)$/);
    await a.host.exec(['systemctl', 'start', VW]);
    await waitFor('the hand-started Vaultwarden answers', 30_000, async () => (await a.vw.alive()) ? true : undefined);
    const before = await dbHash(a.host);
    const users = (await a.vw.counts()).users;
    for (const argv of [['restore', '--force'], ['restore', '--backup', '/var/tmp/vaultwarden-20260101-000000.tar.gz', '--force']]) {
      const r = await a.host.exec(['vwstream-agent', ...argv], { check: false, timeoutMs: 300_000 });
      assert.equal(r.exitCode, 1, `${argv.join(' ')}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
      const errLines = r.stderr.trim().split('\n');
      assert.deepEqual(errLines, ['vwstream-agent: vwstream-vaultwarden.service is active without vwstream-agent; nothing was restored; stop it first: systemctl stop vwstream-vaultwarden.service'], `${argv.join(' ')}: ${r.stderr}`);
      assert.equal(await dbHash(a.host), before, `${argv.join(' ')}: database bytes unchanged`);
      assert.equal(await unitProp(a.host, VW, 'ActiveState'), 'active');
      assert.match(await unitProp(a.host, AGENT, 'ActiveState'), /^(inactive|failed)$/, 'the agent was not started');
    }
    assert.equal((await a.vw.counts()).users, users);
    const aside = (await a.host.sh('ls /var/lib/vwstream/aside 2>/dev/null | wc -l')).stdout.trim();
    assert.equal(aside, '0', 'nothing set aside');
    await a.host.exec(['systemctl', 'stop', VW]);
    await startAgent(a.host, 'start');
    await waitServing(a.host);
  });

  test('generations, snapshots, status, health write nothing under /run/vwstream (root and group vwstream), with a config edited since the start', async () => {
    await a.host.exec(['useradd', '-M', '-G', 'vwstream', 'monitor']);
    // An edit not yet applied (no restart): the old code rewrote the live litestream.yml from it.
    await writeEnv(a.host, { ...env, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), LITESTREAM_SNAPSHOT_INTERVAL: '2h', LITESTREAM_RETENTION: '48h' });
    const agentPid = await unitProp(a.host, AGENT, 'MainPID');
    const lsInv = await unitProp(a.host, LS, 'InvocationID');
    const vwInv = await unitProp(a.host, VW, 'InvocationID');
    const before = await runDirSnapshot(a.host);
    assert.match(before, /\.\/litestream\.yml f 600 vwstream-litestream:root/);
    assert.match(before, /\.\/agent\.sock s /);
    const liveYml = await a.host.readFile('/run/vwstream/litestream.yml');
    const runs: [string, string[], string?][] = [
      ['root', ['generations']], ['root', ['generations', '--json']], ['root', ['snapshots']], ['root', ['snapshots', '--json']],
      ['root', ['status']], ['root', ['status', '--json']], ['root', ['health']],
      ['monitor', ['status']], ['monitor', ['status', '--json']], ['monitor', ['health']],
    ];
    for (const [user, argv] of runs) {
      const cmd = user === 'root' ? ['vwstream-agent', ...argv] : ['runuser', '-u', user, '--', 'vwstream-agent', ...argv];
      const r = await a.host.exec(cmd, { check: false, timeoutMs: 120_000 });
      assert.equal(r.exitCode, 0, `${user}: ${argv.join(' ')}: exit ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
      if (argv[0] === 'generations' && argv[1] === '--json') assert.ok((JSON.parse(r.stdout) as { generations: unknown[] }).generations.length >= 1, r.stdout);
      if (argv[0] === 'snapshots' && argv[1] === '--json') assert.ok((JSON.parse(r.stdout) as { snapshots: unknown[] }).snapshots.length >= 1, r.stdout);
      assert.equal(await runDirSnapshot(a.host), before, `${user}: ${argv.join(' ')} changed something under /run/vwstream`);
    }
    assert.equal(await a.host.readFile('/run/vwstream/litestream.yml'), liveYml);
    assert.doesNotMatch(liveYml, /snapshot-interval: "2h0m0s"/);
    assert.equal((await a.host.sh('ls -d /run/vwstream-cli-* /tmp/vwstream-cli-* 2>/dev/null | wc -l')).stdout.trim(), '0', 'the private directories are removed');
    assert.equal(await unitProp(a.host, AGENT, 'MainPID'), agentPid);
    assert.equal(await unitProp(a.host, LS, 'InvocationID'), lsInv);
    assert.equal(await unitProp(a.host, VW, 'InvocationID'), vwInv);
    assert.equal((await waitServing(a.host, 5_000)).state, 'serving');
    const since = Date.now();
    await a.vw.addUsers(2);
    await waitFor('replica in sync after the commands', 30_000, async () => {
      const s = JSON.parse((await a.host.exec(['vwstream-agent', 'status', '--json'])).stdout) as { lastDbSync: string | null };
      return s.lastDbSync && Date.parse(s.lastDbSync) >= since ? true : undefined;
    }, a.host);
    if (!a.host.running) throw new Error(await journalTail(a.host));
  });
});
