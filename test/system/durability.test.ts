/**
 * Issue 13, item 5b on a real host: a live database that merely cannot be read (another
 * process holds an exclusive lock on it) is not "corrupt". The start stops with one line
 * (exit 1, systemd retries), sets nothing aside and changes no byte; once the lock is
 * gone the retried start serves the same vault. The operator's path: install (the agent
 * starts on the embedded default), configure, restart.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { agentHost, startAgent, statusJson, unitProp, waitServing, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DB = '/var/lib/vaultwarden/db.sqlite3';

test('a locked live database stops the start without touching it; the retry after the lock is gone serves the same vault', async () => {
  const a = await agentHost('dur-lock', {});
  hosts.push(a);
  await startAgent(a.host);
  await waitServing(a.host);
  await a.vw.addUsers(7);
  await a.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 300_000 });
  const sha = async () => (await a.host.exec(['sha256sum', DB])).stdout.split(' ')[0];
  const before = await sha();
  const asideBefore = (await a.host.sh('ls -1 /var/lib/vwstream/aside 2>/dev/null || true')).stdout;

  // Another process takes the database and keeps it (an exclusive lock, a transaction it never commits).
  await a.host.exec(['systemd-run', '--unit=vws-locker', '--property=Type=exec', 'sh', '-c',
    `(printf 'PRAGMA locking_mode=EXCLUSIVE;\\nBEGIN EXCLUSIVE;\\nCREATE TABLE vws_lock_probe(x);\\nSELECT 1;\\n'; sleep 3600) | sqlite3 ${DB}`]);
  for (let i = 0; ; i++) {
    const probe = await a.host.exec(['sqlite3', '-readonly', DB, 'PRAGMA busy_timeout=0; SELECT count(*) FROM users'], { check: false });
    if (probe.exitCode !== 0 && /database is locked/.test(probe.stderr)) break;
    assert.ok(i < 100, `the locker never held the lock: ${probe.stdout} ${probe.stderr}`);
    await sleep(100);
  }

  const since = Math.floor(Date.now() / 1000);
  const start = await a.host.exec(['systemctl', 'start', 'vwstream-agent.service'], { check: false, timeoutMs: 300_000 });
  assert.notEqual(start.exitCode, 0);
  const want = `cannot read the database ${DB}: database is locked (SQLite code 5); it is not treated as damaged and nothing was changed`;
  let journal = '';
  for (let i = 0; i < 100 && !journal.includes(want); i++) {
    journal = await a.host.journal(['-o', 'cat', '--since', `@${since}`, '-u', 'vwstream-agent.service']);
    if (!journal.includes(want)) await sleep(200);
  }
  assert.ok(journal.includes(`vwstream-agent: ${want}`), journal);
  assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'ExecMainStatus'), '1');
  assert.doesNotMatch(journal, /setting it aside|fails integrity_check|restoring from/);
  assert.equal(await sha(), before);
  assert.equal((await a.host.sh('ls -1 /var/lib/vwstream/aside 2>/dev/null || true')).stdout, asideBefore);
  assert.equal((await a.host.exec(['test', '-e', '/var/lib/vwstream/restore-op.json'], { check: false })).exitCode, 1);

  // The lock goes away: systemd's next retry (Restart=on-failure) serves the same 7 users.
  await a.host.exec(['systemctl', 'stop', 'vws-locker.service']);
  const st = await waitServing(a.host, 180_000);
  assert.equal(st.restore.action, 'keep');
  assert.ok(Number(await unitProp(a.host, 'vwstream-agent.service', 'NRestarts')) >= 1);
  assert.equal((await a.vw.counts()).users, 7);
  assert.equal((await a.host.exec(['sqlite3', DB, "SELECT count(*) FROM sqlite_master WHERE name='vws_lock_probe'"])).stdout, '0');
  assert.equal((await a.host.sh('ls -1 /var/lib/vwstream/aside 2>/dev/null || true')).stdout, asideBefore);
  // The state file the daemon, backup, verify and restore share: private, with its lock beside it.
  assert.equal((await a.host.exec(['stat', '-c', '%a %U', '/var/lib/vwstream/state.json'])).stdout, '600 root');
  assert.equal((await a.host.exec(['test', '-e', '/var/lib/vwstream/state.json.lock'], { check: false })).exitCode, 0);
  assert.equal((await statusJson(a.host)).state, 'serving');
});
