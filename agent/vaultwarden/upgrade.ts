/**
 * Upgrades that can be undone. Vaultwarden migrates its database at start and has no way
 * back, so before a version other than the one that last ran on this database starts, the
 * agent takes a consistent copy (`VACUUM INTO` beside Litestream's read lock, then
 * `integrity_check` on the copy) into the kept-aside data, named with both versions. Once
 * the new version answers, a marker of every row (a short hash per row and table) is
 * written beside it: a rollback compares the live database with it to tell whether, and
 * how much, was written since the upgrade.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { chmod, constants as fsConstants, copyFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { asideName } from '../aside.ts';
import { AgentError, errorMessage } from '../errors.ts';
import { run } from '../exec.ts';
import { fsyncDir, fsyncFile, mkdirDurable, writeFileDurable } from '../fs.ts';
import { PATHS } from '../paths.ts';

export const UPGRADE_REASON = 'vaultwarden-upgrade';
export const SNAPSHOT_FILE = 'db.sqlite3';
export const SNAPSHOT_META = 'upgrade.json';
export const MARKER_FILE = 'after-upgrade.rows';

/** `Vaultwarden 1.32.7` → 1.32.7 (the first line that says it), else undefined. */
export function parseVersionLine(text: string): string | undefined {
  const m = /^Vaultwarden\s+v?(\d+\.\d+\.\d+(?:[-+.][0-9A-Za-z][0-9A-Za-z.+-]*)?)/m.exec(text.trim());
  return m?.[1];
}

/**
 * Runs `<bin> --version` (as the given user; or `file args…` as given, e.g. through
 * systemd-run, with `what` naming it) and parses it.
 */
export async function probeVersion(bin: string, opts: { uid?: number; gid?: number; cwd?: string; args?: string[]; what?: string } = {}): Promise<{ version: string | undefined; line: string }> {
  const { args, what: named, ...runOpts } = opts;
  const what = named ?? `${bin} --version`;
  const r = await run(bin, args ?? ['--version'], { timeoutMs: 20_000, reject: false, ...runOpts });
  const line = (r.stdout || r.stderr).trim().split('\n')[0] ?? '';
  if (r.timedOut) throw new AgentError(`${what} did not finish within 20 s`);
  if (r.exitCode !== 0) throw new AgentError(`${what} exited ${r.exitCode}${line ? `: ${line.slice(0, 200)}` : ''}`);
  return { version: parseVersionLine(r.stdout), line: line.slice(0, 200) };
}

export interface UpgradeSnapshot {
  dir: string;
  /** The version that last ran on the database (null: not known on this host). */
  from: string | null;
  to: string;
  at: string;
  bytes: number;
  ms: number;
  /** Rows of Vaultwarden's main tables in the copy. */
  counts: Record<string, number>;
}

/** Tables that are not Vaultwarden's data: SQLite's own and Litestream's. */
function dataTables(db: DatabaseSync): string[] {
  const rows = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[];
  return rows.map((r) => r.name).filter((n) => !n.startsWith('sqlite_') && !n.startsWith('_litestream_'));
}

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** True when the database holds at least one of Vaultwarden's tables (a new vault has none). */
export function hasVaultwardenData(dbPath: string): boolean {
  if (!existsSync(dbPath)) return false;
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    db.exec('PRAGMA busy_timeout = 5000');
    return dataTables(db).length > 0;
  } finally {
    db.close();
  }
}

/**
 * The consistent copy taken before `to` starts on a database `from` last ran on: a new
 * kept-aside folder `<time>-vaultwarden-upgrade` with db.sqlite3 (0600) and upgrade.json.
 * Throws (and leaves nothing) when the copy cannot be made or fails integrity_check.
 */
