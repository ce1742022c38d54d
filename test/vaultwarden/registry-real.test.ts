import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AgentError } from '../../agent/errors.ts';
import { parseImageRef } from '../../agent/vaultwarden/image-ref.ts';
import { pullVaultwarden, type PulledImage } from '../../agent/vaultwarden/pull.ts';
import { buildImage, pushImage, type ImageFile } from '../fixtures/oci.ts';
import { REGISTRY_BIN, startRegistry, type TestRegistry } from '../fixtures/registry.ts';
import { scratchDirs, sha } from './scratch.ts';

// Against Debian's docker-registry (distribution 2.8): the real server's API, storage and
// token auth, not a stand-in.
const missing = existsSync(REGISTRY_BIN) ? false : `${REGISTRY_BIN} is missing: apt-get install docker-registry`;

const fresh = scratchDirs('vws-oci-real-');

/** path → "mode sha256" for files, "dir mode", "-> target" for links. */
function tree(dir: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(dir, p));
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isDirectory()) {
      out[p] = `dir ${mode}`;
      Object.assign(out, tree(dir, p));
    } else if (st.isSymbolicLink()) out[p] = 'link';
    else out[p] = `${mode} ${sha(readFileSync(join(dir, p)))}`;
  }
  return out;
}

const BIN1 = randomBytes(200_000);
const BIN2 = randomBytes(150_000);
const JS = randomBytes(40_000).toString('base64');
const LAYERS: ImageFile[][] = [
  [
    { path: 'etc/', type: 'dir' },
    { path: 'etc/ssl/certs/ca.pem', data: 'CA' },
    { path: 'usr/lib/x86_64-linux-gnu/libssl.so.3', data: randomBytes(50_000) },
    { path: 'vaultwarden', data: BIN1, mode: 0o755 },
  ],
  [
    { path: 'web-vault/', type: 'dir' },
    { path: 'web-vault/index.html', data: '<!doctype html>v1' },
    { path: 'web-vault/app/main.js', data: JS },
    { path: 'web-vault/app/old.js', data: 'old' },
    { path: 'web-vault/locales/en/messages.json', data: '{"a":"b"}' },
    { path: 'web-vault/locales/de/messages.json', data: '{"a":"c"}' },
    { path: 'web-vault/images/logo.svg', data: '<svg/>', mode: 0o600 },
  ],
  [
    { path: 'vaultwarden', data: BIN2, mode: 0o700 },
    { path: 'web-vault/app/.wh.old.js' },
    { path: 'web-vault/locales/.wh..wh..opq' },
    { path: 'web-vault/locales/fr/messages.json', data: '{"a":"d"}' },
    { path: 'start.sh', data: '#!/bin/sh\nexec /vaultwarden', mode: 0o755 },
  ],
];
const EXPECTED: Record<string, string> = {
  vaultwarden: `755 ${sha(BIN2)}`,
  'web-vault': 'dir 755',
  'web-vault/app': 'dir 755',
  'web-vault/app/main.js': `644 ${sha(JS)}`,
  'web-vault/images': 'dir 755',
  'web-vault/images/logo.svg': `644 ${sha('<svg/>')}`,
  'web-vault/index.html': `644 ${sha('<!doctype html>v1')}`,
  'web-vault/locales': 'dir 755',
  'web-vault/locales/fr': 'dir 755',
  'web-vault/locales/fr/messages.json': `644 ${sha('{"a":"d"}')}`,
};

