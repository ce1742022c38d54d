import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { doctorExit, formatReport } from '../../agent/cli/doctor.ts';
import type { Config, S3Settings } from '../../agent/config/config.ts';
import {
  bounded, checkConfig, checkLocalReplica, checkPort, checkRemote, checkS3, checkSocket, checkTimers, checkVaultwarden, checkWebVault,
  clockResult, parseTimespan, runDoctor, type CheckResult, type DoctorEnv, type S3ProbeResult,
} from '../../agent/doctor/checks.ts';
import type { RunOptions, RunResult } from '../../agent/exec.ts';
import { scrub, setSecrets } from '../../agent/log.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-doctor-'));
const res = (stdout: string, exitCode = 0, stderr = '', timedOut = false): RunResult => ({ stdout, stderr, exitCode, timedOut });
type Call = { file: string; args: string[]; opts: RunOptions };

function fakeEnv(over: Partial<DoctorEnv> & { runs?: (c: Call) => RunResult } = {}): DoctorEnv & { calls: Call[] } {
  const calls: Call[] = [];
  const data = join(dir, `data-${Math.random().toString(36).slice(2)}`);
  mkdirSync(data, { recursive: true });
  return {
    calls,
    paths: { dataFolder: data, stateDir: data, socket: join(data, 'agent.sock'), controlSocket: join(data, 'control.sock'), dbFile: join(data, 'db.sqlite3'), roleOverride: join(data, 'role-override') },
    run: async (file, args, opts) => { const c = { file, args, opts }; calls.push(c); return over.runs ? over.runs(c) : res(''); },
    now: () => Date.now(),
    httpGet: async () => null,
    s3Probe: async () => { throw new Error('no S3 in this test'); },
    agentStatus: async () => ({ error: 'not running' }),
    groupId: async () => null,
    ...over,
  };
}

function writeConfig(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text, { mode: 0o600 });
  chmodSync(p, 0o600);
  return p;
}

// 1 -------------------------------------------------------------------------------------
test('config: valid → ok; an unknown agent-prefixed key (a warning) → FAIL naming it; a bad value → FAIL with the key', () => {
  const good = checkConfig(writeConfig('good.env', 'ROCKET_PORT=8081\n'));
  assert.equal(good.cfg?.rocketPort, 8081);
  assert.deepEqual(good.results.map((r) => r.level), ['ok']);

  const typo = checkConfig(writeConfig('typo.env', 'ROCKET_PORT=8081\nSYNC_INCLUDE_ATACHMENTS=false\n'));
  assert.ok(typo.cfg, 'a warning still loads');
  assert.equal(typo.results.length, 1);
  assert.equal(typo.results[0]!.level, 'fail');
  assert.match(typo.results[0]!.detail, /SYNC_INCLUDE_ATACHMENTS \(.*typo\.env line 2\)/);
  assert.match(typo.results[0]!.fix!, /correct or remove that line/);

  const bad = checkConfig(writeConfig('bad.env', 'NODE_ROLE=leader\n'));
  assert.equal(bad.cfg, null);
  assert.equal(bad.results[0]!.level, 'fail');
  assert.match(bad.results[0]!.detail, /NODE_ROLE="leader" is not valid/);
  assert.match(bad.results[0]!.fix!, /fix NODE_ROLE in .*bad\.env/);
});

