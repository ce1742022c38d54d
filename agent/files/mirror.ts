import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FileHandle } from 'node:fs/promises';
import { log } from '../log.ts';
import { writePrivateFile } from '../fs.ts';
import { run } from '../exec.ts';
import { isSafeKey, moveOut, openReadNoFollow, SyncBatch, UnsafePathError, walkNoFollow, writeFileInto, type Ids, type SkipKind } from '../safe-fs.ts';
import { planSync, type LocalFile, type Manifest, type ManifestEntry } from './plan.ts';
import { inScope, type Scope } from './scope.ts';
import { PreconditionFailedError, type ObjectStore, type RemoteBody, type RemoteObject } from './store.ts';

export interface SyncReport {
  reason: string;
  at: string;
  ms: number;
  uploaded: number;
  uploadedBytes: number;
  deleted: number;
  unchanged: number;
  /** Local files that differ from a remote object this vault did not write: kept under a conflict key. */
  conflicts: number;
  heldBack: { group: string; files: number }[];
  /** The data folder could not be read completely: no deletion was made in this pass. */
  deletionsCancelled: boolean;
  errors: string[];
}

/** Where remote objects that a local file would have overwritten are kept instead (outside every scope). */
export const CONFLICT_PREFIX = '.conflicts/';

/** A pass refused or cut short because the mirror is fenced (no write may reach the remote). */
export class FencedError extends Error {
  constructor(reason: string) {
    super(`file mirror stopped: ${reason}`);
    this.name = 'FencedError';
  }
}

/** sha256 (and md5, which is S3's ETag of a single-part upload) of a whole open file. */
async function hashHandle(fh: FileHandle): Promise<{ sha256: string; md5: string; size: number }> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  for await (const chunk of fh.createReadStream({ autoClose: false, start: 0 }) as AsyncIterable<Buffer>) {
    sha.update(chunk);
    md5.update(chunk);
    size += chunk.length;
  }
  return { sha256: sha.digest('hex'), md5: md5.digest('hex'), size };
}

/** A scan of the data folder that could not read everything (its listing is incomplete). */
export interface ScanProblem { rel: string; code: string; message: string }

export interface LocalScan {
  files: Map<string, LocalFile & { dev: number; ino: number }>;
  /** Read errors: the scan is incomplete, so nothing missing from it may be deleted anywhere. */
  errors: ScanProblem[];
  /** Links and special files, never followed nor read. */
  skipped: { rel: string; kind: SkipKind }[];
}

/**
 * Stat-only scan of the mirrored parts of the data folder: no file is read, no link is
 * followed (links and special files are listed in `skipped`), and any read error is
 * reported in `errors` rather than taken for "no file there".
 */
export async function scanData(dataFolder: string, scope: Scope): Promise<LocalScan> {
  const out: LocalScan = { files: new Map(), errors: [], skipped: [] };
  const walk = walkNoFollow(dataFolder, scope.dirs, {
    rootFiles: scope.rootFiles,
    onSkip: (rel, kind) => out.skipped.push({ rel, kind }),
    onError: (rel, err) => out.errors.push({ rel, code: errnoOf(err), message: err.message }),
  });
  for await (const e of walk) out.files.set(e.rel, { size: e.size, mtimeMs: Math.trunc(e.mtimeMs), dev: e.dev, ino: e.ino });
  return out;
}

/** The errno name of a scan error; a refusal of safe-fs is told by what it found. */
function errnoOf(err: Error): string {
  if (err instanceof UnsafePathError) return err.reason === 'not-a-directory' ? 'ENOTDIR' : err.reason === 'symlink' ? 'ELOOP' : `unsafe ${err.reason}`;
  return (err as NodeJS.ErrnoException).code ?? err.name;
}

/** The files a backup or drill counts: like the mirror's scan, but a read error fails it. */
export async function scanLocal(dataFolder: string, scope: Scope): Promise<Map<string, LocalFile>> {
  const s = await scanData(dataFolder, scope);
  if (s.errors.length) {
    const e = s.errors[0]!;
    throw new Error(`cannot read ${join(dataFolder, e.rel)}: ${e.code}${s.errors.length > 1 ? ` (and ${s.errors.length - 1} more)` : ''}`);
  }
  return new Map([...s.files].map(([rel, f]) => [rel, { size: f.size, mtimeMs: f.mtimeMs }]));
}

