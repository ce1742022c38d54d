/**
 * Vaultwarden from its image, the operator's way, against a REAL registry (Debian's
 * docker-registry with bearer tokens, as Docker Hub does) serving an image of the
 * Vaultwarden STAND-IN (test fixture, not Vaultwarden) per version:
 *
 * 1. apt install on a fresh host: no Vaultwarden yet → the agent stops with 78 and says how.
 * 2. `vaultwarden install --version 1.32.7`: bytes and modes as in the image, whiteouts
 *    honoured, token flow used; faults (unknown tag, unreachable registry, a corrupted blob)
 *    change nothing and the running Vaultwarden keeps serving.
 * 3. VAULTWARDEN_VERSION=1.33.0 and a restart: installed at start, a snapshot before the
 *    new version migrates (journal order), status shows previous and rollback point.
 * 4. Rows written after the upgrade: rollback refused (65, how many); --force: the older
 *    version on the snapshot, the newer database kept aside, a new Litestream generation,
 *    the pin held at the next start.
 * 5. A new host (secondary) with the pin: a full disk under the versions folder fails the
 *    start and leaves nothing; freed, it installs at start and restores every row and the
 *    RSA key.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { bootHost, freePort, installPackage, standin, startS3, type Host, type S3Server } from './harness.ts';
import { debPath, startAgent, statusJson, waitDbSynced, waitFor, waitServing, writeEnv } from './common.ts';
import { standinRegistry, type StandinRegistry } from './standin-image.ts';

const BUCKET = 'vault-image';
const VW_DIR = '/var/lib/vwstream/vaultwarden';
const hosts: Host[] = [];
let s3: S3Server;
let reg: StandinRegistry;

before(async () => {
  s3 = await startS3();
  await s3.createBucket(BUCKET);
  const t = Date.now();
  reg = await standinRegistry(['1.32.7', '1.33.0', '1.34.0']);
  console.log(`# registry up and three stand-in images pushed in ${Date.now() - t} ms`);
});
after(async () => {
  for (const h of hosts) await h.destroy().catch(() => undefined);
  await reg?.stop();
  await s3?.stop();
});

const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const cli = (h: Host, ...args: string[]) => h.exec(['vwstream-agent', ...args], { check: false, timeoutMs: 300_000 });
const users = async (h: Host, db: string) => Number((await h.exec(['sqlite3', '-readonly', db, 'SELECT count(*) FROM users'])).stdout);
const migrations = async (h: Host, db: string) => (await h.exec(['sqlite3', '-readonly', db, 'SELECT version FROM __diesel_schema_migrations ORDER BY version'])).stdout.split('\n').filter(Boolean);
const SSO = '2024-09-01-000000_add_sso_users';

async function envFor(port: number, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(port), VAULTWARDEN_IMAGE: reg.image,
    S3_BUCKET: BUCKET, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'image-secret-16', S3_PREFIX: 'vw', LEASE_TTL: '10',
    ...extra,
  };
}

test('vaultwarden install, upgrade with a snapshot, rollback, and a new host with a pin', async () => {
  // 1. The package first, as the README says: no Vaultwarden on the host yet.
  const a = await bootHost('vwi-a');
  hosts.push(a);
  await installPackage(a, debPath());
  await waitFor('the agent to stop for want of Vaultwarden', 60_000, async () => ((await a.exec(['systemctl', 'is-failed', 'vwstream-agent'], { check: false })).stdout.trim() === 'failed' ? true : undefined), a);
  assert.equal((await a.exec(['systemctl', 'show', '-P', 'ExecMainStatus', 'vwstream-agent'])).stdout.trim(), '78');
  assert.match(await a.journal(['-u', 'vwstream-agent', '-o', 'cat']), /no Vaultwarden installed.*run vwstream-agent vaultwarden install/);

  const port = await freePort();
  await writeEnv(a, await envFor(port));
  // 2. Install from the registry (anonymous pull through the token service).
  const tokensBefore = reg.registry.tokenRequests;
  let t = Date.now();
  const inst = await cli(a, 'vaultwarden', 'install', '--version', '1.32.7');
  const installMs = Date.now() - t;
  assert.equal(inst.exitCode, 0, inst.stderr + inst.stdout);
  const img = reg.images.get('1.32.7')!;
  assert.match(inst.stdout, new RegExp(`installed Vaultwarden 1\\.32\\.7 from ${reg.registry.hostPort.replace(/\./g, '\\.')}/vaultwarden-standin/server:1\\.32\\.7-alpine \\(${img.indexDigest}\\) into ${VW_DIR}/1\\.32\\.7`));
  assert.match(inst.stdout, /start it: systemctl restart vwstream-agent/);
  assert.ok(reg.registry.tokenRequests > tokensBefore, 'the bearer-token flow was used');
  assert.equal((await a.exec(['sha256sum', `${VW_DIR}/1.32.7/vaultwarden`])).stdout.split(' ')[0], reg.binSha('1.32.7'));
  assert.equal((await a.exec(['stat', '-c', '%a %U', `${VW_DIR}/1.32.7/vaultwarden`, `${VW_DIR}/1.32.7/web-vault/index.html`])).stdout, '755 root\n644 root');
  assert.equal((await a.exec(['test', '-e', `${VW_DIR}/1.32.7/web-vault/old.js`], { check: false })).exitCode, 1, 'the whiteout removed old.js');
  assert.deepEqual((await a.exec(['ls', '-A', `${VW_DIR}/1.32.7`])).stdout.split('\n').sort(), ['image.json', 'vaultwarden', 'web-vault']);
  assert.equal((await a.exec(['readlink', `${VW_DIR}/current`])).stdout.trim(), '1.32.7');
  console.log(`# vaultwarden install (stand-in image, ${img.layers.length} layers) on a fresh host: ${installMs} ms`);

  t = Date.now();
  await startAgent(a);
  await waitServing(a);
  console.log(`# first start with the installed version until serving: ${Date.now() - t} ms`);
  const vw = standin(a, port);
  let st = await statusJson(a);
  assert.equal(st.vaultwarden.running, '1.32.7');
  assert.equal(st.vaultwarden.source, 'installed');
  assert.equal(st.vaultwarden.installed.digest, img.indexDigest);
  assert.match(st.vaultwarden.installed.image, /vaultwarden-standin\/server:1\.32\.7-alpine$/);
  assert.equal(st.vaultwarden.rollbackPoint, null, 'a new vault: nothing to snapshot');
  assert.match(await a.readFile('/run/vwstream/vaultwarden.env'), new RegExp(`^WEB_VAULT_FOLDER="${VW_DIR}/1\\.32\\.7/web-vault/"$`, 'm'));
  const index = await (await fetch(`http://127.0.0.1:${port}/`)).text();
  assert.equal(sha(index), sha(await a.readFile(`${VW_DIR}/1.32.7/web-vault/index.html`)), 'the web vault is served');
  await vw.addUsers(20);
  await vw.login('alice@example.test'); // a login writes (devices) and adds alice
  const base = (await vw.counts()).users;
  assert.equal(base, 21);
  await waitDbSynced(a, Date.now());

  // Faults: nothing changes, Vaultwarden keeps serving.
  const unknown = await cli(a, 'vaultwarden', 'install', '--version', '9.9.9');
  assert.equal(unknown.exitCode, 1, unknown.stdout + unknown.stderr);
  assert.match(unknown.stderr, /9\.9\.9/);
  const refused = await cli(a, 'vaultwarden', 'install', '--image', '127.0.0.1:1/vaultwarden/server:1.33.0');
  assert.equal(refused.exitCode, 1);
  assert.match(refused.stderr, /127\.0\.0\.1:1.*(unreachable|ECONNREFUSED|refused)/i);
  const layer = reg.images.get('1.34.0')!.layers.at(-2)!; // the layer holding /vaultwarden
  const blob = reg.registry.blobPath(layer);
  const { readFile, writeFile } = await import('node:fs/promises');
  const good = await readFile(blob);
  const bad = Buffer.from(good);
  bad[Math.floor(bad.length / 2)]! ^= 0xff;
  await writeFile(blob, bad);
  const corrupt = await cli(a, 'vaultwarden', 'install', '--version', '1.34.0');
  await writeFile(blob, good);
  assert.equal(corrupt.exitCode, 1, corrupt.stdout + corrupt.stderr);
  assert.match(corrupt.stderr, /sha256|digest/i);
  assert.equal((await a.exec(['readlink', `${VW_DIR}/current`])).stdout.trim(), '1.32.7');
  assert.deepEqual((await a.exec(['ls', '-A', VW_DIR])).stdout.split('\n').filter((n) => !n.startsWith('.install')).sort(), ['1.32.7', 'current']);
  assert.ok(await vw.alive(), 'Vaultwarden still serves');
  assert.equal((await statusJson(a)).state, 'serving');

  // 3. The pin: installed at the next start, with a snapshot before it migrates.
  await writeEnv(a, await envFor(port, { VAULTWARDEN_VERSION: '1.33.0' }));
  const since = (await a.exec(['date', '+%s.%N'])).stdout.trim();
  t = Date.now();
  await startAgent(a);
  await waitServing(a);
  console.log(`# restart with VAULTWARDEN_VERSION=1.33.0 (drain, install at start, snapshot, migrate) until serving: ${Date.now() - t} ms`);
  st = await statusJson(a);
  assert.equal(st.vaultwarden.running, '1.33.0');
  assert.equal(st.vaultwarden.previous.version, '1.32.7');
  assert.equal(st.vaultwarden.pin, '1.33.0');
  const rp = st.vaultwarden.rollbackPoint;
  assert.equal(rp.from, '1.32.7');
  assert.equal(rp.to, '1.33.0');
  assert.match(rp.snapshot, /^\/var\/lib\/vwstream\/aside\/\d{4}-\d\d-\d\dT[\d-]+Z-vaultwarden-upgrade$/);
  assert.equal(await users(a, `${rp.snapshot}/db.sqlite3`), base);
  assert.ok(!(await migrations(a, `${rp.snapshot}/db.sqlite3`)).includes(SSO), 'the snapshot predates the migration');
  assert.ok((await migrations(a, '/var/lib/vaultwarden/db.sqlite3')).includes(SSO), '1.33.0 migrated the live database');
  const order = (await a.journal(['-u', 'vwstream-agent', '-u', 'vwstream-vaultwarden', '-o', 'cat', '--since', `@${since}`])).split('\n');
  const snapAt = order.findIndex((l) => /snapshot before the upgrade to 1\.33\.0/.test(l));
  const migAt = order.findIndex((l) => l.includes(`applied migration ${SSO}`));
  assert.ok(snapAt >= 0 && migAt > snapAt, `snapshot (line ${snapAt}) before the migration (line ${migAt})`);
  const text = (await cli(a, 'status')).stdout;
  assert.match(text, /version +Vaultwarden 1\.33\.0 from .*vaultwarden-standin\/server:1\.33\.0-alpine \(sha256:[0-9a-f]{64}\); pinned VAULTWARDEN_VERSION=1\.33\.0/);
  assert.match(text, /previous +Vaultwarden 1\.32\.7/);
  assert.match(text, /rollback point 1\.32\.7 → 1\.33\.0 at /);

  // 4. Writes since the upgrade: refused without --force, and it says how many.
  await vw.addUsers(3);
  await waitDbSynced(a, Date.now());
  const gensBefore = (JSON.parse((await cli(a, "generations", "--json")).stdout) as { generations: unknown[] }).generations;
  const no = await cli(a, 'vaultwarden', 'rollback');
  assert.equal(no.exitCode, 65, no.stdout + no.stderr);
  assert.match(no.stderr, /3 rows \(users 3\) changed since the upgrade to 1\.33\.0/);
  assert.equal((await statusJson(a)).vaultwarden.running, '1.33.0', 'nothing changed');
  t = Date.now();
  const yes = await cli(a, 'vaultwarden', 'rollback', '--force');
  console.log(`# vaultwarden rollback --force (drain, snapshot in place, start): ${Date.now() - t} ms`);
  assert.equal(yes.exitCode, 0, yes.stdout + yes.stderr);
  assert.match(yes.stdout, /VAULTWARDEN_VERSION=1\.33\.0 still names the newer version/);
  await waitServing(a);
  st = await statusJson(a);
  assert.equal(st.vaultwarden.running, '1.32.7');
  assert.equal(st.vaultwarden.held, '1.33.0');
  assert.equal((await vw.counts()).users, base, 'the snapshot is live: the 3 later users are not');
  assert.ok(!(await migrations(a, '/var/lib/vaultwarden/db.sqlite3')).includes(SSO));
  const kept = (await a.exec(['sh', '-c', 'ls -d /var/lib/vwstream/aside/*-vaultwarden-rollback'])).stdout.trim();
  assert.equal(await users(a, `${kept}/db.sqlite3`), base + 3, 'the newer database is kept aside');
  await vw.addUsers(1);
  await waitDbSynced(a, Date.now());
  const gensAfter = (JSON.parse((await cli(a, "generations", "--json")).stdout) as { generations: unknown[] }).generations;
  assert.ok(gensAfter.length > gensBefore.length, `a new Litestream generation (${gensBefore.length} → ${gensAfter.length})`);
  // The pin still names 1.33.0: the next start keeps 1.32.7 and says so.
  await startAgent(a);
  await waitServing(a);
  assert.equal((await statusJson(a)).vaultwarden.running, '1.32.7');
  assert.match(await a.journal(['-u', 'vwstream-agent', '-o', 'cat']), /VAULTWARDEN_VERSION=1\.33\.0 names the version rolled back from/);
  assert.match((await cli(a, 'status')).stdout, /HELD +VAULTWARDEN_VERSION=1\.33\.0/);
  // A registry that hangs at the next start with a new pin: the start is bounded (the
  // request times out), the installed version serves meanwhile and status says why.
  process.kill(reg.registry.pid, 'SIGSTOP');
  try {
    await writeEnv(a, await envFor(port, { VAULTWARDEN_VERSION: '1.34.0' }));
    t = Date.now();
    await startAgent(a);
    await waitServing(a);
    console.log(`# restart with VAULTWARDEN_VERSION=1.34.0 while the registry hangs (SIGSTOP) until serving 1.32.7: ${Date.now() - t} ms`);
  } finally {
    process.kill(reg.registry.pid, 'SIGCONT');
  }
  st = await statusJson(a);
  assert.equal(st.vaultwarden.running, '1.32.7');
  assert.equal(st.vaultwarden.held, null, 'a new pin lifts the hold');
  assert.match(st.vaultwarden.problem, /VAULTWARDEN_VERSION=1\.34\.0 could not be installed: .*Vaultwarden 1\.32\.7 \(installed\) runs meanwhile/);
  assert.match((await cli(a, 'status')).stdout, /PROBLEM +VAULTWARDEN_VERSION=1\.34\.0 could not be installed/);
  assert.equal((await a.exec(['readlink', `${VW_DIR}/current`])).stdout.trim(), '1.32.7');
  // The registry back: the next start installs 1.34.0, snapshotting the rolled-back database first.
  await startAgent(a);
  await waitServing(a);
  st = await statusJson(a);
  assert.equal(st.vaultwarden.running, '1.34.0');
  assert.equal(st.vaultwarden.problem, null);
  assert.equal(st.vaultwarden.rollbackPoint.from, '1.32.7');
  assert.equal(st.vaultwarden.rollbackPoint.to, '1.34.0');
  assert.equal((await vw.counts()).users, base + 1);
  // An older version on the migrated database: refused by install, with the way back.
  await writeEnv(a, await envFor(port));
  const older = await cli(a, 'vaultwarden', 'install', '--version', '1.33.0');
  assert.equal(older.exitCode, 1, older.stdout + older.stderr);
  assert.match(older.stderr, /Vaultwarden 1\.33\.0 is older than 1\.34\.0, which last ran on this database/);
  const rsaA = sha(await a.readFile('/var/lib/vaultwarden/rsa_key.pem'));
  await waitDbSynced(a, Date.now());

  // 5. A new host with the pin: a full disk first (nothing left behind), then a restore.
  const b = await bootHost('vwi-b');
  hosts.push(b);
  await installPackage(b, debPath());
  const portB = await freePort();
  await b.sh(`install -d ${VW_DIR} && mount -t tmpfs -o size=1m tmpfs ${VW_DIR}`);
  await writeEnv(b, await envFor(portB, { VAULTWARDEN_VERSION: '1.34.0', NODE_ROLE: 'secondary' }));
  const full = await b.exec(['systemctl', 'restart', 'vwstream-agent'], { check: false, timeoutMs: 300_000 });
  assert.notEqual(full.exitCode, 0);
  assert.match(await b.journal(['-u', 'vwstream-agent', '-o', 'cat']), /no space left on device/);
  assert.deepEqual((await b.exec(['ls', '-A', VW_DIR])).stdout.split('\n').filter((n) => n && !n.startsWith('.install')), [], 'nothing half-installed');
  await b.sh(`systemctl stop vwstream-agent; umount ${VW_DIR}; systemctl reset-failed vwstream-agent`);
  // The back-off after the failure: the next start waits up to 15 s before pulling again.
  t = Date.now();
  await startAgent(b);
  await waitServing(b);
  console.log(`# new host: start with VAULTWARDEN_VERSION=1.34.0 (install at start after the back-off, restore) until serving: ${Date.now() - t} ms`);
  const vb = standin(b, portB);
  assert.equal((await vb.counts()).users, base + 1);
  assert.equal(sha(await b.readFile('/var/lib/vaultwarden/rsa_key.pem')), rsaA, 'the restored host has the primary\'s RSA key');
  assert.equal((await b.exec(['sha256sum', `${VW_DIR}/1.34.0/vaultwarden`])).stdout.split(' ')[0], reg.binSha('1.34.0'));
  assert.match(await b.readFile('/run/vwstream/vaultwarden.env'), new RegExp(`^VAULTWARDEN_BIN="${VW_DIR}/1\\.34\\.0/vaultwarden"$`, 'm'));
  const stB = await statusJson(b);
  assert.equal(stB.role, 'secondary');
  assert.equal(stB.vaultwarden.running, '1.34.0');
  assert.equal(stB.vaultwarden.installed.digest, reg.images.get('1.34.0')!.indexDigest);
});