// 2 -------------------------------------------------------------------------------------
test('vaultwarden: missing file, not executable, --version failing or hanging → FAIL; "Vaultwarden x.y.z" → ok with the line', async () => {
  const env = fakeEnv({ runs: (c) => (c.args[0] === '--version' ? res('Vaultwarden 1.32.7\n') : res('')) });
  const missing = await checkVaultwarden({ vaultwardenBin: join(dir, 'nope') }, env);
  assert.equal(missing.level, 'fail');
  assert.match(missing.detail, /nope: no such file/);
  assert.match(missing.fix!, /VAULTWARDEN_BIN/);
  assert.equal(env.calls.length, 0, 'nothing run for a missing binary');

  const bin = join(dir, 'vaultwarden');
  writeFileSync(bin, '#!/bin/sh\n', { mode: 0o644 });
  chmodSync(bin, 0o644);
  const noexec = await checkVaultwarden({ vaultwardenBin: bin }, env);
  assert.equal(noexec.level, 'fail');
  assert.match(noexec.detail, /not executable \(mode 644\)/);
  assert.equal(noexec.fix, `chmod 755 ${bin}`);

  chmodSync(bin, 0o755);
  const good = await checkVaultwarden({ vaultwardenBin: bin }, env);
  assert.deepEqual([good.level, good.detail], ['ok', `${bin}: Vaultwarden 1.32.7`]);
  assert.equal(env.calls.at(-1)!.opts.timeoutMs, 5_000, '--version is bounded');

  const hang = await checkVaultwarden({ vaultwardenBin: bin }, fakeEnv({ runs: () => res('', 143, '', true) }));
  assert.equal(hang.level, 'fail');
  assert.match(hang.detail, /did not finish within 5 s/);
  const crash = await checkVaultwarden({ vaultwardenBin: bin }, fakeEnv({ runs: () => res('', 127, 'error while loading shared libraries: libssl.so.3') }));
  assert.equal(crash.level, 'fail');
  assert.match(crash.detail, /exited 127: error while loading shared libraries/);
  const other = await checkVaultwarden({ vaultwardenBin: bin }, fakeEnv({ runs: () => res('hello 1.0') }));
  assert.equal(other.level, 'warn');
});

test('web vault: index.html under WEB_VAULT_FOLDER (default web-vault/ in the data folder) → ok; missing → FAIL; WEB_VAULT_ENABLED=false → ok', async () => {
  const env = fakeEnv();
  const missing = await checkWebVault({ vaultwardenEnv: {} }, env);
  assert.equal(missing.level, 'fail');
  assert.match(missing.detail, new RegExp(`no web vault at ${env.paths.dataFolder}/web-vault/ \\(index\\.html missing`));
  assert.match(missing.fix!, /WEB_VAULT_ENABLED=false/);
  mkdirSync(join(env.paths.dataFolder, 'web-vault'));
  writeFileSync(join(env.paths.dataFolder, 'web-vault', 'index.html'), '<html>');
  assert.equal((await checkWebVault({ vaultwardenEnv: {} }, env)).level, 'ok');
  // An absolute folder elsewhere, without index.html.
  const abs = await checkWebVault({ vaultwardenEnv: { WEB_VAULT_FOLDER: join(dir, 'wv-elsewhere') } }, env);
  assert.equal(abs.level, 'fail');
  assert.match(abs.detail, /wv-elsewhere/);
  const off = await checkWebVault({ vaultwardenEnv: { WEB_VAULT_ENABLED: 'False', WEB_VAULT_FOLDER: join(dir, 'wv-elsewhere') } }, env);
  assert.equal(off.level, 'ok');
});

// 3 -------------------------------------------------------------------------------------
test('port: refused → ok (free); /alive 200 with our unit active → ok; another server or another Vaultwarden → FAIL naming the port', async () => {
  const cfg = { rocketAddress: '0.0.0.0', rocketPort: 8099 };
  const asked: string[] = [];
  const free = await checkPort(cfg, fakeEnv({ httpGet: async (h, p, path) => { asked.push(`${h}:${p}${path}`); return null; } }));
  assert.equal(free.level, 'ok');
  assert.deepEqual(asked, ['127.0.0.1:8099/alive']);
  const active = fakeEnv({ httpGet: async () => ({ status: 200 }), runs: () => res('active') });
  assert.equal((await checkPort(cfg, active)).level, 'ok');
  assert.deepEqual(active.calls[0]!.args, ['is-active', 'vwstream-vaultwarden.service']);
  const foreign = await checkPort(cfg, fakeEnv({ httpGet: async () => ({ status: 404 }) }));
  assert.equal(foreign.level, 'fail');
  assert.match(foreign.detail, /ROCKET_PORT 8099: something else answers on 0\.0\.0\.0:8099 \(GET \/alive → 404\)/);
  assert.match(foreign.fix!, /ss -ltnp 'sport = :8099'/);
  const otherVw = await checkPort(cfg, fakeEnv({ httpGet: async () => ({ status: 200 }), runs: () => res('inactive', 3) }));
  assert.equal(otherVw.level, 'fail');
  assert.match(otherVw.detail, /vwstream-vaultwarden\.service is inactive: another one holds the port/);
  const notHttp = await checkPort(cfg, fakeEnv({ httpGet: async () => { throw new Error('other side closed'); } }));
  assert.equal(notHttp.level, 'fail');
  assert.match(notHttp.detail, /does not answer HTTP \(other side closed\)/);
});

