import { ConfigError } from '../errors.ts';
import { SCHEMA } from './schema.ts';

export interface EnvEntry { value: string; line: number }

/** The parsed file: key → value and line (the last assignment wins), plus findings. */
export class EnvMap extends Map<string, EnvEntry> {
  /** Lines bash reads differently, duplicated keys: non-fatal, shown by check-config. */
  warnings: string[] = [];
}

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A key whose value must never be shown, not even in an error (the journal keeps it). */
export function isSecretKey(key: string): boolean {
  // Case-blind: a miscased backup_password is still a password (its value goes into errors).
  const k = key.toUpperCase();
  if (k in SCHEMA) return Boolean(SCHEMA[k as keyof typeof SCHEMA].secret);
  return /(SECRET|PASSWORD|PASS|TOKEN|_KEY|SKEY|AUTHKEY)$/.test(k);
}
const shown = (key: string, value: string) => isSecretKey(key) ? '<hidden>' : value;

/** A line that is not KEY=value, as an error may show it: never a secret-looking part. */
function shownLine(raw: string): string {
  // Such a line may be the wrapped tail of a secret (or several words of one): only a
  // first word that looks like a key (and not a secret's) is shown.
  const words = raw.trim().split(/\s+/);
  const first = words[0]!.replace(/=.*$/, '');
  if (words.length > 1 && KEY_RE.test(first)) return `${first} … (${raw.trim().length} characters)`;
  return `<hidden: ${raw.trim().length} characters>`;
}

/**
 * How vwstream-agent 0.1.0 read the value part of one line (after `KEY=`): unquoted
 * values literal (backslashes kept) up to a ` #` comment; "…" with \n \t \r and \X → X;
 * '…' literal. Kept to warn where this version reads an existing file differently
 * (a password read differently no longer decrypts the archives made before).
 */
