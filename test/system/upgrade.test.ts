/**
 * Issue 8: package life cycle on a running primary, with rows written all the time.
 * - `apt-get install ./newer.deb` drains the running agent (Vaultwarden stops, Litestream's
 *   final sync is confirmed) and starts the new version; the administrator's config is kept.
 * - `apt-get remove` stops it with a drain; `dpkg --purge` removes agent state and config
 *   but never /var/lib/vaultwarden.
 * - A fresh host restores from the replica: every row the stand-in acknowledged is there.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { startS3, type Host } from './harness.ts';
import { agentHost, debPath, startAgent, statusJson, waitServing, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'a8-upgrade-'));
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The package under test repacked with a higher version: what an upgrade installs. */
async function newerDeb(deb: string): Promise<{ file: string; version: string }> {
  const dir = path.join(tmp, 'pkg');
  await execa('dpkg-deb', ['-R', deb, dir]);
  const control = fs.readFileSync(path.join(dir, 'DEBIAN', 'control'), 'utf8');
  const old = /^Version: (.+)$/m.exec(control)![1]!;
  const version = `${old}+upgrade1`;
  fs.writeFileSync(path.join(dir, 'DEBIAN', 'control'), control.replace(/^Version: .+$/m, `Version: ${version}`));
  const file = path.join(tmp, `vwstream-agent_${version}_amd64.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', dir, file]);
  fs.rmSync(dir, { recursive: true, force: true });
  await execa('dpkg', ['--compare-versions', version, 'gt', old]);
  return { file, version };
}

/** Writes one user per request until stopped; keeps the uuids the stand-in acknowledged. */
function writer(port: number) {
  const acked: string[] = [];
  let failed = 0;
  let stop = false;
  const done = (async () => {
    while (!stop) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/__standin/users?n=1`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
        const body = await r.text();
        if (r.ok) acked.push(...(JSON.parse(body) as { uuids: string[] }).uuids);
        else failed++;
      } catch {
        failed++;
        await new Promise((res) => setTimeout(res, 100));
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  })();
  return { acked, get failed() { return failed; }, async stop() { stop = true; await done; } };
}

async function cursor(host: Host): Promise<string> {
  return (await host.exec(['journalctl', '--show-cursor', '-n', '0', '-q'], { check: false })).stdout.trim().replace(/^-- cursor: /, '');
}

