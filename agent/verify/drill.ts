import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { replicaUrl, type Config } from '../config/config.ts';
import type { Runtime } from '../replication/runtime.ts';
import { updateState } from '../state-file.ts';
import { errorMessage } from '../errors.ts';
import { scanLocal } from '../files/mirror.ts';
import { inScope, scopeOf } from '../files/scope.ts';
import { downloadTo } from '../files/store.ts';
import { isSafeKey } from '../safe-fs.ts';
import { notify } from '../notify/notify.ts';
import { PATHS } from '../paths.ts';
import { inspectDb, tableCounts } from '../replication/inspect.ts';
import { effectiveRole, generationsOrFail, fileMirrorFor, restorePointTo } from '../replication/restore.ts';

/**
 * The restore drill (`vwstream-agent verify`, vwstream-verify.timer): restore the latest
 * replica — database and mirrored files — into a temporary directory, check it, compare
 * it with the live data, remove it, and record a one-line verdict.
 */

export interface DataCounts { tables: Record<string, number>; files: number }
export interface VerifyResult { ok: boolean; summary: string; ms: number; at: string }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Compares the restored copy with the live data counted before and after the restore.
 * The replica trails the live database by the replication lag, and the vault may change
 * while the drill runs: a count anywhere between the two live counts matches.
 */
export function compareWithLive(restored: DataCounts, before: DataCounts, after: DataCounts): string[] {
  const out: string[] = [];
  const within = (v: number, a: number, b: number) => v >= Math.min(a, b) && v <= Math.max(a, b);
  const names = new Set([...Object.keys(before.tables), ...Object.keys(restored.tables)]);
  for (const t of names) {
    const r = restored.tables[t];
    const a = before.tables[t];
    const b = after.tables[t] ?? a;
    if (a === undefined) continue; // a table the live database does not have (yet)
    if (r === undefined) { out.push(`table ${t} missing in the restored copy (live ${a})`); continue; }
    if (!within(r, a, b!)) out.push(`${t}: restored ${r}, live ${a === b ? a : `${a}..${b}`}`);
  }
  if (!within(restored.files, before.files, after.files)) out.push(`files: restored ${restored.files}, live ${before.files === after.files ? before.files : `${before.files}..${after.files}`}`);
  return out;
}

async function liveSnapshot(cfg: Config, dataFolder: string, dbPath: string): Promise<DataCounts | undefined> {
  const facts = inspectDb(dbPath);
  if (!facts.exists || !facts.intact) return undefined;
  const files = (await scanLocal(dataFolder, scopeOf(cfg.syncInclude))).size;
  return { tables: tableCounts(dbPath), files };
}

export interface DrillOptions {
  /** How long to let the replica catch up with the first live count (default: sync interval + 2 s). */
  lagMs?: number;
  attempts?: number;
  /** Extra wait before the second look when the vault did not change (default 10 s). */
  retryWaitMs?: number;
  say?: (line: string) => void;
}

/** One drill. Never throws: every failure is a verdict. */
export async function runDrill(cfg: Config, rt: Runtime, opts: DrillOptions = {}): Promise<VerifyResult> {
  const started = Date.now();
  const at = new Date().toISOString();
  const say = opts.say ?? (() => undefined);
  const lagMs = opts.lagMs ?? Math.min(15_000, cfg.litestream.syncIntervalMs + 2_000);
  const attempts = opts.attempts ?? 3;
  const tmpRoot = join(PATHS.stateDir, 'tmp');
  const done = (ok: boolean, text: string): VerifyResult => ({ ok, summary: `verify ${ok ? 'OK' : 'FAILED'}: ${text}`, ms: Date.now() - started, at });
  await mkdir(tmpRoot, { recursive: true, mode: 0o700 });
  const compare = effectiveRole(cfg) === 'primary';
  for (let attempt = 1; ; attempt++) {
    const dir = await mkdtemp(join(tmpRoot, 'verify-'));
    try {
      const before = compare ? await liveSnapshot(cfg, PATHS.dataFolder, rt.dbPath) : undefined;
      if (before) await sleep(lagMs);
      let gens;
      try {
        gens = await generationsOrFail(cfg, rt);
      } catch (err) {
        return done(false, errorMessage(err));
      }
      const latest = gens.at(-1);
      if (!latest) return done(false, `the replica at ${replicaUrl(cfg)} holds no generations`);
      say(`restoring generation ${latest.generation} (last write ${latest.end.toISOString()}) into ${dir}`);
      const copy = join(dir, 'db.sqlite3');
      try {
        await restorePointTo(cfg, rt, { target: {} }, copy);
      } catch (err) {
        return done(false, `database restore failed: ${errorMessage(err)}`);
      }
      const facts = inspectDb(copy);
      if (!facts.intact) return done(false, `the restored database fails integrity_check: ${facts.integrityMessage}`);
      const tables = tableCounts(copy);

      // Files: every mirrored object is downloaded and its size checked against the listing.
      const mirror = fileMirrorFor(cfg);
      const scope = scopeOf(cfg.syncInclude);
      let files = 0;
      try {
        const objects = (await mirror.store.list()).filter((o) => isSafeKey(o.key) && inScope(scope, o.key));
        for (const o of objects) {
          const size = await downloadTo(mirror.store, o.key, join(dir, 'files', o.key));
          if (size !== o.size) return done(false, `file ${o.key}: restored ${size} bytes, the mirror lists ${o.size}`);
          files++;
        }
      } catch (err) {
        return done(false, `file restore from ${mirror.store.url} failed: ${errorMessage(err)}`);
      }
      const restored: DataCounts = { tables, files };
      const shown = `${Object.entries(tables).filter(([t]) => ['users', 'ciphers', 'attachments', 'sends'].includes(t)).map(([t, n]) => `${n} ${t}`).join(', ')}, ${files} files`;
      if (!before) {
        return done(true, `generation ${latest.generation} restored (${shown}); integrity ok; ${compare ? 'no live database to compare with' : 'secondary: not compared with its local copy'}; ${Date.now() - started} ms`);
      }
      const after = (await liveSnapshot(cfg, PATHS.dataFolder, rt.dbPath)) ?? before;
      const diff = compareWithLive(restored, before, after);
      if (diff.length === 0) return done(true, `generation ${latest.generation} restored (${shown}); integrity ok; matches the live data; ${Date.now() - started} ms`);
      const busy = JSON.stringify(before) !== JSON.stringify(after);
      // A vault written during the drill, or a replica still catching up: one more look,
      // with more time; a replica that lost data still differs then.
      if (attempt < attempts && (busy || attempt === 1)) {
        say(`${busy ? 'the vault changed during the drill' : 'the replica may still be catching up'} (${diff.join('; ')}); trying again`);
        if (!busy) await sleep(opts.retryWaitMs ?? 10_000);
        continue;
      }
      return done(false, `generation ${latest.generation} restored but differs from the live data: ${diff.join('; ')}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/** Runs the drill, records the verdict in the state file and notifies on failure. */
export async function verifyAndRecord(cfg: Config, rt: Runtime, opts: DrillOptions = {}): Promise<VerifyResult> {
  const r = await runDrill(cfg, rt, opts);
  await updateState({ lastVerify: { at: r.at, ok: r.ok, summary: r.summary, ms: r.ms } });
  if (!r.ok) await notify(cfg.notification, 'verify_failure', r.summary);
  return r;
}