function legacyValue(rest: string): string | undefined {
  // After a closing quote 0.1.0 allowed only a comment (anything else was an error).
  const endsThere = (after: string) => after.trim() === '' || after.trim().startsWith('#');
  rest = rest.trimStart();
  if (rest.startsWith('"')) {
    let v = '';
    let j = 1;
    for (; j < rest.length && rest[j] !== '"'; j++) {
      if (rest[j] === '\\' && j + 1 < rest.length) {
        const c = rest[++j]!;
        v += c === 'n' ? '\n' : c === 't' ? '\t' : c === 'r' ? '\r' : c;
      } else v += rest[j];
    }
    return j >= rest.length || !endsThere(rest.slice(j + 1)) ? undefined : v;
  }
  if (rest.startsWith("'")) {
    const end = rest.indexOf("'", 1);
    return end < 0 || !endsThere(rest.slice(end + 1)) ? undefined : rest.slice(1, end);
  }
  const hash = rest.search(/\s#/);
  return (hash >= 0 ? rest.slice(0, hash) : rest).trim();
}

/** A line that starts an assignment, as a value running over lines may swallow it. */
const ASSIGNMENT_LINE = /^[ \t]*(export[ \t]+)?[A-Za-z_][A-Za-z0-9_]*=/;

const isNl = (c: string | undefined) => c === '\n' || c === '\r';
const isBlank = (c: string | undefined) => c === ' ' || c === '\t';
/** What bash expands after a `$`: a name, ${…}, $(…), or a special parameter. */
const DOLLAR_EXPANDS = /[A-Za-z0-9_{(@*#?$!-]/;
/** Characters bash gives a meaning to in an unquoted word (systemd does not). */
const SHELL_SPECIAL_UNQUOTED = /[;&|<>()]/;
/** The four characters a backslash escapes inside double quotes (systemd and POSIX sh). */
const DQ_ESCAPABLE = '"\\`$';

/**
 * Parses an env file by systemd's EnvironmentFile= rules (systemd.exec(5), systemd 252),
 * which are POSIX-shell quoting without expansion:
 * - lines starting with # or ; are comments; `KEY=value` with blanks around trimmed;
 * - unquoted: a backslash keeps the next character, backslash-newline continues the
 *   line, interior blanks are kept, leading and trailing ones trimmed;
 * - '…' is literal and may span lines; "…": a backslash before " \ ` $ keeps that
 *   character, backslash-newline continues, a backslash before anything else stays;
 *   may span lines; adjacent quoted and unquoted parts are joined (`"a"'b'c` = abc).
 *
 * The same file is also what an operator `source`s in bash and what docker compose
 * `.env` users bring. Where bash reads a line differently, the line gets a warning
 * (with its number and what to write instead) and the agent's reading is decided here:
 * - `$X` and `…` are literal (systemd's reading): values are passwords and argon2
 *   hashes (ADMIN_TOKEN='$argon2id$…'); expanding them would silently change a secret.
 * - quotes in the middle of an unquoted word are literal (systemd's reading).
 * - `value # text` after a blank is a comment (bash's and compose's reading, and the
 *   agent's since always): the operator meant a comment, and a password that silently
 *   grew " # text" would not decrypt the archives with the password they wrote.
 * - a comment line ending in a backslash ends at the newline (bash's reading): systemd
 *   would swallow the next line, which the operator plainly meant as a setting.
 * - `export KEY=value` is KEY (bash's and compose's reading); systemd ignores the line.
 * A line that is not an assignment, an unterminated quote, or text after a closing quote
 * and a blank (systemd joins it, bash runs it as a command) is an error naming the line.
 */
export function parseEnvFile(text: string, source = 'env file'): EnvMap {
  const out = new EnvMap();
  const seen = new Map<string, number[]>();
  const warn = (line: number, msg: string) => out.warnings.push(`${source} line ${line}: ${msg}`);
  const n = text.length;
  let i = 0;
  let line = 1;
  let crWarned = false;
  const lineText = (from: number) => {
    let e = from;
    while (e < n && !isNl(text[e])) e++;
    return text.slice(from, e);
  };

  while (i < n) {
    const c = text[i]!;
    if (c === '\n') { line++; i++; continue; }
    if (c === '\r') {
      if (!crWarned) { warn(line, 'the file has Windows line endings (CR LF); bash keeps the CR in each value: convert it with dos2unix'); crWarned = true; }
      i++; continue;
    }
    if (isBlank(c)) { i++; continue; }
    const startLine = line;
    const lineStart = i;
    if (c === '#' || c === ';') {
      if (c === ';') warn(line, 'a line starting with ";" is a comment for systemd but an error for bash: start comments with "#"');
      let e = i;
      while (e < n && !isNl(text[e])) e++;
      if (text[e - 1] === '\\' && e < n) warn(line, 'the comment ends with a backslash: systemd reads the next line as part of the comment, bash and the agent do not; remove the backslash');
      i = e;
      continue;
    }
    // The key: up to '='.
    let e = i;
    while (e < n && text[e] !== '=' && !isNl(text[e])) e++;
    if (e >= n || text[e] !== '=') {
      throw new ConfigError(`${source} line ${startLine}`, shownLine(lineText(lineStart)), 'expected KEY=value with KEY made of letters, digits and _');
    }
    let key = text.slice(i, e).replace(/[ \t]+$/, '');
    const blankBeforeEq = key.length < e - i;
    const exported = /^export[ \t]+/.exec(key);
    if (exported) key = key.slice(exported[0].length);
    if (!KEY_RE.test(key)) {
      throw new ConfigError(`${source} line ${startLine}`, shownLine(lineText(lineStart)), 'expected KEY=value with KEY made of letters, digits and _');
    }
    if (exported) warn(startLine, `systemd's EnvironmentFile= ignores "export ${key}=…" lines; write ${key}=… (the agent reads it as ${key})`);
    i = e + 1;
    if (blankBeforeEq || isBlank(text[i])) warn(startLine, `bash does not allow blanks around "=" (it runs ${key} as a command); write ${key}=value`);

    // The value.
    const issues = new Set<string>();
    let value = '';
    let mode: 'pre' | 'unquoted' = 'pre';
    let trailing = -1; // start of trailing blanks in an unquoted part
    let quoted = false;
    let bashQuote: string | null = null; // a quote bash would see inside an unquoted value (systemd keeps it)
    const unterminated = (q: string) => new ConfigError(key, shown(key, lineText(e + 1)), `unterminated ${q} quote (${source} line ${startLine})`);
    for (;;) {
      const ch = text[i];
      if (ch === undefined || isNl(ch)) break;
      if (mode === 'pre') {
        if (isBlank(ch)) {
          if (quoted) {
            // Text after a closing quote and a blank: a comment, or an error.
            let j = i;
            while (isBlank(text[j])) j++;
            if (text[j] === undefined || isNl(text[j])) { i = j; break; }
            if (text[j] === '#') {
              warn(startLine, `systemd reads the text after the closing quote of ${key} as part of the value; put the comment on its own line`);
              while (i < n && !isNl(text[i])) i++;
              break;
            }
            throw new ConfigError(key, shown(key, lineText(e + 1)), `unexpected text after the closing quote (${source} line ${startLine})`);
          }
          i++; continue;
        }
        if (ch === "'") {
          quoted = true;
          let j = i + 1;
          while (j < n && text[j] !== "'") { if (text[j] === '\n') line++; j++; }
          if (j >= n) throw unterminated('single');
          value += text.slice(i + 1, j);
          i = j + 1;
          continue;
        }
        if (ch === '"') {
          quoted = true;
          let j = i + 1;
          for (;;) {
            const d = text[j];
            if (d === undefined) throw unterminated('double');
            if (d === '"') break;
            if (d === '\\') {
              const nx = text[j + 1];
              if (nx === undefined) throw unterminated('double');
              if (nx === '\n') { line++; j += 2; continue; } // continuation
              value += DQ_ESCAPABLE.includes(nx) ? nx : '\\' + nx;
              j += 2; continue;
            }
            if (d === '$' && DOLLAR_EXPANDS.test(text[j + 1] ?? '')) issues.add('dq$');
            if (d === '`') issues.add('dq`');
            if (d === '\n') line++;
            value += d;
            j++;
          }
          i = j + 1;
          continue;
        }
        mode = 'unquoted';
        // fall through to the unquoted handling of this character
      }
      // Unquoted.
      if (ch === '\\') {
        const nx = text[i + 1];
        if (nx === undefined) { i++; break; }
        if (nx === '\n') { line++; i += 2; continue; }
        if (nx === '\r') { i += 2; continue; }
        value += nx; trailing = -1; i += 2; continue;
      }
      if (isBlank(ch)) {
        let j = i;
        while (isBlank(text[j])) j++;
        if (text[j] === '#') {
          issues.add('comment');
          while (i < n && !isNl(text[i])) i++;
          break;
        }
        if (text[j] !== undefined && !isNl(text[j]) && bashQuote === null) issues.add('blank');
        if (trailing < 0) trailing = value.length;
        value += text.slice(i, j);
        i = j; continue;
      }
      if (ch === '$' && DOLLAR_EXPANDS.test(text[i + 1] ?? '')) issues.add('$');
      else if (ch === '`') issues.add('`');
      else if (ch === '"' || ch === "'") {
        issues.add('quote');
        bashQuote = bashQuote === null ? ch : bashQuote === ch ? null : bashQuote;
      }
      else if (SHELL_SPECIAL_UNQUOTED.test(ch)) issues.add('special');
      else if (ch === '~' && value === '' && !quoted) issues.add('~');
      value += ch; trailing = -1; i++;
    }
    if (mode === 'unquoted' && trailing >= 0) value = value.slice(0, trailing);

    if (line > startLine) {
      // A value over several lines (a quote, or a backslash at the end of a line): fine for
      // a PEM key, but an unclosed quote silently swallows the settings after it.
      const taken = text.slice(lineStart, i).split(/\r?\n/);
      const k = taken.findIndex((l, idx) => idx > 0 && ASSIGNMENT_LINE.test(l));
      if (k > 0) {
        const other = ASSIGNMENT_LINE.exec(taken[k]!)![0].replace(/^[ \t]*(export[ \t]+)?/, '').replace(/=$/, '');
        throw new ConfigError(key, isSecretKey(key) ? '<hidden>' : shownLine(taken[0]!.slice(taken[0]!.indexOf('=') + 1)),
          `its value runs on from line ${startLine} over line ${startLine + k} (${other}=…), which is a setting of its own: a quote is not closed or the line ends with a backslash; close the quote or remove the backslash (${source} line ${startLine})`);
      }
    } else {
      const old = legacyValue(text.slice(e + 1, i));
      if (old !== undefined && old !== value) {
        const what = isSecretKey(key) ? '' : `: now ${JSON.stringify(value)}, was ${JSON.stringify(old)}`;
        warn(startLine, `${key} is read differently than by vwstream-agent 0.1.0 (backslashes and escapes follow systemd's rules now${what}); if it is a password, archives and logins made before the upgrade used the old reading: write the value you mean in single quotes (${key}='…')`);
      }
    }

    if (issues.size > 0) {
      const why: string[] = [];
      if (issues.has('$')) why.push('it expands $… in an unquoted value; systemd and the agent take it literally');
      if (issues.has('`') || issues.has('dq`')) why.push('it runs `…` as a command; systemd and the agent take it literally');
      if (issues.has('dq$')) why.push('it expands $… inside double quotes; systemd and the agent take it literally');
      if (issues.has('quote')) why.push('it removes quotes in the middle of an unquoted value; systemd and the agent keep them');
      if (issues.has('blank')) why.push('it runs the text after a blank as a command; systemd and the agent keep it in the value');
      if (issues.has('special')) why.push('it gives ; & | < > ( ) a meaning; systemd and the agent keep them in the value');
      if (issues.has('~')) why.push('it expands a leading ~ to a home directory; systemd and the agent keep it');
      if (issues.has('comment')) why.push('it ends the value at " #" (a comment), as the agent does; systemd keeps the " # …" in the value');
      const fix = issues.has('comment') && issues.size === 1
        ? 'put the comment on its own line'
        : value.includes("'")
          ? `write it in double quotes with a backslash before each " \\ \` $ (${key}="…")`
          : `write it in single quotes (${key}='…')`;
      warn(startLine, `bash reads ${key} differently: ${why.join('; ')}; ${fix}`);
    }
    const lines = seen.get(key) ?? [];
    lines.push(startLine);
    seen.set(key, lines);
    out.delete(key); // keep file order of the winning line
    out.set(key, { value, line: startLine });
  }
  for (const [key, lines] of seen) {
    if (lines.length < 2) continue;
    const last = lines[lines.length - 1]!;
    const list = lines.length === 2 ? `lines ${lines[0]} and ${last}` : `lines ${lines.slice(0, -1).join(', ')} and ${last}`;
    out.warnings.push(`${key} is set ${lines.length === 2 ? 'twice' : `${lines.length} times`} in ${source} (${list}); the last one (line ${last}) wins, as for systemd and bash: remove the others`);
  }
  return out;
}

/**
 * Formats a value so that systemd's EnvironmentFile= and bash (`set -a; . file`) read it
 * back byte for byte: double quotes, a backslash before " \ ` $, newlines written as is
 * (inside double quotes both keep them; "\n" would stay two characters for systemd).
 */
export function formatEnvValue(value: string): string {
  return '"' + value.replace(/[\\"`$]/g, (c) => '\\' + c) + '"';
}
