import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { AgentError } from '../../agent/errors.ts';
import { parseImageRef } from '../../agent/vaultwarden/image-ref.ts';
import { pullVaultwarden, type PullProgress } from '../../agent/vaultwarden/pull.ts';
import { buildImage, type BuiltImage, type ImageFile } from '../fixtures/oci.ts';
import { startFakeRegistry, type FakeOptions, type FakeRegistry } from './fake-registry.ts';
import { scratchDirs, sha } from './scratch.ts';

const fresh = scratchDirs('vws-oci-pull-');

const BIN = randomBytes(300_000);
const FILES: ImageFile[] = [
  { path: 'vaultwarden', data: BIN, mode: 0o755 },
  { path: 'web-vault/', type: 'dir' },
  { path: 'web-vault/index.html', data: '<!doctype html><title>Vaultwarden Web</title>' },
  { path: 'web-vault/app/main.js', data: 'console.log(1)' },
  { path: 'etc/os-release', data: 'ID=debian' },
];
const REPO = 'vaultwarden/server';

async function withFake(img: BuiltImage, o: Partial<FakeOptions>, fn: (f: FakeRegistry) => Promise<void>): Promise<void> {
  const f = await startFakeRegistry({ image: img, repo: REPO, tag: '1.32.7', ...o });
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

function checkTree(dir: string): void {
  assert.equal(sha(readFileSync(join(dir, 'vaultwarden'))), sha(BIN));
  assert.equal(statSync(join(dir, 'vaultwarden')).mode & 0o7777, 0o755);
  assert.equal(readFileSync(join(dir, 'web-vault/index.html'), 'utf8'), '<!doctype html><title>Vaultwarden Web</title>');
  assert.equal(readFileSync(join(dir, 'web-vault/app/main.js'), 'utf8'), 'console.log(1)');
}

const image = await buildImage([{ files: FILES.slice(0, 2) }, { files: FILES.slice(2) }], {
  platforms: [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'amd64' }],
  labels: { 'org.opencontainers.image.version': '1.32.7' },
});

test('bearer flow: anonymous token fetched once, sent to the registry only, never to the CDN a blob redirects to', async () => {
  await withFake(image, { auth: 'bearer', redirectBlobs: true }, async (f) => {
    const dest = fresh();
    const r = await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), dest);
    checkTree(dest);
    assert.equal(r.digest, image.indexDigest);
    assert.equal(r.manifestDigest, image.manifestDigest);
    assert.notEqual(r.manifestDigest, r.digest);
    assert.equal(r.configDigest, `sha256:${sha(image.config)}`);
    assert.deepEqual(r.labels, { 'org.opencontainers.image.version': '1.32.7' });
    assert.equal(r.created, '2024-11-20T10:00:00.000Z');
    assert.equal(r.layers, 2);
    assert.equal(r.tag, '1.32.7');
    assert.equal(r.ref, `${f.hostPort}/${REPO}:1.32.7`);
    assert.equal(r.files, 3);
    assert.equal(r.bytes, BIN.length + Buffer.byteLength('<!doctype html><title>Vaultwarden Web</title>') + Buffer.byteLength('console.log(1)'));
    assert.equal(f.tokenRequests.length, 1);
    assert.equal(f.tokenRequests[0]!.authorization, undefined);
    // First request anonymous (the challenge), then every one with the one token.
    assert.equal(f.requests[0]!.authorization, undefined);
    assert.ok(f.requests.length >= 5);
    for (const s of f.requests.slice(1)) assert.equal(s.authorization, 'Bearer tok-1', s.url);
    // config + 2 layers through the CDN, none with the token.
    assert.equal(f.cdnRequests.length, 3);
    for (const s of f.cdnRequests) assert.equal(s.authorization, undefined, s.url);
    assert.equal(r.downloadedBytes, [...image.blobs.entries()].filter(([d]) => image.layers.includes(d)).reduce((a, [, b]) => a + b.length, 0));
  });
});