/** syncfs(2) of the file system holding `root`, through coreutils' `sync -f` (Node has no syncfs). */
export async function syncFileSystem(root: string): Promise<void> {
  const r = await run('sync', ['-f', root], { reject: false, timeoutMs: 600_000 });
  if (r.exitCode !== 0 || r.timedOut) {
    throw new Error(`cannot make the restored files in ${root} durable: sync -f ${r.timedOut ? 'timed out' : `exited ${r.exitCode}`}${r.stderr ? `: ${r.stderr.trim().split('\n').pop()}` : ''}`);
  }
}

/** The manifest on disk: bound to one destination (store URL, prefix included). */
interface ManifestFile { destination: string; entries: Record<string, ManifestEntry> }

/**
 * Loads the manifest of `destination`. A manifest written for another destination (the
 * operator changed S3_BUCKET/S3_PREFIX, or moved from the local directory to S3), or in
 * the old unbound format, says nothing about this one: it is discarded.
 */
export function loadManifest(path: string, destination: string): { manifest: Manifest; discarded?: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return { manifest: new Map() };
  }
  const file = raw as Partial<ManifestFile>;
  if (typeof file.destination !== 'string' || typeof file.entries !== 'object' || file.entries === null) {
    return { manifest: new Map(), discarded: 'written by an older version, for an unrecorded destination' };
  }
  if (file.destination !== destination) return { manifest: new Map(), discarded: `written for ${file.destination}` };
  return { manifest: new Map(Object.entries(file.entries)) };
}

/** Where an interrupted file restore is recorded until it completes. */
export interface PendingRestore { destination: string; startedAt: string; asideDir?: string }

export interface RestoreProgress { done: number; total: number; bytes: number; totalBytes: number }

export interface RestoreResult { files: number; bytes: number; unchanged: number; replaced: number; ignored: number }

export interface FileMirrorOptions {
  dataFolder: string;
  scope: Scope;
  store: ObjectStore;
  manifestPath: string;
  /** Records a file restore in progress (completed at the next start); none: not recorded. */
  pendingPath?: string;
  /** Downloads in parallel during a restore (default 8). */
  parallel?: number;
  /** A directory outside the data folder for comparing downloads with local files. */
  stagingDir?: string;
  /** syncfs(2) of the file system holding a folder: makes a restore's files durable at its end (default {@link syncFileSystem}). */
  syncfs?: (root: string) => Promise<void>;
}

/**
 * The file mirror (contract behaviour 3). Change-driven (inotify) with a timer as a
 * safety net; both run the same reconcile against a local manifest of what was
 * uploaded, so an idle pass stats files and makes no request, and a changed file costs
 * one upload. The remote is listed only at start and at most hourly.
 *
 * It never overwrites a remote object this vault did not write itself: a local file
 * that differs from such an object (a new host's freshly generated rsa_key.pem before
 * its first restore) is uploaded under a conflict key instead, and said once. Nothing
 * under the data folder is followed through a link, and a scan that could not read
 * everything deletes nothing.
 */
export class FileMirror {
  private manifest: Manifest;
  private running: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  /** Recursive watchers of the scope's folders (attachments/, sends/, …), by folder name. */
  private dirWatchers = new Map<string, { w: FSWatcher; ino: number }>();
  private debounce: NodeJS.Timeout | undefined;
  private lastList = 0;
  lastSync: Date | null = null;
  /** Passes that ended with errors (for /metrics). */
  failedPasses = 0;
  /** Since when a change seen by the watcher (or a failed pass) waits for a clean pass. */
  private pendingSince: number | null = null;
  lastReport: SyncReport | null = null;
  /** What the last scan could not read (path and errno): while any, no remote copy is deleted. */
  unreadable: ScanProblem[] = [];
  private readonly dataFolder: string;
  private readonly scope: Scope;
  readonly store: ObjectStore;
  private readonly manifestPath: string;
  private readonly pendingPath: string | undefined;
  private readonly parallel: number;
  private readonly stagingDir: string | undefined;
  private readonly syncfs: (root: string) => Promise<void>;
  /** Each problem (skipped link, read error, ignored key, conflict) is logged once, not every pass. */
  private readonly said = new Set<string>();
  /**
   * The remote as last listed (at start, then hourly), kept up to date with this
   * mirror's own writes: a new file whose key is not there is created at once (1
   * request, create-only where the store enforces it); only a key that is there costs
   * a HEAD. null: not listed yet, every unknown key is asked.
   */
  private remoteIndex: Map<string, RemoteObject> | null = null;

