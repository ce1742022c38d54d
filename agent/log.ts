import pino, { type Logger } from 'pino';
import { existsSync, fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * Logging. Every line is the JSON pino writes (MESSAGE in the journal, so `journalctl -o
 * cat` shows it as before). Where it goes depends on what stdout is:
 * - stdout is this unit's journal stream ($JOURNAL_STREAM names stdout's dev:ino) and the
 *   add-on journal.node (beside the bundle) loads: one datagram per line to journald's
 *   native socket with PRIORITY, SYSLOG_IDENTIFIER and VWSTREAM_* fields. A datagram
 *   journald cannot take now (queue full: EAGAIN; too big; any error) goes to stdout
 *   instead, with its `<N>` priority prefix; counted in logStats().fallbacks. A full queue
 *   is waited for (at most EAGAIN_WAIT_MS, and not again until a send works).
 * - the journal stream without the add-on: stdout lines prefixed `<N>` (journald's
 *   SyslogLevelPrefix=, on by default), so priorities still hold.
 * - anything else (a terminal, a pipe, unit tests): the JSON lines as they are.
 * All writes are synchronous: a line logged just before exit is never lost. At exit the
 * logger waits (at most EXIT_DRAIN_MS) until journald has read every datagram, so it can
 * still tell the sender's unit (`-u`) from its live process.
 */

/** Syslog priorities of pino's levels. */
export const PRIORITY: Readonly<Record<string, number>> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
export const SYSLOG_IDENTIFIER = 'vwstream-agent';
export const JOURNAL_SOCKET = '/run/systemd/journal/socket';
/** Fields per entry from the log object (beyond MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, VWSTREAM_LEVEL). */
export const MAX_FIELDS = 24;
/** Bytes per field value; longer values are cut (MESSAGE never is). */
export const MAX_VALUE_BYTES = 1024;
const EXIT_DRAIN_MS = 300;
/** The longest a line waits for journald's full queue (once per stall: a stuck journald costs one wait). */
export const EAGAIN_WAIT_MS = 50;
/** The most the EAGAIN waits may take in any one second (they block the event loop). */
export const WAIT_BUDGET_MS = 100;
const EAGAIN = 11;
/** Keys of pino's own that are not fields: the level is VWSTREAM_LEVEL, msg and time are in MESSAGE. */
const SKIP = new Set(['level', 'time', 'msg']);

let secrets: string[] = [];

/**
 * Values that must never be written anywhere; scrub() replaces them. Each also in its
 * JSON-escaped form (a secret with `"` or `\` appears escaped in a JSON line).
 */
export function setSecrets(values: string[]): void {
  const all = new Set<string>();
  for (const v of values) {
    if (v.length < 4) continue;
    all.add(v);
    const escaped = JSON.stringify(v).slice(1, -1);
    if (escaped !== v) all.add(escaped);
  }
  secrets = [...all].sort((a, b) => b.length - a.length);
}

export function scrub(text: string): string {
  let out = text;
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('***');
  return out;
}

/** The add-on's interface (agent/native/journal.c). */
export interface JournalAddon {
  open(path: string): number;
  send(entry: Buffer): number;
  pending(): number;
  /** sd_notify: one datagram to $NOTIFY_SOCKET (agent/systemd/notify.ts). */
  notify(socket: string, message: Buffer): number;
}

/** Loads journal.node beside this module (the bundle's /usr/lib/vwstream-agent); undefined when absent or unloadable. */
export function loadJournalAddon(file = fileURLToPath(new URL('./journal.node', import.meta.url))): JournalAddon | undefined {
  try {
    if (!existsSync(file)) return undefined;
    return createRequire(import.meta.url)(file) as JournalAddon;
  } catch {
    return undefined;
  }
}

/** $JOURNAL_STREAM ("dev:ino") names file descriptor `fd`: its output goes to journald as a stream. */
export function isJournalStream(fd = 1, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** VWSTREAM_<KEY>: camelCase split at its humps, upper case, anything else `_`; undefined when not a valid journal field name. */
export function fieldName(key: string): string | undefined {
  const name = `VWSTREAM_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`;
  return name.length <= 64 ? name : undefined;
}

function fieldValue(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'object' && !Array.isArray(v) && typeof (v as { message?: unknown }).message === 'string') return (v as { message: string }).message;
  try {
    return JSON.stringify(v);
  } catch {
    return undefined;
  }
}

