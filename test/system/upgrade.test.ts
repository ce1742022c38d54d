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
import { bootHost, freePort, installStandin, standin, startS3, type Host } from './harness.ts';
import { agentHost, debPath, startAgent, statusJson, waitServing, writeEnv, type AgentHost } from './common.ts';

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

    // purge: agent state and config go, the vault stays and purge says where it is. (The
    // directory replica is empty here — the first start by postinst had no Vaultwarden
    // binary yet — and an empty one is removed; purge.test.ts keeps a full one.)
    const fp = 'find /var/backups/vwstream -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum';
    const replicaBefore = (await a.host.sh(fp, { check: false })).stdout;
    const purge = await a.host.exec(['dpkg', '--purge', 'vwstream-agent'], { timeoutMs: 120_000 });
    for (const p of ['/var/lib/vwstream', '/etc/vwstream']) {
      assert.notEqual((await a.host.exec(['test', '-e', p], { check: false })).exitCode, 0, `${p} left after purge`);
    }
    assert.match(purge.stdout, /^  \/var\/lib\/vaultwarden \(the vault: Vaultwarden's data folder\)$/m);
    assert.equal((await a.host.sh(fp, { check: false })).stdout, replicaBefore, 'purge changed the replica');
    if (replicaBefore === '') assert.notEqual((await a.host.exec(['test', '-e', '/var/backups/vwstream'], { check: false })).exitCode, 0, 'an empty replica directory is left');
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

/**
 * The .rpm's scriptlets (the .deb's maintainer scripts with rpm's arguments mapped) on a
 * real systemd host. No rpm distribution reaches this machine, so Debian's rpm installs it
 * into a Debian 12 host (--nodeps: its rpm database knows none of the Debian packages).
 * First install: an existing config is kept, users made, the unit enabled by its preset
 * and started; an upgrade (a reinstall runs the same %post with $1=2) restarts the agent
 * with a drain; erase stops it with a drain and keeps the vault.
 */
test('rpm: first install keeps an existing config and starts; upgrade and erase drain', { skip: process.env.VWS_RPM ? false : 'needs VWS_RPM (make test-system sets it)' }, async () => {
  const rpm = process.env.VWS_RPM!;
  const host = await bootHost('a8-rpm');
  hosts.push({ host, port: 0, vw: standin(host, 0) });
  const aptEnv = { DEBIAN_FRONTEND: 'noninteractive' };
  await host.exec(['apt-get', 'update', '-q'], { env: aptEnv, timeoutMs: 300_000 });
  await host.exec(['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'rpm'], { env: aptEnv, timeoutMs: 600_000 });
  await host.copyIn(rpm, '/tmp/vwstream-agent.rpm', 0o644);
  await installStandin(host);
  const port = await freePort();
  // As the Ansible role does: the config is in place before the first installation.
  await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(port), LOG_LEVEL: 'info' });
  const conf = await host.readFile('/etc/vwstream/vwstream.env');

  let t = Date.now();
  const install = await host.exec(['rpm', '-i', '--nodeps', '/tmp/vwstream-agent.rpm'], { timeoutMs: 300_000 });
  const installMs = Date.now() - t;
  assert.equal(await host.readFile('/etc/vwstream/vwstream.env'), conf, `rpm replaced the existing config:\n${install.stdout}\n${install.stderr}`);
  assert.equal((await host.exec(['stat', '-c', '%a %U', '/etc/vwstream/vwstream.env'])).stdout, '600 root');
  assert.match((await host.exec(['id', 'vaultwarden'])).stdout, /uid=\d+\(vaultwarden\)/);
  assert.equal((await host.exec(['getent', 'group', 'vwstream'], { check: false })).exitCode, 0);
  assert.equal((await host.exec(['stat', '-c', '%a %U', '/var/lib/vaultwarden'])).stdout, '770 vaultwarden');
  assert.match((await host.exec(['id', '-nG', 'vwstream-litestream'])).stdout, /\bvaultwarden\b/);
  assert.equal((await host.exec(['stat', '-c', '%a %U', '/var/backups/vwstream/replica'])).stdout, '700 vwstream-litestream');
  assert.equal((await host.exec(['systemctl', 'is-enabled', 'vwstream-agent.service'])).stdout, 'enabled');
  const s = await waitServing(host, 120_000);
  assert.equal(s.role, 'primary');
  const vw = standin(host, port);
  const uuids = await vw.addUsers(30);
  const pid = (await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout;

  const curUp = await cursor(host);
  t = Date.now();
  await host.exec(['rpm', '-U', '--replacepkgs', '--nodeps', '/tmp/vwstream-agent.rpm'], { timeoutMs: 600_000 });
  const upgradeMs = Date.now() - t;
  const upJournal = await agentJournalAfter(host, curUp);
  assert.match(upJournal, /confirm-sync: final sync confirmed/);
  assert.match(upJournal, /"msg":"drain complete in \d+ ms"/);
  assert.notEqual((await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout, pid, 'upgrade restarted the agent');
  await waitServing(host, 120_000);
  assert.equal(await host.readFile('/etc/vwstream/vwstream.env'), conf);
  assert.equal((await vw.counts()).users, uuids.length);

  const curErase = await cursor(host);
  t = Date.now();
  await host.exec(['rpm', '-e', '--nodeps', 'vwstream-agent'], { timeoutMs: 600_000 });
  const eraseMs = Date.now() - t;
  assert.match(await agentJournalAfter(host, curErase), /"msg":"drain complete in \d+ ms"/);
  assert.notEqual((await host.exec(['test', '-e', '/usr/lib/vwstream-agent'], { check: false })).exitCode, 0);
  const rows = (await host.exec(['sqlite3', '/var/lib/vaultwarden/db.sqlite3', 'SELECT uuid FROM users'])).stdout.split('\n');
  assert.deepEqual(uuids.filter((u) => !rows.includes(u)), [], 'erase kept the vault');
  // rpm has no purge: the edited config is kept as .rpmsave, agent state stays.
  assert.equal((await host.exec(['test', '-d', '/var/lib/vwstream'], { check: false })).exitCode, 0);
  console.log(`# measured: rpm -i (agent started by %post) ${installMs} ms, rpm -U (drain + restart) ${upgradeMs} ms, rpm -e (drain) ${eraseMs} ms`);
});