// 4 + 7 ---------------------------------------------------------------------------------
const S3: S3Settings = {
  provider: 'Other', bucket: 'vault', endpoint: 'http://127.0.0.1:9', region: 'us-east-1', accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY', prefix: 'p/vw', acl: undefined, noCheckBucket: false, forcePathStyle: true, skipVerify: false,
};
const probeOk = (over: Partial<S3ProbeResult> = {}): S3ProbeResult => ({
  putMs: 12, getMs: 5, deleteMs: 4, serverDate: new Date(Date.now() - 1000).toUTCString(), localMidMs: Date.now(),
  conditional: { enforced: true, applicable: true, detail: 'a second PUT with If-None-Match: * answered 412' }, ...over,
});

test('S3: reachable → ok with latencies, conditional writes enforced → ok, not enforced → warn; wrong key → FAIL naming the keys', async () => {
  const cfg = { s3: S3, leaseTtlMs: 30_000 };
  const signal = new AbortController().signal;
  const good = await checkS3(cfg, fakeEnv({ s3Probe: async () => probeOk() }), signal);
  assert.deepEqual(good.map((r) => [r.check, r.level]), [['s3', 'ok'], ['conditional-writes', 'ok'], ['clock', 'ok']]);
  assert.equal(good[0]!.detail, 's3://vault/p/vw/: PUT 12 ms, GET 5 ms, DELETE 4 ms (scratch object, removed)');
  assert.match(good[1]!.detail, /^enforced \(a second PUT with If-None-Match: \* answered 412\)/);

  const loose = await checkS3(cfg, fakeEnv({ s3Probe: async () => probeOk({ conditional: { enforced: false, applicable: true, detail: 'a second PUT succeeded' } }) }), signal);
  assert.equal(loose[1]!.level, 'warn');
  assert.match(loose[1]!.detail, /not enforced .*overlap for up to 30 s/);

  const sig = Object.assign(new Error('The request signature we calculated does not match the signature you provided.'), { name: 'SignatureDoesNotMatch', $metadata: { httpStatusCode: 403 } });
  const wrong = await checkS3(cfg, fakeEnv({ s3Probe: async () => { throw sig; } }), signal);
  assert.equal(wrong[0]!.level, 'fail');
  assert.match(wrong[0]!.detail, /^s3:\/\/vault\/p\/vw\/: SignatureDoesNotMatch: The request signature .*\(HTTP 403\)/);
  assert.match(wrong[0]!.fix!, /S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY/);
  assert.equal(wrong[1]!.check, 'clock');
  assert.equal(wrong[1]!.level, 'warn', 'no Date: not checked');
  const skewed = Object.assign(new Error('The difference between the request time and the current time is too large.'), { name: 'RequestTimeTooSkewed', $metadata: { httpStatusCode: 403 }, serverDate: new Date(Date.now() - 20 * 60_000).toUTCString(), localMidMs: Date.now() });
  const sk = await checkS3(cfg, fakeEnv({ s3Probe: async () => { throw skewed; } }), signal);
  assert.match(sk[0]!.fix!, /set the clock right/);
  assert.equal(sk[1]!.level, 'fail', 'the error answer\'s Date still gives the clock check');
  assert.match(sk[1]!.detail, /120[01]\.\d s ahead of the S3 server/); // Date has whole seconds: 1200.0 to 1201.x

  const nob = Object.assign(new Error('The specified bucket does not exist'), { name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } });
  assert.match((await checkS3(cfg, fakeEnv({ s3Probe: async () => { throw nob; } }), signal))[0]!.fix!, /create the bucket vault or correct S3_BUCKET/);
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
  assert.match((await checkS3(cfg, fakeEnv({ s3Probe: async () => { throw refused; } }), signal))[0]!.fix!, /check S3_ENDPOINT \(http:\/\/127\.0\.0\.1:9\)/);
});

test('clock: within 5 s ok, above warn, above 60 s FAIL saying why; no Date header → warn', () => {
  const now = Date.parse('2026-12-01T12:00:00Z');
  const at = (s: number) => new Date(now - s * 1000).toUTCString();
  assert.equal(clockResult(at(2), now).level, 'ok');
  const w = clockResult(at(10), now);
  assert.equal(w.level, 'warn');
  assert.match(w.detail, /10\.0 s ahead of the S3 server/);
  const f = clockResult(at(-90), now);
  assert.equal(f.level, 'fail');
  assert.match(f.detail, /90\.0 s behind the S3 server.*lease's expiry and S3's request signatures/);
  assert.match(f.fix!, /timedatectl set-ntp true/);
  assert.equal(clockResult(undefined, now).level, 'warn');
});