/** `v` cut to MAX_VALUE_BYTES of UTF-8 at a character boundary (fields only; MESSAGE is never cut). */
function cut(v: string): string {
  if (v.length * 3 <= MAX_VALUE_BYTES) return v;
  const b = Buffer.from(v, 'utf8');
  if (b.length <= MAX_VALUE_BYTES) return v;
  let end = MAX_VALUE_BYTES;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString('utf8');
}

/**
 * Native protocol: KEY=value\n, or KEY\n<64-bit LE length><value>\n when the value has a
 * newline. Text fields are gathered into one string (one Buffer at the end).
 */
class EntryWriter {
  private parts: Buffer[] = [];
  private text = '';
  add(key: string, value: string): void {
    if (!value.includes('\n')) {
      this.text += `${key}=${value}\n`;
      return;
    }
    const v = Buffer.from(value, 'utf8');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(v.length));
    this.parts.push(Buffer.from(`${this.text}${key}\n`, 'utf8'), len, v, NL);
    this.text = '';
  }
  done(): Buffer {
    if (this.parts.length === 0) return Buffer.from(this.text, 'utf8');
    if (this.text) this.parts.push(Buffer.from(this.text, 'utf8'));
    return Buffer.concat(this.parts);
  }
}
const NL = Buffer.from('\n');

/**
 * The journal entry (native protocol) for one serialized, already scrubbed pino line:
 * MESSAGE (the line, without its newline), PRIORITY, SYSLOG_IDENTIFIER, VWSTREAM_LEVEL and
 * VWSTREAM_<KEY> for the log object's top-level fields (at most MAX_FIELDS, each at most
 * MAX_VALUE_BYTES; an error-like object gives its message, other objects their JSON).
 */
export function journalEntry(line: string): { entry: Buffer; priority: number } {
  const message = line.endsWith('\n') ? line.slice(0, -1) : line;
  let obj: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(message);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) obj = parsed as Record<string, unknown>;
  } catch { /* not JSON: MESSAGE alone */ }
  const level = typeof obj.level === 'string' ? obj.level : 'info';
  const priority = PRIORITY[level] ?? 6;
  const w = new EntryWriter();
  w.add('MESSAGE', message);
  w.add('PRIORITY', String(priority));
  w.add('SYSLOG_IDENTIFIER', SYSLOG_IDENTIFIER);
  w.add('VWSTREAM_LEVEL', level);
  let n = 0;
  const seen = new Set<string>(['VWSTREAM_LEVEL']);
  for (const k in obj) {
    if (n >= MAX_FIELDS) break;
    if (SKIP.has(k)) continue;
    const name = fieldName(k);
    const value = fieldValue(obj[k]);
    if (!name || value === undefined || seen.has(name)) continue;
    seen.add(name);
    w.add(name, cut(scrub(value)));
    n++;
  }
  return { entry: w.done(), priority };
}

