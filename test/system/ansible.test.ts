/**
 * Issue 8: the Ansible role vwstream_agent applied to a fresh Debian 12 systemd host with
 * Debian's ansible-core inside it (local connection), exactly as the README says:
 *   cd ansible && ansible-playbook -i localhost, -c local tests/test.yml -e @vars.json
 * A first run converges (package installed, env file 0600 from the variables, healthy);
 * a second run changes nothing (changed=0); a changed setting restarts the agent through
 * the handler, whose stop is a drain, and no row is lost.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { execa } from 'execa';
import { bootHost, freePort, installStandin, standin, startS3, type Host } from './harness.ts';
import { debPath, statusJson } from './common.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';

const REPO = new URL('../..', import.meta.url).pathname;
const SECRET = 'ansible-S3cret-$HOME-"q"';
let host: Host | undefined;
after(async () => { await host?.destroy().catch(() => undefined); });

interface Recap { ok: number; changed: number; failed: number; unreachable: number }

function recap(out: string): Recap {
  const m = /localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/.exec(out);
  if (!m) throw new Error(`no PLAY RECAP in:\n${out.slice(-3000)}`);
  return { ok: +m[1]!, changed: +m[2]!, unreachable: +m[3]!, failed: +m[4]! };
}

test('role: converges on a fresh host, second run changed=0, a new setting restarts with a drain', async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-ansible');
    host = await bootHost('a8-ansible');
    const t0 = Date.now();
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    await host.exec(['apt-get', 'update', '-q'], { env, timeoutMs: 300_000 });
    await host.exec(['apt-get', 'install', '-y', '-q', '--no-install-recommends', 'ansible-core', 'python3-apt'], { env, timeoutMs: 600_000 });
    const aptMs = Date.now() - t0;

    // The role as the repository has it, and the package, copied in.
    const tar = path.join(os.tmpdir(), `a8-ansible-${process.pid}.tar`);
    await execa('tar', ['-C', REPO, '-cf', tar, 'ansible']);
    await host.copyIn(tar, '/root/role.tar', 0o644);
    fs.rmSync(tar, { force: true });
    await host.exec(['tar', '-C', '/root', '-xf', '/root/role.tar']);
    const deb = debPath();
    await host.copyIn(deb, `/root/${path.basename(deb)}`, 0o644);
    await installStandin(host);
    const port = await freePort();

    const vars = (logLevel: string) => ({
      vwstream_agent_package: `/root/${path.basename(deb)}`,
      vwstream_agent_env: {
        S3_BUCKET: 'vault-ansible', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'ansible-key', S3_PREFIX: 'fleet/vw',
        ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: port, LOG_LEVEL: logLevel, BACKUP_ENABLED: false,
        DOMAIN: 'https://vault.example.test',
        // The stand-in alone is installed, no web vault: without this it exits at start, as Vaultwarden does.
        WEB_VAULT_ENABLED: false,
      },
      vwstream_agent_env_secret: { S3_SECRET_ACCESS_KEY: SECRET },
      vwstream_agent_health_delay: 2,
    });
    const play = async (logLevel: string) => {
      await host!.writeFile('/root/ansible/vars.json', JSON.stringify(vars(logLevel)), 0o600);
      const t = Date.now();
      const r = await host!.sh('cd /root/ansible && ansible-playbook -i localhost, -c local tests/test.yml -e @vars.json', {
        env: { HOME: '/root', LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', ANSIBLE_NOCOLOR: '1' }, timeoutMs: 600_000, check: false,
      });
      const out = `${r.stdout}\n${r.stderr}`;
      assert.equal(r.exitCode, 0, `ansible-playbook failed:\n${out.slice(-5000)}`);
      assert.ok(!out.includes(SECRET), 'the secret appears in ansible-playbook output');
      return { out, recap: recap(out), ms: Date.now() - t };
    };

    // First run: converges.
    const first = await play('info');
    assert.equal(first.recap.failed, 0);
    assert.ok(first.recap.changed >= 3, `first run changed ${first.recap.changed}`);
    assert.match((await host.exec(['dpkg-query', '-W', '-f', '${Status}', 'vwstream-agent'])).stdout, /install ok installed/);
    assert.equal((await host.exec(['stat', '-c', '%a %U:%G', '/etc/vwstream/vwstream.env'])).stdout, '600 root:root');
    const envFile = await host.readFile('/etc/vwstream/vwstream.env');
    assert.match(envFile, /^S3_BUCKET="vault-ansible"$/m);
    assert.match(envFile, /^BACKUP_ENABLED="false"$/m);
    assert.match(envFile, new RegExp(`^ROCKET_PORT="${port}"$`, 'm'));
    assert.match(envFile, /^S3_SECRET_ACCESS_KEY="ansible-S3cret-\\\$HOME-\\"q\\""$/m);
    // The agent's own parser reads every value back exactly as given (quoting survives).
    const parsed = parseEnvFile(envFile);
    assert.equal(parsed.get('S3_SECRET_ACCESS_KEY')?.value, SECRET);
    assert.equal(parsed.get('DOMAIN')?.value, 'https://vault.example.test');
    assert.equal(parsed.get('ROCKET_PORT')?.value, String(port));
    assert.equal((await host.exec(['systemctl', 'is-enabled', 'vwstream-agent.service'])).stdout, 'enabled');
    assert.equal((await host.exec(['vwstream-agent', 'health'], { check: false })).exitCode, 0);
    const s1 = await statusJson(host);
    assert.equal(s1.state, 'serving');
    assert.equal(s1.replica, 's3://vault-ansible/fleet/vw/db');
    const vw = standin(host, port);
    await vw.addUsers(50);
    const pid1 = (await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout;

    // Second run, same variables: nothing to do.
    const second = await play('info');
    assert.equal(second.recap.changed, 0, `second run not idempotent:\n${second.out.split('\n').filter((l) => /^changed:|^TASK/.test(l)).join('\n')}`);
    assert.equal(second.recap.failed, 0);
    assert.equal((await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout, pid1, 'agent restarted by an idempotent run');

    // A changed setting: the env file and the handler's restart; the stop is a drain.
    const cursor = (await host.exec(['journalctl', '--show-cursor', '-n', '0', '-q'], { check: false })).stdout.trim().replace(/^-- cursor: /, '');
    const third = await play('debug');
    assert.equal(third.recap.changed, 2, `third run: expected the env file and the restart:\n${third.out.slice(-3000)}`);
    assert.match(third.out, /RUNNING HANDLER \[vwstream_agent : Restart vwstream-agent\]/);
    assert.match(await host.readFile('/etc/vwstream/vwstream.env'), /^LOG_LEVEL="debug"$/m);
    assert.notEqual((await host.exec(['systemctl', 'show', '-P', 'MainPID', 'vwstream-agent.service'])).stdout, pid1);
    const j = (await host.exec(['journalctl', '-u', 'vwstream-agent.service', '-o', 'cat', `--after-cursor=${cursor}`], { check: false })).stdout;
    assert.match(j, /"msg":"drain complete in \d+ ms"/, `no complete drain in the journal:\n${j.slice(-3000)}`);
    assert.equal((await vw.counts()).users, 50);
    assert.equal((await statusJson(host)).state, 'serving');
    console.log(`# measured: apt-get install ansible-core in the host ${aptMs} ms; first run ${first.ms} ms (changed=${first.recap.changed}), second ${second.ms} ms (changed=0), settings change ${third.ms} ms (changed=2)`);
  } finally {
    await s3.stop();
  }
});
