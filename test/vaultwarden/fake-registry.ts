import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BuiltImage } from '../fixtures/oci.ts';

/**
 * An in-process Registry v2 stand-in (node:http) serving one BuiltImage, to test the
 * client's auth, redirect and error handling: it checks the Authorization header of every
 * request and records it. Blobs can be redirected to a second server ("the CDN", another
 * origin) that records what it received.
 */

export interface FakeOptions {
  image: BuiltImage;
  repo: string;
  tag: string;
  auth?: 'bearer' | 'basic';
  /** Basic credentials: required by 'basic'; with 'bearer' the token service wants them when `requireCreds`. */
  creds?: { username: string; password: string };
  requireCreds?: boolean;
  /** Bearer: a token is accepted for this many registry requests, then refused (expired). */
  tokenUses?: number;
  /** Bearer: tokens are issued but never accepted. */
  refuseTokens?: boolean;
  redirectBlobs?: boolean;
  /** Flip a byte in the middle of this blob when serving it. */
  corrupt?: string;
  /** The tag names the amd64 manifest itself (no index). */
  noIndex?: boolean;
  /** Serve other bytes than asked for under a manifest digest. */
  tamperManifests?: boolean;
  /** Never answer (timeouts). */
  hang?: boolean;
  /** Answer every manifest request with this status and registry error message. */
  fail?: { status: number; code: string; message: string };
}

export interface Seen { method: string; url: string; authorization?: string }

export interface FakeRegistry {
  hostPort: string;
  requests: Seen[];
  cdnRequests: Seen[];
  tokenRequests: Seen[];
  close(): Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

function seen(req: IncomingMessage): Seen {
  const s: Seen = { method: req.method ?? '', url: req.url ?? '' };
  if (req.headers.authorization !== undefined) s.authorization = req.headers.authorization;
  return s;
}

function corrupted(buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  out[Math.floor(out.length / 2)]! ^= 0xff;
  return out;
}

export async function startFakeRegistry(o: FakeOptions): Promise<FakeRegistry> {
  const requests: Seen[] = [];
  const cdnRequests: Seen[] = [];
  const tokenRequests: Seen[] = [];
  const tokens = new Map<string, number>();
  let issued = 0;
  const basic = o.creds ? `Basic ${Buffer.from(`${o.creds.username}:${o.creds.password}`).toString('base64')}` : undefined;
  const err = (res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ errors: [{ code, message, detail: null }] }));
  };
  const blobData = (digest: string): Buffer | undefined => {
    const b = o.image.blobs.get(digest);
    return b && digest === o.corrupt ? corrupted(b) : b;
  };

  const cdn = createServer((req, res) => {
    cdnRequests.push(seen(req));
    const digest = new URL(req.url ?? '/', 'http://x').pathname.replace('/cdn/', '');
    const b = blobData(digest);
    if (!b) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.length }).end(b);
  });
  const cdnPort = await listen(cdn);

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      tokenRequests.push(seen(req));
      if (o.requireCreds && req.headers.authorization !== basic) { err(res, 401, 'UNAUTHORIZED', 'incorrect username or password'); return; }
      if (url.searchParams.get('service') !== 'fake-registry' || url.searchParams.get('scope') !== `repository:${o.repo}:pull`) {
        err(res, 400, 'BAD_REQUEST', `unexpected token request ${req.url}`);
        return;
      }
      const t = `tok-${++issued}`;
      tokens.set(t, o.tokenUses ?? Infinity);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(issued % 2 ? { token: t } : { access_token: t }));
      return;
    }
    requests.push(seen(req));
    if (o.hang) return;
    if (o.auth === 'bearer') {
      const t = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      const left = t === undefined ? undefined : tokens.get(t);
      if (o.refuseTokens || left === undefined || left <= 0) {
        err(res, 401, 'UNAUTHORIZED', 'authentication required', {
          'www-authenticate': `Bearer realm="http://${host}/token",service="fake-registry",scope="repository:${o.repo}:pull"`,
        });
        return;
      }
      tokens.set(t!, left - 1);
    } else if (o.auth === 'basic' && req.headers.authorization !== basic) {
      err(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="fake-registry"' });
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) { err(res, 404, 'NOT_FOUND', 'no route'); return; }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (repo !== o.repo) { err(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry'); return; }
    if (kind === 'manifests') {
      if (o.fail) { err(res, o.fail.status, o.fail.code, o.fail.message); return; }
      let body: Buffer | undefined;
      let type = o.image.manifestMediaType;
      if (ref === o.tag) {
        if (o.noIndex) body = o.image.manifest;
        else { body = o.image.index; type = o.image.indexMediaType; }
      } else if (ref === o.image.indexDigest && !o.noIndex) {
        body = o.image.index;
        type = o.image.indexMediaType;
      } else {
        body = o.image.manifests.get(ref);
      }
      if (!body) { err(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown'); return; }
      if (o.tamperManifests && ref.startsWith('sha256:')) body = Buffer.concat([body, Buffer.from(' ')]);
      res.writeHead(200, { 'content-type': type, 'content-length': body.length }).end(body);
      return;
    }
    const b = blobData(ref);
    if (!b) { err(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry'); return; }
    if (o.redirectBlobs) {
      res.writeHead(307, { location: `http://127.0.0.1:${cdnPort}/cdn/${ref}?expires=1&sig=abc` }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': b.length }).end(b);
  });
  const port = await listen(server);
  const host = `127.0.0.1:${port}`;
  return {
    hostPort: host,
    requests,
    cdnRequests,
    tokenRequests,
    close: async () => {
      server.closeAllConnections();
      cdn.closeAllConnections();
      await Promise.all([new Promise((r) => server.close(r)), new Promise((r) => cdn.close(r))]);
    },
  };
}
