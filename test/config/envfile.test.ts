import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { formatEnvValue, parseEnvFile } from '../../agent/config/envfile.ts';
import { ConfigError } from '../../agent/errors.ts';
import { CORPUS_EXPECTED, CORPUS_FILE, SYSTEMD_DIVERGENT, VALUES } from './envfile-corpus.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-envfile-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** What bash reads: `set -a; . file`, then each key's value (NUL-separated; unset = undefined). */
function bashReads(text: string, keys: string[]): Record<string, string | undefined> {
  const file = join(dir, `f${Math.random().toString(36).slice(2)}.env`);
  writeFileSync(file, text);
  const script = 'set -a; . "$1" 2>/dev/null; shift; for k in "$@"; do if [ "${!k+set}" = set ]; then printf "1%s\\0" "${!k}"; else printf "0\\0"; fi; done';
  const r = spawnSync('bash', ['-c', script, 'bash', file, ...keys], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent-home' } });
  const parts = r.stdout.split('\0').slice(0, keys.length);
  assert.equal(parts.length, keys.length, `bash printed ${parts.length} of ${keys.length} values: ${r.stderr}`);
  return Object.fromEntries(keys.map((k, i) => [k, parts[i]!.startsWith('1') ? parts[i]!.slice(1) : undefined]));
}
const values = (env: Map<string, { value: string }>) => Object.fromEntries([...env].map(([k, v]) => [k, v.value]));

test('the hand-written corpus: the parser reads what bash reads, with no warning but the duplicate and what 0.1.0 read otherwise', () => {
  const env = parseEnvFile(CORPUS_FILE, 'corpus.env');
  assert.deepEqual(values(env), CORPUS_EXPECTED);
  assert.deepEqual(bashReads(CORPUS_FILE, Object.keys(CORPUS_EXPECTED)), CORPUS_EXPECTED);
  const plainLines = CORPUS_FILE.split('\n').flatMap((l, i) => l.startsWith('PLAIN=') ? [i + 1] : []);
  const lineOf = (k: string) => CORPUS_FILE.split('\n').findIndex((l) => l.startsWith(`${k}=`)) + 1;
  // 0.1.0 read escapes its own way: those lines are said (the values are the new reading).
  const changed = env.warnings.filter((w) => w.includes('is read differently than by vwstream-agent 0.1.0'));
  assert.deepEqual(changed.map((w) => w.replace(/: .*/, '')), [`corpus.env line ${lineOf('DQ')}`, `corpus.env line ${lineOf('UNQ_ESC')}`]);
  assert.match(changed[1]!, /: now "a b#c\$d\\"e", was "a\\\\ b\\\\#c\\\\\$d\\\\\\"e"\)/);
  assert.deepEqual(env.warnings.filter((w) => !changed.includes(w)), [`PLAIN is set twice in corpus.env (lines ${plainLines[0]} and ${plainLines[1]}); the last one (line ${plainLines[1]}) wins, as for systemd and bash: remove the others`]);
  assert.equal(env.get('PLAIN')!.line, plainLines[1]);
  assert.equal(env.get('DQ_MULTI')!.line, CORPUS_FILE.split('\n').findIndex((l) => l.startsWith('DQ_MULTI=')) + 1);
  assert.equal(env.get('UNQ_TRAIL')!.line, CORPUS_FILE.split('\n').findIndex((l) => l.startsWith('UNQ_TRAIL=')) + 1, 'line numbers count the lines of multi-line values');
});

test('formatEnvValue: parse(format(v)) = v and bash reads v, byte for byte, for every corpus value', () => {
  const text = Object.entries(VALUES).map(([k, v]) => `${k}=${formatEnvValue(v)}`).join('\n') + '\n';
  const env = parseEnvFile(text, 'formatted.env');
  assert.deepEqual(values(env), VALUES);
  assert.deepEqual(env.warnings, [], 'a formatted file needs no warning');
  assert.deepEqual(bashReads(text, Object.keys(VALUES)), VALUES);
  // A newline is written as a newline (systemd keeps "\n" as two characters), $ and ` escaped.
  assert.equal(formatEnvValue('a\nb'), '"a\nb"');
  assert.equal(formatEnvValue('$X `id` "q" \\'), '"\\$X \\`id\\` \\"q\\" \\\\"');
  // parse → format → parse of the hand-written corpus.
  const again = Object.entries(CORPUS_EXPECTED).map(([k, v]) => `${k}=${formatEnvValue(v)}`).join('\n');
  assert.deepEqual(values(parseEnvFile(again)), CORPUS_EXPECTED);
});

test('a backslash in double quotes is kept before other characters, as bash and openssl see the password', () => {
  const env = parseEnvFile('BACKUP_PASSWORD="a\\qb"\nB="\\n\\t"\n');
  assert.equal(env.get('BACKUP_PASSWORD')!.value, 'a\\qb');
  assert.equal(env.get('B')!.value, '\\n\\t');
  assert.deepEqual(bashReads('BACKUP_PASSWORD="a\\qb"\nB="\\n\\t"\n', ['BACKUP_PASSWORD', 'B']), { BACKUP_PASSWORD: 'a\\qb', B: '\\n\\t' });
});

test('lines bash reads differently get a warning naming the line and the fix; bash really differs', () => {
  const cases: { text: string; key: string; says: RegExp }[] = [
    { text: 'X=1\nA=a$HOME\n', key: 'A', says: /^f line 2: bash reads A differently: it expands \$… in an unquoted value; systemd and the agent take it literally; write it in single quotes \(A='…'\)$/ },
    { text: 'A=a`echo b`\n', key: 'A', says: /line 1: bash reads A differently: it runs `…` as a command/ },
    { text: 'A="pa$USER"\n', key: 'A', says: /line 1: bash reads A differently: it expands \$… inside double quotes/ },
    { text: 'A=a"b c"d\n', key: 'A', says: /line 1: bash reads A differently: it removes quotes in the middle of an unquoted value; systemd and the agent keep them; write it in single quotes/ },
    { text: "A=it's\"x\"\n", key: 'A', says: /write it in double quotes with a backslash before each/ },
    { text: 'A=two words\n', key: 'A', says: /line 1: bash reads A differently: it runs the text after a blank as a command/ },
    { text: 'A=a;b\n', key: 'A', says: /line 1: bash reads A differently: it gives ; & \| < > \( \) a meaning/ },
    { text: 'A=~/x\n', key: 'A', says: /line 1: bash reads A differently: it expands a leading ~/ },
    { text: 'A = b\n', key: 'A', says: /line 1: bash does not allow blanks around "=" \(it runs A as a command\); write A=value/ },
  ];
  for (const c of cases) {
    const env = parseEnvFile(c.text, 'f');
    assert.ok(env.warnings.some((w) => c.says.test(w)), `${JSON.stringify(c.text)}: ${JSON.stringify(env.warnings)}`);
    assert.notEqual(bashReads(c.text, [c.key])[c.key], env.get(c.key)!.value, `bash reads ${JSON.stringify(c.text)} the same: the warning is wrong`);
  }
  const semi = parseEnvFile('; a comment for systemd\nA=1\n', 'f');
  assert.deepEqual(values(semi), { A: '1' });
  assert.deepEqual(semi.warnings, ['f line 1: a line starting with ";" is a comment for systemd but an error for bash: start comments with "#"']);
  assert.equal(spawnSync('bash', ['-c', '; a comment for systemd']).status, 2, 'bash fails on a ";" line');
});

test('lines systemd reads differently: the agent reading and the warning', () => {
  const says: Record<string, RegExp> = {
    'unquoted value with a comment': /^f line 1: bash reads D_COMMENT differently: it ends the value at " #" \(a comment\), as the agent does; systemd keeps the " # …" in the value; put the comment on its own line$/,
    'comment after a closing quote': /^f line 1: systemd reads the text after the closing quote of D_QCOMMENT as part of the value; put the comment on its own line$/,
    'comment ending in a backslash': /^f line 1: the comment ends with a backslash: systemd reads the next line as part of the comment, bash and the agent do not; remove the backslash$/,
    'export prefix': /^f line 1: systemd's EnvironmentFile= ignores "export D_EXPORT=…" lines; write D_EXPORT=… \(the agent reads it as D_EXPORT\)$/,
    'unquoted $ is literal': /expands \$…/,
    'quotes in an unquoted value': /removes quotes/,
  };
  for (const c of SYSTEMD_DIVERGENT) {
    const env = parseEnvFile(c.text, 'f');
    assert.equal(env.get(c.key)?.value, c.agent, c.name);
    assert.ok(env.warnings.some((w) => says[c.name]!.test(w)), `${c.name}: ${JSON.stringify(env.warnings)}`);
  }
});

test('Windows line endings: values without the CR, one warning', () => {
  const env = parseEnvFile('A=1\r\nB="two"\r\n', 'f');
  assert.deepEqual(values(env), { A: '1', B: 'two' });
  assert.deepEqual(env.warnings, ['f line 1: the file has Windows line endings (CR LF); bash keeps the CR in each value: convert it with dos2unix']);
});

test('a key set three times names every line', () => {
  const env = parseEnvFile('A=1\nB=x\nA=2\n\nA=3\n', 'f');
  assert.equal(env.get('A')!.value, '3');
  assert.deepEqual(env.warnings, ['A is set 3 times in f (lines 1, 3 and 5); the last one (line 5) wins, as for systemd and bash: remove the others']);
});

test('a line that is not KEY=value names its line number; unterminated quotes and trailing text are errors', () => {
  assert.throws(() => parseEnvFile('A=1\nthis is wrong\n', '/etc/x.env'), (e: unknown) =>
    e instanceof ConfigError && e.message === '/etc/x.env line 2="this … (13 characters)" is not valid: expected KEY=value with KEY made of letters, digits and _');
  assert.throws(() => parseEnvFile('A="x\ny\nthis is wrong\n', '/etc/x.env'), /unterminated double quote \(\/etc\/x.env line 1\)/);
  assert.throws(() => parseEnvFile('1A=x'), ConfigError);
  assert.throws(() => parseEnvFile('A="open'), /unterminated double quote/);
  assert.throws(() => parseEnvFile("A='open"), /unterminated single quote/);
  assert.throws(() => parseEnvFile('A="x" y'), /unexpected text after the closing quote/);
  assert.throws(() => parseEnvFile('S3_SECRET_ACCESS_KEY="abc'), (e: unknown) => e instanceof ConfigError && !e.message.includes('abc'));
});

test('a quote left open (or a trailing backslash) that would swallow the next settings is an error naming both lines, never the value', () => {
  const open = 'VAULTWARDEN_BIN=/bin/true\nADMIN_TOKEN="abc-secret\nS3_BUCKET=my-vault\nS3_ACCESS_KEY_ID=AK\nDOMAIN="https://vw.example.org"\n';
  assert.throws(() => parseEnvFile(open, '/etc/x.env'), (e: unknown) => e instanceof ConfigError && e.key === 'ADMIN_TOKEN'
    && e.message === 'ADMIN_TOKEN="<hidden>" is not valid: its value runs on from line 2 over line 3 (S3_BUCKET=…), which is a setting of its own: a quote is not closed or the line ends with a backslash; close the quote or remove the backslash (/etc/x.env line 2)');
  assert.throws(() => parseEnvFile('BACKUP_PASSWORD=hunter2secret\\\nS3_BUCKET=my-vault\n'), (e: unknown) => e instanceof ConfigError && e.key === 'BACKUP_PASSWORD' && !e.message.includes('hunter2'));
  assert.throws(() => parseEnvFile("NOTE='it is\n  export S3_BUCKET=b\nx'\n"), /over line 2 \(S3_BUCKET=…\)/);
  // A value over lines that takes in no setting stays allowed (a PEM key, a note).
  assert.equal(parseEnvFile('PEM="-----BEGIN X-----\nAAAA\n-----END X-----"\nB=1\n').get('PEM')!.value, '-----BEGIN X-----\nAAAA\n-----END X-----');
});

test('an unquoted value with a lone quote still ends at " #" (as 0.1.0 read it)', () => {
  const env = parseEnvFile("SMTP_FROM_NAME=Bob's vault # shown in mails\nP=a\"b # c\"\n");
  assert.equal(env.get('SMTP_FROM_NAME')!.value, "Bob's vault");
  assert.equal(env.get('P')!.value, 'a"b');
});

test('a value 0.1.0 read otherwise is said, with both readings unless it is a secret', () => {
  const env = parseEnvFile('BACKUP_PASSWORD=pa\\#ss-word\nSHARE=\\\\server\\share\nOK=plain\n', 'f');
  assert.deepEqual(env.warnings, [
    "f line 1: BACKUP_PASSWORD is read differently than by vwstream-agent 0.1.0 (backslashes and escapes follow systemd's rules now); if it is a password, archives and logins made before the upgrade used the old reading: write the value you mean in single quotes (BACKUP_PASSWORD='…')",
    `f line 2: SHARE is read differently than by vwstream-agent 0.1.0 (backslashes and escapes follow systemd's rules now: now "\\\\servershare", was "\\\\\\\\server\\\\share"); if it is a password, archives and logins made before the upgrade used the old reading: write the value you mean in single quotes (SHARE='…')`,
  ]);
  assert.ok(!env.warnings.join('\n').includes('ss-word'), 'no part of the secret');
});

test('a miscased secret key is still a secret: its value is never in an error', () => {
  for (const text of ['backup_password="hunter2secret\n', 'admin_token="hunter2secret" trailing\n']) {
    assert.throws(() => parseEnvFile(text), (e: unknown) => e instanceof ConfigError && !e.message.includes('hunter2') && e.value === '<hidden>', text);
  }
});
