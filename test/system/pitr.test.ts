/**
 * Issue 9 end to end with the real Litestream on S3 (fauxqs): point-in-time restore to a
 * copy and over the live data, the replica's listings, a fresh host following the
 * restored point, and the clear errors (before the oldest point, unknown generation).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startS3, type S3Server } from './harness.ts';
import { agentHost, startAgent, statusJson, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
let s3: S3Server;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = () => ({ S3_BUCKET: 'vault-pitr', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 'pitr-secret-31', S3_PREFIX: 'vw', LEASE_TTL: '10' });

before(async () => {
  s3 = await startS3();
  await s3.createBucket('vault-pitr');
});
after(async () => {
  for (const h of hosts) await h.host.destroy().catch(() => undefined);
  await s3?.stop();
});

const users = async (a: AgentHost, path: string) => Number((await a.host.exec(['sqlite3', path, 'select count(*) from users'])).stdout);

test('restore --timestamp T: a copy with --to, errors that touch nothing, then --force over the live vault; a fresh host follows the restored point', async () => {
  const a = await agentHost('c9-pitr-a', env());
  hosts.push(a);
  await startAgent(a.host);
  await waitServing(a.host);
  await a.vw.addUsers(10);
  await waitDbSynced(a.host, Date.now());
  // Replica object times have one-second resolution: T stays clear of both bursts.
  await sleep(2500);
  const t = new Date();
  await sleep(2500);
  await a.vw.addUsers(10);
  await waitDbSynced(a.host, Date.now());
  assert.equal((await a.vw.counts()).users, 20);

  // What the replica holds.
  const gens = JSON.parse((await a.host.exec(['vwstream-agent', 'generations', '--json'])).stdout);
  assert.equal(gens.generations.length, 1);
  assert.ok(gens.generations[0].bytes > 0 && gens.generations[0].snapshots >= 1, JSON.stringify(gens));
  assert.ok(Date.parse(gens.oldestRestorable) <= t.getTime());
  const table = (await a.host.exec(['vwstream-agent', 'generations'])).stdout;
  assert.match(table, new RegExp(`^${gens.generations[0].generation}\\s+\\S+Z\\s+\\S+Z\\s+\\d+\\s+\\d+\\s+[\\d.]+ (B|KiB|MiB)$`, 'm'));
  const snaps = JSON.parse((await a.host.exec(['vwstream-agent', 'snapshots', '--json'])).stdout);
  assert.equal(snaps.snapshots[0].generation, gens.generations[0].generation);

  // --to: exactly the 10 rows of T; the live vault keeps its 20.
  const t0 = Date.now();
  const copy = await a.host.exec(['vwstream-agent', 'restore', '--timestamp', t.toISOString(), '--to', '/tmp/x.db'], { timeoutMs: 120_000 });
  const copyMs = Date.now() - t0;
  assert.match(copy.stdout, /10 users/);
  assert.match(copy.stdout, /live data untouched/);
  assert.equal(await users(a, '/tmp/x.db'), 10);
  assert.equal((await a.host.exec(['sqlite3', '/tmp/x.db', 'pragma integrity_check'])).stdout, 'ok');
  assert.equal((await a.vw.counts()).users, 20);
  // On a terminal the restore shows its progress.
  const tty = await a.host.exec(['script', '-qec', `vwstream-agent restore --timestamp ${t.toISOString()} --to /tmp/tty.db`, '/dev/null'], { timeoutMs: 120_000 });
  assert.match(tty.stdout, /restore: downloading the snapshot[\s\S]*restore: database complete/);
  assert.equal(await users(a, '/tmp/tty.db'), 10);
  // A relative time says the same.
  const ago = Math.round((Date.now() - t.getTime()) / 1000);
  await a.host.exec(['vwstream-agent', 'restore', '--timestamp', `${ago} seconds ago`, '--to', '/tmp/rel.db'], { timeoutMs: 120_000 });
  assert.equal(await users(a, '/tmp/rel.db'), 10);

  // Before the oldest restorable point: exit 1, the oldest named, nothing written.
  const early = await a.host.exec(['vwstream-agent', 'restore', '--timestamp', '2020-01-01T00:00:00Z', '--to', '/tmp/early.db'], { check: false });
  assert.equal(early.exitCode, 1);
  assert.match(early.stderr, new RegExp(`2020-01-01T00:00:00Z is before the oldest restorable point in time, ${gens.oldestRestorable.replace(/\.\d+Z$/, 'Z')}`));
  assert.equal((await a.host.exec(['test', '-e', '/tmp/early.db'], { check: false })).exitCode, 1);
  // An unknown generation: exit 1, the known ones named.
  const unknown = await a.host.exec(['vwstream-agent', 'restore', '--generation', '0123456789abcdef', '--to', '/tmp/u.db'], { check: false });
  assert.equal(unknown.exitCode, 1);
  assert.match(unknown.stderr, new RegExp(`unknown generation 0123456789abcdef: the replica holds ${gens.generations[0].generation}`));
  // Over live data without --force: refused, the agent keeps serving 20.
  const refused = await a.host.exec(['vwstream-agent', 'restore', '--timestamp', t.toISOString()], { check: false });
  assert.equal(refused.exitCode, 1);
  assert.match(refused.stderr, /holds 20 users; refusing to replace it without --force/);
  assert.equal((await statusJson(a.host)).state, 'serving');
  assert.equal((await a.vw.counts()).users, 20);

  // --force: drain, keep aside, restore, start again.
  const t1 = Date.now();
  const forced = await a.host.exec(['vwstream-agent', 'restore', '--timestamp', t.toISOString(), '--force'], { timeoutMs: 300_000 });
  const forceMs = Date.now() - t1;
  assert.match(forced.stdout, /stopping vwstream-agent \(drain/);
  assert.match(forced.stdout, /drain complete/);
  assert.match(forced.stdout, /\(10 users, \d+ ms\)/);
  assert.match(forced.stdout, /cannot be rolled back; they are taken as of now/);
  assert.match(forced.stdout, /vwstream-agent serves it again/);
  const aside = /the previous database is kept at (\/var\/lib\/vwstream\/aside\/\S+) \(never deleted\)/.exec(forced.stdout)?.[1];
  assert.ok(aside, forced.stdout);
  assert.equal(await users(a, `${aside}/db.sqlite3`), 20);
  const st = await waitServing(a.host);
  assert.equal(st.restore.action, 'keep');
  assert.equal((await a.vw.counts()).users, 10);
  // Litestream replicates the restored vault as a new generation.
  await waitDbSynced(a.host, Date.now());
  const gens2 = JSON.parse((await a.host.exec(['vwstream-agent', 'generations', '--json'])).stdout);
  assert.equal(gens2.generations.length, 2);

  // A fresh host (a secondary: no lease) restores the 10-row state.
  const b = await agentHost('c9-pitr-b', { ...env(), NODE_ROLE: 'secondary' });
  hosts.push(b);
  await startAgent(b.host);
  await waitServing(b.host);
  assert.equal((await b.vw.counts()).users, 10);
  // Replication continued from the restored point: 5 more on the primary → 15 in the replica.
  await a.vw.addUsers(5);
  await waitDbSynced(a.host, Date.now());
  await b.host.exec(['vwstream-agent', 'restore', '--to', '/tmp/latest.db'], { timeoutMs: 120_000 });
  assert.equal(await users(b, '/tmp/latest.db'), 15);
  console.log(`# measured: restore --timestamp --to ${copyMs} ms; restore --timestamp --force (drain, restore, start again, READY) ${forceMs} ms`);
});

test('an unreachable replica: one line, exit 1, nothing touched', async () => {
  const a = hosts[0]!;
  s3.pause();
  try {
    const r = await a.host.exec(['vwstream-agent', 'restore', '--timestamp', '1 minute ago', '--to', '/tmp/down.db'], { check: false, timeoutMs: 300_000 });
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr, /^vwstream-agent: cannot reach the replica at s3:\/\/vault-pitr\/vw/);
    assert.equal((await a.host.exec(['test', '-e', '/tmp/down.db'], { check: false })).exitCode, 1);
  } finally {
    s3.resume();
  }
});
