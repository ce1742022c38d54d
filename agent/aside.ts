/**
 * Kept-aside data (contract behaviour 10): the folders the agent moves a database (and the
 * files a restore replaced) into, under /var/lib/vwstream/aside, named
 * `<UTC time>-<reason>` by setAside (`2026-12-01T09-28-58-123Z-secondary-local-changes`;
 * a backup restore without a database uses `<epoch ms>-<reason>`).
 *
 * - parseAsideName / planAsidePrune / asideSizeCheck are pure: the retention rule.
 * - listAside / pruneAside read and change the disk. They never follow a symbolic link
 *   (lstat everywhere), and they only ever remove a top-level entry whose name parses,
 *   that is a real directory and that is owned by the agent's user; everything else is
 *   "foreign": listed, never touched.
 */
import { lstat, readdir, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface AsideRule {
  /** The newest this many per reason are always kept (at least 1: the newest copy of a reason is never removed). */
  minKeep: number;
  /** Anything younger than this many days is kept; 0 = nothing is removed by age (everything kept). */
  retentionDays: number;
}

export interface AsideEntry {
  name: string;
  path: string;
  reason: string;
  /** When it was set aside (from the name). */
  at: Date;
  /** Bytes of the regular files inside (symbolic links are not followed, counted 0). */
  bytes: number;
  files: number;
}

export type ForeignKind = 'file' | 'directory' | 'symlink' | 'other';
export interface ForeignEntry { name: string; path: string; kind: ForeignKind; why: string }

export interface AsideVerdict { entry: AsideEntry; remove: boolean; why: string }
export interface AsidePlan {
  /** Oldest first. */
  remove: AsideVerdict[];
  /** Newest first. */
  keep: AsideVerdict[];
}

const DAY_MS = 86_400_000;
const REASON = '([a-z][a-z0-9]*(?:-[a-z0-9]+)*)';
/** setAside: `new Date().toISOString()` with ':' and '.' replaced by '-'. */
const ISO_NAME = new RegExp(`^(\\d{4})-(\\d{2})-(\\d{2})T(\\d{2})-(\\d{2})-(\\d{2})-(\\d{3})Z-${REASON}$`);
/** The backup restore's fallback folder: `Date.now()` (13 digits: 2001 to 2286). */
const EPOCH_NAME = new RegExp(`^([1-9]\\d{12})-${REASON}$`);

/** The moment and reason of an aside folder's name, or null when the agent did not make that name. */
export function parseAsideName(name: string): { at: Date; reason: string } | null {
  const iso = ISO_NAME.exec(name);
  if (iso) {
    const [y, mo, d, h, mi, s, ms] = iso.slice(1, 8).map(Number) as [number, number, number, number, number, number, number];
    const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s, ms));
    // Impossible dates (02-31, 25:00) would roll over: not a name setAside wrote.
    if (at.getUTCFullYear() !== y || at.getUTCMonth() !== mo - 1 || at.getUTCDate() !== d || at.getUTCHours() !== h || at.getUTCMinutes() !== mi || at.getUTCSeconds() !== s) return null;
    return { at, reason: iso[8]! };
  }
  const epoch = EPOCH_NAME.exec(name);
  if (epoch) return { at: new Date(Number(epoch[1])), reason: epoch[2]! };
  return null;
}

/** The folder name setAside writes for a moment and a reason. */
export function asideName(at: Date, reason: string): string {
  return `${at.toISOString().replace(/[:.]/g, '-')}-${reason}`;
}

/**
 * The retention rule, per reason: the `minKeep` newest are kept (never fewer than one, so
 * the newest copy of every reason survives), and so is everything younger than
 * `retentionDays`; the rest is removed. `retentionDays` 0 removes nothing.
 */
