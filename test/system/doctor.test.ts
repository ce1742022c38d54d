/**
 * `vwstream-agent doctor` on a real host: the .deb installed by apt (operator's path:
 * install, then the config, then restart), S3 on Ceph RGW (enforces conditional writes),
 * backups to the derived S3 remote. All ok → exit 0 with conditional writes enforced; then
 * one thing broken at a time → its FAIL line and exit 1: wrong S3 secret key, a typo key,
 * VAULTWARDEN_BIN missing, the web vault missing, a backup remote that does not exist. With
 * the agent stopped doctor still runs; with RGW frozen (SIGSTOP) it ends within its bound.
 *
 * The stand-in, as Vaultwarden does, refuses to start without a web vault: the host gets a
 * web-vault/index.html in the data folder and the config names WEB_VAULT_FOLDER (so the
 * test config does not turn the web vault off).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { s3ClientFor, startRgw, type S3Server } from './harness.ts';
import { agentHost, s3Env, startAgentQuick, waitFor, waitServing, writeEnv, type AgentHost } from './common.ts';

interface Line { check: string; ok: boolean; level: 'ok' | 'warn' | 'fail'; detail: string; fix: string | null }

let rgw: S3Server;
let h: AgentHost | undefined;
let client: S3Client;
before(async () => {
  rgw = await startRgw();
  client = s3ClientFor(rgw);
});
after(async () => {
  client?.destroy();
  await h?.host.destroy().catch(() => undefined);
  try { rgw?.resume(); } catch { /* not paused */ }
  await rgw?.stop();
});

async function doctor(a: AgentHost, json = true): Promise<{ code: number; lines: Line[]; out: string; ms: number }> {
  const t0 = Date.now();
  const r = await a.host.exec(['vwstream-agent', 'doctor', ...(json ? ['--json'] : [])], { check: false, timeoutMs: 60_000 });
  const ms = Date.now() - t0;
  return { code: r.exitCode, lines: json ? JSON.parse(r.stdout) as Line[] : [], out: r.stdout + r.stderr, ms };
}

async function keys(bucket: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: AbortSignal.timeout(10_000) });
    out.push(...(r.Contents ?? []).map((o) => o.Key!));
    token = r.NextContinuationToken;
  } while (token);
  return out;
}

async function leaseOf(bucket: string, key: string): Promise<{ instance: string; token: string; acquiredAt: string }> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: AbortSignal.timeout(10_000) });
  return JSON.parse(await r.Body!.transformToString()) as { instance: string; token: string; acquiredAt: string };
}

const failing = (lines: Line[]) => lines.filter((l) => l.level === 'fail');
const show = (lines: Line[]) => lines.map((l) => `${l.level} ${l.check}: ${l.detail}${l.fix ? ` → ${l.fix}` : ''}`).join('\n');