  constructor(opts: FileMirrorOptions) {
    this.dataFolder = opts.dataFolder;
    this.scope = opts.scope;
    this.store = opts.store;
    this.manifestPath = opts.manifestPath;
    this.pendingPath = opts.pendingPath;
    this.parallel = Math.max(1, opts.parallel ?? 8);
    this.stagingDir = opts.stagingDir;
    this.syncfs = opts.syncfs ?? syncFileSystem;
    const { manifest, discarded } = loadManifest(this.manifestPath, this.store.url);
    this.manifest = manifest;
    if (discarded) log.info({ manifest: this.manifestPath, destination: this.store.url }, `file mirror: the manifest was ${discarded}; comparing with ${this.store.url} from scratch`);
  }

  /** Logs a warning the first time `key` is seen (a problem that persists is said once). */
  private sayOnce(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.said.has(key)) return;
    this.said.add(key);
    log.warn(fields, msg);
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

  /** Why no pass may write now (the lease is not renewable or was lost); null = free to write. */
  fenced: string | null = null;
  private fenceCtl = new AbortController();

  /**
   * Stops every write to the remote at once: a pass in flight is aborted (its uploads and
   * deletions cancelled), and new passes are refused until unfence(). Restores (reads) go on.
   */
  fence(reason: string): void {
    if (this.fenced) return;
    this.fenced = reason;
    clearTimeout(this.debounce);
    this.fenceCtl.abort(new FencedError(reason));
  }

  unfence(): void {
    if (!this.fenced) return;
    this.fenced = null;
    this.fenceCtl = new AbortController();
    // What changed while fenced waits (counted as lag): one pass now catches it up.
    if (this.watcher) {
      clearTimeout(this.debounce);
      const onError = this.watchError;
      this.debounce = setTimeout(() => void this.syncInBackground('resume').catch((err: Error) => onError?.(err)), 1000);
    }
  }

  /** Background passes (changes, timer) are cancelled when the drain begins. */
  private background = new AbortController();

  /** A background pass: bounded, and aborted by stopWatching(). */
  syncInBackground(reason: string, timeoutMs = 600_000): Promise<SyncReport> {
    return this.sync(reason, AbortSignal.any([this.background.signal, AbortSignal.timeout(timeoutMs)]));
  }

  private async saveManifest(): Promise<void> {
    const file: ManifestFile = { destination: this.store.url, entries: Object.fromEntries(this.manifest) };
    await writePrivateFile(this.manifestPath, JSON.stringify(file) + '\n');
  }

  /** The remote listing, with keys the mirror must not touch left out (said once each). */
  private async listRemote(signal?: AbortSignal): Promise<RemoteObject[]> {
    const out: RemoteObject[] = [];
    for (const o of await this.store.list(signal)) {
      if (o.key.startsWith(CONFLICT_PREFIX)) continue;
      if (!isSafeKey(o.key)) {
        this.sayOnce(`key:${o.key}`, { key: o.key, remote: this.store.url }, `file mirror: ignoring the remote object ${JSON.stringify(o.key)} in ${this.store.url} (${o.key.endsWith('/') ? 'a folder marker' : 'not a clean relative path'})`);
        continue;
      }
      if (inScope(this.scope, o.key)) out.push(o);
    }
    return out;
  }

