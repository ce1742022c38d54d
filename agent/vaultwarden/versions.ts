/**
 * The Vaultwarden versions the agent installed from an image, under
 * /var/lib/vwstream/vaultwarden (FHS: variable state of the agent, not an operator's
 * /usr or /opt):
 *
 *   <version>/vaultwarden       the binary (0755 root)
 *   <version>/web-vault/        the web vault of the same image
 *   <version>/image.json        where it came from (image, digest) and when
 *   current -> <version>        what the unit runs (a relative symbolic link)
 *   previous -> <version>       what ran before: kept for rollback
 *
 * A link is switched by renaming a new link over it (atomic: a reader sees the old or the
 * new target, never none). A version directory appears complete or not at all: it is
 * unpacked into `.staging-*` beside it and renamed into place after its files are synced.
 * Only `current` and `previous` are kept; older versions are pruned.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError } from '../errors.ts';
import { fsyncDir, fsyncFile, mkdirDurable } from '../fs.ts';
import { PATHS } from '../paths.ts';

export interface InstalledVersion {
  version: string;
  /** The image reference it was pulled as (formatted), e.g. docker.io/vaultwarden/server:1.32.7. */
  image: string;
  /** The digest to pin it by: the index's when pulled through one, else the manifest's. */
  digest: string;
  manifestDigest?: string;
  installedAt: string;
  /** What `<bin> --version` printed. */
  versionLine?: string;
  files?: number;
  bytes?: number;
  /** Filled in by the store: where it is. */
  dir: string;
  bin: string;
  webVault: string;
}

const VERSION_NAME = /^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$/;
const RESERVED = new Set(['current', 'previous']);

/** A version string usable as a directory name (no slash, no dot-dot, not a link's name). */
export function validVersionName(v: string): boolean {
  return VERSION_NAME.test(v) && !RESERVED.has(v) && !v.includes('..');
}

export class VersionStore {
  readonly root: string;
  constructor(root: string = PATHS.vaultwardenDir) {
    this.root = root;
  }

  /** A complete installed version, or undefined (missing, half-written, or not ours). */
  get(version: string): InstalledVersion | undefined {
    if (!validVersionName(version)) return undefined;
    const dir = join(this.root, version);
    try {
      if (!lstatSync(dir).isDirectory()) return undefined;
      const meta = JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8')) as Omit<InstalledVersion, 'dir' | 'bin' | 'webVault'>;
      if (meta.version !== version) return undefined;
      const bin = join(dir, 'vaultwarden');
      if (!lstatSync(bin).isFile()) return undefined;
      return { ...meta, dir, bin, webVault: join(dir, 'web-vault') };
    } catch {
      return undefined;
    }
  }

  /** Every complete version, newest install first. */
  list(): InstalledVersion[] {
    let names: string[];
    try { names = readdirSync(this.root); } catch { return []; }
    return names.filter(validVersionName).map((n) => this.get(n)).filter((v): v is InstalledVersion => v !== undefined)
      .sort((a, b) => b.installedAt.localeCompare(a.installedAt));
  }

  private link(name: 'current' | 'previous'): InstalledVersion | undefined {
    try {
      const target = readlinkSync(join(this.root, name));
      return target.includes('/') ? undefined : this.get(target);
    } catch {
      return undefined;
    }
  }

  current(): InstalledVersion | undefined { return this.link('current'); }
  previous(): InstalledVersion | undefined { return this.link('previous'); }

  /** A new empty staging directory on the same filesystem (for an atomic rename into place). */
  async stage(): Promise<string> {
    await mkdirDurable(this.root, 0o755);
    return mkdtemp(join(this.root, '.staging-'));
  }

  /**
   * Puts an unpacked staging directory in place as `version`, with its image.json. A
   * complete directory of the same version is replaced only when no link names it (the
   * one that runs is never changed under it).
   */
  async commit(staging: string, meta: Omit<InstalledVersion, 'dir' | 'bin' | 'webVault'>): Promise<InstalledVersion> {
    if (!validVersionName(meta.version)) throw new AgentError(`the image's Vaultwarden version "${meta.version}" cannot name a directory`);
    const metaPath = join(staging, 'image.json');
    await writeFile(metaPath, JSON.stringify(meta, null, 2) + '\n', { mode: 0o644 });
    await fsyncFile(metaPath);
    await fsyncDir(staging);
    const dir = join(this.root, meta.version);
    if (existsSync(dir)) {
      const linked = [this.current(), this.previous()].some((v) => v?.version === meta.version);
      if (linked && this.get(meta.version)) throw new AgentError(`Vaultwarden ${meta.version} is already installed at ${dir} and in use`);
      await rm(dir, { recursive: true, force: true });
    }
    await rename(staging, dir);
    await fsyncDir(this.root);
    return this.get(meta.version)!;
  }

  /** Points `name` at `version` atomically (a new link renamed over the old one). */
  private async setLink(name: 'current' | 'previous', version: string | undefined): Promise<void> {
    const path = join(this.root, name);
    if (version === undefined) {
      await rm(path, { force: true });
    } else {
      const tmp = join(this.root, `.${name}-${process.pid}-${Date.now()}`);
      await rm(tmp, { force: true });
      await symlink(version, tmp);
      await rename(tmp, path);
    }
    await fsyncDir(this.root);
  }

  /**
   * Makes `version` the one that runs. The one that ran before becomes `previous` (for a
   * rollback); switching back to `previous` swaps the two.
   */
  async switchTo(version: string): Promise<{ previous: string | undefined; changed: boolean }> {
    if (!this.get(version)) throw new AgentError(`Vaultwarden ${version} is not installed under ${this.root}`);
    const cur = this.current()?.version;
    if (cur === version) return { previous: this.previous()?.version, changed: false };
    // previous first: a crash in between leaves current as it was and previous pointing at it.
    if (cur !== undefined) await this.setLink('previous', cur);
    await this.setLink('current', version);
    return { previous: cur, changed: true };
  }

  /**
   * Removes every version but `current`, `previous` and those `inUse` names (the one that
   * runs now may be neither after two installs without a restart), and leftovers of
   * interrupted installs.
   */
  async prune(inUse: readonly (string | undefined)[] = []): Promise<string[]> {
    const keep = new Set([this.current()?.version, this.previous()?.version, ...inUse].filter(Boolean));
    const removed: string[] = [];
    let names: string[];
    try { names = readdirSync(this.root); } catch { return []; }
    for (const n of names) {
      const stale = n.startsWith('.staging-') || /^\.(current|previous)-\d+-\d+$/.test(n);
      if (!stale && (!validVersionName(n) || keep.has(n))) continue;
      if (!stale && !this.get(n)) continue; // not a version directory of ours: left alone
      await rm(join(this.root, n), { recursive: true, force: true });
      if (!stale) removed.push(n);
    }
    if (removed.length) await fsyncDir(this.root);
    return removed;
  }

  /**
   * One install, switch or prune at a time: an exclusive SQLite transaction on
   * `.install.lock`, i.e. a kernel lock that dies with its holder (no stale pid files
   * after a crash or a reboot). Throws at once when another process holds it.
   */
  lock(): () => void {
    mkdirSync(this.root, { recursive: true, mode: 0o755 });
    const path = join(this.root, '.install.lock');
    const db = new DatabaseSync(path);
    try {
      db.exec('PRAGMA busy_timeout = 0');
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      db.close();
      throw new AgentError(`another Vaultwarden install or rollback is running (${path} is locked: ${(err as Error).message})`, { hint: 'wait for it to finish, then run this again' });
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      try { db.exec('ROLLBACK'); } finally { db.close(); }
    };
  }
}
