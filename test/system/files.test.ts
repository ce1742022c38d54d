/**
 * The file mirror on real hosts, the operator's way (package first, then the config, then
 * a restart), with the real litestream and fauxqs S3 on loopback:
 *
 * 1. The README's five-minute path on a host that already runs Vaultwarden: the install
 *    creates a new vault and a new rsa_key.pem (mirrored to the local directory replica);
 *    S3 settings of a bucket that holds a vault are appended and the agent restarted. The
 *    recovered host serves the original rsa_key.pem (hash), its own key is kept aside,
 *    and the bucket's copy never changes.
 * 2. Links planted by the service user in the data folder are never followed: nothing of
 *    /etc/vwstream or /etc/shadow reaches the bucket, and a secondary whose attachments/
 *    is a link to a root-owned folder still serves and writes nothing there.
 * 3. An interrupted file restore (an object that fails its check) fails the start; the
 *    next start keeps the restored database and completes the files before serving.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { bootHost, installPackage, installStandin, standin, startS3, type Host, type S3Server } from './harness.ts';
import { agentHost, agentMessages, debPath, journalTail, startAgentQuick, statusJson, waitDbSynced, waitFilesSynced, waitFor, type AgentHost } from './common.ts';

const SECRET = 'files-secret-9c8d7e6f';
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const hosts: Host[] = [];
after(async () => { for (const h of hosts) await h.destroy().catch(() => undefined); });

function s3Env(s3: S3Server, bucket: string, prefix: string): Record<string, string> {
  return { S3_BUCKET: bucket, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'files-key', S3_SECRET_ACCESS_KEY: SECRET, S3_REGION: 'us-east-1', S3_PREFIX: prefix, LEASE_TTL: '10' };
}

async function made(name: string, env: Record<string, string>): Promise<AgentHost> {
  const h = await agentHost(name, env);
  hosts.push(h.host);
  return h;
}

/** Keys under a prefix of the emulator's bucket (unsigned: fauxqs checks no signature). */
async function bucketKeys(s3: S3Server, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token = '';
  for (;;) {
    const r = await fetch(`${s3.endpoint}/${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}${token ? `&continuation-token=${encodeURIComponent(token)}` : ''}`, { signal: AbortSignal.timeout(10_000) });
    const xml = await r.text();
    if (!r.ok) throw new Error(`list ${bucket}/${prefix}: HTTP ${r.status} ${xml}`);
    keys.push(...[...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]!.replace(/&amp;/g, '&')));
    const next = /<NextContinuationToken>([^<]*)<\/NextContinuationToken>/.exec(xml)?.[1];
    if (!next || !/<IsTruncated>true<\/IsTruncated>/.test(xml)) return keys.sort();
    token = next;
  }
}