export async function takeUpgradeSnapshot(dbPath: string, from: string | null, to: string, asideRoot: string = PATHS.asideDir, now: Date = new Date(), opts: { byteCopy?: boolean } = {}): Promise<UpgradeSnapshot> {
  const started = Date.now();
  const dir = join(asideRoot, asideName(now, UPGRADE_REASON));
  const file = join(dir, SNAPSHOT_FILE);
  await mkdirDurable(dir);
  try {
    let counts: Record<string, number>;
    if (opts.byteCopy) {
      // A closed database that passed integrity_check and that nothing opens meanwhile (see
      // byteCopySafe): its file is the whole database, so a copy of its bytes is one.
      counts = countRows(dbPath);
      if (!byteCopySafe(dbPath)) throw new AgentError(`${dbPath} has a WAL or journal beside it: not a closed database`);
      await copyFile(dbPath, file, fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE);
      await chmod(file, 0o600);
      await fsyncFile(file);
    } else {
      const src = new DatabaseSync(dbPath, { readOnly: true });
      try {
        src.exec('PRAGMA busy_timeout = 10000');
        src.prepare('VACUUM INTO ?').run(file);
      } finally {
        src.close();
      }
      await chmod(file, 0o600);
      await fsyncFile(file);
      const copy = new DatabaseSync(file, { readOnly: true });
      try {
        const check = (copy.prepare('PRAGMA integrity_check').all() as Record<string, unknown>[]).map((r) => String(Object.values(r)[0])).join('; ');
        if (check !== 'ok') throw new AgentError(`the copy fails integrity_check: ${check.slice(0, 300)}`);
        counts = {};
        for (const t of dataTables(copy)) counts[t] = Number((copy.prepare(`SELECT count(*) AS n FROM ${quote(t)}`).get() as { n: number }).n);
      } finally {
        copy.close();
      }
    }
    const snap: UpgradeSnapshot = { dir, from, to, at: now.toISOString(), bytes: statSync(file).size, ms: Date.now() - started, counts };
    await writeFileDurable(join(dir, SNAPSHOT_META), JSON.stringify({ ...snap, database: SNAPSHOT_FILE }, null, 2) + '\n', { mode: 0o600 });
    await fsyncDir(dir);
    return snap;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const e = err as NodeJS.ErrnoException & { errcode?: number };
    const full = e.code === 'ENOSPC' || (e.errcode !== undefined && (e.errcode & 0xff) === 13) || /database or disk is full/i.test(errorMessage(err));
    throw new AgentError(`could not take the snapshot before upgrading Vaultwarden ${from ?? '(unknown version)'} → ${to}: ${full ? `no space left under ${asideRoot}` : errorMessage(err)}`, { cause: err });
  }
}

/**
 * Whether the database file alone holds the whole database: no -wal with frames and no
 * rollback journal beside it (a just-restored copy that nothing opened for writing).
 */
export function byteCopySafe(dbPath: string): boolean {
  for (const side of ['-wal', '-journal']) {
    try {
      if (statSync(dbPath + side).size > 0) return false;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return false;
    }
  }
  return true;
}

/** Rows of Vaultwarden's main tables. */
function countRows(dbPath: string): Record<string, number> {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    db.exec('PRAGMA busy_timeout = 10000');
    const counts: Record<string, number> = {};
    for (const t of dataTables(db)) counts[t] = Number((db.prepare(`SELECT count(*) AS n FROM ${quote(t)}`).get() as { n: number }).n);
    return counts;
  } finally {
    db.close();
  }
}

/** This database's applied migrations, sorted (null: no migrations table). */
export function migrationList(dbPath: string): string[] | null {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    db.exec('PRAGMA busy_timeout = 10000');
    const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'").get();
    if (!has) return null;
    return (db.prepare('SELECT version FROM __diesel_schema_migrations ORDER BY version').all() as { version: string }[]).map((r) => r.version);
  } finally {
    db.close();
  }
}

/** The applied migrations as one digest. */
export function fingerprintOf(list: readonly string[] | null): string | null {
  return list === null ? null : createHash('sha256').update(list.join('\n')).digest('hex').slice(0, 16);
}

export function migrationsFingerprint(dbPath: string): string | null {
  return fingerprintOf(migrationList(dbPath));
}