async function agentJournalAfter(host: Host, cur: string): Promise<string> {
  return (await host.exec(['journalctl', '-o', 'cat', `--after-cursor=${cur}`], { check: false })).stdout;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('upgrade while writing keeps every acknowledged row and the config; remove drains; purge keeps the vault', async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-upgrade');
    const env = { S3_BUCKET: 'vault-upgrade', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'upgrade-secret-1234', S3_PREFIX: 'up' };
    const newer = await newerDeb(debPath());
    const a = await agentHost('a8-up-a', env);
    hosts.push(a);
    await startAgent(a.host);
    await a.host.copyIn(newer.file, '/tmp/newer.deb', 0o644);
    // The administrator's config (writeEnv's, not the package's default) must survive.
    const confBefore = await a.host.readFile('/etc/vwstream/vwstream.env');
    const pidBefore = (await a.host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout;

    const w = writer(a.port);
    await waitFor('rows before the upgrade', async () => (w.acked.length >= 20 ? true : undefined));
    const beforeUpgrade = w.acked.length;
    const cur = await cursor(a.host);
    const t0 = Date.now();
    const up = await a.host.exec(['apt-get', 'install', '-y', '--no-install-recommends', '/tmp/newer.deb'],
      { env: { DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: 600_000 });
    const upgradeMs = Date.now() - t0;
    // apt returns after postinst's restart, which returns once the new agent is READY.
    await waitServing(a.host, 120_000);
    const atUpgradeEnd = w.acked.length;
    await waitFor('rows after the upgrade', async () => (w.acked.length >= atUpgradeEnd + 20 ? true : undefined));
    await w.stop();

    assert.equal((await a.host.exec(['dpkg-query', '-W', '-f', '${Version}', 'vwstream-agent'])).stdout, newer.version);
    assert.doesNotMatch(up.stdout + up.stderr, /Configuration file '\/etc\/vwstream\/vwstream.env'/, 'dpkg asked about the config');
    assert.equal(await a.host.readFile('/etc/vwstream/vwstream.env'), confBefore, 'config file kept');
    assert.equal((await a.host.exec(['stat', '-c', '%a %U', '/etc/vwstream/vwstream.env'])).stdout, '600 root');
    assert.equal((await a.host.sh('ls /etc/vwstream')).stdout, 'vwstream.env', 'no .dpkg-new/.dpkg-dist beside it');
    assert.notEqual((await a.host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout, pidBefore, 'agent restarted');
    const upJournal = await agentJournalAfter(a.host, cur);
    const lines = upJournal.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const confirmed = at(/confirm-sync: final sync confirmed/);
    const complete = at(/"msg":"drain complete in \d+ ms"/);
    const serving = lines.findIndex((l, i) => i > complete && /"msg":"serving/.test(l));
    assert.ok(confirmed >= 0 && complete > confirmed && serving > complete,
      `upgrade: confirmed final sync → drain complete → serving again, got:\n${lines.filter((l) => /drain|confirm-sync|serving|Stopped|Started/.test(l)).join('\n')}`);
    assert.ok(beforeUpgrade >= 20 && w.acked.length >= atUpgradeEnd + 20, `rows: ${beforeUpgrade} before, ${w.acked.length} in all`);

    // remove: a drain; config and state stay.
    const curRemove = await cursor(a.host);
    await a.host.exec(['apt-get', 'remove', '-y', 'vwstream-agent'], { env: { DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: 600_000 });
    const rmJournal = await agentJournalAfter(a.host, curRemove);
    assert.match(rmJournal, /confirm-sync: final sync confirmed/);
    assert.match(rmJournal, /"msg":"drain complete in \d+ ms"/);
    for (const unit of ['vwstream-agent.service', 'vwstream-vaultwarden.service', 'vwstream-litestream.service']) {
      const state = (await a.host.exec(['systemctl', 'is-active', unit], { check: false })).stdout;
      assert.ok(state === 'inactive' || state === 'unknown', `${unit} is ${state} after remove`);
    }
    assert.equal((await a.host.exec(['test', '-f', '/etc/vwstream/vwstream.env'], { check: false })).exitCode, 0, 'remove keeps the config');
    assert.equal((await a.host.exec(['test', '-d', '/var/lib/vwstream'], { check: false })).exitCode, 0, 'remove keeps agent state');

    // purge: agent state and config go, the vault stays.
    await a.host.exec(['dpkg', '--purge', 'vwstream-agent'], { timeoutMs: 120_000 });
    for (const p of ['/var/lib/vwstream', '/etc/vwstream']) {
      assert.notEqual((await a.host.exec(['test', '-e', p], { check: false })).exitCode, 0, `${p} left after purge`);
    }
    const kept = Number((await a.host.exec(['sqlite3', '/var/lib/vaultwarden/db.sqlite3', 'SELECT count(*) FROM users'])).stdout);
    assert.ok(kept >= w.acked.length, `purge kept /var/lib/vaultwarden with ${kept} users (acknowledged ${w.acked.length})`);

    // A fresh host restores from the replica: every acknowledged row is there.
    const b = await agentHost('a8-up-b', env);
    hosts.push(b);
    await startAgent(b.host);
    assert.equal((await statusJson(b.host)).restore.action, 'restore');
    const restored = new Set((await b.host.exec(['sqlite3', '/var/lib/vaultwarden/db.sqlite3', 'SELECT uuid FROM users'])).stdout.split('\n').filter(Boolean));
    const missing = w.acked.filter((u) => !restored.has(u));
    assert.deepEqual(missing, [], `${missing.length} of ${w.acked.length} acknowledged rows missing on the fresh host`);
    assert.equal(await b.vw.integrity(), 'ok');
    console.log(`# measured: apt-get install of the newer .deb on a running primary ${upgradeMs} ms; ${w.acked.length} rows acknowledged (${beforeUpgrade} before the upgrade, ${w.acked.length - atUpgradeEnd} after), ${w.failed} writes refused while Vaultwarden was down; ${restored.size} rows restored on the fresh host, 0 acknowledged rows missing`);
  } finally {
    await s3.stop();
  }
});
