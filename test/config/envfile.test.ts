import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatEnvValue, parseEnvFile } from '../../agent/config/envfile.ts';
import { ConfigError } from '../../agent/errors.ts';

test('parses plain, exported, quoted and commented lines', () => {
  const env = parseEnvFile([
    '# comment',
    '',
    'A=1',
    'export B = two words ',
    'C="quoted # not a comment \\"x\\" \\\\ \\n"',
    "D='single $literal \\n'",
    'E=value # trailing comment',
    'F=',
    'G=a#b',
  ].join('\n'));
  assert.deepEqual(Object.fromEntries([...env].map(([k, v]) => [k, v.value])), {
    A: '1', B: 'two words', C: 'quoted # not a comment "x" \\ \n', D: 'single $literal \\n', E: 'value', F: '', G: 'a#b',
  });
  assert.equal(env.get('E')!.line, 7);
});

test('a line that is not KEY=value names its line number', () => {
  assert.throws(() => parseEnvFile('A=1\nthis is wrong\n', '/etc/x.env'), (e: unknown) =>
    e instanceof ConfigError && e.message === '/etc/x.env line 2="this is wrong" is not valid: expected KEY=value with KEY made of letters, digits and _');
  assert.throws(() => parseEnvFile('1A=x'), ConfigError);
  assert.throws(() => parseEnvFile('A="open'), /unterminated double quote/);
  assert.throws(() => parseEnvFile("A='open"), /unterminated single quote/);
  assert.throws(() => parseEnvFile('A="x" y'), /unexpected text after the closing quote/);
});

test('formatEnvValue round-trips through the parser and escapes $ for systemd', () => {
  for (const v of ['plain', 'with "quotes"', 'back\\slash', 'dollar $HOME ${X}', 'spaces  and # hash']) {
    const line = `K=${formatEnvValue(v)}`;
    assert.ok(!/[^\\]\$/.test(line.replace(/\\\\/g, '')), `unescaped $ in ${line}`);
    assert.equal(parseEnvFile(line).get('K')!.value.replace(/\\\$/g, '$'), v.replace(/\\\$/g, '$'));
  }
});