  /**
   * Lists the remote (at start, then at most hourly) and forgets manifest entries whose
   * object is missing or was rewritten by someone else, so the next pass compares those
   * files again (and uploads what is missing).
   */
  async checkRemote(signal?: AbortSignal): Promise<number> {
    return this.serial(async () => {
      const remote = new Map((await this.listRemote(signal)).map((o) => [o.key, o]));
      this.lastList = Date.now();
      this.remoteIndex = remote;
      let forgotten = 0;
      for (const [rel, m] of this.manifest) {
        const r = remote.get(rel);
        if (m.conflict) {
          // The foreign object is gone: the local file may now be uploaded as this vault's.
          if (!r) { this.manifest.delete(rel); forgotten++; }
          continue;
        }
        if (!r || (m.etag !== undefined ? r.etag !== m.etag : r.size !== m.size)) { this.manifest.delete(rel); forgotten++; }
      }
      if (forgotten) {
        log.warn({ files: forgotten, remote: this.store.url }, `file mirror: ${forgotten} files missing or rewritten on the remote; comparing them again`);
        await this.saveManifest();
      }
      return forgotten;
    }, signal);
  }

  /** The sha256 of a remote object: its stored metadata, its ETag when that is the MD5, or its bytes. */
  private async remoteSha(rel: string, head: { etag: string; sha256?: string }, local: { md5: string; sha256: string }, signal?: AbortSignal): Promise<string> {
    if (head.sha256) return head.sha256;
    if (/^[0-9a-f]{32}$/.test(head.etag) && head.etag === local.md5) return local.sha256;
    const r = await this.store.get(rel, signal);
    const h = createHash('sha256');
    await pipeline(r.body, h, ...(signal ? [{ signal }] : []));
    return h.digest('hex');
  }

