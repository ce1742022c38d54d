/**
 * Issue 14 B6 (contract: "the socket's group may read, only root may change state"), on
 * a Debian 12 host from the package with its embedded default (local directory replica):
 * a member of group vwstream reads status, health and metrics on agent.sock and is
 * refused (clear message, exit 1) for `sync` and `promote --force`, by the CLI and by a
 * hand-made request, with the role, the lease and the role override unchanged; a user
 * outside the group reads nothing; root promotes and syncs over the root-only control.sock.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { agentHost, agentMessages, journalTail, startAgent, statusJson, waitDbSynced, waitFor, waitServing, writeEnv, type AgentHost } from './common.ts';
import type { Host } from './harness.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

const LEASE = '/var/backups/vwstream/replica/lease.json';
const OVERRIDE = '/var/lib/vwstream/role-override';

function as(host: Host, user: string, argv: string[]) {
  return host.exec(['runuser', '-u', user, '--', ...argv], { check: false, timeoutMs: 120_000 });
}

/** What a refused promote must leave as it was: role, state, lease object, role override. */
async function snapshot(host: Host): Promise<string> {
  const s = await statusJson(host);
  const lease = (await host.sh(`if [ -e ${LEASE} ]; then sha256sum ${LEASE}; else echo no lease; fi`)).stdout.trim();
  const override = (await host.sh(`if [ -e ${OVERRIDE} ]; then cat ${OVERRIDE}; else echo no override; fi`)).stdout.trim();
  return JSON.stringify({ role: s.role, state: s.state, lease, override });
}

