import { createHash } from 'node:crypto';
import { AgentError } from '../errors.ts';
import { log } from '../log.ts';
import { formatImageRef, isLoopbackRegistry, registryBaseUrl, type ImageRef } from './image-ref.ts';

/**
 * A pull-only client of the Registry HTTP API v2 (Docker Hub, GHCR, distribution, …) on
 * the global fetch. Redirects are followed here, not by fetch, so that the Authorization
 * header only ever goes to the registry's own origin (Docker Hub sends blobs to a CDN on
 * another host, with the credentials in the URL). Every byte received is hashed and
 * checked against the digest that named it.
 */

export const MEDIA = {
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  DOCKER_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  OCI_LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  DOCKER_LAYER_GZIP: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

const ACCEPT = [MEDIA.OCI_INDEX, MEDIA.DOCKER_LIST, MEDIA.OCI_MANIFEST, MEDIA.DOCKER_MANIFEST].join(', ');
const MAX_MANIFEST_BYTES = 4 << 20;
const MAX_CONFIG_BYTES = 8 << 20;
const MAX_REDIRECTS = 5;

export interface Credentials { username: string; password: string }

export interface Platform { os: string; architecture: string; variant?: string }

export interface Descriptor { mediaType: string; digest: string; size: number; platform?: Platform; annotations?: Record<string, string> }

export interface RegistryOptions {
  auth?: Credentials;
  /** Aborts every request of this client. */
  signal?: AbortSignal;
  /** Until the response headers arrive (default 30 s). */
  timeoutMs?: number;
  /** Longest pause while a body streams in (default 60 s). */
  idleTimeoutMs?: number;
}

export interface ImageManifest { mediaType: string; config: Descriptor; layers: Descriptor[] }

export interface ResolvedImage {
  /** The index digest when the tag named an index (what `docker pull` shows), else the manifest's. */
  digest: string;
  manifestDigest: string;
  /** Set when the reference named an index or manifest list. */
  indexDigest?: string;
  manifest: ImageManifest;
}

export interface ImageConfig { created?: string; labels: Record<string, string>; os?: string; architecture?: string }

class Timeout extends Error {
  constructor(what: string, ms: number) {
    super(`timed out after ${ms / 1000} s ${what}`);
  }
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

function baseType(contentType: string | null): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Parses `Bearer realm="…",service="…",scope="…"` (or Basic) into a scheme and its parameters. */
export function parseChallenge(header: string | null): { scheme: string; params: Record<string, string> } | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!)) !== null) {
    if (p[0] === '') break;
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/** The cause of a failed fetch as one word: ECONNREFUSED, ENOTFOUND, a TLS code, or its message. */
function causeOf(err: unknown): string {
  const c = (err as { cause?: unknown }).cause ?? err;
  const code = (c as { code?: unknown }).code ?? (c as { errors?: { code?: unknown }[] }).errors?.[0]?.code;
  if (typeof code === 'string') return code;
  return c instanceof Error ? c.message : String(c);
}

function registryMessage(body: string): { code?: string; message?: string } {
  try {
    const j = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    const e = j.errors?.[0];
    if (e) return { code: typeof e.code === 'string' ? e.code : undefined, message: typeof e.message === 'string' ? e.message : undefined };
  } catch { /* not the registry's JSON */ }
  return {};
}

interface Exchange {
  res: Response;
  url: URL;
  /** Reads the body in chunks, each read bounded by the idle timeout. */
  chunks(): AsyncGenerator<Buffer>;
  /** Drops the body and the timers. */
  close(): Promise<void>;
}

export class RegistryClient {
  readonly registry: string;
  readonly repository: string;
  readonly base: URL;
  readonly tokenCount: { requests: number };
  private readonly auth: Credentials | undefined;
  private readonly signal: AbortSignal | undefined;
  private readonly timeoutMs: number;
  private readonly idleMs: number;
  private token: string | undefined;
  private basic = false;

  constructor(registry: string, repository: string, opts: RegistryOptions = {}) {
    this.registry = registry;
    this.repository = repository;
    this.base = new URL(registryBaseUrl(registry));
    this.auth = opts.auth;
    this.signal = opts.signal;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.idleMs = opts.idleTimeoutMs ?? 60_000;
    this.tokenCount = { requests: 0 };
  }

  private get display(): string {
    return formatImageRef({ registry: this.registry, repository: this.repository });
  }

  /** One request (redirects followed by hand), bounded by the timeouts and the caller's signal. */
  private async exchange(url: URL, headers: Record<string, string>, what: string): Promise<Exchange> {
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(this.signal!.reason);
    if (this.signal) {
      this.signal.throwIfAborted();
      this.signal.addEventListener('abort', onAbort, { once: true });
    }
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number, during: string): void => {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(new Timeout(during, ms)), ms);
    };
    const release = (): void => {
      clearTimeout(timer);
      this.signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: unknown, host: string): Error => {
      release();
      if (this.signal?.aborted) return this.signal.reason instanceof Error ? this.signal.reason : new Error(String(this.signal.reason));
      if (ac.signal.reason instanceof Timeout) return new AgentError(`registry ${host} is unreachable: ${ac.signal.reason.message} (${what})`);
      if (err instanceof AgentError) return err;
      return new AgentError(`registry ${host} is unreachable: ${causeOf(err)} (${what})`, { cause: err });
    };
    let current = url;
    for (let hop = 0; ; hop++) {
      const sameOrigin = current.origin === url.origin;
      const h: Record<string, string> = { ...headers };
      // Never hand the registry's credentials to another host (a CDN, a redirect target).
      if (!sameOrigin) delete h.authorization;
      arm(this.timeoutMs, `waiting for ${current.host}`);
      let res: Response;
      try {
        res = await fetch(current, { headers: h, redirect: 'manual', signal: ac.signal });
      } catch (err) {
        throw fail(err, current.host);
      }
      clearTimeout(timer);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel().catch(() => undefined);
        if (hop >= MAX_REDIRECTS) throw fail(new AgentError(`registry ${url.host}: more than ${MAX_REDIRECTS} redirects (${what})`), current.host);
        const next = new URL(location, current);
        if (next.protocol !== 'https:' && next.protocol !== 'http:') throw fail(new AgentError(`registry ${url.host} redirected to ${next.protocol} (${what})`), current.host);
        if (current.protocol === 'https:' && next.protocol === 'http:') throw fail(new AgentError(`registry ${url.host} redirected from https to plain http ${next.host} (${what}); refusing`), current.host);
        current = next;
        continue;
      }
      const idleMs = this.idleMs;
      const host = current.host;
      return {
        res,
        url: current,
        chunks: async function* () {
          if (!res.body) { release(); return; }
          const reader = res.body.getReader();
          try {
            for (;;) {
              arm(idleMs, `waiting for data from ${host}`);
              let r: Awaited<ReturnType<typeof reader.read>>;
              try {
                r = await reader.read();
              } catch (err) {
                throw fail(err, host);
              }
              clearTimeout(timer);
              if (r.done) break;
              yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
            }
          } finally {
            release();
            reader.releaseLock();
            if (!ac.signal.aborted) await res.body.cancel().catch(() => undefined);
          }
        },
        close: async () => {
          release();
          await res.body?.cancel().catch(() => undefined);
        },
      };
    }
  }

  private async readAll(ex: Exchange, max: number, what: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of ex.chunks()) {
      n += c.length;
      if (n > max) throw new AgentError(`registry ${ex.url.host}: ${what} is larger than ${max} bytes; refusing it`);
      parts.push(c);
    }
    return Buffer.concat(parts);
  }

  private async fetchToken(params: Record<string, string>, what: string): Promise<string> {
    const realm = params.realm;
    if (!realm) throw new AgentError(`registry ${this.base.host} asked for a bearer token without naming its realm (${what})`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new AgentError(`registry ${this.base.host} named a token realm that is not a URL: ${JSON.stringify(realm)}`);
    }
    // Credentials (and tokens) travel over HTTPS only, unless the realm is on this host's loopback.
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackRegistry(url.host))) {
      throw new AgentError(`registry ${this.base.host} named a token realm over ${url.protocol.replace(':', '')} (${url.origin}): refused, ${this.auth ? 'the registry password' : 'a token'} would travel unencrypted`);
    }
    if (params.service) url.searchParams.set('service', params.service);
    url.searchParams.set('scope', `repository:${this.repository}:pull`);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.auth) headers.authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`;
    this.tokenCount.requests++;
    const ex = await this.exchange(url, headers, `getting a pull token for ${this.repository}`);
    const body = (await this.readAll(ex, 1 << 20, 'the token answer')).toString('utf8');
    if (ex.res.status === 401 || ex.res.status === 403) {
      throw new AgentError(`access denied: the token service ${url.host} refused ${this.auth ? `the credentials of ${this.auth.username}` : 'an anonymous token'} for ${this.display} (HTTP ${ex.res.status})`, {
        hint: this.auth ? 'check the registry user name and password (or token)' : 'this registry needs credentials',
      });
    }
    if (ex.res.status !== 200) throw new AgentError(`the token service ${url.host} answered HTTP ${ex.res.status} for ${this.display}${detail(body)}`);
    let token: unknown;
    try {
      const j = JSON.parse(body) as { token?: unknown; access_token?: unknown };
      token = j.token ?? j.access_token;
    } catch { /* handled below */ }
    if (typeof token !== 'string' || token === '') throw new AgentError(`the token service ${url.host} answered without a token for ${this.display}`);
    return token;
  }

  /**
   * GET `path` on the registry with the authentication it asks for: a bearer token
   * (fetched once and kept; fetched again once when refused) or HTTP basic.
   */
  private async get(path: string, accept: string, what: string): Promise<Exchange> {
    const url = new URL(path, this.base);
    let fresh = false;
    for (;;) {
      const headers: Record<string, string> = { accept };
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      else if (this.basic && this.auth) headers.authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`;
      const ex = await this.exchange(url, headers, what);
      if (ex.res.status !== 401 || ex.url.origin !== this.base.origin) return ex;
      const challenge = parseChallenge(ex.res.headers.get('www-authenticate'));
      const body = (await this.readAll(ex, 1 << 20, 'an error answer').catch(() => Buffer.alloc(0))).toString('utf8');
      if (challenge?.scheme === 'bearer') {
        if (fresh) {
          throw new AgentError(`access denied to ${this.display} on ${this.base.host}${this.auth ? ` for ${this.auth.username}` : ' (anonymous)'}${detail(body)}`, {
            hint: 'check the repository name; a private repository needs credentials',
          });
        }
        this.token = await this.fetchToken(challenge.params, what);
        fresh = true;
        continue;
      }
      if (challenge?.scheme === 'basic') {
        if (!this.auth) throw new AgentError(`registry ${this.base.host} requires credentials (${what})`, { hint: 'give the registry user name and password' });
        if (this.basic) throw new AgentError(`access denied: registry ${this.base.host} refused the credentials of ${this.auth.username}${detail(body)}`);
        this.basic = true;
        continue;
      }
      throw new AgentError(`registry ${this.base.host} answered 401 without a usable challenge (${what})${detail(body)}`);
    }
  }

  /** Turns a non-200 answer into its one-line error. */
  private async failure(ex: Exchange, what: string, notFound: string): Promise<AgentError> {
    const body = (await this.readAll(ex, 1 << 20, 'an error answer').catch(() => Buffer.alloc(0))).toString('utf8');
    const { code, message } = registryMessage(body);
    const status = ex.res.status;
    const tail = message ? `: ${message}` : '';
    if (status === 404 || code === 'MANIFEST_UNKNOWN' || code === 'NAME_UNKNOWN' || code === 'BLOB_UNKNOWN') {
      return new AgentError(`${notFound} (HTTP ${status}${code ? ` ${code}` : ''})`, { hint: 'check the image name and tag' });
    }
    if (status === 403 || code === 'DENIED' || code === 'UNAUTHORIZED') return new AgentError(`access denied to ${this.display} on ${ex.url.host} (HTTP ${status})${tail}`);
    if (status === 429) return new AgentError(`registry ${ex.url.host} refused ${what}: too many requests (HTTP 429)${tail}`, { hint: 'Docker Hub limits anonymous pulls; wait, or give credentials' });
    return new AgentError(`registry ${ex.url.host} answered HTTP ${status} to ${what}${tail}`);
  }

  /** Fetches a manifest or index by tag or digest; the digest is computed from its bytes. */
  async getManifest(reference: string): Promise<{ bytes: Buffer; digest: string; mediaType: string; json: Record<string, unknown> }> {
    const shown = formatImageRef({ registry: this.registry, repository: this.repository, ...(reference.startsWith('sha256:') ? { digest: reference } : { tag: reference }) });
    const what = `GET manifest ${shown}`;
    const ex = await this.get(`/v2/${this.repository}/manifests/${reference}`, ACCEPT, what);
    if (ex.res.status !== 200) {
      throw await this.failure(ex, what, reference.startsWith('sha256:') ? `manifest ${shown} not found` : `image ${shown} not found: no such tag or repository`);
    }
    const bytes = await this.readAll(ex, MAX_MANIFEST_BYTES, `the manifest of ${shown}`);
    const digest = sha256(bytes);
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new AgentError(`digest mismatch in manifest ${shown}: expected ${reference}, got ${digest}`);
    }
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
      if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('not an object');
    } catch (err) {
      throw new AgentError(`the manifest of ${shown} is not JSON: ${(err as Error).message}`);
    }
    const mediaType = typeof json.mediaType === 'string' ? json.mediaType : baseType(ex.res.headers.get('content-type'));
    return { bytes, digest, mediaType, json };
  }

  /**
   * Resolves a reference to the linux/amd64 image manifest: through an index or manifest
   * list when the reference names one (attestation entries `unknown/unknown` ignored).
   */
  async resolve(ref: ImageRef): Promise<ResolvedImage> {
    const shown = formatImageRef(ref);
    const top = await this.getManifest(ref.digest ?? ref.tag ?? 'latest');
    if (top.mediaType === MEDIA.OCI_INDEX || top.mediaType === MEDIA.DOCKER_LIST || (Array.isArray(top.json.manifests) && !top.json.layers)) {
      const entries = parseDescriptors(top.json.manifests, `the index of ${shown}`);
      const usable = entries.filter((d) => !(d.platform?.os === 'unknown' && d.platform.architecture === 'unknown')
        && d.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest');
      const pick = usable.find((d) => d.platform?.os === 'linux' && d.platform.architecture === 'amd64');
      if (!pick) {
        const present = usable.map((d) => (d.platform ? [d.platform.os, d.platform.architecture, d.platform.variant].filter(Boolean).join('/') : '(no platform)'));
        throw new AgentError(`no linux/amd64 image in ${shown} (platforms: ${present.length ? [...new Set(present)].join(', ') : 'none'})`);
      }
      const m = await this.getManifest(pick.digest);
      if (m.bytes.length !== pick.size) throw new AgentError(`size mismatch in manifest ${pick.digest} of ${shown}: expected ${pick.size} bytes, got ${m.bytes.length}`);
      return { digest: top.digest, indexDigest: top.digest, manifestDigest: m.digest, manifest: parseManifest(m.mediaType, m.json, shown) };
    }
    return { digest: top.digest, manifestDigest: top.digest, manifest: parseManifest(top.mediaType, top.json, shown) };
  }

  /**
   * Streams a blob: yields its bytes as they arrive, hashing them, and throws at the end
   * (or as soon as it is too long) when the digest or size differs from the descriptor.
   */
  async *blob(desc: Descriptor, name = desc.digest): AsyncGenerator<Buffer> {
    if (!/^sha256:[0-9a-f]{64}$/.test(desc.digest)) throw new AgentError(`${name}: unsupported digest ${JSON.stringify(desc.digest)} (only sha256)`);
    const what = `GET blob ${desc.digest}`;
    const ex = await this.get(`/v2/${this.repository}/blobs/${desc.digest}`, '*/*', what);
    if (ex.res.status !== 200) throw await this.failure(ex, what, `blob ${desc.digest} (${name}) of ${this.display} not found on the registry`);
    const hash = createHash('sha256');
    let n = 0;
    for await (const c of ex.chunks()) {
      n += c.length;
      if (n > desc.size) {
        await ex.close();
        throw new AgentError(`digest mismatch in ${name} ${desc.digest}: expected ${desc.size} bytes, got more`);
      }
      hash.update(c);
      yield c;
    }
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== desc.digest || n !== desc.size) {
      throw new AgentError(`digest mismatch in ${name}: expected ${desc.digest} (${desc.size} bytes), got ${got} (${n} bytes)`, {
        hint: 'the download or the registry\'s copy is corrupt; pull again',
      });
    }
  }

  /** The image config (small blob), verified and parsed. */
  async config(desc: Descriptor): Promise<ImageConfig> {
    if (desc.size > MAX_CONFIG_BYTES) throw new AgentError(`the image config ${desc.digest} is ${desc.size} bytes; refusing more than ${MAX_CONFIG_BYTES}`);
    const parts: Buffer[] = [];
    for await (const c of this.blob(desc, 'the image config')) parts.push(c);
    let j: { created?: unknown; os?: unknown; architecture?: unknown; config?: { Labels?: unknown } };
    try {
      j = JSON.parse(Buffer.concat(parts).toString('utf8')) as typeof j;
    } catch (err) {
      throw new AgentError(`the image config ${desc.digest} is not JSON: ${(err as Error).message}`);
    }
    const labels: Record<string, string> = {};
    const raw = j.config?.Labels;
    if (raw && typeof raw === 'object') for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') labels[k] = v;
    const out: ImageConfig = { labels };
    if (typeof j.created === 'string') out.created = j.created;
    if (typeof j.os === 'string') out.os = j.os;
    if (typeof j.architecture === 'string') out.architecture = j.architecture;
    return out;
  }
}

