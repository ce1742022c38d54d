// make demo: builds the OCI image of the Vaultwarden STAND-IN (test fixture, not
// Vaultwarden) for a version and pushes it, as tag <version> and latest, to the demo's
// registry: `node scripts/demo-image.ts http://127.0.0.1:PORT REPO VERSION`.
import { buildImage, pushImage } from '../test/fixtures/oci.ts';
import { standinImageLayers } from '../test/fixtures/standin-image.ts';

const [url, repo, version] = process.argv.slice(2);
if (!url || !repo || !version) {
  process.stderr.write('usage: demo-image.ts REGISTRY_URL REPO VERSION\n');
  process.exit(64);
}
const img = await buildImage(standinImageLayers(version), { labels: { 'org.opencontainers.image.version': version } });
// As Vaultwarden tags it: the agent pulls <version>-alpine (VAULTWARDEN_TAG_SUFFIX).
for (const tag of [version, `${version}-alpine`, 'latest', 'latest-alpine', 'alpine']) await pushImage(url, repo, tag, img);
process.stdout.write(`pushed the stand-in image ${repo}:${version} (${img.indexDigest}) to ${url}\n`);
