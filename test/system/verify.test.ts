/**
 * Issue 9: the restore drill. `vwstream-agent verify` passes on a healthy replica (also
 * when run by vwstream-verify.service), records its verdict for status, and fails — exit
 * 1, NOTIFICATION_URL/fail — when replica objects vanish from the bucket behind its back.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { freePort, startS3, type S3Server } from './harness.ts';
import { agentHost, startAgent, statusJson, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
let s3: S3Server;
let server: Server;
let pings: string[] = [];
let notifyUrl = '';

before(async () => {
  s3 = await startS3();
  await s3.createBucket('vault-vfy');
  const port = await freePort();
  server = createServer((req, res) => { pings.push(req.url ?? ''); req.resume(); res.end('ok'); });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  notifyUrl = `http://127.0.0.1:${port}/ping/drill`;
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  server?.close();
  await s3?.stop();
});

/** Keys under a prefix, straight from the emulator (the agent is not asked). */
async function listKeys(prefix: string): Promise<string[]> {
  const xml = await fetch(`${s3.endpoint}/vault-vfy?list-type=2&prefix=${encodeURIComponent(prefix)}`).then((r) => r.text());
  return [...xml.matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]!);
}

test('verify: passes on a healthy replica, from the CLI and from its timer unit; status shows the verdict', async () => {
  const a = await agentHost('c9-vfy-a', {
    S3_BUCKET: 'vault-vfy', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'vfy-secret-77', S3_PREFIX: 'vw', LEASE_TTL: '10',
    VERIFY_CRON: '15 5 * * 1', NOTIFICATION_URL: notifyUrl,
  });
  hosts.push(a);
  await startAgent(a.host);
  await waitServing(a.host);
  await a.vw.addUsers(12);
  await a.vw.addCiphers(4);
  await a.vw.addAttachment('drill.bin', 30_000);
  await waitDbSynced(a.host, Date.now());
  // The file mirror is change-driven (about a second); wait until its pass has run.
  for (let i = 0; i < 60 && !(await listKeys('vw/files/attachments/')).length; i++) await new Promise((r) => setTimeout(r, 500));

  assert.match((await a.host.exec(['systemctl', 'list-timers', '--all', 'vwstream-verify.timer'])).stdout, /vwstream-verify\.timer\s+vwstream-verify\.service/);
  assert.match((await a.host.exec(['systemctl', 'show', '-P', 'TimersCalendar', 'vwstream-verify.timer'])).stdout, /Mon \*-\*-\* 05:15:00/);

  pings = [];
  const t0 = Date.now();
  const ok = await a.host.exec(['vwstream-agent', 'verify'], { timeoutMs: 300_000 });
  const verifyMs = Date.now() - t0;
  assert.match(ok.stdout, /^verify OK: generation [0-9a-f]{16} restored \(12 users, 4 ciphers, 1 attachments, 0 sends, 2 files\); integrity ok; matches the live data; \d+ ms$/);
  assert.deepEqual(pings, []);
  // The temporary copy is gone.
  assert.equal((await a.host.sh('ls -A /var/lib/vwstream/tmp | wc -l')).stdout, '0');
  const st = await statusJson(a.host);
  assert.equal(st.verify.last.ok, true);
  assert.equal(st.verify.cron, '15 5 * * 1');
  assert.match(st.verify.nextRun, /T\d\d:15:00/);
  if (!st.litestream.restorable?.oldest) {
    const g = await a.host.exec(['/usr/lib/vwstream-agent/bin/litestream', 'generations', '-config', '/run/vwstream/litestream.yml', '-no-expand-env', '/var/lib/vaultwarden/db.sqlite3'], { check: false });
    assert.fail(`no restorable range in status: ${JSON.stringify(st.litestream)}; litestream generations says: ${g.stdout} ${g.stderr}; keys: ${(await listKeys('vw/db/')).join(' ')}; yml: ${(await a.host.exec(['cat', '/run/vwstream/litestream.yml'])).stdout}`);
  }
  const text = (await a.host.exec(['vwstream-agent', 'status'])).stdout;
  assert.match(text, /restore drill {2}15 5 \* \* 1, next .*; last .*: verify OK/);
  assert.match(text, /restorable {5}from \S+Z to \S+Z \(1 generations\)/);

  // The timer's unit runs the same drill.
  const before = st.verify.last.at;
  await a.host.exec(['systemctl', 'start', 'vwstream-verify.service'], { timeoutMs: 300_000 });
  const st2 = await statusJson(a.host);
  assert.notEqual(st2.verify.last.at, before);
  assert.equal(st2.verify.last.ok, true);
  console.log(`# measured: verify (restore 12 users + 1 attachment, compare) ${verifyMs} ms`);
});

test('verify: fails with exit 1 and the failure notification when WAL objects are deleted behind its back', async () => {
  const a = hosts[0]!;
  // Rows that exist only in WAL segments (written after the generation's snapshot), so
  // deleting the segments surely loses data.
  await a.vw.addUsers(5);
  await waitDbSynced(a.host, Date.now());
  const wal = (await listKeys('vw/db/')).filter((k) => k.includes('/wal/'));
  assert.ok(wal.length > 0);
  for (const k of wal) {
    const r = await fetch(`${s3.endpoint}/vault-vfy/${k.split('/').map(encodeURIComponent).join('/')}`, { method: 'DELETE' });
    assert.ok(r.ok || r.status === 204, `DELETE ${k}: ${r.status}`);
  }
  pings = [];
  const bad = await a.host.exec(['vwstream-agent', 'verify'], { check: false, timeoutMs: 300_000 });
  assert.equal(bad.exitCode, 1);
  assert.match(bad.stdout, /^verify FAILED: /);
  assert.deepEqual(pings, ['/ping/drill/fail']);
  const st = await statusJson(a.host);
  assert.equal(st.verify.last.ok, false);
  assert.equal(st.verify.last.summary, bad.stdout.trim());
  assert.equal((await a.host.sh('ls -A /var/lib/vwstream/tmp | wc -l')).stdout, '0');
  // The live vault was not touched.
  assert.equal((await a.vw.counts()).users, 17);
});
