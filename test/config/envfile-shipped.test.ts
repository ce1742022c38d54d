import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ALL_KEYS } from '../../agent/config/schema.ts';

const shipped = readFileSync(new URL('../../packaging/vwstream.env', import.meta.url), 'utf8');

test('the shipped commented env file lists every key with the schema default', () => {
  const lines = new Map([...shipped.matchAll(/^#([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^"(.*)"$/, "$1")]));
  for (const d of ALL_KEYS) {
    assert.ok(lines.has(d.key), `${d.key} missing from packaging/vwstream.env`);
    assert.equal(lines.get(d.key), d.default ?? '', `${d.key} default`);
  }
});
