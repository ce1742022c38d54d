import assert from 'node:assert/strict';
import { test } from 'node:test';
import { archiveName, parseArchiveName, planRetention } from '../../agent/backup/retention.ts';

const DAY = 86_400_000;
const now = new Date('2025-06-30T12:00:00Z');
const ago = (days: number, fmt: 'tar.gz' | 'tar' = 'tar.gz', enc = false) => archiveName(new Date(now.getTime() - days * DAY), fmt, enc);

test('archive names round-trip, in UTC, with format and encryption', () => {
  const at = new Date('2025-01-02T03:04:05Z');
  assert.equal(archiveName(at, 'tar.gz', false), 'vaultwarden-20250102-030405.tar.gz');
  assert.equal(archiveName(at, 'tar', true), 'vaultwarden-20250102-030405.tar.enc');
  assert.equal(archiveName(at, 'tar.gz', true), 'vaultwarden-20250102-030405.tar.gz.enc');
  const p = parseArchiveName('vaultwarden-20250102-030405.tar.gz.enc')!;
  assert.equal(p.at.toISOString(), '2025-01-02T03:04:05.000Z');
  assert.equal(p.format, 'tar.gz');
  assert.equal(p.encrypted, true);
  assert.equal(parseArchiveName('vaultwarden-20250102-030405.tar')!.format, 'tar');
});

test('names that are not exactly the pattern are not archives', () => {
  for (const n of [
    'vaultwarden-20250102-030405.zip', 'vaultwarden-20250102-030405.tar.gz.bak', 'xvaultwarden-20250102-030405.tar',
    'vaultwarden-2025010-030405.tar', 'vaultwarden-20250231-030405.tar', 'vaultwarden-20250102-250405.tar',
    'vaultwarden-20250102-030405.tar.enc.enc', 'notes.txt', 'vaultwarden-20250102-030405.TAR', '',
  ]) assert.equal(parseArchiveName(n), null, n);
});

test('deletes archives older than retentionDays, oldest first', () => {
  const names = [ago(1), ago(10), ago(40), ago(31), ago(100)];
  const plan = planRetention(names, now, 30, 2);
  assert.deepEqual(plan.delete, [ago(100), ago(40), ago(31)]);
  assert.deepEqual(plan.keep, [ago(1), ago(10)]);
});

test('always keeps the minKeep newest even when all are old', () => {
  const names = [ago(50), ago(60), ago(70), ago(80), ago(90)];
  const plan = planRetention(names, now, 30, 3);
  assert.deepEqual(plan.keep, [ago(50), ago(60), ago(70)]);
  assert.deepEqual(plan.delete, [ago(90), ago(80)]);
});

test('minKeep larger than the number of archives deletes nothing; minKeep 0 deletes every old one', () => {
  const names = [ago(50), ago(60)];
  assert.deepEqual(planRetention(names, now, 30, 5).delete, []);
  assert.deepEqual(planRetention(names, now, 30, 0).delete, [ago(60), ago(50)]);
});

test('an archive exactly at the cutoff is kept; one second older is deleted', () => {
  const exact = archiveName(new Date(now.getTime() - 30 * DAY), 'tar.gz', false);
  const older = archiveName(new Date(now.getTime() - 30 * DAY - 1000), 'tar.gz', false);
  const plan = planRetention([exact, older], now, 30, 0);
  assert.deepEqual(plan.delete, [older]);
  assert.deepEqual(plan.keep, [exact]);
});

test('foreign names are never selected and do not count toward minKeep', () => {
  const names = ['notes.txt', 'vaultwarden-old.tar.gz', 'vaultwarden-20000101-000000.tar.gz.partial', ago(40), ago(41)];
  const plan = planRetention(names, now, 30, 1);
  assert.deepEqual(plan.ignored.sort(), ['notes.txt', 'vaultwarden-20000101-000000.tar.gz.partial', 'vaultwarden-old.tar.gz']);
  assert.deepEqual(plan.keep, [ago(40)]);
  assert.deepEqual(plan.delete, [ago(41)]);
});

test('mixed formats and encrypted archives are one series; listing order does not matter', () => {
  const names = [ago(45, 'tar', true), ago(35, 'tar.gz', true), ago(5, 'tar'), ago(55)];
  const a = planRetention(names, now, 30, 1);
  const b = planRetention([...names].reverse(), now, 30, 1);
  assert.deepEqual(a, b);
  assert.deepEqual(a.delete, [ago(55), ago(45, 'tar', true), ago(35, 'tar.gz', true)]);
});

test('future-dated archives (clock skew) are kept and count as newest', () => {
  const names = [ago(-2), ago(40), ago(50)];
  const plan = planRetention(names, now, 30, 2);
  assert.deepEqual(plan.keep, [ago(-2), ago(40)]);
  assert.deepEqual(plan.delete, [ago(50)]);
});

test('retentionDays 0 keeps everything; duplicates are counted once', () => {
  assert.deepEqual(planRetention([ago(400), ago(500)], now, 0, 0).delete, []);
  assert.deepEqual(planRetention([ago(40), ago(40)], now, 30, 0).delete, [ago(40)]);
});
