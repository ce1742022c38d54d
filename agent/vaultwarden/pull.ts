import { readdir } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { AgentError, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { ImageTree } from './extract.ts';
import { formatImageRef, type ImageRef } from './image-ref.ts';
import { MEDIA, RegistryClient, type Credentials, type Descriptor } from './registry.ts';

export interface PulledImage {
  /** The reference as asked for, formatted (docker.io/vaultwarden/server:1.32.7). */
  ref: string;
  registry: string;
  repository: string;
  tag?: string;
  /** The index digest when pulled through an index (the repo digest `docker pull` shows), else the manifest digest. */
  digest: string;
  manifestDigest: string;
  configDigest: string;
  created?: string;
  labels: Record<string, string>;
  layers: number;
  downloadedBytes: number;
  /** Regular files extracted, and their bytes. */
  files: number;
  bytes: number;
}

export interface PullProgress { layer: number; layers: number; layerBytes: number; layerTotal: number; totalBytes: number; total: number }

export interface PullOptions {
  auth?: Credentials;
  signal?: AbortSignal;
  /** Called at most every ~250 ms while layers download, and once when the last one is done. */
  onProgress?: (p: PullProgress) => void;
  /** Request timeouts (tests). */
  timeoutMs?: number;
  idleTimeoutMs?: number;
}

const PROGRESS_MS = 250;
const GZIP_LAYERS = new Set<string>([MEDIA.OCI_LAYER_GZIP, MEDIA.DOCKER_LAYER_GZIP]);

/**
 * Downloads the linux/amd64 image `ref` and extracts `/vaultwarden` and `/web-vault/`
 * into `destDir`, which must exist and be empty (a staging folder the caller then renames
 * into place). Layers stream through sha256 → gunzip → tar; a digest that differs fails
 * the pull. On any error `destDir` may hold a partial tree: the caller removes it.
 */
export async function pullVaultwarden(ref: ImageRef, destDir: string, opts: PullOptions = {}): Promise<PulledImage> {
  let present: string[];
  try {
    present = await readdir(destDir);
  } catch (err) {
    throw new AgentError(`cannot use ${destDir} for the image: ${errorMessage(err)}`);
  }
  if (present.length) throw new AgentError(`${destDir} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', …' : ''}); the image is extracted into an empty folder`);
  const shown = formatImageRef(ref);
  const client = new RegistryClient(ref.registry, ref.repository, {
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
  });
  const started = Date.now();
  const resolved = await client.resolve(ref);
  const { manifest } = resolved;
  for (const [i, l] of manifest.layers.entries()) {
    if (!GZIP_LAYERS.has(l.mediaType)) {
      throw new AgentError(`unsupported layer media type ${JSON.stringify(l.mediaType)} in layer ${i + 1} of ${manifest.layers.length} of ${shown} (only gzip'd tar layers are supported)`);
    }
  }
  const config = await client.config(manifest.config);
  if ((config.os && config.os !== 'linux') || (config.architecture && config.architecture !== 'amd64')) {
    throw new AgentError(`no linux/amd64 image in ${shown} (platforms: ${config.os ?? '?'}/${config.architecture ?? '?'})`);
  }
  const tree = new ImageTree(destDir);
  const total = manifest.layers.reduce((n, l) => n + l.size, 0);
  let totalBytes = 0;
  let last = 0;
  const report = (p: PullProgress, force: boolean): void => {
    if (!opts.onProgress) return;
    const now = Date.now();
    if (!force && now - last < PROGRESS_MS) return;
    last = now;
    opts.onProgress(p);
  };
  for (const [i, layer] of manifest.layers.entries()) {
    const name = `layer ${i + 1} of ${manifest.layers.length} (${layer.digest})`;
    let layerBytes = 0;
    await applyLayer(client, tree, layer, name, (n) => {
      layerBytes += n;
      totalBytes += n;
      report({ layer: i + 1, layers: manifest.layers.length, layerBytes, layerTotal: layer.size, totalBytes, total }, false);
    });
  }
  report({ layer: manifest.layers.length, layers: manifest.layers.length, layerBytes: manifest.layers.at(-1)?.size ?? 0, layerTotal: manifest.layers.at(-1)?.size ?? 0, totalBytes, total }, true);
  const { files, bytes, skippedLinks } = await tree.finish();
  const out: PulledImage = {
    ref: shown,
    registry: ref.registry,
    repository: ref.repository,
    digest: resolved.digest,
    manifestDigest: resolved.manifestDigest,
    configDigest: manifest.config.digest,
    labels: config.labels,
    layers: manifest.layers.length,
    downloadedBytes: totalBytes,
    files,
    bytes,
  };
  if (ref.tag !== undefined) out.tag = ref.tag;
  if (config.created !== undefined) out.created = config.created;
  log.debug({ image: shown, digest: out.digest, layers: out.layers, downloadedBytes: totalBytes, files, bytes, skippedLinks, ms: Date.now() - started },
    `image: pulled ${shown} (${out.digest}): ${out.layers} layers, ${totalBytes} bytes downloaded, ${files} files extracted`);
  return out;
}

/**
 * One layer: the blob's bytes are hashed as they come and fed to gunzip → tar. When the
 * extraction fails first (a corrupt blob usually breaks gzip before its end), the rest of
 * the blob is still read so that a wrong digest is reported as what it is.
 */
async function applyLayer(client: RegistryClient, tree: ImageTree, layer: Descriptor, name: string, onBytes: (n: number) => void): Promise<void> {
  const input = new PassThrough();
  let broken: unknown;
  const done = pipeline(input, createGunzip(), tree.layer(name)).catch((err: unknown) => {
    broken ??= err;
  });
  try {
    for await (const chunk of client.blob(layer, name)) {
      onBytes(chunk.length);
      // Refused or out of space: no point reading on. A gzip/tar error: read on, hashing.
      if (tree.failure || broken instanceof AgentError) break;
      if (broken !== undefined || input.destroyed) continue;
      if (!input.write(chunk)) {
        await new Promise<void>((resolve) => {
          const go = (): void => { input.off('drain', go); input.off('close', go); resolve(); };
          input.on('drain', go);
          input.on('close', go);
        });
      }
    }
  } catch (err) {
    input.destroy();
    await done;
    await tree.idle();
    throw err;
  }
  input.end();
  await done;
  await tree.idle();
  if (tree.failure) throw tree.failure;
  if (broken !== undefined) {
    if (broken instanceof AgentError) throw broken;
    throw new AgentError(`${name} is not a valid gzip'd tar: ${errorMessage(broken)}`, { cause: broken });
  }
}