test('bearer flow with credentials: basic auth goes to the token service; refused credentials are one line', async () => {
  const creds = { username: 'alice', password: 's3cret' };
  await withFake(image, { auth: 'bearer', requireCreds: true, creds }, async (f) => {
    await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { auth: creds });
    assert.equal(f.tokenRequests[0]!.authorization, `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `access denied: the token service ${f.hostPort} refused an anonymous token for ${f.hostPort}/${REPO} (HTTP 401)`,
    });
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { auth: { username: 'alice', password: 'nope' } }), {
      message: `access denied: the token service ${f.hostPort} refused the credentials of alice for ${f.hostPort}/${REPO} (HTTP 401)`,
    });
  });
});

test('an expired token is fetched again once; a token refused twice is access denied', async () => {
  await withFake(image, { auth: 'bearer', tokenUses: 2 }, async (f) => {
    const dest = fresh();
    await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), dest);
    checkTree(dest);
    assert.ok(f.tokenRequests.length >= 2);
  });
  await withFake(image, { auth: 'bearer', refuseTokens: true }, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.message, `access denied to ${f.hostPort}/${REPO} on ${f.hostPort} (anonymous): authentication required`);
      return true;
    });
    assert.equal(f.tokenRequests.length, 1);
    assert.equal(f.requests.length, 2);
  });
});

test('basic auth: credentials sent after the challenge; none given is one clear line', async () => {
  const creds = { username: 'bob', password: 'pw' };
  await withFake(image, { auth: 'basic', creds, redirectBlobs: true }, async (f) => {
    const dest = fresh();
    await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), dest, { auth: creds });
    checkTree(dest);
    for (const s of f.cdnRequests) assert.equal(s.authorization, undefined);
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `registry ${f.hostPort} requires credentials (GET manifest ${f.hostPort}/${REPO}:1.32.7)`,
    });
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { auth: { username: 'bob', password: 'x' } }), {
      message: `access denied: registry ${f.hostPort} refused the credentials of bob: authentication required`,
    });
  });
});

test('a layer whose bytes do not match its digest fails the pull, naming the blob', async () => {
  const layer = image.layers[0]!;
  const size = image.blobs.get(layer)!.length;
  await withFake(image, { corrupt: layer, redirectBlobs: true }, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      const got = `sha256:${sha((() => { const b = Buffer.from(image.blobs.get(layer)!); b[Math.floor(b.length / 2)]! ^= 0xff; return b; })())}`;
      assert.equal(err.message, `digest mismatch in layer 1 of 2 (${layer}): expected ${layer} (${size} bytes), got ${got} (${size} bytes)`);
      return true;
    });
  });
});

test('platform selection: linux/amd64 from the index; none → the platforms present (attestation ignored)', async () => {
  const armOnly = await buildImage([{ files: FILES }], { platforms: [{ os: 'linux', architecture: 'arm64' }, { os: 'windows', architecture: 'amd64' }] });
  await withFake(armOnly, {}, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `no linux/amd64 image in ${f.hostPort}/${REPO}:1.32.7 (platforms: linux/arm64, windows/amd64)`,
    });
  });
  // A single manifest (no index) for another architecture: its config says so.
  await withFake(armOnly, { noIndex: true }, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `no linux/amd64 image in ${f.hostPort}/${REPO}:1.32.7 (platforms: linux/arm64)`,
    });
  });
});

test('Docker media types and a tag naming the manifest itself: digest is the manifest digest', async () => {
  const img = await buildImage([{ files: FILES }], { docker: true });
  await withFake(img, { noIndex: true }, async (f) => {
    const dest = fresh();
    const r = await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), dest);
    checkTree(dest);
    assert.equal(r.digest, img.manifestDigest);
    assert.equal(r.manifestDigest, img.manifestDigest);
  });
});

test('pull by digest: the bytes must hash to it', async () => {
  await withFake(image, {}, async (f) => {
    const dest = fresh();
    const r = await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}@${image.indexDigest}`), dest);
    checkTree(dest);
    assert.equal(r.digest, image.indexDigest);
    assert.equal(r.tag, undefined);
  });
  await withFake(image, { tamperManifests: true }, async (f) => {
    const got = `sha256:${sha(Buffer.concat([image.index, Buffer.from(' ')]))}`;
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}@${image.indexDigest}`), fresh()), {
      message: `digest mismatch in manifest ${f.hostPort}/${REPO}@${image.indexDigest}: expected ${image.indexDigest}, got ${got}`,
    });
  });
});

test('unknown tag, unknown repository, registry errors: one line each', async () => {
  await withFake(image, {}, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:9.9.9`), fresh()), {
      message: `image ${f.hostPort}/${REPO}:9.9.9 not found: no such tag or repository (HTTP 404 MANIFEST_UNKNOWN)`,
    });
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/nobody/here:1`), fresh()), {
      message: `image ${f.hostPort}/nobody/here:1 not found: no such tag or repository (HTTP 404 NAME_UNKNOWN)`,
    });
  });
  await withFake(image, { fail: { status: 503, code: 'UNAVAILABLE', message: 'service unavailable: maintenance' } }, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `registry ${f.hostPort} answered HTTP 503 to GET manifest ${f.hostPort}/${REPO}:1.32.7: service unavailable: maintenance`,
    });
  });
  await withFake(image, { fail: { status: 403, code: 'DENIED', message: 'requested access to the resource is denied' } }, async (f) => {
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
      message: `access denied to ${f.hostPort}/${REPO} on ${f.hostPort} (HTTP 403): requested access to the resource is denied`,
    });
  });
});

test('unreachable registry, hanging registry and the caller\'s abort', async () => {
  const srv = createNetServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  await assert.rejects(pullVaultwarden(parseImageRef(`127.0.0.1:${port}/${REPO}:1.32.7`), fresh()), {
    message: `registry 127.0.0.1:${port} is unreachable: ECONNREFUSED (GET manifest 127.0.0.1:${port}/${REPO}:1.32.7)`,
  });
  await withFake(image, { hang: true }, async (f) => {
    const t0 = Date.now();
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { timeoutMs: 300 }), {
      message: `registry ${f.hostPort} is unreachable: timed out after 0.3 s waiting for ${f.hostPort} (GET manifest ${f.hostPort}/${REPO}:1.32.7)`,
    });
    assert.ok(Date.now() - t0 < 3000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stopping: SIGTERM')), 200);
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { signal: ac.signal }), { message: 'stopping: SIGTERM' });
  });
});

test('unsupported layer media types are refused before any download', async () => {
  for (const mt of ['application/vnd.oci.image.layer.v1.tar+zstd', 'application/vnd.oci.image.layer.v1.tar']) {
    const img = await buildImage([{ files: FILES }], { layerMediaType: mt });
    await withFake(img, {}, async (f) => {
      await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh()), {
        message: `unsupported layer media type "${mt}" in layer 1 of 1 of ${f.hostPort}/${REPO}:1.32.7 (only gzip'd tar layers are supported)`,
      });
      assert.equal(f.requests.filter((s) => s.url.includes('/blobs/')).length, 0);
    });
  }
});

