import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, readdirSync, writeFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VersionStore, validVersionName } from '../../agent/vaultwarden/versions.ts';
import { imageToPull, installVaultwarden, type PullFn } from '../../agent/vaultwarden/install.ts';
import { chooseVaultwarden, vaultwardenEnvOf } from '../../agent/vaultwarden/choose.ts';
import { prepareVaultwarden, pullBackoffMs, webVaultProblem } from '../../agent/vaultwarden/start.ts';
import type { VaultwardenState } from '../../agent/state-file.ts';
import type { Config } from '../../agent/config/config.ts';

const root = () => mkdtempSync(join(tmpdir(), 'vw-store-'));

/** A pull that writes a fake image: vaultwarden (prints its version) + web-vault/index.html. */
function fakePull(version: (image: string) => string, calls: string[] = [], fail?: Error): PullFn {
  return async (image, dest) => {
    calls.push(image);
    if (fail) throw fail;
    writeFileSync(join(dest, 'vaultwarden'), `#!/bin/sh\necho Vaultwarden ${version(image)}\n`, { mode: 0o755 });
    mkdirSync(join(dest, 'web-vault'));
    writeFileSync(join(dest, 'web-vault', 'index.html'), '<html>');
    return { ref: `docker.io/${image}`, digest: `sha256:${version(image).replace(/\W/g, '').padEnd(64, '0')}`, files: 2, bytes: 10, downloadedBytes: 100, layers: 1 };
  };
}
const tagOf = (image: string) => image.slice(image.lastIndexOf(':') + 1).replace(/-alpine$/, '');
const probe = async (bin: string) => /Vaultwarden \S+/.exec(readFileSync(bin, 'utf8'))![0];

test('imageToPull: the version is the tag; latest when none', () => {
  assert.equal(imageToPull('vaultwarden/server', '1.32.7'), 'vaultwarden/server:1.32.7');
  assert.equal(imageToPull('vaultwarden/server'), 'vaultwarden/server:latest');
  assert.equal(imageToPull('127.0.0.1:5000/vw/server'), '127.0.0.1:5000/vw/server:latest');
  assert.equal(imageToPull('127.0.0.1:5000/vw/server:1.2.3'), '127.0.0.1:5000/vw/server:1.2.3');
  assert.throws(() => imageToPull('vaultwarden/server:1.32.7', '1.33.0'), /already names a tag/);
  // The static -alpine build: Vaultwarden tags it 1.32.7-alpine and latest-alpine.
  assert.equal(imageToPull('vaultwarden/server', '1.32.7', '-alpine'), 'vaultwarden/server:1.32.7-alpine');
  assert.equal(imageToPull('vaultwarden/server', undefined, '-alpine'), 'vaultwarden/server:latest-alpine');
  assert.equal(imageToPull('vaultwarden/server:1.32.7', undefined, '-alpine'), 'vaultwarden/server:1.32.7', 'a tag given is used as it is');
  assert.ok(!validVersionName('../x') && !validVersionName('current') && validVersionName('1.32.7'));
});

test('install: versioned directories, current/previous links, keep 2, nothing changes on a failure', async () => {
  const store = new VersionStore(root());
  const calls: string[] = [];
  const deps = { store, pull: fakePull(tagOf, calls), probe };
  const a = await installVaultwarden({ image: 'vaultwarden/server', version: '1.32.7' }, deps);
  assert.equal(a.installed.version, '1.32.7');
  assert.equal(readlinkSync(join(store.root, 'current')), '1.32.7');
  assert.equal(a.previous, undefined);
  const b = await installVaultwarden({ image: 'vaultwarden/server', version: '1.33.0' }, deps);
  assert.equal(b.previous, '1.32.7');
  assert.equal(store.current()!.version, '1.33.0');
  assert.equal(store.previous()!.version, '1.32.7');
  const c = await installVaultwarden({ image: 'vaultwarden/server', version: '1.34.0' }, deps);
  assert.deepEqual(c.pruned, ['1.32.7']);
  assert.deepEqual(readdirSync(store.root).filter((n) => !n.startsWith('.')).sort(), ['1.33.0', '1.34.0', 'current', 'previous']);
  // An installed version: switched to without a download.
  const n = calls.length;
  const d = await installVaultwarden({ image: 'vaultwarden/server', version: '1.33.0' }, deps);
  assert.equal(calls.length, n);
  assert.equal(d.downloaded, false);
  assert.equal(store.current()!.version, '1.33.0');
  assert.equal(store.previous()!.version, '1.34.0');
  // A failing pull, a wrong version, a binary that is not Vaultwarden: nothing changes.
  for (const [pull, re] of [
    [fakePull(tagOf, [], new Error('registry unreachable: ECONNREFUSED')), /ECONNREFUSED.*nothing was changed/],
    [fakePull(() => '1.99.0'), /its binary is Vaultwarden 1\.99\.0, not 1\.35\.0; nothing was changed/],
    [fakePull(() => 'garbage'), /not "Vaultwarden x\.y\.z"/],
  ] as const) {
    await assert.rejects(installVaultwarden({ image: 'vaultwarden/server', version: '1.35.0' }, { store, pull, probe: pull === undefined ? probe : async (bin: string) => (readFileSync(bin, 'utf8').includes('garbage') ? 'hello' : probe(bin)) }), re);
    assert.equal(store.current()!.version, '1.33.0');
    assert.equal(store.previous()!.version, '1.34.0');
    assert.deepEqual(readdirSync(store.root).filter((x) => x.startsWith('.staging-')), []);
  }
  // ENOSPC is one line.
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  await assert.rejects(installVaultwarden({ image: 'vaultwarden/server', version: '1.35.0' }, { store, pull: fakePull(tagOf, [], full), probe }), /no space left on device under .*nothing was changed/);
});