/** A short hash of every row of every data table, sorted per table. */
export function rowDigests(dbPath: string): Map<string, string[]> {
  const pinned = pinRows(dbPath);
  try {
    return pinned.digests();
  } finally {
    pinned.close();
  }
}

/**
 * The database's rows as they are now: a read transaction is opened and its snapshot
 * taken at once (one read), so `digests()` later hashes exactly these rows whatever is
 * written meanwhile. Lets the caller fix the moment cheaply and do the hashing later.
 */
export function pinRows(dbPath: string): { digests(): Map<string, string[]>; close(): void } {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    try { db.exec('COMMIT'); } catch { /* not in a transaction */ }
    db.close();
  };
  try {
    db.exec('PRAGMA busy_timeout = 10000');
    db.exec('BEGIN'); // one consistent read of all tables
    const tables = dataTables(db); // the first read: the snapshot is fixed here
    return {
      close,
      digests: () => {
        const out = new Map<string, string[]>();
        for (const t of tables) {
          if (t === '__diesel_schema_migrations') continue;
          const cols = (db.prepare(`PRAGMA table_info(${quote(t)})`).all() as { name: string }[]).map((c) => c.name).sort();
          const hashes: string[] = [];
          for (const row of db.prepare(`SELECT * FROM ${quote(t)}`).iterate() as Iterable<Record<string, unknown>>) {
            const h = createHash('sha256');
            for (const c of cols) h.update(`${c}\u0000${cell(row[c])}\u0001`);
            hashes.push(h.digest('base64').slice(0, 16));
          }
          out.set(t, hashes.sort());
        }
        return out;
      },
    };
  } catch (err) {
    close();
    throw err;
  }
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return 'N';
  if (v instanceof Uint8Array) return `B${Buffer.from(v).toString('hex')}`;
  return `${typeof v}:${String(v)}`;
}

/** The marker as a file: one line per table, `<table>\t<hash><hash>…`. */
export async function writeMarker(path: string, digests: Map<string, string[]>): Promise<void> {
  const lines = [...digests].map(([t, hs]) => `${t}\t${hs.join('')}`);
  await writeFileDurable(path, lines.join('\n') + '\n', { mode: 0o600 });
}

export async function readMarker(path: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (!line) continue;
    const tab = line.indexOf('\t');
    const packed = line.slice(tab + 1);
    const hs: string[] = [];
    for (let i = 0; i < packed.length; i += 16) hs.push(packed.slice(i, i + 16));
    out.set(line.slice(0, tab), hs);
  }
  return out;
}

export interface RowChanges {
  /** Rows added, removed or changed since the marker, as far as row hashes tell (a changed row counts once). */
  total: number;
  byTable: Record<string, number>;
}

/**
 * What changed between two row-hash sets: per table, the larger of rows only in `now`
 * and rows only in `then` (a changed row is one of each). Columns a migration adds count
 * as changes of every row, so compare sets taken under the same schema.
 */
export function compareRows(then: Map<string, string[]>, now: Map<string, string[]>): RowChanges {
  const byTable: Record<string, number> = {};
  let total = 0;
  for (const t of new Set([...then.keys(), ...now.keys()])) {
    const a = then.get(t) ?? [];
    const b = now.get(t) ?? [];
    const count = (xs: string[]) => { const m = new Map<string, number>(); for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1); return m; };
    const ca = count(a);
    const cb = count(b);
    let added = 0;
    let removed = 0;
    for (const [h, n] of cb) added += Math.max(0, n - (ca.get(h) ?? 0));
    for (const [h, n] of ca) removed += Math.max(0, n - (cb.get(h) ?? 0));
    const changed = Math.max(added, removed);
    if (changed > 0) { byTable[t] = changed; total += changed; }
  }
  return { total, byTable };
}

/** "3 rows (users 1, devices 2)" */
export function describeChanges(c: RowChanges): string {
  const parts = Object.entries(c.byTable).map(([t, n]) => `${t} ${n}`);
  return `${c.total} row${c.total === 1 ? '' : 's'}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}
