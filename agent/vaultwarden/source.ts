/**
 * The real parts behind install.ts's PullFn and ProbeFn: the registry client (pull.ts)
 * and `--version` run as Vaultwarden's own user (the binary is not trusted with root).
 */
import { dirname } from 'node:path';
import type { Config } from '../config/config.ts';
import { SERVICE_USER } from '../paths.ts';
import { lookupUser } from '../replication/runtime.ts';
import { parseImageRef } from './image-ref.ts';
import type { ProbeFn, PullFn } from './install.ts';
import { pullVaultwarden } from './pull.ts';
import { probeVersion } from './upgrade.ts';
import { VersionStore } from './versions.ts';

export function registryPull(auth: Config['vaultwarden']['registryAuth']): PullFn {
  return async (image, destDir, opts) => {
    const p = await pullVaultwarden(parseImageRef(image), destDir, { ...(auth ? { auth } : {}), ...opts });
    return { ref: p.ref, digest: p.digest, manifestDigest: p.manifestDigest, files: p.files, bytes: p.bytes, downloadedBytes: p.downloadedBytes, layers: p.layers };
  };
}

function serviceUser(): { uid?: number; gid?: number } {
  try {
    const ids = lookupUser(SERVICE_USER);
    return { uid: ids.uid, gid: ids.gid };
  } catch {
    return {}; // no such user (a test machine): as the caller
  }
}

export const probeAsServiceUser: ProbeFn = async (bin) => (await probeVersion(bin, { ...serviceUser(), cwd: dirname(bin) })).line;

/** --version's parsed version, as the service user (undefined when it does not say). */
export async function versionOf(bin: string): Promise<string | undefined> {
  return (await probeVersion(bin, { ...serviceUser(), cwd: '/' })).version;
}

/** The install deps of the real host. */
export function realInstallDeps(cfg: Config, store: VersionStore = new VersionStore()) {
  return { store, pull: registryPull(cfg.vaultwarden.registryAuth), probe: probeAsServiceUser };
}
