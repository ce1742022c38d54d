import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../agent/errors.ts';
import { formatImageRef, parseImageRef, registryBaseUrl, type ImageRef } from '../../agent/vaultwarden/image-ref.ts';

const D = `sha256:${'a1'.repeat(32)}`;
const HUB = 'registry-1.docker.io';

const good: [string, ImageRef, string][] = [
  ['vaultwarden/server', { registry: HUB, repository: 'vaultwarden/server', tag: 'latest' }, 'docker.io/vaultwarden/server:latest'],
  ['vaultwarden/server:1.32.7', { registry: HUB, repository: 'vaultwarden/server', tag: '1.32.7' }, 'docker.io/vaultwarden/server:1.32.7'],
  ['nginx', { registry: HUB, repository: 'library/nginx', tag: 'latest' }, 'docker.io/library/nginx:latest'],
  ['nginx:1.27-alpine', { registry: HUB, repository: 'library/nginx', tag: '1.27-alpine' }, 'docker.io/library/nginx:1.27-alpine'],
  ['docker.io/nginx', { registry: HUB, repository: 'library/nginx', tag: 'latest' }, 'docker.io/library/nginx:latest'],
  ['index.docker.io/vaultwarden/server:1.32.7', { registry: HUB, repository: 'vaultwarden/server', tag: '1.32.7' }, 'docker.io/vaultwarden/server:1.32.7'],
  ['registry-1.docker.io/vaultwarden/server', { registry: HUB, repository: 'vaultwarden/server', tag: 'latest' }, 'docker.io/vaultwarden/server:latest'],
  [`vaultwarden/server@${D}`, { registry: HUB, repository: 'vaultwarden/server', digest: D }, `docker.io/vaultwarden/server@${D}`],
  [`vaultwarden/server:1.32.7@${D}`, { registry: HUB, repository: 'vaultwarden/server', tag: '1.32.7', digest: D }, `docker.io/vaultwarden/server:1.32.7@${D}`],
  ['ghcr.io/dani-garcia/vaultwarden:1.32.7', { registry: 'ghcr.io', repository: 'dani-garcia/vaultwarden', tag: '1.32.7' }, 'ghcr.io/dani-garcia/vaultwarden:1.32.7'],
  ['quay.io/vaultwarden/server', { registry: 'quay.io', repository: 'vaultwarden/server', tag: 'latest' }, 'quay.io/vaultwarden/server:latest'],
  ['localhost/vw', { registry: 'localhost', repository: 'vw', tag: 'latest' }, 'localhost/vw:latest'],
  ['localhost:5000/vw:t', { registry: 'localhost:5000', repository: 'vw', tag: 't' }, 'localhost:5000/vw:t'],
  ['127.0.0.1:5000/vaultwarden/server:1.0', { registry: '127.0.0.1:5000', repository: 'vaultwarden/server', tag: '1.0' }, '127.0.0.1:5000/vaultwarden/server:1.0'],
  ['[::1]:5000/vw:1', { registry: '[::1]:5000', repository: 'vw', tag: '1' }, '[::1]:5000/vw:1'],
  ['registry.example.com:8443/a/b/c:v1_2', { registry: 'registry.example.com:8443', repository: 'a/b/c', tag: 'v1_2' }, 'registry.example.com:8443/a/b/c:v1_2'],
  ['my_repo/some-name__x.y', { registry: HUB, repository: 'my_repo/some-name__x.y', tag: 'latest' }, 'docker.io/my_repo/some-name__x.y:latest'],
  // A first component without '.' or ':' is a Docker Hub namespace, not a host.
  ['myhost/vw', { registry: HUB, repository: 'myhost/vw', tag: 'latest' }, 'docker.io/myhost/vw:latest'],
];