/** The priority of a pino line, from its leading "level" (pino writes it first). */
export function linePriority(line: string): number {
  const m = /^\{"level":"([a-z]+)"/.exec(line);
  return (m && PRIORITY[m[1]!]) ?? 6;
}

export type LogMode = 'journal' | 'prefix' | 'plain';
export interface LogStats { mode: LogMode; sent: number; fallbacks: number; lastError: number }

/**
 * The destination pino writes to: scrubs every line, then sends it to journald (mode
 * 'journal'), or writes it to `out` with a `<N>` prefix ('prefix') or as it is ('plain').
 */
export function createSink(mode: LogMode, out: { write(s: string): unknown }, addon?: JournalAddon): { write(s: string): void; stats: LogStats; drain(ms: number): number } {
  const stats: LogStats = { mode, sent: 0, fallbacks: 0, lastError: 0 };
  const cell = new Int32Array(new SharedArrayBuffer(4));
  let stalled = false;
  const budget = { since: 0, waited: 0 };
  return {
    stats,
    write(s: string): void {
      const line = scrub(s);
      if (mode === 'journal' && addon) {
        const { entry, priority } = journalEntry(line);
        let rc = addon.send(entry);
        // Queue full (net.unix.max_dgram_qlen: 512 under systemd, the kernel's 10 in a
        // container): give journald a moment to read, so a burst keeps its order and its
        // fields; once it did not catch up in time, no more waiting until a send works.
        // The waits block the event loop (the lease renewal, the watchdog): at most
        // WAIT_BUDGET_MS of them in any second, however many lines a burst holds.
        if (rc === EAGAIN && !stalled) {
          const now = Date.now();
          if (now - budget.since >= 1000) { budget.since = now; budget.waited = 0; }
          const deadline = now + Math.min(EAGAIN_WAIT_MS, WAIT_BUDGET_MS - budget.waited);
          while (rc === EAGAIN && Date.now() < deadline) {
            Atomics.wait(cell, 0, 0, 0.2);
            rc = addon.send(entry);
          }
          budget.waited += Date.now() - now;
          if (rc === EAGAIN) stalled = true;
        }
        if (rc === 0) {
          stalled = false;
          stats.sent++;
          return;
        }
        stats.fallbacks++;
        stats.lastError = rc;
        out.write(`<${priority}>${line}`);
      } else if (mode !== 'plain') {
        out.write(`<${linePriority(line)}>${line}`);
      } else {
        out.write(line);
      }
    },
    /** Waits (at most `ms`) until journald has read every datagram; returns the bytes still queued. */
    drain(ms: number): number {
      if (mode !== 'journal' || !addon) return 0;
      const deadline = Date.now() + ms;
      let left = addon.pending();
      while (left > 0 && Date.now() < deadline) {
        Atomics.wait(cell, 0, 0, 2);
        left = addon.pending();
      }
      return Math.max(left, 0);
    },
  };
}

function defaultSink(): ReturnType<typeof createSink> {
  const out = pino.destination({ fd: 1, sync: true });
  if (!isJournalStream(1)) return createSink('plain', out);
  const addon = loadJournalAddon();
  if (addon && addon.open(JOURNAL_SOCKET) === 0) return createSink('journal', out, addon);
  return createSink('prefix', out);
}

/**
 * `text` with `<prefix>` at the start of each line; `atStart`: whether the text begins a
 * line (the previous write ended with a newline). Returns the text and the new state.
 */
export function prefixLines(text: string, prefix: string, atStart: boolean): { text: string; atStart: boolean } {
  if (text === '') return { text, atStart };
  const out = (atStart ? prefix : '') + text.replace(/\n(?=[^])/g, `\n${prefix}`);
  return { text: out, atStart: text.endsWith('\n') };
}

/**
 * stderr on the journal stream (the CLI's and the daemon's error lines, e.g. "config
 * error: …" before exit 78): each line `<3>` (journald stores stderr at the unit's
 * SyslogLevel, info, otherwise), and scrubbed of secrets like every log line.
 */
function stderrAsErrors(): void {
  if (!isJournalStream(2)) return;
  const stderr = process.stderr;
  const write = stderr.write.bind(stderr) as (chunk: string | Uint8Array, ...rest: unknown[]) => boolean;
  let atStart = true;
  stderr.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) return write(chunk as string, ...rest);
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    const r = prefixLines(scrub(text), '<3>', atStart);
    atStart = r.atStart;
    if (typeof rest[0] === 'string') rest.shift(); // the chunk's encoding: decoded above
    return write(r.text, ...rest);
  }) as typeof stderr.write;
}

const sink = defaultSink();
if (sink.stats.mode === 'journal') process.on('exit', () => { sink.drain(EXIT_DRAIN_MS); });
stderrAsErrors();

/** How lines are written and how many fell back from journald to stdout. */
export function logStats(): Readonly<LogStats> {
  return { ...sink.stats };
}

/** Waits (at most `ms`) until journald has read every entry sent; returns the bytes still queued. Done at exit by itself. */
export function flushLog(ms = EXIT_DRAIN_MS): number {
  return sink.drain(ms);
}

/** The agent's logger configuration over a destination (createSink's, or a test's). */
export function createLogger(dest: { write(s: string): void }): Logger {
  return pino(
    {
      base: undefined,
      level: 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
}

/** Structured JSON lines, priorities and fields for journald (see above). */
export const log: Logger = createLogger(sink);

export function setLogLevel(level: string): void {
  log.level = level;
}
