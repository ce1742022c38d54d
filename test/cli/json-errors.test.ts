import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { jsonError, wantsJson } from '../../agent/cli/common.ts';
import { AgentError, ConfigError, EXIT } from '../../agent/errors.ts';

// With --json an error is one JSON object on stdout ({"error": {...}}), the exit code unchanged.
const MAIN = join(import.meta.dirname, '../../agent/main.ts');
const dir = mkdtempSync(join(tmpdir(), 'vws-json-'));

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--no-warnings', MAIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function envFile(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, 0o600);
  return p;
}

test('wantsJson reads the flag before yargs does, and stops at --', () => {
  assert.equal(wantsJson(['status', '--json']), true);
  assert.equal(wantsJson(['--json=true', 'status']), true);
  assert.equal(wantsJson(['status']), false);
  assert.equal(wantsJson(['status', '--json=false']), false);
  assert.equal(wantsJson(['restore', '--', '--json']), false);
});

test('a config error as JSON: message, key, value, allowed and the exit code', () => {
  const e = jsonError(new ConfigError('NODE_ROLE', 'bogus', 'expected one of primary, secondary', 'f line 3'), EXIT.CONFIG);
  assert.deepEqual(e, { error: { message: 'config error: NODE_ROLE="bogus" is not valid: expected one of primary, secondary (f line 3)', key: 'NODE_ROLE', value: 'bogus', allowed: 'one of primary, secondary', hint: null, exitCode: 78 } });
  const a = jsonError(new AgentError('the agent is not running', { hint: 'systemctl status vwstream-agent', exitCode: EXIT.UNAVAILABLE }), EXIT.UNAVAILABLE);
  assert.deepEqual(a, { error: { message: 'the agent is not running', key: null, value: null, allowed: null, hint: 'systemctl status vwstream-agent', exitCode: 69 } });
});

test('check-config --json on a bad value: the error object on stdout, nothing on stderr, exit 78', () => {
  const r = cli(['check-config', '--json', '--config', envFile('bad.env', 'LOG_LEVEL=info\nNODE_ROLE=bogus\n')]);
  assert.equal(r.code, 78, r.stderr);
  assert.equal(r.stderr, '');
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown> };
  assert.equal(j.error.key, 'NODE_ROLE');
  assert.equal(j.error.value, 'bogus');
  assert.equal(j.error.exitCode, 78);
  assert.match(String(j.error.message), /line 2/);
  // Without --json: one line on stderr, nothing on stdout.
  const t = cli(['check-config', '--config', join(dir, 'bad.env')]);
  assert.equal(t.code, 78);
  assert.equal(t.stdout, '');
  assert.match(t.stderr, /^vwstream-agent: config error: NODE_ROLE="bogus" is not valid/);
});

test('a secret value is never in the JSON error', () => {
  const r = cli(['check-config', '--json', '--config', envFile('secret.env', 'S3_BUCKET=my-vault\nS3_ACCESS_KEY_ID=AKIAEXAMPLE\nS3_SECRET_ACCESS_KEY=\nS3_ENDPOINT=ftp://hunter2-endpoint\n')]);
  assert.equal(r.code, 78);
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown> };
  assert.ok(!r.stdout.includes('AKIAEXAMPLE'));
  assert.equal(j.error.exitCode, 78);
});

test('status --json with no agent: JSON on stdout, exit 69; as text: two lines on stderr, exit 69', () => {
  // The socket path comes from PATHS; the test machine has no agent running there.
  const r = cli(['status', '--json']);
  assert.equal(r.code, EXIT.UNAVAILABLE, r.stdout + r.stderr);
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown> };
  assert.match(String(j.error.message), /^the agent is not running/);
  assert.equal(j.error.exitCode, 69);
  const t = cli(['health']);
  assert.equal(t.code, EXIT.UNAVAILABLE);
  assert.equal(t.stdout, '');
  assert.match(t.stderr, /^vwstream-agent: the agent is not running/);
});

test('a usage error with --json: JSON, exit 64', () => {
  const r = cli(['stauts', '--json']);
  assert.equal(r.code, EXIT.USAGE);
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown> };
  assert.equal(j.error.exitCode, 64);
  assert.match(String(j.error.message), /stauts/);
});

test('needs root: exit 77 (as a user that cannot read the 0600 config)', { skip: process.getuid?.() === 0 ? false : 'needs root to drop to nobody' }, () => {
  const p = envFile('root.env', 'LOG_LEVEL=info\n');
  const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '--no-warnings', MAIN, 'check-config', '--json', '--config', p], { encoding: 'utf8', cwd: '/' });
  assert.ifError(r.error);
  assert.equal(r.status, EXIT.NOPERM, r.stdout + r.stderr);
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown> };
  assert.match(String(j.error.message), /can be read only by root/);
  assert.equal(j.error.exitCode, 77);
});

test('an empty --config= is a usage error (64), as --config with no value', () => {
  for (const args of [['check-config', '--config='], ['check-config', '--config']]) {
    const r = cli(args);
    assert.equal(r.code, EXIT.USAGE, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^vwstream-agent: Not enough arguments following: config/);
  }
});

test('check-config --strict --json with a warning: the error object (exit 78) with the summary and warnings beside it', () => {
  const r = cli(['check-config', '--strict', '--json', '--config', envFile('strict.env', 'VAULTWARDEN_BIN=/bin/true\nLOGLEVEL=debug\n')]);
  assert.equal(r.code, EXIT.CONFIG);
  const j = JSON.parse(r.stdout) as { error: Record<string, unknown>; ok: boolean; warnings: string[] };
  assert.equal(j.error.exitCode, 78);
  assert.match(String(j.error.message), /^check-config --strict failed: 1 warning in /);
  assert.equal(j.ok, false);
  assert.match(j.warnings[0]!, /LOGLEVEL .*did you mean LOG_LEVEL\?/);
});
