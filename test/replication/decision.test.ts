import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareToReplica, decideRestore, type RestoreInputs } from '../../agent/replication/decision.ts';
import type { DbFacts } from '../../agent/replication/inspect.ts';
import type { Generation } from '../../agent/replication/litestream.ts';

const gen = (g: string, endMin: number): Generation => ({ generation: g, lag: '0s', start: new Date(0), end: new Date(endMin * 60_000) });
const missing: DbFacts = { exists: false, intact: false, users: 0, generation: null };
const untouched: DbFacts = { exists: true, intact: true, users: 0, generation: null };
const withData = (generation: string | null, users = 3): DbFacts => ({ exists: true, intact: true, users, generation });
const corrupt: DbFacts = { exists: true, intact: false, integrityMessage: 'database disk image is malformed', users: 0, generation: 'aaaaaaaaaaaaaaaa' };
const base = { replicaUrl: 's3://b/p/db', dbPath: '/var/lib/vaultwarden/db.sqlite3' };
const decide = (i: Partial<RestoreInputs> & Pick<RestoreInputs, 'local' | 'generations'>) => decideRestore({ ...base, ...i });
const G = [gen('1111111111111111', 1), gen('2222222222222222', 5)];

test('new host: no local database, replica holds data → restore', () => {
  const d = decide({ local: missing, generations: G });
  assert.equal(d.action, 'restore');
  assert.equal(d.action === 'restore' && d.setAside, 'none');
  assert.match(d.action === 'restore' ? d.reason : '', /2222222222222222/);
});

test('nothing anywhere → new vault, said with the replica URL', () => {
  assert.deepEqual(decide({ local: missing, generations: [] }), { action: 'new-vault', reason: 'new vault: no replica at s3://b/p/db' });
});

test('untouched local vault: inspects the replica, restores when it has users', () => {
  assert.deepEqual(decide({ local: untouched, generations: G }), { action: 'inspect-replica' });
  const d = decide({ local: untouched, generations: G, replicaCopy: { users: 2, digest: 'r' } });
  assert.equal(d.action, 'restore');
  assert.equal(d.action === 'restore' && d.setAside, 'untouched');
  assert.equal(decide({ local: untouched, generations: G, replicaCopy: { users: 0, digest: 'r' } }).action, 'keep');
  assert.equal(decide({ local: untouched, generations: [] }).action, 'keep');
});

test('local data continuing the latest generation is kept without reading the replica', () => {
  assert.equal(decide({ local: withData('2222222222222222'), generations: G }).action, 'keep');
});

test('local data and an empty replica: keep (first replication seeds it)', () => {
  assert.equal(decide({ local: withData(null), generations: [] }).action, 'keep');
});

test('local data from an older generation or unknown lineage: compare content', () => {
  assert.deepEqual(decide({ local: withData('1111111111111111'), generations: G, localDigest: 'L' }), { action: 'inspect-replica' });
  assert.deepEqual(decide({ local: withData(null), generations: G, localDigest: 'L' }), { action: 'inspect-replica' });
  assert.equal(decide({ local: withData(null), generations: G, localDigest: 'L', replicaCopy: { users: 3, digest: 'L' } }).action, 'keep');
  assert.equal(decide({ local: withData(null), generations: G, localDigest: 'L', replicaCopy: { users: 0, digest: 'R' } }).action, 'keep');
});

test('both hold data and differ → refuse with one line naming the commands', () => {
  const d = decide({ local: withData('1111111111111111', 5), generations: G, localDigest: 'L', replicaCopy: { users: 7, digest: 'R' } });
  assert.equal(d.action, 'refuse');
  if (d.action !== 'refuse') return;
  assert.match(d.reason, /local vault \(5 users, generation 1111111111111111\) and the replica at s3:\/\/b\/p\/db \(7 users, generation 2222222222222222\) both hold data and differ/);
  assert.match(d.hint, /vwstream-agent restore --force/);
  assert.match(d.hint, /vwstream-agent keep-local/);
  assert.ok(!d.reason.includes('\n') && !d.hint.includes('\n'));
});

test('keep-local accepted digest lets the same local data start; a changed one does not', () => {
  assert.equal(decide({ local: withData(null), generations: G, localDigest: 'L', acceptedLocalDigest: 'L' }).action, 'keep');
  assert.equal(decide({ local: withData(null), generations: G, localDigest: 'L2', acceptedLocalDigest: 'L' }).action, 'inspect-replica');
});

test('a corrupt local database is set aside and restored; without a replica it is refused, not replaced', () => {
  const d = decide({ local: corrupt, generations: G });
  assert.equal(d.action === 'restore' && d.setAside, 'corrupt');
  const r = decide({ local: corrupt, generations: [] });
  assert.equal(r.action, 'refuse');
  assert.match(r.action === 'refuse' ? r.reason : '', /fails integrity_check \(database disk image is malformed\) and there is no replica/);
});

