import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { AgentError } from '../errors.ts';
import { metaDir } from './litestream.ts';

/** What the agent knows about a database file, read-only. */
export interface DbFacts {
  exists: boolean;
  /** PRAGMA integrity_check said ok. */
  intact: boolean;
  integrityMessage?: string;
  /** Rows in Vaultwarden's users table (0 when the table does not exist yet). */
  users: number;
  /** The Litestream generation this file was last replicated as, if any. */
  generation: string | null;
}

function open(path: string): DatabaseSync {
  return new DatabaseSync(path, { readOnly: true });
}

/** SQLite's primary result codes that mean the file itself is damaged or not a database. */
const SQLITE_CORRUPT = 11;
const SQLITE_NOTADB = 26;

/**
 * Whether an error met while opening or checking a database says the *file* is bad
 * ('corrupt': SQLITE_CORRUPT, SQLITE_NOTADB) or only that it could not be read now
 * ('unreadable': locked, busy, no permission, too many open files, I/O error, ...).
 * Only the first may set a live database aside.
 */
export function classifyDbError(err: unknown): 'corrupt' | 'unreadable' {
  const e = err as { code?: string; errcode?: number };
  if (e?.code === 'ERR_SQLITE_ERROR' && typeof e.errcode === 'number') {
    const primary = e.errcode & 0xff;
    if (primary === SQLITE_CORRUPT || primary === SQLITE_NOTADB) return 'corrupt';
  }
  return 'unreadable';
}

/** One line for an error classified unreadable: SQLite's text and code, or the errno. */
function describeDbError(err: unknown): string {
  const e = err as { code?: string; errcode?: number; errstr?: string; message?: string };
  if (e?.code === 'ERR_SQLITE_ERROR') return `${e.message ?? e.errstr} (SQLite code ${e.errcode})`;
  return e?.message ?? String(err);
}

/**
 * The database could not be read for a reason that says nothing about its content
 * (locked, EACCES, EMFILE, EIO): nothing may be decided from it, and nothing is touched.
 */
export class DbUnreadableError extends AgentError {
  readonly path: string;
  constructor(path: string, err: unknown) {
    super(`cannot read the database ${path}: ${describeDbError(err)}; it is not treated as damaged and nothing was changed`, {
      hint: 'check what holds or blocks it (fuser, permissions, open files, disk errors); the start is retried',
      cause: err,
    });
    this.name = 'DbUnreadableError';
    this.path = path;
  }
}

/** How long a check waits for a lock another connection holds before giving up (not corruption). */
const BUSY_TIMEOUT_MS = 5_000;

/**
 * Reads what the agent needs to decide about a database file, read-only. A file that
 * fails `PRAGMA integrity_check`, or that SQLite says is corrupt or not a database, is
 * reported as not intact; any other error (a lock held elsewhere, permissions, file
 * descriptors, I/O) throws DbUnreadableError: it is no evidence of damage.
 */
export function inspectDb(path: string, opts: { busyTimeoutMs?: number } = {}): DbFacts {
  let st;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch (err) {
    throw new DbUnreadableError(path, err);
  }
  if (!st) return { exists: false, intact: false, users: 0, generation: null };
  let generation: string | null = null;
  try {
    generation = readFileSync(`${metaDir(path)}/generation`, 'utf8').trim() || null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new DbUnreadableError(`${metaDir(path)}/generation`, err);
  }
  let db: DatabaseSync | undefined;
  try {
    db = open(path);
    db.exec(`PRAGMA busy_timeout = ${Math.floor(opts.busyTimeoutMs ?? BUSY_TIMEOUT_MS)}`);
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    const msg = rows.map((r) => r.integrity_check.replace(/\s+/g, ' ').trim()).join('; ');
    if (msg !== 'ok') return { exists: true, intact: false, integrityMessage: msg.slice(0, 300), users: 0, generation };
    return { exists: true, intact: true, users: countRows(db, 'users'), generation };
  } catch (err) {
    if (classifyDbError(err) === 'unreadable') throw new DbUnreadableError(path, err);
    return { exists: true, intact: false, integrityMessage: (err as Error).message, users: 0, generation };
  } finally {
    db?.close();
  }
}

/** Vaultwarden's main tables, counted by `restore --to` and the restore drill. */
export const MAIN_TABLES = ['users', 'ciphers', 'folders', 'attachments', 'sends', 'organizations', 'collections', 'devices'] as const;

/** Row counts of the main tables that exist in the database (read-only). */
export function tableCounts(path: string, tables: readonly string[] = MAIN_TABLES): Record<string, number> {
  const db = open(path);
  try {
    const out: Record<string, number> = {};
    for (const t of tables) {
      if (db.prepare("SELECT name FROM sqlite_master WHERE type='table' AND name=?").get(t)) out[t] = countRows(db, t);
    }
    return out;
  } finally {
    db.close();
  }
}

function countRows(db: DatabaseSync, table: string): number {
  const t = db.prepare("SELECT name FROM sqlite_master WHERE type='table' AND name=?").get(table);
  if (!t) return 0;
  return Number((db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n);
}

/**
 * A digest of the logical content (every table's rows in rowid order, Litestream's own
 * tables excluded): two files with the same vault data have the same digest even when
 * their pages differ.
 */
export function contentDigest(path: string): string {
  const db = open(path);
  try {
    const h = createHash('sha256');
    const tables = db.prepare("SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_litestream_%' ORDER BY name").all() as { name: string; sql: string }[];
    for (const t of tables) {
      h.update(`table ${t.name}\n${t.sql}\n`);
      const withoutRowid = /WITHOUT\s+ROWID/i.test(t.sql);
      for (const row of db.prepare(`SELECT * FROM "${t.name}"${withoutRowid ? '' : ' ORDER BY rowid'}`).iterate()) {
        h.update(JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)));
        h.update('\n');
      }
    }
    return h.digest('hex');
  } finally {
    db.close();
  }
}