test('doctor: all ok on RGW (conditional writes enforced); each broken setting → its FAIL and exit 1; agent stopped → still runs; S3 frozen → bounded FAIL', async () => {
  const BUCKET = 'vault-doctor';
  await rgw.createBucket(BUCKET);
  const base = {
    ...s3Env(rgw, BUCKET, 'dr/vw'), LEASE_TTL: '30',
    BACKUP_ENABLED: 'true', BACKUP_REMOTES: `S3:${BUCKET}/backups`, BACKUP_PASSWORD: 'doctor-backup-password',
    WEB_VAULT_FOLDER: 'web-vault/',
  };
  h = await agentHost('vws-dr-a', base);
  const env = { ...base, ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(h.port) };
  await h.host.sh('install -d -o vaultwarden -g vaultwarden /var/lib/vaultwarden/web-vault && echo "<html>web vault</html>" > /var/lib/vaultwarden/web-vault/index.html');
  await startAgentQuick(h.host);
  await waitServing(h.host);

  // All ok.
  const leaseBefore = await leaseOf(BUCKET, 'dr/vw/lease.json');
  const keysBefore = await keys(BUCKET, 'dr/vw/');
  const good = await doctor(h);
  assert.equal(good.code, 0, show(good.lines));
  assert.deepEqual(good.lines.filter((l) => l.level !== 'ok'), [], show(good.lines));
  const checks = good.lines.map((l) => l.check);
  for (const c of ['config', 'vaultwarden', 'web-vault', 'port', 's3', 'conditional-writes', 'clock', `remote S3:${BUCKET}/backups`, 'disk', 'timer', 'socket']) {
    assert.ok(checks.includes(c), `no ${c} check:\n${show(good.lines)}`);
  }
  const byCheck = (ls: Line[], c: string) => ls.find((l) => l.check === c)!;
  assert.match(byCheck(good.lines, 'conditional-writes').detail, /^enforced \(a second PUT with If-None-Match: \* answered 412, one with a wrong If-Match 412\)/);
  assert.match(byCheck(good.lines, 'vaultwarden').detail, /^\/usr\/bin\/vaultwarden: Vaultwarden 1\.32\.7$/);
  assert.match(byCheck(good.lines, 'port').detail, new RegExp(`Vaultwarden answers on 127\\.0\\.0\\.1:${h.port}`));
  assert.match(byCheck(good.lines, 'socket').detail, /660 root:vwstream\) answers: state serving/);
  const timers = good.lines.filter((l) => l.check === 'timer').map((l) => l.detail);
  assert.equal(timers.length, 3, timers.join('\n'));
  for (const t of timers) assert.match(t, /^vwstream-(sync|backup|verify)\.timer active, next \d{4}-\d\d-\d\dT/);
  const text = await doctor(h, false);
  // Its scratch objects are gone, and the lease is the agent's, untouched (same holder, token, acquisition).
  const keysAfter = await keys(BUCKET, 'dr/vw/');
  assert.deepEqual(keysAfter.filter((k) => /\/\.(doctor|vwstream-probe)-/.test(k)), [], keysAfter.join('\n'));
  assert.ok(keysBefore.includes('dr/vw/lease.json') && keysAfter.includes('dr/vw/lease.json'));
  const leaseAfter = await leaseOf(BUCKET, 'dr/vw/lease.json');
  assert.deepEqual([leaseAfter.instance, leaseAfter.token, leaseAfter.acquiredAt], [leaseBefore.instance, leaseBefore.token, leaseBefore.acquiredAt]);
  assert.equal(text.code, 0);
  assert.match(text.out, /^doctor: 0 FAIL, 0 warn, \d+ ok in [\d.]+ s$/m);
  console.log(`# doctor (all ok, text) in ${text.ms} ms:\n${text.out.replace(/^/gm, '#   ')}`);

  // One thing broken at a time; only that check FAILs.
  const broken = async (what: string, over: Record<string, string>, expect: Record<string, RegExp>, prep?: () => Promise<void>, undo?: () => Promise<void>, code = 1) => {
    await writeEnv(h!.host, { ...env, ...over });
    await prep?.();
    const r = await doctor(h!);
    await undo?.();
    assert.equal(r.code, code, `${what}: exit ${r.code}\n${show(r.lines)}`);
    const f = failing(r.lines);
    assert.deepEqual(f.map((l) => l.check).sort(), Object.keys(expect).sort(), `${what}:\n${show(r.lines)}`);
    for (const [c, re] of Object.entries(expect)) assert.match(`${f.find((l) => l.check === c)!.detail} → ${f.find((l) => l.check === c)!.fix}`, re, what);
    console.log(`# doctor (${what}) exit ${r.code} in ${r.ms} ms: ${f.map((l) => `FAIL ${l.check}: ${l.detail} → ${l.fix}`).join(' || ')}`);
    return r;
  };
  const WRONG = 'wrong-secret-key-for-doctor';
  const wrong = await broken('wrong S3 secret key', { S3_SECRET_ACCESS_KEY: WRONG }, {
    s3: /^s3:\/\/vault-doctor\/dr\/vw\/: SignatureDoesNotMatch \(HTTP 403\) → check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY/,
    [`remote S3:${BUCKET}/backups`]: /the remote refused the credentials .*SignatureDoesNotMatch.* → check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY \(this remote is derived from S3_\*\)/,
  });
  assert.ok(!JSON.stringify(wrong.lines).includes(WRONG), 'the secret key is printed');
  assert.ok(!JSON.stringify(wrong.lines).includes(rgw.secretKey), 'the real secret key is printed');
  await broken('typo key', { SYNC_INCLUDE_ATACHMENTS: 'false' }, { config: /SYNC_INCLUDE_ATACHMENTS \(\/etc\/vwstream\/vwstream\.env line \d+\) .*did you mean SYNC_INCLUDE_ATTACHMENTS\?.*→ correct or remove that line/ });
  await broken('VAULTWARDEN_BIN missing', { VAULTWARDEN_BIN: '/opt/vaultwarden/missing' }, { vaultwarden: /\/opt\/vaultwarden\/missing: no such file → install Vaultwarden at \/opt\/vaultwarden\/missing, or set VAULTWARDEN_BIN/ });
  await broken('web vault missing', {}, { 'web-vault': /no web vault at \/var\/lib\/vaultwarden\/web-vault\/ \(index\.html missing.*WEB_VAULT_ENABLED=false/ },
    () => h!.host.sh('mv /var/lib/vaultwarden/web-vault /var/lib/vaultwarden/web-vault.off').then(() => undefined),
    () => h!.host.sh('mv /var/lib/vaultwarden/web-vault.off /var/lib/vaultwarden/web-vault').then(() => undefined));
  // An undefined remote is a config error (78, as at start): the config line says which and how to define it.
  await broken('backup remote that does not exist', { BACKUP_REMOTES: `S3:${BUCKET}/backups,offsite:vault` },
    { config: /BACKUP_REMOTES="S3:vault-doctor\/backups,offsite:vault" is not valid: rclone remote "offsite" is not defined: define it with RCLONE_CONFIG_OFFSITE_TYPE=/ }, undefined, undefined, 78);
  await writeEnv(h.host, env);

  // The agent stopped: doctor still runs; what the agent runs is "not running", not a failure.
  await h.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 120_000 });
  const stopped = await doctor(h);
  assert.equal(stopped.code, 0, show(stopped.lines));
  assert.match(byCheck(stopped.lines, 'socket').detail, /^agent not running \(no \/run\/vwstream\/agent\.sock\)$/);
  assert.match(byCheck(stopped.lines, 'port').detail, /free \(Vaultwarden is not running\)/);
  // Sync and verify timers run while the agent serves; the backup timer keeps its schedule (backups run without the daemon).
  assert.deepEqual(stopped.lines.filter((l) => l.check === 'timer').map((l) => [l.level, l.detail.split(' ')[0]]),
    [['warn', 'vwstream-sync.timer'], ['ok', 'vwstream-backup.timer'], ['warn', 'vwstream-verify.timer']], show(stopped.lines));
  assert.equal(byCheck(stopped.lines, 's3').level, 'ok');
  console.log(`# doctor (agent stopped) exit ${stopped.code} in ${stopped.ms} ms`);

  // Something else on ROCKET_PORT (a plain HTTP server answering 404).
  await h.host.exec(['systemd-run', '--unit=foreign-port', '/usr/lib/vwstream-agent/bin/node', '-e',
    `require('http').createServer((q, s) => { s.statusCode = 404; s.end('not here'); }).listen(${h.port}, '127.0.0.1')`]);
  try {
    await waitFor('the foreign server listens', 10_000, async () => ((await fetch(`http://127.0.0.1:${h!.port}/`, { signal: AbortSignal.timeout(1000) })).status === 404 ? true : undefined));
    const taken = await doctor(h);
    assert.equal(taken.code, 1, show(taken.lines));
    assert.deepEqual(failing(taken.lines).map((l) => l.check), ['port'], show(taken.lines));
    const port = byCheck(taken.lines, 'port');
    assert.equal(port.detail, `ROCKET_PORT ${h.port}: something else answers on 127.0.0.1:${h.port} (GET /alive → 404); Vaultwarden cannot listen there`);
    assert.match(port.fix!, new RegExp(`ss -ltnp 'sport = :${h.port}'`));
    console.log(`# doctor (port taken) exit ${taken.code}: FAIL port: ${port.detail} → ${port.fix}`);
  } finally {
    await h.host.exec(['systemctl', 'stop', 'foreign-port.service'], { check: false });
  }

  // Not root: exit 77, nothing checked. A config that does not load: exit 78, the checks that need none still run.
  const nobody = await h.host.exec(['runuser', '-u', 'nobody', '--', 'vwstream-agent', 'doctor'], { check: false });
  assert.equal(nobody.exitCode, 77, nobody.stdout + nobody.stderr);
  assert.match(nobody.stderr, /doctor needs root \(it reads \/etc\/vwstream\/vwstream\.env, mode 0600/);
  await writeEnv(h.host, { ...env, NODE_ROLE: 'leader' });
  const badCfg = await doctor(h);
  await writeEnv(h.host, env);
  assert.equal(badCfg.code, 78, show(badCfg.lines));
  assert.deepEqual([...new Set(badCfg.lines.map((l) => l.check))], ['config', 'disk', 'timer', 'socket']);
  assert.match(byCheck(badCfg.lines, 'config').detail, /^NODE_ROLE="leader" is not valid/);

  // S3 frozen (radosgw SIGSTOPped): doctor ends within its 10 s bound per network check.
  rgw.pause();
  let frozen;
  try {
    frozen = await doctor(h);
  } finally {
    rgw.resume();
  }
  assert.equal(frozen.code, 1, show(frozen.lines));
  assert.ok(frozen.ms < 20_000, `doctor took ${frozen.ms} ms with S3 frozen`);
  assert.match(byCheck(frozen.lines, 's3').detail, /^s3:\/\/vault-doctor\/dr\/vw\/: no answer within 10 s$/);
  assert.match(byCheck(frozen.lines, `remote S3:${BUCKET}/backups`).detail, /did not finish within 10 s/);
  assert.deepEqual(failing(frozen.lines).map((l) => l.check).sort(), [`remote S3:${BUCKET}/backups`, 's3']);
  console.log(`# doctor (S3 frozen) exit ${frozen.code} in ${frozen.ms} ms`);
});
