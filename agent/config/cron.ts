import { Cron } from 'croner';
import { ConfigError } from '../errors.ts';

/**
 * BACKUP_CRON (5-field cron, host time zone) → systemd OnCalendar= expressions for
 * vwstream-backup.timer. Exact or an error: every field is expanded into explicit values,
 * and cron's day rule (day-of-month OR day-of-week when both are restricted, as croner
 * evaluates it) becomes two OnCalendar= lines, which systemd unites.
 * Supported: numbers, `*`, lists, ranges, steps (`*∕n`, `a-b/n`, `a/n`), month and weekday
 * names, 7 = Sunday, `L` (last day of the month) alone in day-of-month.
 * Not expressible exactly (and refused): `?`, `W`, `#`, `nL`, wrapping ranges.
 */

const FIELDS = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12 },
  { name: 'day-of-week', min: 0, max: 7 },
] as const;

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const SYSTEMD_DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

function parseValue(raw: string, field: number): number {
  const lower = raw.toLowerCase();
  if (field === 3 && MONTHS.includes(lower)) return MONTHS.indexOf(lower) + 1;
  if (field === 4 && DAYS.includes(lower)) return DAYS.indexOf(lower);
  if (!/^\d+$/.test(raw)) throw new Error(`"${raw}" is not a number${field >= 3 ? ' or name' : ''}`);
  return Number(raw);
}

/** The set of values a cron field matches. Throws Error with the reason. */
function expandField(text: string, field: number): Set<number> {
  const { name, min, max } = FIELDS[field]!;
  const out = new Set<number>();
  for (const part of text.split(',')) {
    if (/^[?]$|#|\dW$|\dL$|^L\w|^LW$/i.test(part) || (field === 2 && /^L$/i.test(part))) {
      throw new Error(`${name} "${part}" cannot be expressed exactly by a systemd timer (?, W, #, L are not supported here${field === 2 ? '; L alone is' : ''})`);
    }
    const m = /^([^/]+)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`${name} "${part}" is not a value, range or step`);
    const [, base, stepText] = m as unknown as [string, string, string | undefined];
    const step = stepText === undefined ? 1 : Number(stepText);
    if (step < 1) throw new Error(`${name} step must be at least 1`);
    let lo: number;
    let hi: number;
    if (base === '*') { lo = min; hi = field === 4 ? 6 : max; }
    else if (base.includes('-')) {
      const [a, b] = base.split('-');
      if (a === undefined || b === undefined || base.split('-').length !== 2) throw new Error(`${name} "${part}" is not a range`);
      lo = parseValue(a, field);
      hi = parseValue(b, field);
    } else {
      lo = parseValue(base, field);
      hi = stepText === undefined ? lo : (field === 4 ? 6 : max);
    }
    if (lo < min || hi > max || lo > max) throw new Error(`${name} "${part}" is outside ${min}-${max}`);
    if (lo > hi) throw new Error(`${name} range "${part}" wraps around (not supported; write it as two ranges)`);
    for (let v = lo; v <= hi; v += step) out.add(field === 4 && v === 7 ? 0 : v);
  }
  return out;
}

/** Consecutive runs of three or more as a..b, others as a list. */
function compress(values: number[], show: (v: number) => string): string {
  const parts: string[] = [];
  let i = 0;
  while (i < values.length) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j]! + 1) j++;
    if (j - i >= 2) parts.push(`${show(values[i]!)}..${show(values[j]!)}`);
    else for (let k = i; k <= j; k++) parts.push(show(values[k]!));
    i = j + 1;
  }
  return parts.join(',');
}

const two = (v: number) => String(v).padStart(2, '0');

function render(set: Set<number>, min: number, max: number): string {
  const sorted = [...set].sort((a, b) => a - b);
  if (sorted.length === max - min + 1) return '*';
  return compress(sorted, two);
}

/**
 * The OnCalendar= expressions (one or two) equivalent to a 5-field cron expression.
 * Throws ConfigError naming `key` when the expression is invalid or not expressible.
 */
export function cronToOnCalendar(expr: string, key = 'BACKUP_CRON'): string[] {
  const fields = expr.trim().split(/\s+/);
  const fail = (reason: string): never => {
    throw new ConfigError(key, expr, `${reason}; expected a 5-field cron expression (minute hour day-of-month month day-of-week) of numbers, *, lists, ranges, steps and names, e.g. "0 3 * * *"`);
  };
  if (fields.length !== 5) fail(`has ${fields.length} fields`);
  try {
    new Cron(expr, { paused: true });
  } catch (err) {
    fail(`croner rejects it (${(err as Error).message})`);
  }
  const [minF, hourF, domF, monF, dowF] = fields as [string, string, string, string, string];
  let sets: Set<number>[] = [];
  const lastDay = domF.toUpperCase() === 'L';
  try {
    sets = [expandField(minF, 0), expandField(hourF, 1), lastDay ? new Set() : expandField(domF, 2), expandField(monF, 3), expandField(dowF, 4)];
  } catch (err) {
    fail((err as Error).message);
  }
  const [mins, hours, doms, months, dows] = sets as [Set<number>, Set<number>, Set<number>, Set<number>, Set<number>];
  const time = `${render(hours, 0, 23)}:${render(mins, 0, 59)}:00`;
  const month = render(months, 1, 12);
  const day = lastDay ? '~01' : `-${render(doms, 1, 31)}`;
  const dow = render(dows, 0, 6) === '*' ? '' : `${compress([...dows].sort((a, b) => a - b), (v) => SYSTEMD_DAYS[v]!)} `;
  // croner (legacy mode, like Vixie cron): a field is unrestricted only when it is exactly "*".
  const domStar = domF === '*';
  const dowStar = dowF === '*';
  if (!domStar && !dowStar) {
    // Either day rule fires the run: two expressions, which systemd unites.
    return [`${dow}*-${month}-* ${time}`.replace(/^ /, ''), `*-${month}${day} ${time}`];
  }
  return [`${dowStar ? '' : dow}*-${month}${domStar ? '-*' : day} ${time}`];
}

/** A drop-in for vwstream-backup.timer: resets the unit's OnCalendar= and sets the schedule. */
export function renderTimerDropIn(expr: string, key = 'BACKUP_CRON'): string {
  const lines = cronToOnCalendar(expr, key).map((c) => `OnCalendar=${c}`);
  return `# Written by vwstream-agent from ${key}=${expr}\n[Timer]\nOnCalendar=\n${lines.join('\n')}\n`;
}

/** The next time the cron expression fires after `from` (host time zone), or null. */
export function nextRun(expr: string, from: Date = new Date()): Date | null {
  return new Cron(expr, { paused: true }).nextRun(from);
}