test('positions: ahead, not ahead, unknown', () => {
  const g = '2222222222222222';
  assert.equal(compareToReplica({ generation: g, index: 5, size: 100 }, { generation: g, index: 4, offset: 9000 }, false), 'ahead');
  assert.equal(compareToReplica({ generation: g, index: 5, size: 100 }, { generation: g, index: 4, offset: 9000 }, true), 'ahead'); // proven beats a drain record
  assert.equal(compareToReplica({ generation: g, index: 3, size: 100 }, { generation: g, index: 4, offset: 0 }, false), 'not-ahead');
  assert.equal(compareToReplica({ generation: g, index: 4, size: 4152 }, { generation: g, index: 4, offset: 4152 }, false), 'not-ahead');
  assert.equal(compareToReplica({ generation: g, index: 4, size: 8272 }, { generation: g, index: 4, offset: 4152 }, false), 'unknown');
  assert.equal(compareToReplica({ generation: g, index: 4, size: 8272 }, { generation: g, index: 4, offset: 4152 }, true), 'not-ahead');
  assert.equal(compareToReplica(undefined, undefined, false), 'unknown');
  // The replica's segment read to its end decides the same index exactly, whatever the drain record says.
  assert.equal(compareToReplica({ generation: g, index: 4, size: 8272 }, { generation: g, index: 4, offset: 4152, end: 8272 }, false), 'not-ahead');
  assert.equal(compareToReplica({ generation: g, index: 4, size: 8272 }, { generation: g, index: 4, offset: 4152, end: 6200 }, true), 'ahead');
});

test('a corrupt local copy that continues the replica generation: positions first; ahead → refuse, never the older replica', () => {
  const g = '2222222222222222';
  const c: DbFacts = { ...corrupt, generation: g };
  assert.deepEqual(decide({ local: c, generations: G }), { action: 'compare-positions' });
  const ahead = decide({ local: c, generations: G, positions: { local: { generation: g, index: 7, size: 4152 }, replica: { generation: g, index: 6, offset: 32 }, lastDrainConfirmed: false } });
  assert.equal(ahead.action, 'refuse');
  if (ahead.action !== 'refuse') return;
  assert.match(ahead.reason, /fails integrity_check \(database disk image is malformed\) but holds writes the replica at s3:\/\/b\/p\/db lacks \(local WAL index 7, 4152 bytes; replica WAL index 6, segment at 32 of generation 2222222222222222\)/);
  assert.match(ahead.hint, /sqlite3 \/var\/lib\/vaultwarden\/db\.sqlite3 \.recover/);
  assert.match(ahead.hint, /vwstream-agent restore --force/);
  const behind = decide({ local: c, generations: G, positions: { local: { generation: g, index: 5, size: 4152 }, replica: { generation: g, index: 6, offset: 32 }, lastDrainConfirmed: false } });
  assert.equal(behind.action === 'restore' && behind.setAside, 'corrupt');
  assert.doesNotMatch(behind.action === 'restore' ? behind.reason : '', /not confirmed/);
  const unsure = decide({ local: c, generations: G, positions: { local: { generation: g, index: 6, size: 9000 }, replica: { generation: g, index: 6, offset: 32 }, lastDrainConfirmed: false } });
  assert.equal(unsure.action === 'restore' && unsure.setAside, 'corrupt');
  assert.match(unsure.action === 'restore' ? unsure.reason : '', /the last drain was not confirmed: writes of its last seconds may exist only in the copy set aside/);
});

test('a local vault without users that continues the replica generation is kept unless it is behind', () => {
  const g = '2222222222222222';
  const empty: DbFacts = { exists: true, intact: true, users: 0, generation: g };
  assert.deepEqual(decide({ local: empty, generations: G }), { action: 'compare-positions' });
  const kept = decide({ local: empty, generations: G, positions: { local: { generation: g, index: 6, size: 9000 }, replica: { generation: g, index: 6, offset: 32 }, lastDrainConfirmed: false } });
  assert.equal(kept.action, 'keep');
  assert.match(kept.action === 'keep' ? kept.reason : '', /continues replica generation 2222222222222222 and is not behind it/);
  const behind = { local: { generation: g, index: 2, size: 9000 }, replica: { generation: g, index: 6, offset: 32 }, lastDrainConfirmed: false };
  assert.deepEqual(decide({ local: empty, generations: G, positions: behind }), { action: 'inspect-replica' });
  assert.equal(decide({ local: empty, generations: G, positions: behind, replicaCopy: { users: 4, digest: 'r' } }).action, 'restore');
});