export function planAsidePrune(entries: readonly AsideEntry[], rule: AsideRule, now: Date): AsidePlan {
  const keepN = Math.max(1, Math.floor(rule.minKeep));
  const cutoff = now.getTime() - rule.retentionDays * DAY_MS;
  const byReason = new Map<string, AsideEntry[]>();
  for (const e of entries) byReason.set(e.reason, [...(byReason.get(e.reason) ?? []), e]);
  const keep: AsideVerdict[] = [];
  const remove: AsideVerdict[] = [];
  for (const list of byReason.values()) {
    // Newest first; the name breaks ties so the result does not depend on listing order.
    list.sort((a, b) => b.at.getTime() - a.at.getTime() || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
    list.forEach((entry, i) => {
      if (i < keepN) keep.push({ entry, remove: false, why: i === 0 ? `the newest ${entry.reason}` : `one of the ${keepN} newest ${entry.reason}` });
      else if (rule.retentionDays === 0) keep.push({ entry, remove: false, why: 'ASIDE_RETENTION_DAYS=0 keeps everything' });
      else if (entry.at.getTime() > cutoff) keep.push({ entry, remove: false, why: `younger than ${rule.retentionDays} days` });
      else remove.push({ entry, remove: true, why: `older than ${rule.retentionDays} days and not one of the ${keepN} newest ${entry.reason}` });
    });
  }
  keep.sort((a, b) => b.entry.at.getTime() - a.entry.at.getTime() || (a.entry.name < b.entry.name ? 1 : -1));
  remove.sort((a, b) => a.entry.at.getTime() - b.entry.at.getTime() || (a.entry.name < b.entry.name ? -1 : 1));
  return { remove, keep };
}

/** Health's bound: kept-aside data above 2 GiB, or above a quarter of the free space on its file system. */
export const ASIDE_WARN_BYTES = 2 * 1024 ** 3;
export function asideSizeCheck(bytes: number, count: number, freeBytes: number | null, dir: string): { name: string; ok: boolean; detail: string } {
  const bound = freeBytes === null ? ASIDE_WARN_BYTES : Math.min(ASIDE_WARN_BYTES, Math.floor(freeBytes / 4));
  const ok = bytes <= bound;
  return {
    name: 'aside_size',
    ok,
    detail: `${count} folders, ${humanBytes(bytes)} kept aside under ${dir} (max ${humanBytes(bound)}: 2 GiB or a quarter of the free space${freeBytes === null ? '' : `, ${humanBytes(freeBytes)} free`})${ok ? '' : '; see vwstream-agent aside, then vwstream-agent aside prune or lower ASIDE_RETENTION_DAYS'}`,
  };
}

/** 1536 → "1.5 KiB". */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export interface AsideListing {
  dir: string;
  /** The folder does not exist (nothing was ever set aside). */
  missing: boolean;
  /** Oldest first. */
  entries: AsideEntry[];
  foreign: ForeignEntry[];
  bytes: number;
}

function kindOf(st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): ForeignKind {
  return st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'other';
}

const gone = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';

/** Bytes and count of the regular files below `path` (links not followed; entries vanishing meanwhile are skipped). */
async function treeSize(path: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0, files = 0;
  const walk = async (p: string): Promise<void> => {
    let st;
    try { st = await lstat(p); } catch (err) { if (gone(err)) return; throw err; }
    if (st.isDirectory()) {
      let names: string[];
      try { names = await readdir(p); } catch (err) { if (gone(err)) return; throw err; }
      for (const n of names) await walk(join(p, n));
    } else if (st.isFile()) {
      bytes += st.size;
      files++;
    }
  };
  await walk(path);
  return { bytes, files };
}

/**
 * What is under the aside folder. `uid` is the agent's user: a folder owned by anyone
 * else was not made by the agent. Errors other than a missing folder are thrown.
 */
export async function listAside(dir: string, uid: number = process.getuid?.() ?? 0): Promise<AsideListing> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (gone(err)) return { dir, missing: true, entries: [], foreign: [], bytes: 0 };
    throw err;
  }
  const entries: AsideEntry[] = [];
  const foreign: ForeignEntry[] = [];
  for (const name of names.sort()) {
    const path = join(dir, name);
    let st;
    try { st = await lstat(path); } catch (err) { if (gone(err)) continue; throw err; }
    const parsed = parseAsideName(name);
    const kind = kindOf(st);
    if (!parsed) { foreign.push({ name, path, kind, why: 'name not made by the agent' }); continue; }
    if (kind !== 'directory') { foreign.push({ name, path, kind, why: `a ${kind === 'symlink' ? 'symbolic link' : kind}, not a folder the agent made` }); continue; }
    if (st.uid !== uid) { foreign.push({ name, path, kind, why: `owned by uid ${st.uid}, not by the agent (uid ${uid})` }); continue; }
    const size = await treeSize(path);
    entries.push({ name, path, reason: parsed.reason, at: parsed.at, ...size });
  }
  entries.sort((a, b) => a.at.getTime() - b.at.getTime() || (a.name < b.name ? -1 : 1));
  return { dir, missing: false, entries, foreign, bytes: entries.reduce((s, e) => s + e.bytes, 0) };
}

/** Removes a tree without following links: a link is unlinked, never its target. */
export async function removeTree(path: string): Promise<void> {
  let st;
  try { st = await lstat(path); } catch (err) { if (gone(err)) return; throw err; }
  if (st.isDirectory()) {
    for (const n of await readdir(path)) await removeTree(join(path, n));
    await rmdir(path);
  } else {
    await unlink(path);
  }
}

export interface PruneReport {
  dir: string;
  dryRun: boolean;
  removed: AsideVerdict[];
  kept: AsideVerdict[];
  foreign: ForeignEntry[];
  /** Folders the rule selected that could not be removed (path: error). */
  errors: string[];
  removedBytes: number;
}

/**
 * Applies the rule now. Each selected folder is checked again right before removal (still
 * a real directory of the agent's user: nothing swapped in meanwhile).
 */
export async function pruneAside(dir: string, rule: AsideRule, opts: { dryRun?: boolean; now?: Date; uid?: number } = {}): Promise<PruneReport> {
  const uid = opts.uid ?? process.getuid?.() ?? 0;
  const listing = await listAside(dir, uid);
  const plan = planAsidePrune(listing.entries, rule, opts.now ?? new Date());
  const report: PruneReport = { dir, dryRun: opts.dryRun === true, removed: [], kept: plan.keep, foreign: listing.foreign, errors: [], removedBytes: 0 };
  for (const v of plan.remove) {
    if (!report.dryRun) {
      try {
        const st = await lstat(v.entry.path);
        if (!st.isDirectory() || st.uid !== uid) throw new Error('no longer a folder of the agent; left alone');
        await removeTree(v.entry.path);
      } catch (err) {
        report.errors.push(`${v.entry.path}: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
    }
    report.removed.push(v);
    report.removedBytes += v.entry.bytes;
  }
  return report;
}
