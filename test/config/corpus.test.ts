/**
 * The bad-config corpus (test/config/corpus-cases.ts) through the real CLI:
 * `node agent/main.ts check-config --config FILE` exits 78 with one stderr line naming
 * the key, prints nothing on stdout, and never shows a secret value.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CORPUS } from './corpus-cases.ts';

const MAIN = new URL('../../agent/main.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vws-corpus-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function checkConfig(env: string): { code: number | null; stdout: string; stderr: string } {
  const file = join(dir, 'vwstream.env');
  writeFileSync(file, env, { mode: 0o600 });
  const r = spawnSync(process.execPath, ['--no-warnings', MAIN, 'check-config', '--config', file], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', RCLONE_CONFIG: join(dir, 'no-rclone.conf') }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('the corpus has at least 15 cases and covers every kind', () => {
  assert.ok(CORPUS.length >= 15);
  assert.equal(new Set(CORPUS.map((c) => c.name)).size, CORPUS.length);
});

test('a good file passes (the harness itself works)', () => {
  const r = checkConfig('NODE_ROLE=primary\nVAULTWARDEN_BIN=/bin/true\nBACKUP_ENABLED=true\nBACKUP_PASSWORD=corpus-pw\nBACKUP_REMOTES=offsite:vw\nRCLONE_CONFIG_OFFSITE_TYPE=local\nTAILSCALE_ENABLED=true\nTAILSCALE_FUNNEL=true\nTAILSCALE_SERVE_PORT=8443\n');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^config OK: /);
});

for (const c of CORPUS) {
  test(`bad config: ${c.name} → 78 naming ${c.key}`, () => {
    const r = checkConfig(c.env);
    assert.equal(r.code, 78, `${c.name}: exit ${r.code}\n${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    const escaped = c.key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(lines[0]!, new RegExp(`^vwstream-agent: config error: (\\S+ )?${escaped}[= ]`), r.stderr);
    if (c.says) assert.match(lines[0]!, c.says);
    if (c.hidden) assert.ok(!r.stderr.includes(c.hidden), `secret printed: ${r.stderr}`);
  });
}