test('install: one at a time; a holder that dies leaves no stale lock', async () => {
  const store = new VersionStore(root());
  const release = store.lock();
  assert.throws(() => store.lock(), /another Vaultwarden install or rollback is running/);
  release();
  release(); // twice is harmless
  // Another process holds it, then is killed (as by a crash or power loss): free again.
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['-e', `const {DatabaseSync}=require('node:sqlite');const d=new DatabaseSync(${JSON.stringify(join(store.root, '.install.lock'))});d.exec('BEGIN EXCLUSIVE');console.log('held');setInterval(()=>{},1000)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  assert.throws(() => store.lock(), /another Vaultwarden install or rollback is running/);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  store.lock()();
});

test('a link pointing outside the store is not followed', () => {
  const store = new VersionStore(root());
  symlinkSync('/etc', join(store.root, 'current'));
  assert.equal(store.current(), undefined);
});

function cfgOf(over: Partial<Config['vaultwarden']> = {}, env: Record<string, string> = {}): Config {
  return { source: '/etc/vwstream/vwstream.env', vaultwardenBin: '/usr/bin/vaultwarden', vaultwarden: { binGiven: false, version: undefined, image: 'vaultwarden/server', tagSuffix: '-alpine', registryAuth: undefined, ...over }, vaultwardenEnv: { DATA_FOLDER: '/var/lib/vaultwarden', ...env } } as unknown as Config;
}

test('choose: operator binary, installed version (with its web vault), default', async () => {
  const store = new VersionStore(root());
  assert.deepEqual(chooseVaultwarden(cfgOf(), store), { source: 'default', bin: '/usr/bin/vaultwarden' });
  await installVaultwarden({ image: 'vaultwarden/server', version: '1.32.7' }, { store, pull: fakePull(tagOf), probe });
  const c = chooseVaultwarden(cfgOf(), store);
  assert.equal(c.source, 'installed');
  assert.equal(c.bin, join(store.root, '1.32.7', 'vaultwarden'));
  const env = vaultwardenEnvOf(cfgOf(), store);
  assert.equal(env.VAULTWARDEN_BIN, join(store.root, '1.32.7', 'vaultwarden'));
  assert.equal(env.WEB_VAULT_FOLDER, join(store.root, '1.32.7', 'web-vault') + '/');
  assert.equal(webVaultProblem(cfgOf(), store), undefined);
  // The operator's own settings win.
  assert.equal(vaultwardenEnvOf(cfgOf({}, { WEB_VAULT_FOLDER: '/srv/wv/' }), store).WEB_VAULT_FOLDER, '/srv/wv/');
  assert.equal(vaultwardenEnvOf(cfgOf({}, { WEB_VAULT_ENABLED: 'false' }), store).WEB_VAULT_FOLDER, undefined);
  const op = chooseVaultwarden({ ...cfgOf({ binGiven: true }), vaultwardenBin: '/opt/vw/vaultwarden' }, store);
  assert.deepEqual(op, { source: 'operator', bin: '/opt/vw/vaultwarden' });
  // Without an installed web vault: Vaultwarden's own rule, relative to the data folder.
  assert.match(webVaultProblem({ ...cfgOf({ binGiven: true }), vaultwardenBin: '/opt/vw/vaultwarden' }, store, () => false)!, /WEB_VAULT_FOLDER=web-vault\/: no web vault at \/var\/lib\/vaultwarden\/web-vault/);
  assert.equal(webVaultProblem({ ...cfgOf({ binGiven: true }, { WEB_VAULT_ENABLED: 'FALSE' }) }, store, () => false), undefined);
});

function prepDeps(store: VersionStore, state: VaultwardenState, pull: PullFn, sleeps: number[] = []) {
  return {
    store,
    install: (req: Parameters<typeof installVaultwarden>[0]) => installVaultwarden(req, { store, pull, probe }),
    readState: () => state,
    updateState: async (change: (v: VaultwardenState) => VaultwardenState) => { Object.assign(state, change({ ...state })); for (const k of Object.keys(state) as (keyof VaultwardenState)[]) if (!(k in change({ ...state }))) delete state[k]; },
    extendTimeout: () => undefined,
    sleep: async (ms: number) => { sleeps.push(ms); },
    now: () => Date.parse('2026-12-01T12:00:00Z'),
  };
}

test('start: the pin is installed, switched to, held after a rollback, and a failed pull keeps the installed one', async () => {
  const store = new VersionStore(root());
  const calls: string[] = [];
  const state: VaultwardenState = {};
  const a = await prepareVaultwarden(cfgOf({ version: '1.32.7' }), prepDeps(store, state, fakePull(tagOf, calls)));
  assert.equal(a.installed?.version, '1.32.7');
  assert.deepEqual(calls, ['vaultwarden/server:1.32.7-alpine']);
  await prepareVaultwarden(cfgOf({ version: '1.33.0' }), prepDeps(store, state, fakePull(tagOf, calls)));
  assert.equal(store.current()!.version, '1.33.0');
  // Back to the installed previous: no download.
  await prepareVaultwarden(cfgOf({ version: '1.32.7' }), prepDeps(store, state, fakePull(tagOf, calls)));
  assert.equal(calls.length, 2);
  assert.equal(store.current()!.version, '1.32.7');
  // Held: the pin names the version rolled back from.
  state.hold = { version: '1.33.0', since: '2026-12-01T11:00:00Z', runs: '1.32.7' };
  const held = await prepareVaultwarden(cfgOf({ version: '1.33.0' }), prepDeps(store, state, fakePull(tagOf, calls)));
  assert.equal(held.held, '1.33.0');
  assert.match(held.problem!, /names the version rolled back from.*Vaultwarden 1\.32\.7 runs until the pin changes/);
  assert.equal(store.current()!.version, '1.32.7');
  // A new pin lifts the hold; its pull fails: the installed version runs, the failure is recorded.
  const failing = fakePull(tagOf, calls, new Error('registry 127.0.0.1:1 unreachable (ECONNREFUSED)'));
  const p = await prepareVaultwarden(cfgOf({ version: '1.34.0' }), prepDeps(store, state, failing));
  assert.equal(state.hold, undefined);
  assert.match(p.problem!, /VAULTWARDEN_VERSION=1\.34\.0 could not be installed: .*ECONNREFUSED.*Vaultwarden 1\.32\.7 \(installed\) runs meanwhile/);
  assert.equal(p.installed?.version, '1.32.7');
  assert.equal(state.pullFailure?.failures, 1);
});

test('start: nothing installed and the pull fails: exit 1, with a back-off before the next attempt', async () => {
  const store = new VersionStore(root());
  const state: VaultwardenState = {};
  const sleeps: number[] = [];
  const failing = fakePull(tagOf, [], new Error('unknown tag'));
  await assert.rejects(prepareVaultwarden(cfgOf({ version: '9.9.9' }), prepDeps(store, state, failing, sleeps)), (e: any) => e.exitCode === 1 && /VAULTWARDEN_VERSION=9\.9\.9: .*unknown tag/.test(e.message));
  assert.equal(state.pullFailure?.failures, 1);
  state.pullFailure!.at = '2026-12-01T11:59:55Z'; // 5 s ago
  await assert.rejects(prepareVaultwarden(cfgOf({ version: '9.9.9' }), prepDeps(store, state, failing, sleeps)));
  assert.deepEqual(sleeps, [10_000]);
  assert.equal(state.pullFailure?.failures, 2);
  assert.deepEqual([1, 2, 3, 6, 10].map(pullBackoffMs), [15_000, 30_000, 60_000, 300_000, 300_000]);
});

test('prune keeps what runs even when it is neither current nor previous', async () => {
  const store = new VersionStore(root());
  const deps = { store, pull: fakePull(tagOf), probe, inUse: () => ['1.32.7'] };
  for (const v of ['1.32.7', '1.33.0', '1.33.1']) await installVaultwarden({ image: 'vaultwarden/server', version: v }, deps);
  assert.deepEqual(readdirSync(store.root).filter((n) => !n.startsWith('.')).sort(), ['1.32.7', '1.33.0', '1.33.1', 'current', 'previous']);
  await installVaultwarden({ image: 'vaultwarden/server', version: '1.34.0' }, { ...deps, inUse: () => [] });
  assert.deepEqual(readdirSync(store.root).filter((n) => !n.startsWith('.')).sort(), ['1.33.1', '1.34.0', 'current', 'previous']);
});

test('a command other than the start keeps the binary and web vault the agent chose', async () => {
  const store = new VersionStore(root());
  await installVaultwarden({ image: 'vaultwarden/server', version: '1.32.7' }, { store, pull: fakePull(tagOf), probe });
  await installVaultwarden({ image: 'vaultwarden/server', version: '1.33.0' }, { store, pull: fakePull(tagOf), probe });
  const { parseEnvFile } = await import('../../agent/config/envfile.ts');
  const { keptVaultwardenEnv } = await import('../../agent/vaultwarden/choose.ts');
  const prev = parseEnvFile(`VAULTWARDEN_BIN="${store.root}/1.32.7/vaultwarden"\nWEB_VAULT_FOLDER="${store.root}/1.32.7/web-vault/"\n`);
  const env = keptVaultwardenEnv(cfgOf(), prev, store);
  assert.equal(env.VAULTWARDEN_BIN, `${store.root}/1.32.7/vaultwarden`);
  assert.equal(env.WEB_VAULT_FOLDER, `${store.root}/1.32.7/web-vault/`);
  // No file yet (first command after boot): what would be chosen now.
  assert.equal(keptVaultwardenEnv(cfgOf(), undefined, store).VAULTWARDEN_BIN, `${store.root}/1.33.0/vaultwarden`);
});

test('an interrupted rollback: finished when the database was replaced, dropped when it was not', async () => {
  const { DatabaseSync } = await import('node:sqlite');
  const { contentDigest } = await import('../../agent/replication/inspect.ts');
  const { recoverRollback } = await import('../../agent/vaultwarden/rollback.ts');
  const store = new VersionStore(root());
  for (const v of ['1.32.7', '1.33.0']) await installVaultwarden({ image: 'vaultwarden/server', version: v }, { store, pull: fakePull(tagOf), probe });
  const dir = root();
  const snap = join(dir, 'snap.sqlite3');
  const s = new DatabaseSync(snap); s.exec("CREATE TABLE users (uuid TEXT); INSERT INTO users VALUES ('old'); CREATE TABLE __diesel_schema_migrations (version TEXT)"); s.close();
  const live = join(dir, 'db.sqlite3');
  const l = new DatabaseSync(live); l.exec("CREATE TABLE users (uuid TEXT); INSERT INTO users VALUES ('new'); CREATE TABLE __diesel_schema_migrations (version TEXT)"); l.close();
  const rec = { from: '1.33.0', to: '1.32.7', at: '2026-12-01T10:00:00Z', snapshot: dir, snapshotDigest: contentDigest(snap), hold: true, forced: false, changedRows: 0 };
  const state: VaultwardenState = { rollingBack: rec, upgrade: { from: '1.32.7', to: '1.33.0', at: 't', snapshot: dir, bytes: 1, ms: 1 } };
  const upd = async (ch: (v: VaultwardenState) => VaultwardenState) => { const n = ch({ ...state }); for (const k of Object.keys(state)) delete (state as Record<string, unknown>)[k]; Object.assign(state, n); };
  let restores = 0;
  const deps = { store, dbPath: live, updateState: upd, now: () => new Date('2026-12-01T10:01:00Z'), finishRestore: async () => { restores++; } };
  // The live database is still the newer one (the replacement never began, or was undone): nothing to finish, the record goes.
  assert.equal(await recoverRollback(state, deps), 'dropped');
  assert.equal(restores, 1, 'a restore operation left behind is settled first');
  assert.equal(state.rollingBack, undefined);
  assert.equal(store.current()!.version, '1.33.0');
  assert.ok(state.upgrade, 'the rollback point stays');
  // The recorded restore the rollback left is finished by the start: the live database is the snapshot.
  const { copyFileSync } = await import('node:fs');
  const finishing = { ...deps, finishRestore: async () => { copyFileSync(snap, live); } };
  // ... but the version to go back to was removed meanwhile: refused (78), nothing switched.
  state.rollingBack = { ...rec, to: '1.31.0' };
  await assert.rejects(recoverRollback(state, finishing), (e: any) => e.exitCode === 78 && /Vaultwarden 1\.31\.0 is no longer installed/.test(e.message));
  assert.equal(store.current()!.version, '1.33.0');
  state.rollingBack = rec;
  assert.equal(await recoverRollback(state, finishing), 'finished');
  assert.equal(store.current()!.version, '1.32.7');
  assert.equal(state.lastRan?.version, '1.32.7');
  assert.equal(state.hold?.version, '1.33.0');
  assert.equal(state.upgrade, undefined);
  assert.equal(state.rollingBack, undefined);
  assert.equal(state.lastRollback?.to, '1.32.7');
});
