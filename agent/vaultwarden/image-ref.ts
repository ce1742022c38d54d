import { AgentError } from '../errors.ts';

/** An image reference after Docker's normalisation (`vaultwarden/server` → Docker Hub, tag `latest`). */
export interface ImageRef { registry: string; repository: string; tag?: string; digest?: string }

/** Where Docker Hub's API lives; `docker.io` and `index.docker.io` mean it too. */
export const DOCKER_HUB = 'registry-1.docker.io';
const HUB_ALIASES = new Set(['docker.io', 'index.docker.io', DOCKER_HUB]);

// Docker's reference grammar (distribution/reference): path components are lowercase
// alphanumerics joined by '.', '_', '__' or runs of '-'.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const HOST_LABEL = /^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$/;

function invalid(text: string, reason: string): AgentError {
  return new AgentError(`${JSON.stringify(text)} is not a valid image reference: ${reason}`, {
    hint: 'write it as Docker does, e.g. vaultwarden/server:1.32.7, docker.io/vaultwarden/server@sha256:<64 hex> or host:port/name:tag',
  });
}

/** host, IPv4 or [IPv6], with an optional :port. */
function validRegistry(reg: string): boolean {
  let host = reg;
  let port: string | undefined;
  const v6 = /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$/.exec(reg);
  if (v6) {
    host = v6[1]!;
    port = v6[2];
    if (!host.includes(':')) return false;
  } else {
    const i = reg.lastIndexOf(':');
    if (i >= 0) { host = reg.slice(0, i); port = reg.slice(i + 1); }
    if (host === '' || !host.split('.').every((l) => HOST_LABEL.test(l))) return false;
  }
  if (port !== undefined && (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)) return false;
  return true;
}

/**
 * Parses an image reference by Docker's rules: `name`, `name:tag`, `name@sha256:<hex>`,
 * `name:tag@sha256:<hex>`, each with an optional registry in front (`host.tld/…`,
 * `host:port/…`, `localhost/…`). No registry means Docker Hub, where one-part names live
 * under `library/`. Neither tag nor digest means the tag `latest`. Throws an AgentError
 * whose message starts with the quoted text (callers prefix it with their setting's name).
 */
export function parseImageRef(text: string): ImageRef {
  if (text === '') throw invalid(text, 'it is empty');
  if (text !== text.trim() || /\s/.test(text)) throw invalid(text, 'it contains white space');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(text)) throw invalid(text, 'it contains a control character');
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(text, 'the digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(text, `the tag ${JSON.stringify(tag)} is not valid (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')`);
  }
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      if (!validRegistry(first)) throw invalid(text, `the registry ${JSON.stringify(first)} is not a host name or host:port`);
      registry = HUB_ALIASES.has(first.toLowerCase()) ? DOCKER_HUB : first;
      path = rest.slice(slash + 1);
    }
  }
  if (path === '') throw invalid(text, 'the repository name is missing');
  const parts = path.split('/');
  for (const p of parts) {
    if (p === '') throw invalid(text, 'the repository name has an empty component');
    if (p !== p.toLowerCase()) throw invalid(text, 'repository names must be lowercase');
    if (!COMPONENT.test(p)) throw invalid(text, `${JSON.stringify(p)} is not a valid repository name component`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) path = `library/${path}`;
  if (path.length > 255) throw invalid(text, 'the repository name is longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  const ref: ImageRef = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `docker.io/vaultwarden/server:1.32.7`, `127.0.0.1:5000/vw@sha256:…` (tag before digest when both). */
export function formatImageRef(r: ImageRef): string {
  const host = r.registry === DOCKER_HUB || HUB_ALIASES.has(r.registry) ? 'docker.io' : r.registry;
  return `${host}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** The host part of `registry` (no port, no brackets), lowercased. */
function hostOf(registry: string): string {
  const v6 = /^\[([^\]]+)\]/.exec(registry);
  if (v6) return v6[1]!.toLowerCase();
  const i = registry.lastIndexOf(':');
  return (i >= 0 ? registry.slice(0, i) : registry).toLowerCase();
}

/** True for localhost, ::1 and 127.0.0.0/8, with or without a port. */
export function isLoopbackRegistry(registry: string): boolean {
  const h = hostOf(registry);
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((n) => Number(n) <= 255);
}

/** `https://REGISTRY`, or `http://` for a loopback registry (a local mirror or a test's). */
export function registryBaseUrl(registry: string): string {
  const host = HUB_ALIASES.has(registry.toLowerCase()) ? DOCKER_HUB : registry;
  return `${isLoopbackRegistry(host) ? 'http' : 'https'}://${host}`;
}