test('no S3_BUCKET: the directory replica writable → ok (scratch file removed); missing → warn; not a directory → FAIL', async () => {
  const rep = join(dir, 'replica');
  mkdirSync(rep);
  const good = await checkLocalReplica({ localReplicaPath: rep });
  assert.equal(good[0]!.level, 'ok');
  const { readdirSync } = await import('node:fs');
  assert.deepEqual(readdirSync(rep), [], 'the scratch file is removed');
  assert.equal((await checkLocalReplica({ localReplicaPath: join(dir, 'no-replica') }))[0]!.level, 'warn');
  writeFileSync(join(dir, 'afile'), 'x');
  const notDir = await checkLocalReplica({ localReplicaPath: join(dir, 'afile') });
  assert.equal(notDir[0]!.level, 'fail');
  assert.match(notDir[0]!.detail, /is not a directory/);
});

test('bounded: a check that hangs is a FAIL after its bound, and its signal is aborted', async () => {
  let aborted = false;
  const t0 = Date.now();
  // A hung request that honours its signal (as the SDK's and rclone's do): the FAIL comes right after the bound.
  const r = await bounded('s3', 200, (signal) => new Promise((_, reject) => { signal.addEventListener('abort', () => { aborted = true; reject(signal.reason); }); }), 'check S3', 's3://vault/');
  assert.ok(Date.now() - t0 < 1_000, `took ${Date.now() - t0} ms`);
  assert.deepEqual(r, [{ check: 's3', level: 'fail', detail: 's3://vault/: no answer within 0.2 s', fix: 'check S3' }]);
  assert.equal(aborted, true);
  const thrown = await bounded('x', 1_000, async () => { throw new Error('boom'); }, 'fix it');
  assert.equal(thrown[0]!.detail, 'boom');
});

// 5 -------------------------------------------------------------------------------------
test('remote: rclone lsf with the agent\'s rclone env (derived S3 remote, no inherited AWS_CA_BUNDLE) and bounds; unknown remote / timeout → FAIL', async () => {
  const cfg: Pick<Config, 's3' | 'rcloneRemoteName' | 'rcloneEnv' | 'rcloneFlags'> = { s3: S3, rcloneRemoteName: 'S3', rcloneEnv: { RCLONE_CONFIG_OFF_TYPE: 'local' }, rcloneFlags: '--timeout=5m' };
  const env = fakeEnv({ runs: () => res('a\nb/\n') });
  const good = await checkRemote(cfg, 'S3:vault/backups', env);
  assert.equal(good.level, 'ok');
  assert.match(good.detail, /2 entries/);
  const c = env.calls[0]!;
  assert.equal(c.file, 'rclone');
  assert.deepEqual(c.args.slice(0, 4), ['lsf', '--max-depth', '1', 'S3:vault/backups']);
  // The doctor's bounds come after RCLONE_FLAGS: the last one wins.
  assert.ok(c.args.lastIndexOf('--timeout=10s') > c.args.indexOf('--timeout=5m'));
  assert.equal(c.opts.env!.RCLONE_CONFIG_S3_SECRET_ACCESS_KEY, S3.secretAccessKey);
  assert.equal(c.opts.env!.RCLONE_CONFIG_OFF_TYPE, 'local');
  assert.equal(c.opts.env!.AWS_CA_BUNDLE, undefined);
  assert.equal(c.opts.timeoutMs, 10_000);

  const none = await checkRemote(cfg, 'nosuch:x', fakeEnv({ runs: () => res('', 1, '2026/12/01 15:43:40 Failed to create file system for "nosuch:x": didn\'t find section in config file') }));
  assert.equal(none.level, 'fail');
  assert.equal(none.detail, 'rclone has no remote "nosuch" (Failed to create file system for "nosuch:x": didn\'t find section in config file)');
  assert.match(none.fix!, /RCLONE_CONFIG_NOSUCH_TYPE=/);
  const fresh = await checkRemote(cfg, 'OFF:/srv/b', fakeEnv({ runs: () => res('', 3, 'ERROR : : error listing: directory not found') }));
  assert.equal(fresh.level, 'ok');
  const refused = await checkRemote(cfg, 'S3:vault/b', fakeEnv({ runs: () => res('', 1, 'Failed to lsf: SignatureDoesNotMatch: \n\tstatus code: 403') }));
  assert.equal(refused.level, 'fail');
  assert.match(refused.fix!, /S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY \(this remote is derived from S3_\*\)/);
  const refusedOwn = await checkRemote(cfg, 'OFF:/x', fakeEnv({ runs: () => res('', 1, 'AccessDenied') }));
  assert.equal(refusedOwn.fix, 'check the credentials in RCLONE_CONFIG_OFF_*');
  const hung = await checkRemote(cfg, 'S3:vault/b', fakeEnv({ runs: () => res('', 143, '', true) }));
  assert.equal(hung.level, 'fail');
  assert.match(hung.detail, /did not finish within 10 s/);
});

