import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, watch, type FSWatcher } from 'node:fs';
import { chown, chmod, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { log } from '../log.ts';
import { writePrivateFile } from '../replication/litestream.ts';
import { planSync, type LocalFile, type Manifest, type ManifestEntry } from './plan.ts';
import { inScope, type Scope } from './scope.ts';
import type { ObjectStore } from './store.ts';

export interface SyncReport {
  reason: string;
  at: string;
  ms: number;
  uploaded: number;
  uploadedBytes: number;
  deleted: number;
  unchanged: number;
  heldBack: { group: string; files: number }[];
  errors: string[];
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** Stat-only scan of the mirrored parts of the data folder: no file is read. */
export async function scanLocal(dataFolder: string, scope: Scope): Promise<Map<string, LocalFile>> {
  const out = new Map<string, LocalFile>();
  const add = async (rel: string) => {
    const st = await lstat(join(dataFolder, rel)).catch(() => undefined);
    if (st?.isFile()) out.set(rel, { size: st.size, mtimeMs: Math.trunc(st.mtimeMs) });
  };
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(join(dataFolder, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile() && !e.name.startsWith('.vws-')) await add(r);
    }
  };
  for (const e of await readdir(dataFolder, { withFileTypes: true }).catch(() => [])) {
    if (e.isFile() && scope.rootFiles(e.name)) await add(e.name);
  }
  for (const d of scope.dirs) await walk(d);
  return out;
}

export function loadManifest(path: string): Manifest {
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(path, 'utf8')) as Record<string, ManifestEntry>));
  } catch {
    return new Map();
  }
}

/**
 * The file mirror (contract behaviour 3). Change-driven (inotify) with a timer as a
 * safety net; both run the same reconcile against a local manifest of what was
 * uploaded, so an idle pass stats files and makes no request, and a changed file costs
 * one upload. The remote is listed only at start and at most hourly.
 */
export class FileMirror {
  private manifest: Manifest;
  private running: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private lastList = 0;
  lastSync: Date | null = null;
  /** Passes that ended with errors (for /metrics). */
  failedPasses = 0;
  /** Since when a change seen by the watcher (or a failed pass) waits for a clean pass. */
  private pendingSince: number | null = null;
  lastReport: SyncReport | null = null;
  private readonly dataFolder: string;
  private readonly scope: Scope;
  readonly store: ObjectStore;
  private readonly manifestPath: string;

  constructor(opts: { dataFolder: string; scope: Scope; store: ObjectStore; manifestPath: string }) {
    this.dataFolder = opts.dataFolder;
    this.scope = opts.scope;
    this.store = opts.store;
    this.manifestPath = opts.manifestPath;
    this.manifest = loadManifest(this.manifestPath);
  }