  /** One reconcile pass. Errors of single files are reported, not thrown. */
  async sync(reason: string, outer?: AbortSignal): Promise<SyncReport> {
    if (this.fenced) throw new FencedError(this.fenced);
    const signal = outer ? AbortSignal.any([outer, this.fenceCtl.signal]) : this.fenceCtl.signal;
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
      const report: SyncReport = { reason, at: new Date().toISOString(), ms: 0, uploaded: 0, uploadedBytes: 0, deleted: 0, unchanged: 0, conflicts: 0, heldBack: [], deletionsCancelled: false, errors: [] };
      // Entries outside the scope (a SYNC_INCLUDE_* turned off) are no longer this mirror's business.
      for (const rel of this.manifest.keys()) if (!inScope(this.scope, rel)) this.manifest.delete(rel);
      const scan = await scanData(this.dataFolder, this.scope);
      this.unreadable = scan.errors;
      for (const s of scan.skipped) {
        this.sayOnce(`skip:${s.rel}`, { path: join(this.dataFolder, s.rel), kind: s.kind }, `file mirror: skipping ${join(this.dataFolder, s.rel)}: a ${s.kind}, not followed nor mirrored`);
      }
      for (const e of scan.errors) {
        this.sayOnce(`scan:${e.rel}:${e.code}`, { path: join(this.dataFolder, e.rel), errno: e.code }, `file mirror: cannot read ${join(this.dataFolder, e.rel)} (${e.code}); no remote copy is deleted until it reads again`);
        report.errors.push(`${e.rel || '.'}: cannot read (${e.code})`);
      }
      const plan = planSync(scan.files, this.manifest);
      report.unchanged = plan.unchanged;
      report.heldBack = plan.heldBack;
      let changed = false;
      for (const rel of plan.check) {
        signal?.throwIfAborted();
        try {
          if (await this.reconcileFile(rel, report, signal)) changed = true;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') continue; // removed meanwhile: next pass
          if (signal?.aborted) throw err;
          if (code === 'EUNSAFE') {
            this.sayOnce(`unsafe:${rel}`, { path: join(this.dataFolder, rel) }, `file mirror: ${(err as Error).message}`);
            continue;
          }
          report.errors.push(`${rel}: ${(err as Error).message}`);
        }
      }
      if (scan.errors.length) {
        report.deletionsCancelled = plan.remove.length > 0;
      } else {
        for (const rel of plan.remove) {
          signal?.throwIfAborted();
          try {
            await this.store.delete(rel, signal);
            this.remoteIndex?.delete(rel);
            this.manifest.delete(rel);
            report.deleted++;
            changed = true;
          } catch (err) {
            if (signal?.aborted) throw err;
            report.errors.push(`${rel}: ${(err as Error).message}`);
          }
        }
      }
      for (const rel of plan.forget) { this.manifest.delete(rel); changed = true; }
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
      const fileErrors = report.errors.length - scan.errors.length;
      if (report.uploaded || report.deleted || report.conflicts || fileErrors || report.deletionsCancelled) {
        log.info({ ...report, errors: report.errors.slice(0, 5) }, `file mirror (${reason}): ${report.uploaded} uploaded (${report.uploadedBytes} bytes), ${report.deleted} deleted${report.conflicts ? `, ${report.conflicts} kept under a conflict name` : ''}${report.deletionsCancelled ? `, ${plan.remove.length} deletions cancelled (the data folder could not be read completely)` : ''}, ${report.errors.length} errors`);
      }
      return report;
    }, signal);
  }

  /**
   * Uploads one new or changed file when its content differs from what this vault last
   * wrote. A file the manifest does not know (or knows as a conflict) is first compared
   * with the remote object under its key: the same content is adopted, other content is
   * never overwritten but kept beside it under a conflict key. Returns whether the
   * manifest changed.
   */
  private async reconcileFile(rel: string, report: SyncReport, signal?: AbortSignal): Promise<boolean> {
    const fh = await openReadNoFollow(this.dataFolder, rel);
    const streams: Readable[] = [];
    try {
      const st = await fh.stat();
      const h = await hashHandle(fh);
      const entry: ManifestEntry = { size: h.size, mtimeMs: Math.trunc(st.mtimeMs), sha256: h.sha256 };
      const known = this.manifest.get(rel);
      // Exactly the bytes that were hashed (a file that grows meanwhile is seen again by its mtime).
      const body = { open: (): Readable => {
        const s = h.size === 0 ? Readable.from([]) : fh.createReadStream({ autoClose: false, start: 0, end: h.size - 1 });
        streams.push(s);
        return s;
      }, size: h.size, sha256: h.sha256 };
      if (known && !known.conflict) {
        if (known.sha256 !== h.sha256) {
          const { etag } = await this.store.put(rel, body, signal);
          entry.etag = etag;
          this.remoteIndex?.set(rel, { key: rel, size: h.size, etag });
          report.uploaded++;
          report.uploadedBytes += h.size;
        } else if (known.etag) entry.etag = known.etag;
        this.manifest.set(rel, entry);
        return true;
      }
      if (known?.conflict && known.sha256 === h.sha256) {
        this.manifest.set(rel, { ...entry, conflict: known.conflict });
        return true;
      }
      const listed = this.remoteIndex ? this.remoteIndex.get(rel) ?? null : undefined;
      const sameAsListed = listed && /^[0-9a-f]{32}$/.test(listed.etag) && listed.etag === h.md5 && listed.size === h.size;
      const head = listed === null ? null : sameAsListed ? { size: listed.size, etag: listed.etag, sha256: h.sha256 } : await this.store.head(rel, signal);
      if (!head) {
        try {
          const { etag } = await this.store.put(rel, { ...body, createOnly: true }, signal);
          this.remoteIndex?.set(rel, { key: rel, size: h.size, etag });
          this.manifest.set(rel, { ...entry, etag });
          report.uploaded++;
          report.uploadedBytes += h.size;
          return true;
        } catch (err) {
          if (!(err instanceof PreconditionFailedError)) throw err;
          this.remoteIndex?.set(rel, { key: rel, size: -1, etag: '' }); // created meanwhile: ask and compare
          return this.reconcileFile(rel, report, signal);
        }
      }
      if ((await this.remoteSha(rel, head, h, signal)) === h.sha256) {
        this.manifest.set(rel, { ...entry, etag: head.etag }); // the same content: this vault's now
        return true;
      }
      const conflictKey = `${CONFLICT_PREFIX}${new Date().toISOString().replace(/[:.]/g, '-')}-${hostname()}/${rel}`;
      await this.store.put(conflictKey, body, signal);
      this.manifest.set(rel, { ...entry, conflict: conflictKey });
      report.conflicts++;
      report.uploadedBytes += h.size;
      log.warn({ file: rel, remote: this.store.url, keptAt: conflictKey }, `file mirror: ${join(this.dataFolder, rel)} differs from ${this.store.url}${rel}, which this vault did not write; not overwriting it: the local file is kept at ${this.store.url}${conflictKey} (vwstream-agent restore --force brings the remote one here; delete the remote object to keep the local one)`);
      return true;
    } finally {
      for (const s of streams) s.destroy(); // a stream left open on the handle would hold its close
      await fh.close();
    }
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
  private watchError: ((err: Error) => void) | undefined;

  /**
   * Change-driven passes: the data folder itself is watched flat (its root files, and its
   * scope folders appearing or going), and each scope folder that is a real directory
   * recursively. Not the whole folder recursively: the database's -wal, -shm and
   * Litestream's shadow files change with every write, and Node's recursive watcher stats
   * and re-lists a folder at each event of any file in it.
   */
  watch(onError: (err: Error) => void): void {
    this.watchError = onError;
    const changed = () => {
      this.pendingSince ??= Date.now();
      if (this.fenced) return; // counted as lag; uploaded once the mirror may write again
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => void this.syncInBackground('change').catch(onError), 1000);
    };
    try {
      this.watcher = watch(this.dataFolder, (_event, name) => {
        const n = name ? String(name) : '';
        if (this.scope.dirs.includes(n)) { this.watchDir(n, changed, onError); changed(); return; }
        if (!n || inScope(this.scope, n)) changed();
      });
      this.watcher.on('error', onError);
      for (const d of this.scope.dirs) this.watchDir(d, changed, onError);
    } catch (err) {
      onError(err as Error);
    }
  }

  /** (Re)arms the recursive watch of scope folder `dir` when it is a real directory (never through a link). */
  private watchDir(dir: string, changed: () => void, onError: (err: Error) => void): void {
    const path = join(this.dataFolder, dir);
    let st;
    try { st = lstatSync(path); } catch { st = undefined; }
    const cur = this.dirWatchers.get(dir);
    if (cur && st?.isDirectory() && st.ino === cur.ino) return;
    cur?.w.close();
    this.dirWatchers.delete(dir);
    if (!st?.isDirectory()) return; // absent, or a link or file: the pass skips it; the flat watch sees it come back
    try {
      const w = watch(path, { recursive: true }, (_event, name) => { if (!name || inScope(this.scope, `${dir}/${String(name)}`)) changed(); });
      w.on('error', () => { w.close(); if (this.dirWatchers.get(dir)?.w === w) this.dirWatchers.delete(dir); });
      // Swapped for a link between the check and the watch: not watched through it.
      if (lstatSync(path).ino !== st.ino) { w.close(); return; }
      this.dirWatchers.set(dir, { w, ino: st.ino });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') onError(err as Error);
    }
  }

  /** Stops change-driven syncing and cancels a background pass in flight (the drain's own pass follows). */
  stopWatching(): void {
    clearTimeout(this.debounce);
    this.watcher?.close();
    this.watcher = undefined;
    for (const { w } of this.dirWatchers.values()) w.close();
    this.dirWatchers.clear();
    this.background.abort(new Error('draining'));
    this.background = new AbortController();
  }

  /** A file restore that was interrupted (crash, stop, timeout) for this destination, or null. */
  pendingRestore(): PendingRestore | null {
    if (!this.pendingPath) return null;
    try {
      const p = JSON.parse(readFileSync(this.pendingPath, 'utf8')) as PendingRestore;
      return p.destination === this.store.url ? p : null;
    } catch {
      return null;
    }
  }

  /**
   * Brings the mirrored files back into the data folder (new host, restore, secondary
   * refresh) before Vaultwarden starts, owned by the service user (files 0600, folders
   * 0700), never through a link. Every remote file is compared by content: one that is
   * already here is kept, one that differs replaces the local file, which goes to
   * `asideDir` when given. Downloads run in parallel, are checked against the listed
   * size (and the stored sha256) and renamed into place only then. The restore is
   * recorded until it completes, so an interrupted one is finished at the next start.
   */
  /** `onRecorded`: called once the pending-restore record is on disk (before any download). */
  async restore(ids: Ids, asideDir?: string, onProgress?: (p: RestoreProgress) => void, signal?: AbortSignal, onRecorded?: () => void): Promise<RestoreResult> {
    return this.serial(async () => {
      const pending = this.pendingRestore();
      const aside = asideDir ?? pending?.asideDir;
      if (this.pendingPath) {
        await writePrivateFile(this.pendingPath, JSON.stringify({ destination: this.store.url, startedAt: pending?.startedAt ?? new Date().toISOString(), ...(aside ? { asideDir: aside } : {}) } satisfies PendingRestore) + '\n');
      }
      onRecorded?.();
      const remote = await this.listRemote(signal);
      this.lastList = Date.now();
      const progress: RestoreProgress = { done: 0, total: remote.length, bytes: 0, totalBytes: remote.reduce((n, o) => n + o.size, 0) };
      const result: RestoreResult = { files: 0, bytes: 0, unchanged: 0, replaced: 0, ignored: 0 };
      const failures: string[] = [];
      // The files are written without an fsync each; one flush makes them all durable before the manifest or the end of the restore says so.
      const batch = new SyncBatch(this.syncfs);
      let next = 0;
      const worker = async () => {
        while (next < remote.length) {
          signal?.throwIfAborted();
          const o = remote[next++]!;
          try {
            const r = await this.restoreOne(o, ids, aside, batch, signal);
            if (r === 'unchanged') result.unchanged++;
            else if (r === 'ignored') result.ignored++;
            else { result.files++; result.bytes += o.size; if (r === 'replaced') result.replaced++; }
          } catch (err) {
            if (signal?.aborted) throw err;
            failures.push(`${o.key}: ${(err as Error).message}`);
          }
          progress.done++;
          progress.bytes += o.size;
          onProgress?.({ ...progress });
        }
      };
      // Every worker has stopped (an abort stops them all) before anything is flushed or recorded.
      const ends = await Promise.allSettled(Array.from({ length: Math.min(this.parallel, Math.max(1, remote.length)) }, worker));
      let stopped = ends.find((e): e is PromiseRejectedResult => e.status === 'rejected')?.reason as unknown;
      try {
        // Durable before recorded: a manifest entry lets the next start skip a file unread.
        await batch.flush();
        if (result.files || result.unchanged) await this.saveManifest();
      } catch (err) {
        stopped ??= err;
      }
      if (stopped !== undefined) throw stopped;
      if (failures.length) {
        throw new Error(`file restore from ${this.store.url} incomplete: ${failures[0]}${failures.length > 1 ? ` (and ${failures.length - 1} more)` : ''}; it is completed at the next start`);
      }
      if (this.pendingPath) await rm(this.pendingPath, { force: true });
      return result;
    }, signal);
  }

  /** One remote file into the data folder: 'unchanged', 'ignored' (unsafe local path), 'fetched' or 'replaced'. */
  private async restoreOne(o: RemoteObject, ids: Ids, asideDir: string | undefined, batch: SyncBatch, signal?: AbortSignal): Promise<'unchanged' | 'ignored' | 'fetched' | 'replaced'> {
    const known = this.manifest.get(o.key);
    let local: { sha256: string; size: number; mtimeMs: number } | null = null;
    try {
      const fh = await openReadNoFollow(this.dataFolder, o.key);
      try {
        const st = await fh.stat();
        const mtimeMs = Math.trunc(st.mtimeMs);
        // Untouched since this vault wrote or fetched this very object version: nothing to read.
        if (known && !known.conflict && known.etag === o.etag && known.size === st.size && known.mtimeMs === mtimeMs) return 'unchanged';
        local = { ...(await hashHandle(fh)), mtimeMs };
      } finally {
        await fh.close();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EUNSAFE') {
        // A link or special file at (or above) this path: replaced only where the parent is a real directory.
        const reason = (err as { reason?: string }).reason;
        if (reason !== 'symlink' && reason !== 'not-a-file') throw err;
      } else if (code !== 'ENOENT') throw err;
    }
    if (local && known && !known.conflict && known.etag === o.etag && known.sha256 === local.sha256) {
      this.manifest.set(o.key, { ...known, size: local.size, mtimeMs: local.mtimeMs });
      return 'unchanged';
    }
    if (local) {
      // Compare before anything moves: a download outside the data folder, then the same bytes into place.
      const staging = join(this.stagingDir ?? join(dirname(this.manifestPath), 'tmp'), `mirror-${process.pid}-${Math.random().toString(36).slice(2)}`);
      await mkdir(dirname(staging), { recursive: true, mode: 0o700 });
      try {
        const r = await this.store.get(o.key, signal);
        const v = verified(o, r);
        const out = await open(staging, 'wx', 0o600);
        try {
          await out.writeFile(v.body, signal ? { signal } : {});
        } finally {
          r.body.destroy();
          await out.close();
        }
        if (v.sha256() === local.sha256) {
          this.manifest.set(o.key, { size: local.size, mtimeMs: local.mtimeMs, sha256: local.sha256, etag: r.etag });
          return 'unchanged';
        }
        if (asideDir) {
          const dest = join(asideDir, 'files', o.key);
          await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
          await moveOut(this.dataFolder, o.key, dest);
        }
        if (!(await this.writeInto(o.key, { fromPath: staging }, ids, batch))) return 'ignored';
        await this.recordFetched(o.key, v.sha256(), r.etag);
        return 'replaced';
      } finally {
        await rm(staging, { force: true });
      }
    }
    const r = await this.store.get(o.key, signal);
    const v = verified(o, r);
    let written: boolean;
    try {
      written = await this.writeInto(o.key, v.body, ids, batch);
    } finally {
      r.body.destroy(); // consumed, or left unread by a refusal
    }
    if (!written) return 'ignored';
    await this.recordFetched(o.key, v.sha256(), r.etag);
    return 'fetched';
  }

  /**
   * Writes one restored file through the safe path; a link or foreign directory on the
   * way is skipped with one warning (false), never written through.
   */
  private async writeInto(key: string, source: Readable | { fromPath: string }, ids: Ids, batch: SyncBatch): Promise<boolean> {
    try {
      await writeFileInto(this.dataFolder, key, source, ids, { mode: 0o600, batch });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EUNSAFE') throw err;
      this.sayOnce(`unsafe:${key}`, { path: join(this.dataFolder, key) }, `file restore: not restoring ${key}: ${(err as Error).message}`);
      return false;
    }
  }

  private async recordFetched(key: string, sha256: string, etag: string): Promise<void> {
    const fh = await openReadNoFollow(this.dataFolder, key);
    try {
      const st = await fh.stat();
      this.manifest.set(key, { size: st.size, mtimeMs: Math.trunc(st.mtimeMs), sha256, etag });
    } finally {
      await fh.close();
    }
  }
}

/**
 * A download, hashed on the way; at its end it fails (so nothing is renamed into place)
 * unless the bytes match the listed size and, when the store keeps one, the sha256.
 * Lazy: nothing is read before the writer pulls.
 */
function verified(o: RemoteObject, r: RemoteBody): { body: Readable; sha256: () => string } {
  let digest = '';
  async function* check(): AsyncGenerator<Buffer> {
    const h = createHash('sha256');
    let n = 0;
    for await (const chunk of r.body as AsyncIterable<Buffer>) {
      h.update(chunk);
      n += chunk.length;
      yield chunk;
    }
    digest = h.digest('hex');
    if (n !== o.size) throw new Error(`downloaded ${n} bytes, the listing says ${o.size}`);
    if (r.sha256 && r.sha256 !== digest) throw new Error(`content does not match its stored sha256 (${r.sha256.slice(0, 12)}…)`);
  }
  return { body: Readable.from(check()), sha256: () => digest };
}
