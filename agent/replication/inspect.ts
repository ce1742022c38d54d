import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
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

export function inspectDb(path: string): DbFacts {
  if (!existsSync(path)) return { exists: false, intact: false, users: 0, generation: null };
  let generation: string | null = null;
  try {
    generation = readFileSync(`${metaDir(path)}/generation`, 'utf8').trim() || null;
  } catch { /* never replicated */ }
  let db: DatabaseSync | undefined;
  try {
    db = open(path);
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    const msg = rows.map((r) => r.integrity_check).join('; ');
    if (msg !== 'ok') return { exists: true, intact: false, integrityMessage: msg.slice(0, 300), users: 0, generation };
    return { exists: true, intact: true, users: countRows(db, 'users'), generation };
  } catch (err) {
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
