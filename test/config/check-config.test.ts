/** `vwstream-agent check-config` through the real CLI: --strict, --json, VAULTWARDEN_BIN, --config without a value. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

const MAIN = new URL('../../agent/main.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vws-check-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'vwstream.env');

function cli(env: string | null, ...args: string[]): { code: number | null; stdout: string; stderr: string } {
  if (env !== null) writeFileSync(file, env, { mode: 0o600 });
  const r = spawnSync(process.execPath, ['--no-warnings', MAIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', RCLONE_CONFIG: join(dir, 'none.conf') }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const GOOD = 'VAULTWARDEN_BIN=/bin/sh\n';
const TYPO = `${GOOD}LOGLEVEL=debug\n`;
const typoWarning = `LOGLEVEL (${file} line 2) is not a vwstream-agent or Vaultwarden setting (it is passed to Vaultwarden, which ignores it); did you mean LOG_LEVEL?`;

test('a warning alone: exit 0, "config OK" and the warning', () => {
  const r = cli(TYPO, 'check-config', '--config', file);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `config OK: ${file} (primary, replica file:///var/backups/vwstream/replica)\nwarning: ${typoWarning}\n`);
});

test('--strict: every warning is printed, then strict mode fails with 78', () => {
  const r = cli(`${TYPO}NODE_ROLE=primary\nNODE_ROLE=primary\n`, 'check-config', '--strict', '--config', file);
  assert.equal(r.code, 78);
  assert.equal(r.stdout, '');
  assert.deepEqual(r.stderr.trimEnd().split('\n'), [
    `warning: NODE_ROLE is set twice in ${file} (lines 3 and 4); the last one (line 4) wins, as for systemd and bash: remove the others`,
    `warning: ${typoWarning}`,
    `vwstream-agent: check-config --strict failed: 2 warnings in ${file}`,
  ]);
  const clean = cli(GOOD, 'check-config', '--strict', '--config', file);
  assert.equal(clean.code, 0, clean.stderr);
  assert.match(clean.stdout, /^config OK: /);
});

test('--strict --json: the summary with its warnings and ok:false, exit 78', () => {
  const r = cli(TYPO, 'check-config', '--strict', '--json', '--config', file);
  assert.equal(r.code, 78, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.equal(s.ok, false);
  assert.equal(s.strict, true);
  assert.deepEqual(s.warnings, [typoWarning]);
  assert.equal(s.config, file);
  const ok = JSON.parse(cli(GOOD, 'check-config', '--strict', '--json', '--config', file).stdout);
  assert.equal(ok.ok, true);
  assert.deepEqual(ok.warnings, []);
  const lax = cli(TYPO, 'check-config', '--json', '--config', file);
  assert.equal(lax.code, 0);
  assert.equal(JSON.parse(lax.stdout).ok, true);
});

test('VAULTWARDEN_BIN missing or not executable: exit 78 naming it', () => {
  const missing = cli(`VAULTWARDEN_BIN=${dir}/vaultwarden\n`, 'check-config', '--config', file);
  assert.equal(missing.code, 78);
  assert.equal(missing.stdout, '');
  assert.match(missing.stderr, new RegExp(`^vwstream-agent: config error: VAULTWARDEN_BIN="${dir}/vaultwarden" is not valid: no Vaultwarden binary there \\(file not found\\)`));
  writeFileSync(join(dir, 'vw-noexec'), '#!/bin/sh\n', { mode: 0o644 });
  const noexec = cli(`VAULTWARDEN_BIN=${dir}/vw-noexec\n`, 'check-config', '--config', file);
  assert.equal(noexec.code, 78);
  assert.match(noexec.stderr, /VAULTWARDEN_BIN=.* is not valid: the file is not executable/);
});

test('s3_bucket (case) is an error: the replica would silently stay local', () => {
  const r = cli(`${GOOD}s3_bucket=my-vault\n`, 'check-config', '--config', file);
  assert.equal(r.code, 78);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, `vwstream-agent: config error: s3_bucket="my-vault" is not valid: keys are case-sensitive; did you mean S3_BUCKET? (${file} line 2)\n`);
});

test('--config without a value is a usage error (64), not the default file', () => {
  for (const args of [['check-config', '--config'], ['--config'], ['status', '--config']]) {
    const r = cli(null, ...args);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /Not enough arguments following: config/);
  }
});