function detail(body: string): string {
  const { message } = registryMessage(body);
  return message ? `: ${message}` : '';
}

function parseDescriptors(v: unknown, where: string): Descriptor[] {
  if (!Array.isArray(v)) throw new AgentError(`${where} has no list of descriptors`);
  return v.map((d: unknown, i) => {
    const o = d as Record<string, unknown> | null;
    if (!o || typeof o.digest !== 'string' || typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) {
      throw new AgentError(`${where}: entry ${i} is not a descriptor (digest, size)`);
    }
    const out: Descriptor = { mediaType: typeof o.mediaType === 'string' ? o.mediaType : '', digest: o.digest, size: o.size };
    const p = o.platform as Record<string, unknown> | undefined;
    if (p && typeof p.os === 'string' && typeof p.architecture === 'string') {
      out.platform = { os: p.os, architecture: p.architecture };
      if (typeof p.variant === 'string') out.platform.variant = p.variant;
    }
    if (o.annotations && typeof o.annotations === 'object') out.annotations = o.annotations as Record<string, string>;
    return out;
  });
}

function parseManifest(mediaType: string, json: Record<string, unknown>, shown: string): ImageManifest {
  if (mediaType !== MEDIA.OCI_MANIFEST && mediaType !== MEDIA.DOCKER_MANIFEST && !(mediaType === '' && json.schemaVersion === 2)) {
    throw new AgentError(`${shown}: unsupported manifest type ${JSON.stringify(mediaType || `schema ${String(json.schemaVersion)}`)} (want an OCI or Docker v2 schema 2 manifest)`);
  }
  const [config] = parseDescriptors([json.config], `the manifest of ${shown} (config)`);
  const layers = parseDescriptors(json.layers, `the manifest of ${shown} (layers)`);
  log.debug({ image: shown, layers: layers.length }, `registry: ${shown} has ${layers.length} layers`);
  return { mediaType, config: config!, layers };
}