  /** Serializes passes: a pass never overlaps another. A pass whose signal fires while it waits its turn gives up. */
  private serial<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const turn = signal
      ? Promise.race([this.running, new Promise<never>((_, reject) => {
          if (signal.aborted) reject(signal.reason);
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        })])
      : this.running;
    const next = turn.then(() => {
      signal?.throwIfAborted();
      return fn();
    });
    this.running = Promise.all([this.running, next.catch(() => undefined)]);
    return next;
  }

  /** Background passes (changes, timer) are cancelled when the drain begins. */
  private background = new AbortController();

  /** A background pass: bounded, and aborted by stopWatching(). */
  syncInBackground(reason: string, timeoutMs = 600_000): Promise<SyncReport> {
    return this.sync(reason, AbortSignal.any([this.background.signal, AbortSignal.timeout(timeoutMs)]));
  }

  private async saveManifest(): Promise<void> {
    await writePrivateFile(this.manifestPath, JSON.stringify(Object.fromEntries(this.manifest)) + '\n');
  }

  /**
   * Lists the remote (at start, then at most hourly) and forgets manifest entries whose
   * object is missing or of another size, so the next pass uploads them again.
   */
  async checkRemote(signal?: AbortSignal): Promise<number> {
    return this.serial(async () => {
      const remote = new Map((await this.store.list(signal)).map((o) => [o.key, o.size]));
      this.lastList = Date.now();
      let forgotten = 0;
      for (const [rel, m] of this.manifest) {
        if (remote.get(rel) !== m.size) { this.manifest.delete(rel); forgotten++; }
      }
      if (forgotten) {
        log.warn({ files: forgotten, remote: this.store.url }, `file mirror: ${forgotten} files missing or different on the remote; uploading them again`);
        await this.saveManifest();
      }
      return forgotten;
    }, signal);
  }

  /** One reconcile pass. Errors of single files are reported, not thrown. */
  async sync(reason: string, signal?: AbortSignal): Promise<SyncReport> {
    if (Date.now() - this.lastList > 3_600_000) {
      try {
        await this.checkRemote(signal);
      } catch (err) {
        if (signal?.aborted) throw err;
        this.lastList = Date.now() - 3_000_000; // retry the listing in 10 minutes, sync meanwhile
        log.warn({ err: (err as Error).message, remote: this.store.url }, 'file mirror: listing the remote failed; syncing against the manifest');
      }
    }
    return this.serial(async () => {
      const started = Date.now();
      const report: SyncReport = { reason, at: new Date().toISOString(), ms: 0, uploaded: 0, uploadedBytes: 0, deleted: 0, unchanged: 0, heldBack: [], errors: [] };
      // Entries outside the scope (a SYNC_INCLUDE_* turned off) are no longer this mirror's business.
      for (const rel of this.manifest.keys()) if (!inScope(this.scope, rel)) this.manifest.delete(rel);
      const plan = planSync(await scanLocal(this.dataFolder, this.scope), this.manifest);
      report.unchanged = plan.unchanged;
      report.heldBack = plan.heldBack;
      let changed = false;
      for (const rel of plan.check) {
        signal?.throwIfAborted();
        const path = join(this.dataFolder, rel);
        try {
          const before = await stat(path);
          const sha = await sha256File(path);
          const entry = { size: before.size, mtimeMs: Math.trunc(before.mtimeMs), sha256: sha };
          if (this.manifest.get(rel)?.sha256 !== sha) {
            await this.store.put(rel, path, before.size, signal);
            report.uploaded++;
            report.uploadedBytes += before.size;
          }
          this.manifest.set(rel, entry);
          changed = true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile: next pass
          if (signal?.aborted) throw err;
          report.errors.push(`${rel}: ${(err as Error).message}`);
        }
      }
      for (const rel of plan.remove) {
        signal?.throwIfAborted();
        try {
          await this.store.delete(rel, signal);
          this.manifest.delete(rel);
          report.deleted++;
          changed = true;
        } catch (err) {
          if (signal?.aborted) throw err;
          report.errors.push(`${rel}: ${(err as Error).message}`);
        }
      }
      if (changed) await this.saveManifest();
      for (const h of plan.heldBack) {
        log.warn({ group: h.group, files: h.files }, `file mirror: ${h.group} is empty locally while the remote holds ${h.files} files; not mirroring the deletion (restore or remove them by hand)`);
      }
      report.ms = Date.now() - started;
      if (report.errors.length === 0) {
        this.lastSync = new Date(started);
        if (this.pendingSince !== null && this.pendingSince <= started) this.pendingSince = null;
      } else {
        this.failedPasses++;
        this.pendingSince ??= started;
      }
      this.lastReport = report;
      if (report.uploaded || report.deleted || report.errors.length) {
        log.info({ ...report, errors: report.errors.slice(0, 5) }, `file mirror (${reason}): ${report.uploaded} uploaded (${report.uploadedBytes} bytes), ${report.deleted} deleted, ${report.errors.length} errors`);
      }
      return report;
    }, signal);
  }

  /**
   * How far the mirror trails the data folder: 0 when every change the watcher saw has
   * been uploaded by a clean pass; null when there is no watcher (only the timer's pass
   * age tells).
   */
  get lagMs(): number | null {
    if (!this.watcher) return null;
    return this.pendingSince === null ? 0 : Date.now() - this.pendingSince;
  }

  /** Watches the data folder (inotify): a change is mirrored about a second later. */
  watch(onError: (err: Error) => void): void {
    try {
      this.watcher = watch(this.dataFolder, { recursive: true }, (_event, name) => {
        if (name && !inScope(this.scope, String(name))) return;
        this.pendingSince ??= Date.now();
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.syncInBackground('change').catch(onError), 1000);
      });
      this.watcher.on('error', onError);
    } catch (err) {
      onError(err as Error);
    }
  }

  /** Stops change-driven syncing and cancels a background pass in flight (the drain's own pass follows). */
  stopWatching(): void {
    clearTimeout(this.debounce);
    this.watcher?.close();
    this.watcher = undefined;
    this.background.abort(new Error('draining'));
    this.background = new AbortController();
  }

  /**
   * Brings the mirrored files back into the data folder (new host, restore) before
   * Vaultwarden starts, owned by the service user (files 0600, folders 0700). A local
   * file that would be replaced is moved into `asideDir` when given.
   */
  async restore(ids: { uid: number; gid: number }, asideDir?: string): Promise<{ files: number; bytes: number }> {
    return this.serial(async () => {
      const remote = (await this.store.list()).filter((o) => inScope(this.scope, o.key));
      let bytes = 0;
      let skipped = 0;
      for (const o of remote) {
        const dest = join(this.dataFolder, o.key);
        // Already here from an earlier restore and untouched since: no download (secondary refreshes).
        const known = this.manifest.get(o.key);
        const here = await lstat(dest).catch(() => undefined);
        if (known && here && known.size === o.size && here.size === o.size && Math.trunc(here.mtimeMs) === known.mtimeMs) { skipped++; continue; }
        for (let d = dirname(o.key); d !== '.'; d = dirname(d)) {
          await mkdir(join(this.dataFolder, d), { recursive: true, mode: 0o700 });
          await chown(join(this.dataFolder, d), ids.uid, ids.gid);
        }
        const tmp = join(dirname(dest), `.vws-restore-${process.pid}`);
        await this.store.get(o.key, tmp);
        if (asideDir && (await lstat(dest).catch(() => undefined))) {
          await mkdir(dirname(join(asideDir, 'files', o.key)), { recursive: true });
          await rename(dest, join(asideDir, 'files', o.key)).catch(async () => rm(dest, { force: true }));
        }
        await chmod(tmp, 0o600);
        await chown(tmp, ids.uid, ids.gid);
        await rename(tmp, dest);
        const st = await stat(dest);
        this.manifest.set(o.key, { size: st.size, mtimeMs: Math.trunc(st.mtimeMs), sha256: await sha256File(dest) });
        bytes += st.size;
      }
      if (remote.length > skipped) await this.saveManifest();
      this.lastList = Date.now();
      return { files: remote.length - skipped, bytes };
    });
  }
}
