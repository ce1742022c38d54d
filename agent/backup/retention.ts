/**
 * Archive naming and retention (contract behaviour 7). Pure functions.
 *
 * Names are `vaultwarden-YYYYMMDD-HHMMSS.tar.gz` (or `.tar`), `.enc` appended when
 * encrypted. The timestamp is UTC: unambiguous across DST changes and hosts.
 * Only names matching this pattern are ever selected for deletion.
 */

export type ArchiveFormat = 'tar.gz' | 'tar';

const NAME_RE = /^vaultwarden-(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})\.(tar\.gz|tar)(\.enc)?$/;

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** `vaultwarden-20250102-030405.tar.gz[.enc]` for a moment (UTC). */
export function archiveName(at: Date, format: ArchiveFormat, encrypted: boolean): string {
  const stamp = `${pad(at.getUTCFullYear(), 4)}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}-${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}`;
  return `vaultwarden-${stamp}.${format}${encrypted ? '.enc' : ''}`;
}

export interface ParsedArchiveName { name: string; at: Date; format: ArchiveFormat; encrypted: boolean }

/** The archive's moment and kind, or null when the name is not this product's archive. */
export function parseArchiveName(name: string): ParsedArchiveName | null {
  const m = NAME_RE.exec(name);
  if (!m) return null;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Reject impossible dates (20250231-…) instead of letting Date roll them over.
  if (at.getUTCFullYear() !== y || at.getUTCMonth() !== mo - 1 || at.getUTCDate() !== d || at.getUTCHours() !== h || at.getUTCMinutes() !== mi || at.getUTCSeconds() !== s) return null;
  return { name, at, format: m[7] as ArchiveFormat, encrypted: m[8] !== undefined };
}

export interface RetentionPlan {
  /** Names to delete, oldest first. */
  delete: string[];
  /** Archives kept, newest first. */
  keep: string[];
  /** Names that are not this product's archives: never touched. */
  ignored: string[];
}

/**
 * Which archives to delete: those older than `retentionDays` (by the timestamp in the
 * name), except that the `minKeep` newest archives are always kept.
 * `retentionDays` 0 turns age-based deletion off (everything is kept).
 */
export function planRetention(names: readonly string[], now: Date, retentionDays: number, minKeep: number): RetentionPlan {
  const archives: ParsedArchiveName[] = [];
  const ignored: string[] = [];
  for (const n of new Set(names)) {
    const p = parseArchiveName(n);
    if (p) archives.push(p);
    else ignored.push(n);
  }
  // Newest first; the name breaks ties so the result does not depend on listing order.
  archives.sort((a, b) => b.at.getTime() - a.at.getTime() || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
  const cutoff = now.getTime() - retentionDays * 86_400_000;
  const keep: string[] = [];
  const del: string[] = [];
  archives.forEach((a, i) => {
    if (retentionDays > 0 && i >= Math.max(0, minKeep) && a.at.getTime() < cutoff) del.push(a.name);
    else keep.push(a.name);
  });
  return { delete: del.reverse(), keep, ignored };
}
