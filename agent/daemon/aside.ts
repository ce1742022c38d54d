/**
 * The daemon's side of kept-aside data: prunes by the rule at start, daily and after each
 * setAside of the daemon itself, logs each removed folder once (reason, time, size) and
 * each foreign entry once per run, and keeps a summary for status and health.
 */
import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { AsideSummary, HealthCheck } from '../api/types.ts';
import { asideSizeCheck, humanBytes, listAside, pruneAside, type AsideRule } from '../aside.ts';
import { errorMessage } from '../errors.ts';
import { log } from '../log.ts';

export type { AsideSummary };

const DAILY_MS = 86_400_000;
/** A summary is reused while the folder's own mtime (entries added or removed) is unchanged, at most this long. */
const SUMMARY_TTL_MS = 5 * 60_000;

export class AsideKeeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly foreignSeen = new Set<string>();
  private lastPrune: AsideSummary['lastPrune'] = null;
  private cached: { summary: AsideSummary; at: number; mtimeMs: number } | undefined;

  private readonly dir: string;
  private readonly rule: AsideRule;

  constructor(dir: string, rule: AsideRule) {
    this.dir = dir;
    this.rule = rule;
  }

  /** A prune now (in the background) and one every day. */
  start(): void {
    void this.prune('start');
    this.timer = setInterval(() => void this.prune('daily'), DAILY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Applies the rule; never throws (a failure is logged and shown in status). Runs one at a time. */
  async prune(why: string): Promise<void> {
    while (this.running) await this.running;
    this.running = this.pruneOnce(why);
    try { await this.running; } finally { this.running = undefined; }
  }

  private async pruneOnce(why: string): Promise<void> {
    try {
      const r = await pruneAside(this.dir, this.rule);
      for (const v of r.removed) {
        log.info({ aside: v.entry.path, reason: v.entry.reason, at: v.entry.at.toISOString(), bytes: v.entry.bytes, why }, `aside: removed ${v.entry.name} (${v.entry.reason}, set aside ${v.entry.at.toISOString()}, ${humanBytes(v.entry.bytes)}): ${v.why}`);
      }
      for (const e of r.errors) log.warn({ aside: this.dir }, `aside: could not remove ${e}`);
      for (const f of r.foreign) {
        if (this.foreignSeen.has(f.name)) continue;
        this.foreignSeen.add(f.name);
        log.warn({ aside: f.path, kind: f.kind }, `aside: ${f.path} left alone: ${f.why}`);
      }
      this.lastPrune = { at: new Date().toISOString(), removed: r.removed.length, bytes: r.removedBytes, errors: r.errors.length };
      if (r.removed.length) log.info({ removed: r.removed.length, bytes: r.removedBytes, kept: r.kept.length, why }, `aside: pruned ${r.removed.length} folders (${humanBytes(r.removedBytes)}); ${r.kept.length} kept (the ${this.rule.minKeep} newest per reason and everything younger than ${this.rule.retentionDays} days)`);
      this.cached = undefined;
    } catch (err) {
      log.warn({ aside: this.dir, err: errorMessage(err) }, `aside: prune of ${this.dir} failed: ${errorMessage(err)}`);
      this.lastPrune = { at: new Date().toISOString(), removed: 0, bytes: 0, errors: 1 };
    }
  }

  /** Count and bytes for status (cached while nothing was added or removed at the top). */
  async summary(): Promise<AsideSummary> {
    const mtimeMs = await stat(this.dir).then((s) => s.mtimeMs, () => -1);
    const c = this.cached;
    if (c && c.mtimeMs === mtimeMs && Date.now() - c.at < SUMMARY_TTL_MS) return { ...c.summary, lastPrune: this.lastPrune };
    let summary: AsideSummary;
    try {
      const l = await listAside(this.dir);
      summary = { dir: this.dir, count: l.entries.length, bytes: l.bytes, foreign: l.foreign.map((f) => f.name), rule: this.rule, lastPrune: this.lastPrune, error: null };
      this.cached = { summary, at: Date.now(), mtimeMs };
    } catch (err) {
      summary = { dir: this.dir, count: 0, bytes: 0, foreign: [], rule: this.rule, lastPrune: this.lastPrune, error: errorMessage(err) };
    }
    return summary;
  }

  /** Health: fails above the bound (2 GiB or a quarter of the free space). */
  async check(): Promise<HealthCheck> {
    const s = await this.summary();
    if (s.error) return { name: 'aside_size', ok: false, detail: `cannot read ${this.dir}: ${s.error}` };
    const free = await statfs(this.dir).catch(() => statfs(dirname(this.dir))).then((f) => f.bavail * f.bsize, () => null);
    return asideSizeCheck(s.bytes, s.count, free, this.dir);
  }
}
