import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatGoDuration, formatHuman, parseDuration } from '../../agent/config/duration.ts';

test('plain numbers are seconds; units as Litestream writes them', () => {
  assert.equal(parseDuration('300'), 300_000);
  assert.equal(parseDuration('1.5'), 1500);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('1s'), 1000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('14d'), 14 * 86_400_000);
  for (const bad of ['', 'abc', '5 m', '-1', '1y', 's', '1h 30m']) assert.equal(parseDuration(bad), undefined, bad);
});

test('Go durations have no days; human form is short', () => {
  assert.equal(formatGoDuration(336 * 3_600_000), '336h');
  assert.equal(formatGoDuration(90_000), '90s');
  assert.equal(formatGoDuration(120_000), '2m');
  assert.equal(formatGoDuration(1500), '1500ms');
  assert.equal(formatHuman(1000), '1s');
  assert.equal(formatHuman(6 * 3_600_000), '6h');
  assert.equal(formatHuman(250), '250ms');
});