test('group vwstream reads status, health and metrics but cannot sync or promote; root can', async () => {
  const a = await agentHost('vws-sa-a', {});
  hosts.push(a);
  await startAgent(a.host); // the operator's path: installed (postinst started it), config written, restarted
  await waitServing(a.host, 60_000);
  await a.vw.addUsers(5);
  await waitDbSynced(a.host, Date.now()); // healthy from here on
  await a.host.exec(['useradd', '-M', '-G', 'vwstream', 'monitor']);
  await a.host.exec(['useradd', '-M', 'outsider']);
  assert.equal((await a.host.exec(['stat', '-c', '%a %U %G', '/run/vwstream/agent.sock'])).stdout, '660 root vwstream');
  assert.equal((await a.host.exec(['stat', '-c', '%a %U %G', '/run/vwstream/control.sock'])).stdout, '600 root root');

  // Reads for the group.
  const st = await as(a.host, 'monitor', ['vwstream-agent', 'status', '--json']);
  assert.equal(st.exitCode, 0, `status as a member of vwstream: ${st.stderr}`);
  const s = JSON.parse(st.stdout) as { role: string; state: string };
  assert.deepEqual([s.role, s.state], ['primary', 'serving']);
  const he = await as(a.host, 'monitor', ['vwstream-agent', 'health']);
  assert.equal(he.exitCode, 0, `health as a member of vwstream: ${he.stdout}${he.stderr}`);
  assert.match(he.stdout, /^healthy\n {2}ok {3}state/);
  const me = await as(a.host, 'monitor', ['curl', '-sS', '-w', '\\n%{http_code}', '--unix-socket', '/run/vwstream/agent.sock', 'http://agent/metrics']);
  assert.equal(me.exitCode, 0, me.stderr);
  assert.match(me.stdout, /^vwstream_litestream_up 1$/m);
  assert.match(me.stdout, /\n200$/);
  // Nothing for others.
  const out = await as(a.host, 'outsider', ['vwstream-agent', 'status']);
  assert.equal(out.exitCode, 77, 'needs root or the group: EX_NOPERM');
  assert.equal(out.stderr, 'vwstream-agent: permission denied on /run/vwstream/agent.sock\n  → run as root or as a member of group vwstream');

  // sync: refused for the group, by the CLI and by a request made by hand on agent.sock.
  const sy = await as(a.host, 'monitor', ['vwstream-agent', 'sync']);
  assert.equal(sy.exitCode, 77, `sync as a member of vwstream: exit ${sy.exitCode}\n${sy.stdout}${sy.stderr}`);
  assert.equal(sy.stdout, '');
  assert.equal(sy.stderr, "vwstream-agent: 'sync' changes the agent's state: only root may do that (permission denied on /run/vwstream/control.sock)\n  → run it as root (sudo); members of group vwstream may read: status, health, metrics");
  const byHand = await as(a.host, 'monitor', ['curl', '-sS', '-w', '\\n%{http_code}', '-X', 'POST', '--unix-socket', '/run/vwstream/agent.sock', 'http://agent/sync']);
  assert.match(byHand.stdout, /"error": "POST \/sync changes the agent's state: only root may do that \(on \/run\/vwstream\/control\.sock\); this socket serves reads \(status, health, metrics\)"\n\}\n\n403$/);
  // The kernel refuses the connection itself (connect() on a 0600 root socket).
  const direct = await as(a.host, 'monitor', ['/usr/lib/vwstream-agent/bin/node', '-e',
    "require('net').connect('/run/vwstream/control.sock').on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(3); })"]);
  assert.deepEqual([direct.exitCode, direct.stdout.trim()], [3, 'EACCES'], `connect to control.sock as a member of vwstream: ${direct.stdout}${direct.stderr}`);
  const rootConnect = await a.host.exec(['/usr/lib/vwstream-agent/bin/node', '-e',
    "require('net').connect('/run/vwstream/control.sock').on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(3); })"], { check: false });
  assert.equal(rootConnect.stdout.trim(), 'connected');
  // Root syncs.
  const rootSync = await a.host.exec(['vwstream-agent', 'sync'], { check: false, timeoutMs: 120_000 });
  assert.equal(rootSync.exitCode, 0, `sync as root: ${rootSync.stdout}${rootSync.stderr}`);
  assert.match(rootSync.stdout, /^files: \d+ uploaded \(\d+ bytes\), \d+ deleted, \d+ unchanged, \d+ ms$/m);

  // promote --force on a secondary: refused for the group, nothing changed; root promotes.
  await writeEnv(a.host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), NODE_ROLE: 'secondary' });
  await startAgent(a.host);
  await waitFor('serving as secondary', 60_000, async () => {
    const x = await statusJson(a.host);
    return x.role === 'secondary' && x.state === 'serving' ? x : undefined;
  }, a.host);
  const before = await snapshot(a.host);
  assert.match(before, /"role":"secondary"/);
  assert.match(before, /"override":"no override"/);
  const pr = await as(a.host, 'monitor', ['vwstream-agent', 'promote', '--force']);
  assert.equal(pr.exitCode, 77, `promote --force as a member of vwstream: exit ${pr.exitCode}\n${pr.stdout}${pr.stderr}`);
  assert.equal(pr.stderr, "vwstream-agent: 'promote' changes the agent's state: only root may do that (permission denied on /run/vwstream/control.sock)\n  → run it as root (sudo); members of group vwstream may read: status, health, metrics");
  const prHand = await as(a.host, 'monitor', ['curl', '-sS', '-w', '\\n%{http_code}', '-X', 'POST', '--unix-socket', '/run/vwstream/agent.sock', 'http://agent/promote?force=1']);
  assert.match(prHand.stdout, /POST \/promote changes the agent's state: only root may do that[^\n]*\n\}\n\n403$/);
  await new Promise((r) => setTimeout(r, 2_000)); // a promote restarts the agent 0.2 s after answering: give it the time
  assert.equal(await snapshot(a.host), before, 'a refused promote changed role, state, lease or override');
  const msgs = await agentMessages(a.host);
  assert.ok(!msgs.some((m) => m.startsWith('PROMOTED')), 'the journal says PROMOTED after refused requests');
  const refusals = msgs.filter((m) => m.startsWith('refused POST /'));
  // One line per request that reached agent.sock; the CLI's attempts never got that far.
  assert.deepEqual(refusals, [
    "refused POST /sync on the read-only socket: only root may change the agent's state (on /run/vwstream/control.sock)",
    "refused POST /promote on the read-only socket: only root may change the agent's state (on /run/vwstream/control.sock)",
  ], `refusal lines in the journal:\n${msgs.join('\n')}`);

  const rootPromote = await a.host.exec(['vwstream-agent', 'promote', '--force'], { check: false, timeoutMs: 180_000 });
  assert.equal(rootPromote.exitCode, 0, `promote --force as root: ${rootPromote.stdout}${rootPromote.stderr}\n${await journalTail(a.host)}`);
  const after = await statusJson(a.host);
  assert.deepEqual([after.role, after.state, after.lease?.ours], ['primary', 'serving', true]);
  assert.match(await a.host.readFile(OVERRIDE), /^primary$/m);
  const lease = JSON.parse(await a.host.readFile(LEASE)) as { instance: string };
  assert.equal(lease.instance, after.lease.self);
  console.log(`# refused for group vwstream: ${sy.stderr.split('\n')[0]} | ${pr.stderr.split('\n')[0]}; root promote --force → ${after.role} ${after.state}`);
});
