import { ConfigError } from '../errors.ts';
import { SCHEMA } from './schema.ts';

export interface EnvEntry { value: string; line: number }

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A key whose value must never be shown, not even in an error (the journal keeps it). */
export function isSecretKey(key: string): boolean {
  if (key in SCHEMA) return Boolean(SCHEMA[key as keyof typeof SCHEMA].secret);
  return /(SECRET|PASSWORD|PASS|TOKEN|_KEY|SKEY|AUTHKEY)$/.test(key);
}
const shown = (key: string, value: string) => isSecretKey(key) ? '<hidden>' : value;

/** A line that is not KEY=value, as an error may show it: never a secret-looking part. */
function shownLine(raw: string): string {
  const words = raw.trim().split(/\s+/);
  if (words.length === 1) return `<hidden: ${raw.trim().length} characters>`; // e.g. a wrapped secret
  return isSecretKey(words[0]!) ? `${words[0]} …` : raw;
}

/**
 * Parses an env file the way docker compose's `.env` and systemd's EnvironmentFile=
 * agree on: `KEY=value`, optional `export `, `#` comments, single quotes literal,
 * double quotes with \n \t \" \\ escapes, unquoted values trimmed with a trailing
 * ` # comment` removed. A line that is none of these is an error naming its number.
 */
export function parseEnvFile(text: string, source = 'env file'): Map<string, EnvEntry> {
  const out = new Map<string, EnvEntry>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('export ')) line = line.slice(7).trimStart();
    const eq = line.indexOf('=');
    const key = eq < 0 ? line : line.slice(0, eq).trim();
    if (eq < 0 || !KEY_RE.test(key)) {
      throw new ConfigError(`${source} line ${lineNo}`, shownLine(lines[i]!), 'expected KEY=value with KEY made of letters, digits and _');
    }
    let rest = line.slice(eq + 1).trimStart();
    let value: string;
    if (rest.startsWith('"')) {
      let j = 1;
      value = '';
      for (; j < rest.length && rest[j] !== '"'; j++) {
        if (rest[j] === '\\' && j + 1 < rest.length) {
          const c = rest[++j]!;
          value += c === 'n' ? '\n' : c === 't' ? '\t' : c === 'r' ? '\r' : c;
        } else value += rest[j];
      }
      if (j >= rest.length) throw new ConfigError(key, shown(key, rest), `unterminated double quote (${source} line ${lineNo})`);
      rest = rest.slice(j + 1).trim();
      if (rest !== '' && !rest.startsWith('#')) throw new ConfigError(key, shown(key, line.slice(eq + 1)), `unexpected text after the closing quote (${source} line ${lineNo})`);
    } else if (rest.startsWith("'")) {
      const end = rest.indexOf("'", 1);
      if (end < 0) throw new ConfigError(key, shown(key, rest), `unterminated single quote (${source} line ${lineNo})`);
      value = rest.slice(1, end);
      rest = rest.slice(end + 1).trim();
      if (rest !== '' && !rest.startsWith('#')) throw new ConfigError(key, shown(key, line.slice(eq + 1)), `unexpected text after the closing quote (${source} line ${lineNo})`);
    } else {
      const hash = rest.search(/\s#/);
      value = (hash >= 0 ? rest.slice(0, hash) : rest).trim();
    }
    out.set(key, { value, line: lineNo });
  }
  return out;
}

/** Formats a value for a systemd EnvironmentFile= (always double-quoted, escaped). */
export function formatEnvValue(value: string): string {
  return '"' + value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\$/g, '\\$') + '"';
}
