/**
 * Issue 7, bad config on the installed service: a host holding data is started by
 * systemd with one bad file after another from the corpus (test/config/corpus-cases.ts).
 * Each start ends with exit status 78, the key named in the journal, no restart by
 * systemd, Vaultwarden and Litestream not started, and not one byte changed in the data
 * folder, the agent's state, the local replica or the runtime drop-ins. Then the good
 * file serves the same data again.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { agentHost, startAgent, statusJson, unitProp, waitDbSynced, writeEnv, type AgentHost } from './common.ts';
import { CORPUS } from '../config/corpus-cases.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

/** One of each kind: enum, interval, URL, cron, port, path, conflicts, syntax with a secret. */
const PICK = ['role', 'interval in words', 'RPO above its bound', 'Headscale URL', 'cron minute 61', 'port above 65535', 'relative replica path',
  'backups without a destination', 'funnel on a port Funnel does not offer', 'WAL off', 'unterminated quote in a secret'];

test('each bad file: exit 78 naming the key, no restart, nothing touched; the good file serves the same data', async () => {
  const base = { LEASE_TTL: '10' };
  const a = await agentHost('b7-bc-a', base);
  hosts.push(a);
  await startAgent(a.host);
  await a.vw.addUsers(40);
  const sha = await a.vw.addAttachment('kept.bin', 30_000);
  await waitDbSynced(a.host, Date.now());
  await a.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
  const fingerprint = 'cd / && { find var/lib/vaultwarden var/lib/vwstream var/backups/vwstream -type f -print0; find run/systemd/system -path "*vwstream*" -type f -print0; } | sort -z | xargs -0 sha256sum';
  const before = (await a.host.sh(fingerprint)).stdout;
  assert.ok(before.includes('var/lib/vaultwarden/db.sqlite3') && before.includes('var/backups/vwstream/replica/') && before.includes(sha), 'the fingerprint covers the data, the replica and the attachment');

  const cases = PICK.map((n) => CORPUS.find((c) => c.name === n)!);
  assert.equal(cases.length, PICK.length);
  const seen: string[] = [];
  for (const c of cases) {
    const extra = Object.fromEntries(c.env.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=') < 0 ? l.length : l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    await writeEnv(a.host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), ...base, ...extra });
    await a.host.exec(['systemctl', 'reset-failed', 'vwstream-agent.service'], { check: false });
    const start = await a.host.exec(['systemctl', 'start', 'vwstream-agent.service'], { check: false, timeoutMs: 60_000 });
    assert.notEqual(start.exitCode, 0, c.name);
    const invocation = await unitProp(a.host, 'vwstream-agent.service', 'InvocationID');
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'ExecMainStatus'), '78', c.name);
    await new Promise((r) => setTimeout(r, 6500)); // longer than RestartSec=5s
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'NRestarts'), '0', c.name);
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'ActiveState'), 'failed', c.name);
    assert.equal(await unitProp(a.host, 'vwstream-agent.service', 'InvocationID'), invocation, `${c.name}: started again`);
    const journal = await a.host.journal([`_SYSTEMD_INVOCATION_ID=${invocation}`, '-o', 'cat']);
    const line = journal.split('\n').find((l) => l.startsWith('vwstream-agent: config error: '));
    assert.ok(line, `${c.name}: no config error line in the journal:\n${journal}`);
    assert.ok(line.includes(`${c.key}=`) || line.includes(`${c.key} `), `${c.name}: ${line}`);
    if (c.says) assert.match(line, c.says);
    if (c.hidden) assert.ok(!(await a.host.journal(['-o', 'json'])).includes(c.hidden), `${c.name}: secret in the journal`);
    for (const u of ['vwstream-vaultwarden.service', 'vwstream-litestream.service']) assert.equal(await unitProp(a.host, u, 'ActiveState'), 'inactive', `${c.name}: ${u}`);
    assert.equal((await a.host.sh(fingerprint)).stdout, before, `${c.name}: files changed`);
    seen.push(`${c.key}: ${line.slice('vwstream-agent: config error: '.length)}`);
  }

  await writeEnv(a.host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(a.port), ...base });
  await a.host.exec(['systemctl', 'reset-failed', 'vwstream-agent.service'], { check: false });
  await startAgent(a.host, 'start');
  const s = await statusJson(a.host);
  assert.equal(s.state, 'serving');
  assert.equal(s.restore.action, 'keep');
  assert.deepEqual(await a.vw.counts(), { users: 40, ciphers: 1, attachments: 1 });
  console.log(`# ${seen.length} bad configs refused:\n# ${seen.join('\n# ')}`);
});