for (const [text, want, shown] of good) {
  test(`parseImageRef(${JSON.stringify(text)})`, () => {
    const got = parseImageRef(text);
    assert.deepEqual(got, want);
    assert.equal(formatImageRef(got), shown);
    // The formatted form parses back to the same reference.
    assert.deepEqual(parseImageRef(shown), want);
  });
}

const bad: [string, string][] = [
  ['', '"" is not a valid image reference: it is empty'],
  ['Vaultwarden/Server', '"Vaultwarden/Server" is not a valid image reference: repository names must be lowercase'],
  ['vaultwarden/server:', '"vaultwarden/server:" is not a valid image reference: the tag "" is not valid (letters, digits, \'_\', \'.\', \'-\', at most 128, not starting with \'.\' or \'-\')'],
  ['vaultwarden/server:-x', '"vaultwarden/server:-x" is not a valid image reference: the tag "-x" is not valid (letters, digits, \'_\', \'.\', \'-\', at most 128, not starting with \'.\' or \'-\')'],
  [`vaultwarden/server:${'a'.repeat(129)}`, `"vaultwarden/server:${'a'.repeat(129)}" is not a valid image reference: the tag "${'a'.repeat(129)}" is not valid (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')`],
  ['vaultwarden/server@sha256:abc', '"vaultwarden/server@sha256:abc" is not a valid image reference: the digest must be sha256: followed by 64 lowercase hex digits'],
  [`vaultwarden/server@md5:${'a'.repeat(32)}`, `"vaultwarden/server@md5:${'a'.repeat(32)}" is not a valid image reference: the digest must be sha256: followed by 64 lowercase hex digits`],
  ['vaultwarden//server', '"vaultwarden//server" is not a valid image reference: the repository name has an empty component'],
  ['ghcr.io/', '"ghcr.io/" is not a valid image reference: the repository name is missing'],
  ['vault warden', '"vault warden" is not a valid image reference: it contains white space'],
  [' vaultwarden/server', '" vaultwarden/server" is not a valid image reference: it contains white space'],
  ['-bad/x', '"-bad/x" is not a valid image reference: "-bad" is not a valid repository name component'],
  ['a/b_', '"a/b_" is not a valid image reference: "b_" is not a valid repository name component'],
  ['host:99999/x', '"host:99999/x" is not a valid image reference: the registry "host:99999" is not a host name or host:port'],
  ['ho_st.io/x', '"ho_st.io/x" is not a valid image reference: the registry "ho_st.io" is not a host name or host:port'],
  ['https://ghcr.io/x', '"https://ghcr.io/x" is not a valid image reference: the registry "https:" is not a host name or host:port'],
];

for (const [text, message] of bad) {
  test(`parseImageRef refuses ${JSON.stringify(text.slice(0, 40))}`, () => {
    assert.throws(() => parseImageRef(text), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.message, message);
      assert.equal(err.exitCode, 1);
      return true;
    });
  });
}

test('registryBaseUrl: https except loopback', () => {
  const cases: [string, string][] = [
    ['registry-1.docker.io', 'https://registry-1.docker.io'],
    ['docker.io', 'https://registry-1.docker.io'],
    ['ghcr.io', 'https://ghcr.io'],
    ['registry.example.com:5000', 'https://registry.example.com:5000'],
    ['127.0.0.1:5000', 'http://127.0.0.1:5000'],
    ['127.1.2.3', 'http://127.1.2.3'],
    ['localhost', 'http://localhost'],
    ['localhost:5000', 'http://localhost:5000'],
    ['[::1]:5000', 'http://[::1]:5000'],
    ['[::1]', 'http://[::1]'],
    ['128.0.0.1:5000', 'https://128.0.0.1:5000'],
    ['127.0.0.1.nip.io', 'https://127.0.0.1.nip.io'],
    ['localhost.example.com', 'https://localhost.example.com'],
    ['10.0.0.5:5000', 'https://10.0.0.5:5000'],
  ];
  for (const [reg, url] of cases) assert.equal(registryBaseUrl(reg), url, reg);
});
