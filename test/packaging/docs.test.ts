/**
 * Issue 15: the operator documentation ships with the package and stands on its own.
 * - Repository: every unit links to the man page and to a doc the package installs; no doc
 *   points outside the repository.
 * - Package (VWS_DEB; `make lint-packages`): docs/*.md, NEWS.Debian and the changelog are in
 *   /usr/share/doc/vwstream-agent, byte for byte the repository's; the man page renders
 *   without a warning and names every command and option the CLI has; the bash completion
 *   script, sourced in bash and run against the packaged agent, completes commands,
 *   subcommands and options.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, test } from 'node:test';
import { execa } from 'execa';

const REPO = new URL('../..', import.meta.url).pathname;
const DEB = process.env.VWS_DEB;
const skip = !DEB ? 'needs VWS_DEB (run make lint-packages)' : false;
const DOC = 'usr/share/doc/vwstream-agent';
const docs = fs.readdirSync(path.join(REPO, 'docs')).filter((f) => f.endsWith('.md')).sort();

test('every unit links to the man page and to docs the package installs', () => {
  const units = fs.readdirSync(path.join(REPO, 'units')).filter((f) => /\.(service|timer)$/.test(f));
  assert.ok(units.length >= 9);
  for (const u of units) {
    const lines = fs.readFileSync(path.join(REPO, 'units', u), 'utf8').split('\n').filter((l) => l.startsWith('Documentation='));
    assert.equal(lines.length, 1, `${u}: one Documentation= line`);
    const uris = lines[0]!.slice('Documentation='.length).split(' ');
    assert.equal(uris[0], 'man:vwstream-agent(8)', u);
    assert.ok(uris.length >= 2, `${u}: no doc file`);
    for (const uri of uris.slice(1)) {
      const m = /^file:\/\/\/usr\/share\/doc\/vwstream-agent\/([a-z-]+\.md)\.gz$/.exec(uri);
      assert.ok(m && docs.includes(m[1]!), `${u}: ${uri} is not an installed doc`);
    }
  }
});

test('the documentation points nowhere outside the repository', () => {
  const files = ['README.md', 'packaging/vwstream-agent.8', 'packaging/debian/changelog.in', 'packaging/debian/NEWS.in',
    'ansible/README.md', 'ansible/roles/vwstream_agent/README.md', ...docs.map((d) => `docs/${d}`)];
  for (const f of files) {
    const text = fs.readFileSync(path.join(REPO, f), 'utf8');
    assert.doesNotMatch(text, /CONTRACT|shared\/|\.\.\/|\/work\//, f);
    // Relative links between the docs resolve.
    for (const [, target] of text.matchAll(/\]\(([^)#:]+\.md)(?:#[^)]*)?\)/g)) {
      assert.ok(fs.existsSync(path.join(REPO, path.dirname(f), target!)), `${f}: link to ${target} is broken`);
    }
  }
});

let root = '';
before(async () => {
  if (skip) return;
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'vws-docs-'));
  await execa('dpkg-deb', ['-x', DEB!, root]);
});
after(() => { if (root) fs.rmSync(root, { recursive: true, force: true }); });

const gunzip = (f: string) => zlib.gunzipSync(fs.readFileSync(path.join(root, f))).toString('utf8');

test('the docs, NEWS.Debian and the changelog are installed, as in the repository', { skip }, async () => {
  for (const d of docs) assert.equal(gunzip(`${DOC}/${d}.gz`), fs.readFileSync(path.join(REPO, 'docs', d), 'utf8'), d);
  const version = (await execa('dpkg-deb', ['-f', DEB!, 'Version'])).stdout.trim();
  for (const f of ['changelog.gz', 'NEWS.Debian.gz']) {
    const text = gunzip(`${DOC}/${f}`);
    assert.match(text, new RegExp(`^vwstream-agent \\(${version.replace(/\./g, '\\.')}\\) unstable; urgency=medium\\n`), f);
    assert.doesNotMatch(text, /@[A-Z]+@/, `${f}: a placeholder is left`);
    // The trailer's date is the last commit's, in RFC 2822.
    assert.match(text, /\n -- vwstream-agent developers <dev@vwstream\.invalid> {2}\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\n$/, f);
  }
  // The changelog says what changed (not "see the git history").
  const changelog = gunzip(`${DOC}/changelog.gz`);
  for (const w of ['lease', 'fenced', 'Standby', 'File mirror', 'Backups', 'Restore drill', 'aside', 'Hardening']) assert.ok(changelog.includes(w), `changelog lacks ${w}`);
});

test('the man page renders without a warning and documents every command and option', { skip }, async () => {
  const page = path.join(root, 'usr/share/man/man8/vwstream-agent.8.gz');
  const r = await execa('man', ['--warnings', '-E', 'UTF-8', '-l', page], { env: { LC_ALL: 'C.UTF-8', MANWIDTH: '80' } });
  assert.equal(r.stderr, '', 'man warned');
  const text = r.stdout.replace(/‐/g, '-');
  const cli = (...a: string[]) => execa(path.join(root, 'usr/lib/vwstream-agent/bin/node'), [path.join(root, 'usr/lib/vwstream-agent/agent.mjs'), ...a]);
  const help = (await cli('--help')).stdout;
  const commands = [...help.matchAll(/^ {2}vwstream-agent ([a-z-]+) /gm)].map((m) => m[1]!);
  assert.ok(commands.length >= 13, commands.join(' '));
  const commandsPart = text.slice(text.indexOf('\nCOMMANDS\n'), text.indexOf('\nEXIT STATUS\n'));
  for (const c of [...commands, 'doctor']) assert.match(commandsPart, new RegExp(`^ {7}${c}\\b`, 'm'), `command ${c} missing`);
  for (const c of commands) {
    const opts = [...(await cli(c, '--help')).stdout.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]!)
      .filter((o) => !['--help', '--version', '--config', '--json'].includes(o));
    for (const o of opts) assert.ok(commandsPart.includes(o), `${c} ${o} missing`);
  }
  for (const o of ['--strict', '--dry-run', '--config', '--json', '--force', '--to', '--backup', '--timestamp', '--generation', '--index']) assert.ok(text.includes(o), o);
  const exit = text.slice(text.indexOf('\nEXIT STATUS\n'), text.indexOf('\nENVIRONMENT\n'));
  for (const code of ['0', '1', '64', '65', '69', '77', '78']) assert.match(exit, new RegExp(`^ {7}${code}\\s`, 'm'), `exit status ${code}`);
  for (const s of ['FILES', 'SYSTEMD UNITS', 'ENVIRONMENT', 'EXAMPLES', 'SEE ALSO']) assert.ok(text.includes(`\n${s}\n`), s);
  for (const u of fs.readdirSync(path.join(REPO, 'units')).filter((f) => /\.(service|timer)$/.test(f))) assert.ok(text.includes(u), `unit ${u} missing`);
  assert.ok(text.includes('/usr/share/doc/vwstream-agent/configuration.md.gz'));
});

test('bash completion, sourced in bash, completes commands, subcommands and options from the packaged agent', { skip }, async () => {
  const script = path.join(root, 'usr/share/bash-completion/completions/vwstream-agent');
  assert.equal(fs.statSync(script).mode & 0o777, 0o644);
  // The script calls "vwstream-agent": here a stand-in for /usr/bin/vwstream-agent running the package's bundle.
  const bin = path.join(root, 'test-bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'vwstream-agent'), `#!/bin/sh\nexec "${root}/usr/lib/vwstream-agent/bin/node" --no-warnings "${root}/usr/lib/vwstream-agent/agent.mjs" "$@"\n`, { mode: 0o755 });
  const complete = async (...words: string[]) => {
    const r = await execa('bash', ['--norc', '--noprofile', '-c', [
      `source "$1"`, 'shift',
      'fn=$(complete -p vwstream-agent | sed -n "s/.* -F \\([^ ]*\\) vwstream-agent$/\\1/p")',
      '[ -n "$fn" ] || { echo "no completion function registered" >&2; exit 2; }',
      'COMP_WORDS=(vwstream-agent "$@"); COMP_CWORD=$#; COMP_LINE="vwstream-agent $*"; COMP_POINT=${#COMP_LINE}',
      '"$fn"', 'printf "%s\\n" "${COMPREPLY[@]}"'].join('\n'), 'bash', script, ...words], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    return r.stdout.split('\n').filter(Boolean).sort();
  };
  assert.deepEqual(await complete('sta'), ['status']);
  assert.deepEqual(await complete('ke'), ['keep-local']);
  assert.deepEqual(await complete('s'), ['snapshots', 'status', 'sync']);
  assert.deepEqual(await complete('aside', 'p'), ['prune']);
  assert.deepEqual(await complete('restore', '--ti'), ['--timestamp']);
  assert.deepEqual(await complete('aside', 'prune', '--d'), ['--dry-run']);
  // Hidden commands are not offered.
  assert.deepEqual(await complete('stop'), []);
  assert.deepEqual(await complete('comp'), []);
});
