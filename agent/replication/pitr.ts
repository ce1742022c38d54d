import { AgentError } from '../errors.ts';
import type { Generation, RestoreTarget } from './litestream.ts';

/**
 * Point-in-time restore: what the operator typed → what Litestream 0.3.13 is asked for.
 *
 * Litestream restores a timestamp only from a generation whose [first, last] object times
 * contain it: a moment after the last write ("10 minutes ago" on an idle vault) gives
 * "no matching backups found". The state at such a moment is the end of the generation
 * that was current then, so the agent picks the generation itself and asks for its end.
 */

const UNITS: Record<string, number> = {
  s: 1_000, sec: 1_000, secs: 1_000, second: 1_000, seconds: 1_000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hr: 3_600_000, hrs: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000,
  w: 604_800_000, week: 604_800_000, weeks: 604_800_000,
};

/** RFC 3339 with a zone (Z or ±hh:mm), optional fraction; a space instead of T is accepted. */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * Parses `--timestamp`: RFC 3339 ("2026-11-25T10:00:00Z", "2026-11-25T11:00:00+01:00") or
 * a relative time ("10 minutes ago", "90s ago", "1 hour ago", "2 days ago", "now").
 * A time without a zone is refused: it would silently mean UTC or local time.
 */
export function parseTimestamp(input: string, now: Date = new Date()): Date {
  const text = input.trim();
  const bad = (why: string): never => {
    throw new AgentError(`--timestamp ${JSON.stringify(input)} is not valid: ${why}`, {
      hint: 'use RFC 3339 with a zone (2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00) or a relative time (10 minutes ago, 2h ago)',
    });
  };
  if (/^now$/i.test(text)) return new Date(now.getTime());
  const rel = /^(\d+(?:\.\d+)?)\s*([a-z]+)\s+ago$/i.exec(text);
  if (rel) {
    const ms = UNITS[rel[2]!.toLowerCase()];
    if (ms === undefined) bad(`unknown unit "${rel[2]}" (seconds, minutes, hours, days, weeks)`);
    return new Date(now.getTime() - Math.round(Number(rel[1]) * ms!));
  }
  const m = RFC3339.exec(text);
  if (!m) {
    if (/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2})?(\.\d+)?$/.test(text)) bad('it has no time zone (add Z for UTC or an offset like +01:00)');
    bad('expected RFC 3339 or "<number> <unit> ago"');
  }
  const [, y, mo, d, h, mi, s] = m!.map(Number) as number[];
  if (mo! < 1 || mo! > 12 || d! < 1 || d! > 31 || h! > 23 || mi! > 59 || s! > 60) bad('a field is out of range');
  const t = new Date(text.replace(' ', 'T'));
  if (Number.isNaN(t.getTime()) || new Date(Date.UTC(y!, mo! - 1, d!)).getUTCDate() !== d) bad('not a real date');
  return t;
}

/** Litestream's -timestamp wants RFC 3339; UTC with milliseconds keeps the exact moment. */
export function litestreamTimestamp(t: Date): string {
  return t.toISOString();
}

const iso = (d: Date) => d.toISOString().replace(/\.000Z$/, 'Z');

/** The oldest moment the replica can restore: the start of its oldest generation. */
export function oldestRestorable(gens: Generation[]): Date | undefined {
  let min: Date | undefined;
  for (const g of gens) if (!min || g.start < min) min = g.start;
  return min;
}

export interface ResolvedTarget {
  /** What to pass to Litestream. */
  target: RestoreTarget;
  /** One line for the operator: what is restored. */
  describe: string;
}

/**
 * Picks what to restore for a point in time. `litestream generations` prints whole
 * seconds, so a generation's true end lies within [end, end + 1 s); when T falls there,
 * the timestamp is passed as is and the caller falls back to the generation's end if
 * Litestream finds nothing (`endFallback`).
 */
export function resolvePointInTime(gens: Generation[], t: Date): ResolvedTarget & { endFallback?: RestoreTarget } {
  if (gens.length === 0) throw new AgentError('the replica holds no generations: nothing to restore');
  const oldest = oldestRestorable(gens)!;
  if (t < oldest) {
    throw new AgentError(`${iso(t)} is before the oldest restorable point in time, ${iso(oldest)}`, {
      hint: `choose a time at or after ${iso(oldest)} (vwstream-agent generations lists what the replica holds)`,
    });
  }
  const SLACK = 1000;
  // Generations whose span contains T; the most recently updated wins (as Litestream picks).
  const containing = gens.filter((g) => g.start <= t && t.getTime() < g.end.getTime() + SLACK);
  if (containing.length > 0) {
    const g = containing.reduce((a, b) => (b.end > a.end ? b : a));
    const ts = litestreamTimestamp(t);
    return {
      target: { generation: g.generation, timestamp: ts },
      describe: `generation ${g.generation} as of ${iso(t)}`,
      ...(t >= g.end ? { endFallback: { generation: g.generation } } : {}),
    };
  }
  // T lies after a generation's last write and before the next one began: the state then
  // was that generation's end.
  const before = gens.filter((g) => g.end.getTime() + SLACK <= t.getTime());
  const g = before.reduce((a, b) => (b.end > a.end ? b : a));
  return {
    target: { generation: g.generation },
    describe: `generation ${g.generation} at its last write ${iso(g.end)} (nothing was replicated between then and ${iso(t)})`,
  };
}

/**
 * `--index N`: the WAL index as `vwstream-agent snapshots` and `litestream wal` print it
 * (decimal), or 0x-prefixed hex. Litestream's -index flag wants hex.
 */
export function parseIndex(input: string): string {
  const text = input.trim();
  let n: number;
  if (/^0x[0-9a-f]+$/i.test(text)) n = parseInt(text.slice(2), 16);
  else if (/^\d+$/.test(text)) n = Number(text);
  else throw new AgentError(`--index ${JSON.stringify(input)} is not valid: expected a WAL index (decimal as listed by vwstream-agent snapshots, or 0x… hex)`);
  if (!Number.isSafeInteger(n) || n > 0x7fffffff) throw new AgentError(`--index ${input} is out of range`);
  return n.toString(16).padStart(8, '0');
}

/** Checks --generation against the replica's list, so a typo is one clear line. */
export function requireGeneration(gens: Generation[], generation: string): Generation {
  const g = gens.find((x) => x.generation === generation);
  if (!g) {
    const known = gens.map((x) => x.generation).join(', ') || 'none';
    throw new AgentError(`unknown generation ${generation}: the replica holds ${known}`, { hint: 'vwstream-agent generations lists them' });
  }
  return g;
}
