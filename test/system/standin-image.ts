// Helpers for the system tests that install Vaultwarden from an image: the Vaultwarden
// STAND-IN (test fixture, not Vaultwarden) built as an OCI image per version and pushed to
// a real registry (Debian's docker-registry, with the bearer-token flow of Docker Hub).
import { buildImage, pushImage, sha256Of, type BuiltImage } from '../fixtures/oci.ts';
import { startRegistry, type TestRegistry } from '../fixtures/registry.ts';
import { standinImageLayers, standinScript } from '../fixtures/standin-image.ts';

export const STANDIN_REPO = 'vaultwarden-standin/server';

export interface StandinRegistry {
  registry: TestRegistry;
  /** VAULTWARDEN_IMAGE for the hosts: 127.0.0.1:PORT/vaultwarden-standin/server */
  image: string;
  images: Map<string, BuiltImage>;
  /** sha256 of the stand-in script of a version (the /vaultwarden of its image). */
  binSha(version: string): string;
  stop(): Promise<void>;
}

/** A token-auth registry holding the stand-in image for each version (tag = version, plus `latest` = the last). */
export async function standinRegistry(versions: string[], opts: { mainJsBytes?: number } = {}): Promise<StandinRegistry> {
  const registry = await startRegistry({ token: true });
  const images = new Map<string, BuiltImage>();
  try {
    for (const v of versions) {
      const img = await buildImage(standinImageLayers(v, opts.mainJsBytes !== undefined ? { mainJsBytes: opts.mainJsBytes } : {}), { labels: { 'org.opencontainers.image.version': v } });
      // Tagged as Vaultwarden tags its static build (and its other one: same image here).
      for (const tag of [v, `${v}-alpine`]) await pushImage(registry.url, STANDIN_REPO, tag, img, registry.pushAuth);
      images.set(v, img);
    }
    const last = versions.at(-1);
    if (last) for (const tag of ['latest', 'latest-alpine', 'alpine']) await pushImage(registry.url, STANDIN_REPO, tag, images.get(last)!, registry.pushAuth);
  } catch (err) {
    await registry.stop();
    throw err;
  }
  return {
    registry,
    image: `${registry.hostPort}/${STANDIN_REPO}`,
    images,
    binSha: (v) => sha256Of(standinScript(v)).replace(/^sha256:/, ''),
    stop: () => registry.stop(),
  };
}