// 8 -------------------------------------------------------------------------------------
test('parseTimespan: systemctl timespans', () => {
  assert.equal(parseTimespan('1d 2h 3min 4.5s'), 86_400_000 + 7_200_000 + 180_000 + 4_500);
  assert.equal(parseTimespan('150ms'), 150);
  assert.equal(parseTimespan('0'), null);
  assert.equal(parseTimespan('soon'), null);
});

test('timers: active with next elapse → ok; inactive while serving → FAIL; agent stopped → warn; secondary → ok', async () => {
  const next = Math.floor(Date.parse('2026-12-06T04:00:00Z') / 1000);
  const show = (active: string) => (c: Call) => res([`LoadState=loaded`, `ActiveState=${active}`, `NextElapseUSecRealtime=${c.args.at(-1) === 'vwstream-sync.timer' ? '' : `@${next}`}`, `NextElapseUSecMonotonic=${c.args.at(-1) === 'vwstream-sync.timer' ? '2h' : '0'}`].join('\n'));
  const cfg = { backup: { enabled: true } as Config['backup'] };
  const env = fakeEnv({ runs: show('active') });
  const good = await checkTimers(cfg, { active: true, state: 'serving', role: 'primary' }, env);
  assert.deepEqual(good.map((r) => r.level), ['ok', 'ok', 'ok']);
  assert.match(good[1]!.detail, /^vwstream-backup\.timer active, next 2026-12-06T04:00:00Z$/);
  assert.match(good[0]!.detail, /^vwstream-sync\.timer active, next \d{4}-/);
  assert.ok(env.calls[0]!.args.includes('--timestamp=unix'));

  const off = await checkTimers({ backup: { enabled: false } as Config['backup'] }, { active: true, state: 'serving', role: 'primary' }, fakeEnv({ runs: show('inactive') }));
  assert.deepEqual(off.map((r) => [r.level, r.detail.split(' ')[0]]), [['fail', 'vwstream-sync.timer'], ['fail', 'vwstream-verify.timer']]);
  assert.match(off[0]!.fix!, /systemctl start vwstream-sync\.timer/);
  assert.deepEqual((await checkTimers(cfg, { active: false, state: null, role: 'primary' }, fakeEnv({ runs: show('inactive') }))).map((r) => r.level), ['warn', 'warn', 'warn']);
  assert.deepEqual((await checkTimers(cfg, { active: true, state: 'serving', role: 'secondary' }, fakeEnv({ runs: show('inactive') }))).map((r) => r.level), ['ok', 'ok', 'ok']);
  const missing = await checkTimers(null, { active: true, state: 'serving', role: 'primary' }, fakeEnv({ runs: () => res('LoadState=not-found\nActiveState=inactive') }));
  assert.equal(missing.length, 2, 'no config: the backup timer is not judged');
  assert.equal(missing[0]!.level, 'fail');
});