async function bucketGet(s3: S3Server, bucket: string, key: string): Promise<Buffer> {
  const r = await fetch(`${s3.endpoint}/${bucket}/${key}`, { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`GET ${key}: HTTP ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

async function bucketPut(s3: S3Server, bucket: string, key: string, body: Buffer, meta: Record<string, string> = {}): Promise<void> {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
  for (const [k, v] of Object.entries(meta)) headers[`x-amz-meta-${k}`] = v;
  const r = await fetch(`${s3.endpoint}/${bucket}/${key}`, { method: 'PUT', body, headers, signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`PUT ${key}: HTTP ${r.status} ${await r.text()}`);
}

async function fileSha(host: Host, path: string): Promise<string> {
  return (await host.exec(['sha256sum', path])).stdout.split(' ')[0]!;
}

async function attachmentShas(host: Host): Promise<string[]> {
  const out = (await host.sh('cd /var/lib/vaultwarden/attachments && find . -type f -print0 | sort -z | xargs -0 -r sha256sum')).stdout;
  return out.split('\n').filter(Boolean).map((l) => l.split(' ')[0]!).sort();
}

describe('file mirror on hosts', () => {
  let s3: S3Server;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket('vault-files');
  });
  after(async () => { await s3?.stop(); });

  test('the README path recovers the original rsa_key.pem over a freshly generated one; the bucket copy never changes', async () => {
    const PREFIX = 'rec/vw';
    const env = s3Env(s3, 'vault-files', PREFIX);
    const orig = await made('vws-fl-orig', env);
    await startAgentQuick(orig.host);
    const t = Date.now();
    await orig.vw.addUsers(20);
    const attSha = await orig.vw.addAttachment('recover.bin', 30_000);
    await waitDbSynced(orig.host, t);
    await waitFilesSynced(orig.host, t);
    const origKey = await fileSha(orig.host, '/var/lib/vaultwarden/rsa_key.pem');
    const bucketKey = sha(await bucketGet(s3, 'vault-files', `${PREFIX}/files/rsa_key.pem`));
    assert.equal(bucketKey, origKey);
    await orig.host.poweroff();

    // A new host that already has Vaultwarden: the install starts the agent with the embedded default.
    const host = await bootHost('vws-fl-new');
    hosts.push(host);
    await installStandin(host);
    // It has Vaultwarden, so a web vault too: the stand-in, as Vaultwarden does, exits without
    // one, and the package's default config does not turn it off.
    await host.sh('mkdir -p /var/lib/vaultwarden/web-vault && echo "<html>web vault</html>" > /var/lib/vaultwarden/web-vault/index.html');
    await installPackage(host, debPath());
    const vw = standin(host, 8000);
    await waitFor('the new vault serves', 60_000, async () => ((await statusJson(host)).state === 'serving' ? true : undefined), host);
    const newKey = await fileSha(host, '/var/lib/vaultwarden/rsa_key.pem');
    assert.notEqual(newKey, origKey, 'the install generated its own key');
    // The five-minute path: append the bucket's settings, then restart.
    const lines = Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n');
    await host.sh(`cat >> /etc/vwstream/vwstream.env <<'EOF'\n${lines}\nEOF`);
    const ms = await startAgentQuick(host, 300_000);
    const msgs = (await agentMessages(host)).join('\n');
    const restored = /restored (\d+) files \((\d+) bytes\) from s3:\/\/vault-files\/rec\/vw\/files\/; (\d+) already here; (\d+) local files that differed kept at (\S+)\/files/.exec(msgs);
    assert.ok(restored, `no files-restored line:\n${await journalTail(host, 60)}`);
    assert.equal(Number(restored[4]), 1, 'the local rsa_key.pem differed and was replaced');
    assert.equal(await fileSha(host, '/var/lib/vaultwarden/rsa_key.pem'), origKey, 'the recovered host serves the original key');
    assert.equal(await fileSha(host, `${restored[5]}/files/rsa_key.pem`), newKey, 'the generated key is kept aside');
    assert.equal((await vw.counts()).users, 20);
    assert.deepEqual(await attachmentShas(host), [attSha]);
    // The bucket's key never changed, and nothing was uploaded over it (no conflict copy either).
    await host.exec(['vwstream-agent', 'sync']);
    await startAgentQuick(host);
    assert.equal(sha(await bucketGet(s3, 'vault-files', `${PREFIX}/files/rsa_key.pem`)), bucketKey);
    const keys = await bucketKeys(s3, 'vault-files', `${PREFIX}/files/`);
    assert.deepEqual(keys.filter((k) => k.includes('.conflicts/')), []);
    console.log(`README path: restart with S3 settings to READY ${ms} ms; ${restored[1]} files restored (${restored[2]} bytes), 1 replaced, rsa_key.pem ${origKey.slice(0, 12)}… = original`);
  });

  test('links planted by the service user are never followed: nothing of /etc reaches the bucket; a secondary with a linked attachments/ serves and writes nothing through it', async () => {
    const PREFIX = 'links/vw';
    const env = s3Env(s3, 'vault-files', PREFIX);
    const p = await made('vws-fl-links', env);
    await startAgentQuick(p.host);
    await p.vw.addUsers(5);
    const t = Date.now();
    const attSha = await p.vw.addAttachment('real.bin', 10_000);
    await waitFilesSynced(p.host, t);
    await p.host.sh(`runuser -u vaultwarden -- sh -c 'rm -rf /var/lib/vaultwarden/sends && ln -s /etc/vwstream /var/lib/vaultwarden/sends && mkdir -p /var/lib/vaultwarden/attachments/c9 && ln -s /etc/shadow /var/lib/vaultwarden/attachments/c9/shadow && ln -s /etc/vwstream/vwstream.env /var/lib/vaultwarden/config.json && mkfifo /var/lib/vaultwarden/attachments/c9/fifo'`);
    await p.host.exec(['vwstream-agent', 'sync'], { timeoutMs: 30_000 });
    await p.host.exec(['vwstream-agent', 'sync'], { timeoutMs: 30_000 });
    const keys = await bucketKeys(s3, 'vault-files', `${PREFIX}/files/`);
    assert.deepEqual(keys.filter((k) => /sends\/|c9\/|config\.json/.test(k)), [], `keys: ${keys.join(', ')}`);
    for (const k of keys) {
      const body = (await bucketGet(s3, 'vault-files', k)).toString('latin1');
      assert.ok(!body.includes(SECRET) && !/^root:/m.test(body), `${k} holds secret or shadow bytes`);
    }
    const msgs = await agentMessages(p.host);
    for (const rel of ['sends', 'attachments/c9/shadow', 'config.json', 'attachments/c9/fifo']) {
      const n = msgs.filter((m) => m.includes(`skipping /var/lib/vaultwarden/${rel}:`)).length;
      assert.equal(n, 1, `one warning for ${rel}, saw ${n}`);
    }

    // A secondary on the same prefix whose attachments/ is a link to a root-owned folder.
    const s = await made('vws-fl-links-2', { ...env, NODE_ROLE: 'secondary' });
    await s.host.sh('mkdir -m 0755 /srv/rootdir && echo keep > /srv/rootdir/keep && mkdir -p /var/lib/vaultwarden && chown vaultwarden: /var/lib/vaultwarden');
    await s.host.exec(['runuser', '-u', 'vaultwarden', '--', 'ln', '-s', '/srv/rootdir', '/var/lib/vaultwarden/attachments']);
    const before = (await s.host.sh('stat -c "%U %a" /srv/rootdir; ls -la /srv/rootdir | tail -n +2 | wc -l; cat /srv/rootdir/keep')).stdout;
    await startAgentQuick(s.host);
    const st = await statusJson(s.host);
    assert.equal(st.state, 'serving', JSON.stringify(st));
    assert.equal((await s.vw.counts()).users, 5);
    assert.equal((await s.host.sh('stat -c "%U %a" /srv/rootdir; ls -la /srv/rootdir | tail -n +2 | wc -l; cat /srv/rootdir/keep')).stdout, before, 'nothing written or chowned through the link');
    const sm = (await agentMessages(s.host)).join('\n');
    assert.match(sm, /not restoring attachments\/[^:]+\/real\.bin: \/var\/lib\/vaultwarden\/attachments: is a symbolic link/);
    void attSha;
  });

  test('an interrupted file restore fails the start; the next start keeps the database and completes the files before serving', async () => {
    const PREFIX = 'resume/vw';
    const env = s3Env(s3, 'vault-files', PREFIX);
    const p = await made('vws-fl-resume', env);
    await startAgentQuick(p.host);
    const t = Date.now();
    await p.vw.addUsers(10);
    const shas = [await p.vw.addAttachment('r1.bin', 20_000), await p.vw.addAttachment('r2.bin', 20_000), await p.vw.addAttachment('r3.bin', 20_000)].sort();
    await waitDbSynced(p.host, t);
    await waitFilesSynced(p.host, t);
    await p.host.poweroff();
    // One object is damaged in the bucket: same size, other bytes than its stored sha256.
    const keys = await bucketKeys(s3, 'vault-files', `${PREFIX}/files/attachments/`);
    const victim = keys.find((k) => k.endsWith('/r2.bin'))!;
    const good = await bucketGet(s3, 'vault-files', victim);
    await bucketPut(s3, 'vault-files', victim, Buffer.alloc(good.length, 0x58), { sha256: sha(good) });

    const r = await made('vws-fl-resume-2', env);
    const first = await r.host.exec(['systemctl', 'restart', 'vwstream-agent.service'], { timeoutMs: 120_000, check: false });
    assert.notEqual(first.exitCode, 0, 'the start fails while a file cannot be restored');
    const m1 = (await agentMessages(r.host)).join('\n');
    assert.match(m1, /file restore from s3:\/\/vault-files\/resume\/vw\/files\/ incomplete: attachments\/[^:]+\/r2\.bin: content does not match its stored sha256/);
    assert.equal((await r.host.exec(['test', '-e', '/var/lib/vwstream/files-restore.json'], { check: false })).exitCode, 0, 'the unfinished restore is recorded');
    assert.equal((await r.host.exec(['systemctl', 'show', '-P', 'ActiveState', 'vwstream-vaultwarden.service'])).stdout.trim(), 'inactive', 'Vaultwarden did not start');
    assert.equal((await r.host.exec(['test', '-e', `/var/lib/vaultwarden/${victim.slice(`${PREFIX}/files/`.length)}`], { check: false })).exitCode, 1, 'no damaged file in place');
    // The object is mended; systemd restarts the agent by itself (Restart=on-failure).
    await bucketPut(s3, 'vault-files', victim, good, { sha256: sha(good) });
    await waitFor('the agent serves after its automatic restart', 120_000, async () => ((await statusJson(r.host).catch(() => ({ state: '' }))).state === 'serving' ? true : undefined), r.host, 500);
    const m2 = await agentMessages(r.host);
    assert.ok(m2.some((m) => /a file restore from s3:\/\/vault-files\/resume\/vw\/files\/ started at \S+ did not finish; completing it before Vaultwarden starts/.test(m)), 'the next start completed the file restore');
    assert.ok(m2.some((m) => /restore decision: keep/.test(m)), 'the database restored by the first start was kept');
    assert.deepEqual(await attachmentShas(r.host), shas);
    assert.equal((await r.vw.counts()).users, 10);
    assert.equal((await r.host.exec(['test', '-e', '/var/lib/vwstream/files-restore.json'], { check: false })).exitCode, 1, 'the record is gone once complete');
  });

  test('a file restore that runs past TimeoutStartSec is not killed: its progress extends the start (EXTEND_TIMEOUT_USEC) and shows in STATUS=', async () => {
    const PREFIX = 'slow/vw';
    const FILES = 150;
    const env = s3Env(s3, 'vault-files', PREFIX);
    const p = await made('vws-fl-slow', env);
    await startAgentQuick(p.host);
    const t = Date.now();
    await p.vw.addUsers(3);
    const shas: string[] = [];
    for (let i = 0; i < FILES; i++) shas.push(await p.vw.addAttachment(`s${i}.bin`, 200_000));
    await waitFilesSynced(p.host, t);
    await p.host.poweroff();

    const r = await made('vws-fl-slow-2', env);
    const TIMEOUT_S = 8;
    await r.host.sh(`mkdir -p /etc/systemd/system/vwstream-agent.service.d && printf '[Service]\\nTimeoutStartSec=${TIMEOUT_S}s\\n' > /etc/systemd/system/vwstream-agent.service.d/timeout.conf && systemctl daemon-reload`);
    const t0 = Date.now();
    const start = r.host.exec(['systemctl', 'restart', 'vwstream-agent.service'], { timeoutMs: 300_000, check: false });
    let done = false;
    void start.finally(() => { done = true; });
    // Once the files are coming, S3 gets a small share of the time: the restore outlasts the start timeout.
    await waitFor('the file restore begins', 60_000, async () => (done || (await r.host.exec(['systemctl', 'show', '-P', 'StatusText', 'vwstream-agent.service'])).stdout.includes('files') ? true : undefined), r.host, 100);
    const statuses = new Set<string>();
    while (!done) {
      s3.pause();
      await new Promise((res) => setTimeout(res, 500));
      s3.resume();
      await new Promise((res) => setTimeout(res, 25));
      const st = (await r.host.exec(['systemctl', 'show', '-P', 'StatusText', 'vwstream-agent.service'], { check: false })).stdout.trim();
      if (st.startsWith('restoring: files')) statuses.add(st);
    }
    const res = await start;
    const ms = Date.now() - t0;
    assert.equal(res.exitCode, 0, `the start failed: ${res.stderr}\n${await journalTail(r.host, 30)}`);
    assert.ok(ms > TIMEOUT_S * 1000, `the restore must outlast TimeoutStartSec=${TIMEOUT_S}s for this test to show anything (took ${ms} ms)`);
    assert.ok([...statuses].some((s) => /^restoring: files \d+\/\d+, \d+ of \d+ MiB$/.test(s)), `progress in STATUS=: ${[...statuses].join(' | ')}`);
    assert.deepEqual(await attachmentShas(r.host), shas.sort());
    console.log(`start with a throttled S3 took ${ms} ms past TimeoutStartSec=${TIMEOUT_S}s; ${statuses.size} progress lines seen, e.g. "${[...statuses].at(-1)}"`);
  });
});
