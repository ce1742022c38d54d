/**
 * `vwstream-agent vaultwarden install` and VAULTWARDEN_VERSION at start: a version from
 * the image into the version store (versions.ts), switched to atomically, the previous
 * one kept, older ones pruned. Nothing changes until the new version is complete and its
 * binary has said its version: a failure leaves what runs running.
 */
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError, errorMessage } from '../errors.ts';
import type { InstalledVersion, VersionStore } from './versions.ts';
import { parseVersionLine } from './upgrade.ts';

export interface PullProgressLike { layer: number; layers: number; layerBytes: number; layerTotal: number; totalBytes: number; total: number }
export interface PulledSummary { ref: string; digest: string; manifestDigest?: string; files: number; bytes: number; downloadedBytes: number; layers: number }
/** Pulls `image` (a full reference, tag or digest included) and unpacks vaultwarden + web-vault/ into destDir. */
export type PullFn = (image: string, destDir: string, opts: { signal?: AbortSignal; onProgress?: (p: PullProgressLike) => void }) => Promise<PulledSummary>;
/** `<bin> --version`'s first line (run as the service user). */
export type ProbeFn = (bin: string) => Promise<string>;

export interface InstallRequest {
  /** VAULTWARDEN_IMAGE or --image, as written. */
  image: string;
  /** VAULTWARDEN_VERSION or --version: the tag to pull (with tagSuffix), checked against the binary. */
  version?: string;
  /** VAULTWARDEN_TAG_SUFFIX: the tag is `<version or latest><suffix>` when the image names none. */
  tagSuffix?: string;
  signal?: AbortSignal;
  onProgress?: (p: PullProgressLike) => void;
  /** false: install only, keep `current` (a rollback fetching the version it goes back to). */
  switch?: boolean;
}

export interface InstallResult {
  installed: InstalledVersion;
  /** The version `current` named before (now `previous`), if it changed. */
  previous: string | undefined;
  downloaded: boolean;
  switched: boolean;
  pruned: string[];
  pullMs: number;
  ms: number;
  pulled?: PulledSummary;
}

/**
 * The reference to pull: the image with `<version><suffix>` as its tag (Vaultwarden's
 * tags: 1.32.7, 1.32.7-alpine, latest, latest-alpine); `latest<suffix>` when neither the
 * image nor a version names one.
 */
export function imageToPull(image: string, version?: string, suffix = ''): string {
  const last = image.slice(image.lastIndexOf('/') + 1);
  const hasTag = last.includes(':') || image.includes('@');
  if (version) {
    if (hasTag) throw new AgentError(`${image} already names a ${image.includes('@') ? 'digest' : 'tag'}; give the image without one together with --version ${version}`);
    return `${image}:${version}${suffix}`;
  }
  return hasTag ? image : `${image}:latest${suffix}`;
}

export interface InstallDeps {
  store: VersionStore;
  pull: PullFn;
  probe: ProbeFn;
  /** Versions in use that pruning must keep (what runs now, what last ran on the database). */
  inUse?: () => (string | undefined)[];
  now?: () => Date;
}

export async function installVaultwarden(req: InstallRequest, deps: InstallDeps): Promise<InstallResult> {
  const { store } = deps;
  const started = Date.now();
  const release = store.lock();
  try {
    const before = store.current()?.version;
    const doSwitch = req.switch !== false;
    const switchTo = async (v: string) => (doSwitch ? store.switchTo(v) : { previous: before, changed: false });
    if (req.version && store.get(req.version)) {
      const sw = await switchTo(req.version);
      const pruned = doSwitch ? await store.prune(deps.inUse?.() ?? []) : [];
      return { installed: store.get(req.version)!, previous: sw.changed ? before : undefined, downloaded: false, switched: sw.changed, pruned, pullMs: 0, ms: Date.now() - started };
    }
    const ref = imageToPull(req.image, req.version, req.tagSuffix);
    const staging = await store.stage();
    try {
      await chmod(staging, 0o755); // the service user runs --version from here
      const t0 = Date.now();
      const pulled = await deps.pull(ref, staging, { ...(req.signal ? { signal: req.signal } : {}), ...(req.onProgress ? { onProgress: req.onProgress } : {}) });
      const pullMs = Date.now() - t0;
      const line = await deps.probe(join(staging, 'vaultwarden'));
      const version = parseVersionLine(line);
      if (!version) throw new AgentError(`${ref}: its /vaultwarden --version printed ${JSON.stringify(line.slice(0, 120))}, not "Vaultwarden x.y.z"; nothing was changed`);
      if (req.version && version !== req.version) {
        throw new AgentError(`${ref}: its binary is Vaultwarden ${version}, not ${req.version}; nothing was changed`);
      }
      const existing = store.get(version);
      if (existing && existing.digest === pulled.digest) {
        await rm(staging, { recursive: true, force: true });
        const sw = await switchTo(version);
        const pruned = doSwitch ? await store.prune(deps.inUse?.() ?? []) : [];
        return { installed: existing, previous: sw.changed ? before : undefined, downloaded: true, switched: sw.changed, pruned, pullMs, ms: Date.now() - started, pulled };
      }
      const installed = await store.commit(staging, {
        version, image: pulled.ref, digest: pulled.digest, ...(pulled.manifestDigest ? { manifestDigest: pulled.manifestDigest } : {}),
        installedAt: (deps.now?.() ?? new Date()).toISOString(), versionLine: line, files: pulled.files, bytes: pulled.bytes,
      });
      const sw = await switchTo(version);
      const pruned = doSwitch ? await store.prune(deps.inUse?.() ?? []) : [];
      return { installed, previous: sw.changed ? before : undefined, downloaded: true, switched: sw.changed, pruned, pullMs, ms: Date.now() - started, pulled };
    } catch (err) {
      await rm(staging, { recursive: true, force: true }).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new AgentError(`no space left on device under ${store.root} while installing ${ref}; nothing was changed`, { cause: err });
      }
      if (err instanceof AgentError) throw err;
      throw new AgentError(`installing ${ref} failed: ${errorMessage(err)}; nothing was changed`, { cause: err });
    }
  } finally {
    release();
  }
}
