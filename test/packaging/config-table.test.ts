/**
 * Issues 8 and 15: the configuration reference (docs/configuration.md) and the list of keys
 * a Docker .env carries over (docs/migrating.md) are generated from agent/config/schema.ts
 * by scripts/gen-config-table.mjs; this fails when someone changes the schema (or the
 * generated text) without regenerating it (make config-table).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
// @ts-expect-error: a plain .mjs script without type declarations
import { AGENT_ADDED, BEGIN, CARRIED_GROUPS, END, TARGETS, renderCarriedKeys, renderConfigTable } from '../../scripts/gen-config-table.mjs';
import { ALL_KEYS } from '../../agent/config/schema.ts';

const REPO = new URL('../../', import.meta.url);

test('docs/configuration.md and docs/migrating.md hold what the schema generates (make config-table)', async () => {
  assert.equal(TARGETS.length, 2);
  for (const [rel, fill] of TARGETS as [string, (s: string) => Promise<string>][]) {
    const text = fs.readFileSync(new URL(rel, REPO), 'utf8');
    assert.equal(text, await fill(text), `${rel} is stale: run make config-table`);
  }
  const doc = fs.readFileSync(new URL('docs/configuration.md', REPO), 'utf8');
  assert.ok(doc.includes(BEGIN) && doc.includes(END), 'docs/configuration.md lacks the config-table markers');
});

test('the reference has one row per schema key, under its group, with its default and secrets marked', async () => {
  const table: string = await renderConfigTable();
  const lines = table.split('\n');
  for (const k of ALL_KEYS) {
    const at = lines.findIndex((l) => l.startsWith(`| \`${k.key}\` |`));
    assert.ok(at >= 0, `${k.key} missing`);
    const row = lines[at]!;
    if (k.default) assert.ok(row.includes(`\`${k.default}\``), `${k.key}: default ${k.default} missing`);
    assert.ok(row.includes(k.allowed.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;')), `${k.key}: allowed values missing`);
    assert.equal(row.includes('(secret: never logged)'), Boolean(k.secret), `${k.key}: secret flag`);
    const heading = lines.slice(0, at).reverse().find((l) => l.startsWith('### '));
    assert.equal(heading, `### ${k.group}`, `${k.key} is not under its group`);
  }
  assert.equal(lines.filter((l) => l.startsWith('| `')).length, ALL_KEYS.length);
  assert.ok(table.includes('| `LITESTREAM_PROFILE` | `standard` | one of critical, standard, relaxed | critical\\|standard\\|relaxed'));
});

test('the carried-over list holds every key of the image\'s groups, none of the agent\'s own', async () => {
  const text: string = await renderCarriedKeys();
  for (const k of ALL_KEYS) {
    const carried = CARRIED_GROUPS.includes(k.group) && !AGENT_ADDED.includes(k.key);
    assert.equal(text.includes(`\`${k.key}\``), carried, `${k.key} (${k.group})`);
  }
  assert.match(text, /^- Storage: `S3_PROVIDER`, `S3_BUCKET`/m);
  assert.doesNotMatch(text, /VAULTWARDEN_BIN|LEASE_TTL|ROCKET_PORT|LOCAL_REPLICA_PATH/);
});