// 9 -------------------------------------------------------------------------------------
test('socket: absent with the agent stopped → ok; absent while it runs → FAIL; mode and group checked; answers → ok with the state', async () => {
  const env = fakeEnv({ agentStatus: async () => ({ state: 'serving' }), groupId: async () => process.getgid!() });
  assert.deepEqual((await checkSocket(false, env)).result.level, 'ok');
  assert.match((await checkSocket(false, env)).result.detail, /agent not running/);
  assert.equal((await checkSocket(true, env)).result.level, 'fail');
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(env.paths.socket, r));
  try {
    chmodSync(env.paths.socket, 0o666);
    const wide = await checkSocket(true, env);
    assert.equal(wide.result.level, 'fail');
    assert.match(wide.result.detail, /has mode 666/);
    chmodSync(env.paths.socket, 0o660);
    const s = await checkSocket(true, env);
    if (process.getuid!() === 0) {
      assert.equal(s.result.level, 'ok', s.result.detail);
      assert.equal(s.state, 'serving');
    } else assert.match(s.result.detail, /owner/); // not root: the owner is not root
    const dead = await checkSocket(true, { ...env, agentStatus: async () => ({ error: 'timed out' }) });
    if (process.getuid!() === 0) assert.match(dead.result.detail, /does not answer: timed out/);
  } finally {
    srv.close();
  }
});

// all -----------------------------------------------------------------------------------
test('runDoctor: a config that does not load still runs disk, socket and timers (exit 78); a secret in any detail is scrubbed', async () => {
  const bad = writeConfig('bad2.env', 'NODE_ROLE=leader\n');
  const env = fakeEnv({ runs: (c) => (c.file === 'systemctl' && c.args[0] === 'show' ? res('LoadState=loaded\nActiveState=inactive') : res('inactive', 3)) });
  const r = await runDoctor(bad, env);
  assert.equal(r.configLoaded, false);
  assert.deepEqual([...new Set(r.results.map((x) => x.check))], ['config', 'disk', 'timer', 'socket']);
  assert.equal(doctorExit(r.results, r.configLoaded), 78);

  const secret = 'wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY';
  const cfgPath = writeConfig('s3.env', `ROCKET_PORT=8082\nS3_BUCKET=vault\nS3_ENDPOINT=http://127.0.0.1:9\nS3_ACCESS_KEY_ID=AKIDEXAMPLE\nS3_SECRET_ACCESS_KEY=${secret}\nVAULTWARDEN_BIN=${join(dir, 'nope')}\n`);
  const leaky = fakeEnv({ s3Probe: async (s3) => { throw new Error(`signature for ${s3.secretAccessKey} rejected`); } });
  const r2 = await runDoctor(cfgPath, leaky, undefined, setSecrets);
  const all = JSON.stringify(r2.results);
  assert.ok(!all.includes(secret), 'the secret key appears in the report');
  assert.match(r2.results.find((x) => x.check === 's3')!.detail, /signature for \*\*\* rejected/);
  assert.deepEqual(r2.results.map((x) => x.check).slice(0, 6), ['config', 'vaultwarden', 'web-vault', 'port', 's3', 'clock']);
  assert.equal(doctorExit(r2.results, r2.configLoaded), 1);
  setSecrets([]);
  assert.equal(scrub(secret), secret);
});

test('formatReport and doctorExit: one line per check, the fix under warn/FAIL, a summary; warn alone exits 0', () => {
  const rs: CheckResult[] = [
    { check: 'config', level: 'ok', detail: 'valid', fix: null },
    { check: 'conditional-writes', level: 'warn', detail: 'not enforced', fix: 'use a store that enforces them' },
    { check: 's3', level: 'fail', detail: 'no answer within 10 s', fix: 'check S3_ENDPOINT' },
  ];
  const out = formatReport(rs, 1234, true).split('\n');
  assert.equal(out[0], 'ok    config              valid');
  assert.equal(out[1], 'warn  conditional-writes  not enforced');
  assert.equal(out[2], '                          → use a store that enforces them');
  assert.equal(out[3], 'FAIL  s3                  no answer within 10 s');
  assert.equal(out[5], 'doctor: 1 FAIL, 1 warn, 1 ok in 1.2 s');
  assert.equal(doctorExit(rs, true), 1);
  assert.equal(doctorExit(rs.slice(0, 2), true), 0);
});