test('the destination must be an empty folder; progress is reported, throttled, ending at the total', async () => {
  await withFake(image, {}, async (f) => {
    const full = fresh();
    writeFileSync(join(full, 'x'), '');
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), full), {
      message: `${full} is not empty (x); the image is extracted into an empty folder`,
    });
    await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), join(full, 'missing')), /^AgentError: cannot use .*missing for the image: ENOENT/);
    const seen: PullProgress[] = [];
    const t0 = Date.now();
    await pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), fresh(), { onProgress: (p) => seen.push({ ...p }) });
    const elapsed = Date.now() - t0;
    assert.ok(seen.length >= 1 && seen.length <= Math.ceil(elapsed / 250) + 2, `${seen.length} calls in ${elapsed} ms`);
    const last = seen.at(-1)!;
    const total = image.layers.reduce((a, d) => a + image.blobs.get(d)!.length, 0);
    assert.deepEqual(last, { layer: 2, layers: 2, layerBytes: image.blobs.get(image.layers[1]!)!.length, layerTotal: image.blobs.get(image.layers[1]!)!.length, totalBytes: total, total });
  });
});

test('a full disk is one line naming the folder and the entry', async (t) => {
  const mnt = fresh();
  const { spawnSync } = await import('node:child_process');
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', mnt]);
  if (m.status !== 0) { t.skip(`cannot mount a small tmpfs here (root needed): ${m.stderr.toString().trim()}`); return; }
  try {
    const dest = join(mnt, 'stage');
    mkdirSync(dest);
    await withFake(image, {}, async (f) => {
      await assert.rejects(pullVaultwarden(parseImageRef(`${f.hostPort}/${REPO}:1.32.7`), dest), (err: unknown) => {
        assert.ok(err instanceof AgentError);
        assert.equal(err.message, `no space left on device writing ${dest} (vaultwarden in layer 1 of 2 (${image.layers[0]}): ENOSPC)`);
        return true;
      });
    });
  } finally {
    spawnSync('umount', [mnt]);
  }
});

test('a registry host that does not resolve', async () => {
  await assert.rejects(pullVaultwarden(parseImageRef('registry.nonexistent.invalid/vw/server:1'), fresh(), { timeoutMs: 5000 }),
    /^AgentError: registry registry\.nonexistent\.invalid is unreachable: (ENOTFOUND|EAI_AGAIN) \(GET manifest registry\.nonexistent\.invalid\/vw\/server:1\)$/);
});
