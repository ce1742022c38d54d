import { SCHEMA } from './schema.ts';
import { COMMON_ENV_KEYS, VAULTWARDEN_KEYS } from './vaultwarden-keys.ts';

/** Edit distance with adjacent transpositions (VERIFY_CORN → VERIFY_CRON is 1). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

export interface KeySuggestion {
  /** The known keys it is probably meant to be (best first). */
  keys: string[];
  /** It equals an agent key except for case: the setting would silently not apply. */
  caseOfAgentKey: boolean;
}

const AGENT_KEYS = Object.keys(SCHEMA);
const norm = (k: string) => k.toUpperCase().replace(/_/g, '');

/**
 * The known key(s) an unknown key is close to, or undefined. Exact agent, Vaultwarden and
 * common keys and RCLONE_CONFIG_* are never flagged. In order: same key in another case;
 * same letters without underscores (LOGLEVEL); one or two edits (METRIC_LISTEN,
 * VERIFY_CORN, SIGNUP_ALLOWED); an agent key cut short or extended (STOP_GRACE).
 */
export function suggestKey(key: string): KeySuggestion | undefined {
  if (key in SCHEMA || VAULTWARDEN_KEYS.has(key) || COMMON_ENV_KEYS.has(key) || key.startsWith('RCLONE_CONFIG_')) return undefined;
  const upper = key.toUpperCase();
  if (upper in SCHEMA) return { keys: [upper], caseOfAgentKey: true };
  if (VAULTWARDEN_KEYS.has(upper)) return { keys: [upper], caseOfAgentKey: false };
  if (COMMON_ENV_KEYS.has(upper)) return undefined;
  const known = [...new Set([...AGENT_KEYS, ...VAULTWARDEN_KEYS])];
  const same = known.filter((k) => norm(k) === norm(key));
  if (same.length > 0) return { keys: same, caseOfAgentKey: false };
  if (upper.length >= 5) {
    const limit = upper.length <= 10 ? 1 : 2;
    let best = limit + 1;
    let found: string[] = [];
    for (const k of known) {
      const dist = editDistance(upper, k);
      if (dist < best) { best = dist; found = [k]; } else if (dist === best) found.push(k);
    }
    if (found.length > 0) return { keys: found, caseOfAgentKey: false };
  }
  if (upper.length >= 6) {
    const cut = AGENT_KEYS.filter((k) => k.startsWith(upper + '_') || upper.startsWith(k + '_'));
    if (cut.length > 0) return { keys: cut, caseOfAgentKey: false };
  }
  return undefined;
}

/** "A", "A or B", "A, B or C". */
export function orList(keys: string[]): string {
  return keys.length <= 1 ? keys.join('') : `${keys.slice(0, -1).join(', ')} or ${keys[keys.length - 1]}`;
}