test('agentStatus: the state from GET /status on the socket; a socket that hangs or refuses is an error within the bound, never a throw', async () => {
  const { agentStatus } = await import('../../agent/cli/doctor.ts');
  const http = await import('node:http');
  const sock = join(dir, 'status.sock');
  const srv = http.createServer((req, res) => {
    if (req.url === '/status') { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ state: 'serving' })); }
  });
  await new Promise<void>((r) => srv.listen(sock, r));
  try {
    assert.deepEqual(await agentStatus(sock, 2_000), { state: 'serving' });
  } finally {
    await new Promise((r) => srv.close(r));
  }
  const hang = join(dir, 'hang.sock');
  const quiet = http.createServer(() => undefined); // never answers
  await new Promise<void>((r) => quiet.listen(hang, r));
  try {
    const t0 = Date.now();
    const r = await agentStatus(hang, 300);
    assert.ok(Date.now() - t0 < 2_000);
    assert.ok('error' in r && /no answer within/.test(r.error), JSON.stringify(r));
  } finally {
    quiet.closeAllConnections();
    await new Promise((r) => quiet.close(r));
  }
  const gone = await agentStatus(join(dir, 'none.sock'), 300);
  assert.ok('error' in gone);
});

test('disk: free space under the data folder and the state folder (and a directory replica); a folder that cannot be read → FAIL', async () => {
  const { checkDisk } = await import('../../agent/doctor/checks.ts');
  const env = fakeEnv();
  const rep = join(dir, 'replica-disk');
  mkdirSync(rep, { recursive: true });
  const r = await checkDisk(env, rep);
  assert.equal(r.length, 3);
  for (const x of r) assert.match(x.detail, /GiB free under .* \(need 1\.0 GiB\)/);
  assert.ok(r[2]!.detail.includes(rep));
  const gone = await checkDisk({ paths: { ...env.paths, stateDir: join(dir, 'no-such-state') } });
  assert.equal(gone[1]!.level, 'fail');
  assert.match(gone[1]!.detail, /cannot stat .*no-such-state/);
  assert.match(gone[1]!.fix!, /free space under .*no-such-state/);
});

test('runDoctor: promote\'s role-override file wins over NODE_ROLE for the timers (a promoted secondary must run them)', async () => {
  const cfgPath = writeConfig('sec.env', 'NODE_ROLE=secondary\nROCKET_PORT=8083\n');
  const runs = (c: Call) => (c.args[0] === 'show' ? res('LoadState=loaded\nActiveState=inactive') : c.args[0] === 'is-active' ? res('active') : res(''));
  const env = fakeEnv({ runs });
  const asSecondary = await runDoctor(cfgPath, env);
  assert.deepEqual(asSecondary.results.filter((x) => x.check === 'timer').map((x) => x.level), ['ok', 'ok']);
  writeFileSync(env.paths.roleOverride, 'primary\n');
  const promoted = await runDoctor(cfgPath, { ...env, agentStatus: async () => ({ state: 'serving' }) });
  // The socket is absent in this fake, so the state is unknown: "not serving yet" is a warning, not ok.
  assert.deepEqual(promoted.results.filter((x) => x.check === 'timer').map((x) => x.level), ['warn', 'warn']);
});

test('S3 frozen after the scratch PUT: the bound cuts the check off, and the scratch object is still deleted before doctor ends', async () => {
  const { createServer } = await import('node:http');
  const { awaitCleanups, bounded, realS3Probe } = await import('../../agent/doctor/checks.ts');
  const seen: string[] = [];
  const hung: import('node:http').ServerResponse[] = [];
  const srv = createServer((req, res) => {
    seen.push(`${req.method} ${req.url?.replace(/\?.*/, '')}`);
    req.resume();
    if (req.method === 'PUT') { res.writeHead(200, { ETag: '"x"', Date: new Date().toUTCString() }); res.end(); return; }
    if (req.method === 'GET') { hung.push(res); return; } // never answers
    res.writeHead(204); res.end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  try {
    const port = (srv.address() as { port: number }).port;
    const s3 = { provider: 'Other', bucket: 'b', endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: 'SK', prefix: 'vw', acl: undefined, noCheckBucket: true, forcePathStyle: true, skipVerify: false };
    const r = await bounded('s3', 800, (signal) => realS3Probe(s3, signal).then(() => ({ check: 's3', level: 'ok' as const, detail: '', fix: null })), 'fix');
    assert.equal(r[0]!.level, 'fail');
    await awaitCleanups();
    const put = seen.find((x) => x.startsWith('PUT '))!;
    assert.ok(put, JSON.stringify(seen));
    assert.ok(seen.includes(put.replace(/^PUT/, 'DELETE')), `the scratch object is deleted: ${JSON.stringify(seen)}`);
  } finally {
    for (const res of hung) res.destroy();
    srv.close();
  }
});
