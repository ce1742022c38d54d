/**
 * Issue 15: a mistyped command names the right one (yargs' recommendCommands) and is a
 * usage error (64); the hidden `completion` command prints the bash completion script the
 * packages ship, and the binary answers its completion requests.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execa } from 'execa';

const MAIN = new URL('../../agent/main.ts', import.meta.url).pathname;
const run = (...args: string[]) => execa(process.execPath, [MAIN, ...args], { reject: false, env: { LC_ALL: 'C' } });

test('a mistyped command suggests the right one and exits 64', async () => {
  for (const [typo, meant] of [['stauts', 'status'], ['promot', 'promote'], ['check-cofig', 'check-config'], ['restor', 'restore']] as const) {
    const r = await run(typo);
    assert.equal(r.exitCode, 64, `${typo}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`Did you mean ${meant}\\?`), typo);
    assert.equal(r.stdout, '', `${typo} printed on stdout`);
  }
  // Nothing close: no suggestion, still a usage error.
  const far = await run('zzzzzzzz');
  assert.equal(far.exitCode, 64);
  assert.doesNotMatch(far.stderr, /Did you mean/);
});

test('completion prints a bash script bound to vwstream-agent; the hidden command is not in --help', async () => {
  const r = await run('completion');
  assert.equal(r.exitCode, 0, r.stderr);
  assert.match(r.stdout, /^complete -o bashdefault -o default -F (\S+) vwstream-agent$/m);
  assert.match(r.stdout, /vwstream-agent --get-yargs-completions "\$\{args\[@\]\}"/);
  const help = await run('--help');
  assert.doesNotMatch(help.stdout, /completion/);
});

test('completion requests list commands, subcommands and a command\'s options', async () => {
  const words = async (...w: string[]) => (await run('--get-yargs-completions', 'vwstream-agent', ...w)).stdout.split('\n');
  const top = await words('sta');
  for (const c of ['status', 'health', 'check-config', 'restore', 'promote', 'keep-local', 'aside']) assert.ok(top.includes(c), `${c} missing: ${top.join(' ')}`);
  assert.ok(!top.includes('confirm-sync') && !top.includes('stop-writers') && !top.includes('completion'), 'hidden commands are offered');
  assert.ok((await words('aside', '')).includes('prune'));
  const restore = await words('restore', '--');
  for (const o of ['--force', '--to', '--backup', '--timestamp', '--generation', '--index']) assert.ok(restore.includes(o), `${o} missing`);
  assert.ok((await words('aside', 'prune', '--')).includes('--dry-run'));
});