describe('pull from a real docker-registry', { skip: missing }, () => {
  let reg: TestRegistry;
  before(async () => { reg = await startRegistry(); });
  after(async () => { await reg?.stop(); });

  test('push a built image, pull it by tag, by index digest and by manifest digest', async () => {
    const img = await buildImage(LAYERS.map((files) => ({ files })), {
      platforms: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }],
      labels: { 'org.opencontainers.image.version': '1.32.7' },
    });
    await pushImage(reg.url, 'vaultwarden/server', '1.32.7', img);
    const byTag = fresh();
    const r = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server:1.32.7`), byTag);
    assert.deepEqual(tree(byTag), EXPECTED);
    assert.deepEqual({ ...r, created: undefined }, {
      ref: `${reg.hostPort}/vaultwarden/server:1.32.7`,
      registry: reg.hostPort,
      repository: 'vaultwarden/server',
      tag: '1.32.7',
      digest: img.indexDigest,
      manifestDigest: img.manifestDigest,
      configDigest: `sha256:${sha(img.config)}`,
      created: undefined,
      labels: { 'org.opencontainers.image.version': '1.32.7' },
      layers: 3,
      downloadedBytes: img.layers.reduce((a, d) => a + img.blobs.get(d)!.length, 0),
      files: 5,
      bytes: BIN2.length + JS.length + 6 + 17 + 9,
    } satisfies PulledImage & { created: undefined });
    // The registry says the same digest `docker pull` would show.
    const head = await fetch(`${reg.url}/v2/vaultwarden/server/manifests/1.32.7`, { method: 'HEAD', headers: { accept: img.indexMediaType } });
    assert.equal(head.headers.get('docker-content-digest'), img.indexDigest);

    const byDigest = fresh();
    const d = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server@${img.indexDigest}`), byDigest);
    assert.deepEqual(tree(byDigest), EXPECTED);
    assert.equal(d.digest, img.indexDigest);
    assert.equal(d.tag, undefined);
    const byManifest = fresh();
    const m = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server:1.32.7@${img.manifestDigest}`), byManifest);
    assert.deepEqual(tree(byManifest), EXPECTED);
    assert.equal(m.digest, img.manifestDigest);
  });

  test('Docker media types, no index', async () => {
    const img = await buildImage(LAYERS.map((files) => ({ files })), { docker: true });
    await pushImage(reg.url, 'vw/docker', 'v1', img, undefined, { manifestOnly: true });
    const dest = fresh();
    const r = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vw/docker:v1`), dest);
    assert.deepEqual(tree(dest), EXPECTED);
    assert.equal(r.digest, img.manifestDigest);
  });

  test('unknown tag and unknown repository: the registry\'s 404', async () => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server:0.0.0`), fresh()), {
      message: `image ${reg.hostPort}/vaultwarden/server:0.0.0 not found: no such tag or repository (HTTP 404 MANIFEST_UNKNOWN)`,
    });
    // distribution 2.8 answers MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a repository it never saw.
    await assert.rejects(pullVaultwarden(parseImageRef(`${reg.hostPort}/nobody/nothing:1`), fresh()), {
      message: `image ${reg.hostPort}/nobody/nothing:1 not found: no such tag or repository (HTTP 404 MANIFEST_UNKNOWN)`,
    });
    await assert.rejects(pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server@sha256:${'0'.repeat(64)}`), fresh()), {
      message: `manifest ${reg.hostPort}/vaultwarden/server@sha256:${'0'.repeat(64)} not found (HTTP 404 MANIFEST_UNKNOWN)`,
    });
  });

  test('pull time of a ~20 MiB layer', async (t) => {
    const big = randomBytes(20 << 20);
    const img = await buildImage([{ files: [{ path: 'vaultwarden', data: big, mode: 0o755 }, { path: 'web-vault/index.html', data: 'x' }] }]);
    await pushImage(reg.url, 'vw/big', 'latest', img);
    const dest = fresh();
    const t0 = process.hrtime.bigint();
    const r = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vw/big`), dest);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(sha(readFileSync(join(dest, 'vaultwarden'))), sha(big));
    assert.ok(r.downloadedBytes > 20 << 20);
    const line = `pull of a ${(r.downloadedBytes / 1048576).toFixed(1)} MiB layer from docker-registry on loopback: ${ms.toFixed(0)} ms (${(r.downloadedBytes / 1048576 / (ms / 1000)).toFixed(0)} MiB/s, sha256 + gunzip + write + fsync)`;
    t.diagnostic(line);
    console.log(line);
  });
});

describe('pull from a real docker-registry enforcing bearer tokens', { skip: missing }, () => {
  let reg: TestRegistry;
  before(async () => { reg = await startRegistry({ token: true }); });
  after(async () => { await reg?.stop(); });

  test('the registry refuses what has no valid token; anonymous pull tokens work; push needs the credentials', async () => {
    const anon = await fetch(`${reg.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="vwstream-test-registry"/);
    const forged = await fetch(`${reg.url}/v2/`, { headers: { authorization: 'Bearer eyJhbGciOiJSUzI1NiJ9.e30.AAAA' } });
    assert.equal(forged.status, 401);
    const img = await buildImage(LAYERS.map((files) => ({ files })));
    await assert.rejects(pushImage(reg.url, 'vaultwarden/server', '1.32.7', img), /POST blob upload for sha256:[0-9a-f]{64} answered 401/);
    await assert.rejects(pushImage(reg.url, 'vaultwarden/server', '1.32.7', img, { username: 'pusher', password: 'wrong' }), /token endpoint answered 401/);
    const before = reg.tokenRequests;
    await pushImage(reg.url, 'vaultwarden/server', '1.32.7', img, reg.pushAuth);
    assert.ok(reg.tokenRequests > before);
    const pulled = reg.tokenRequests;
    const dest = fresh();
    const r = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vaultwarden/server:1.32.7`), dest);
    assert.deepEqual(tree(dest), EXPECTED);
    assert.equal(r.digest, img.indexDigest);
    // One token for the whole pull (manifest, index entry, config, three layers).
    assert.equal(reg.tokenRequests - pulled, 1);
  });

  test('a blob corrupted in the registry\'s storage fails the pull with a digest mismatch', async () => {
    const img = await buildImage(LAYERS.map((files) => ({ files })));
    await pushImage(reg.url, 'vw/corrupt', 'v1', img, reg.pushAuth);
    const layer = img.layers[1]!;
    const file = reg.blobPath(layer);
    const bytes = readFileSync(file);
    assert.equal(bytes.length, img.blobs.get(layer)!.length);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x55;
    writeFileSync(file, bytes);
    const dest = fresh();
    let result: PulledImage | undefined;
    await assert.rejects((async () => { result = await pullVaultwarden(parseImageRef(`${reg.hostPort}/vw/corrupt:v1`), dest); })(), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.message, `digest mismatch in layer 2 of 3 (${layer}): expected ${layer} (${bytes.length} bytes), got sha256:${sha(bytes)} (${bytes.length} bytes)`);
      return true;
    });
    assert.equal(result, undefined);
    // The staging folder holds a partial tree (layer 1's binary) that the caller removes.
    assert.equal(existsSync(join(dest, 'web-vault/index.html')) && existsSync(join(dest, 'web-vault/locales/fr')), false);
  });
});
