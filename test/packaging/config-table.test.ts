/**
 * Issue 8: README.md's configuration table is generated from agent/config/schema.ts by
 * scripts/gen-config-table.mjs; this fails when someone changes the schema (or the table)
 * without regenerating it (make config-table).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
// @ts-expect-error: a plain .mjs script without type declarations
import { BEGIN, END, renderConfigTable, withConfigTable } from '../../scripts/gen-config-table.mjs';
import { ALL_KEYS } from '../../agent/config/schema.ts';

const README = new URL('../../README.md', import.meta.url);

test('README.md holds the configuration table generated from the schema (make config-table)', async () => {
  const readme = fs.readFileSync(README, 'utf8');
  assert.ok(readme.includes(BEGIN) && readme.includes(END), 'README.md lacks the config-table markers');
  assert.equal(readme, await withConfigTable(readme), 'README.md configuration table is stale: run make config-table');
});

test('the table has one row per schema key, with its default and secrets marked', async () => {
  const table: string = await renderConfigTable();
  for (const k of ALL_KEYS) {
    const row = table.split('\n').find((l) => l.startsWith(`| \`${k.key}\` |`));
    assert.ok(row, `${k.key} missing`);
    if (k.default) assert.ok(row.includes(`\`${k.default}\``), `${k.key}: default ${k.default} missing`);
    assert.equal(row.includes('(secret: never logged)'), Boolean(k.secret), `${k.key}: secret flag`);
  }
  assert.ok(table.includes('| `LITESTREAM_PROFILE` | `standard` | one of critical, standard, relaxed | critical\\|standard\\|relaxed'));
});
