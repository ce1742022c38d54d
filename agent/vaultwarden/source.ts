/**
 * The real parts behind install.ts's PullFn and ProbeFn: the registry client (pull.ts)
 * and `--version` run as Vaultwarden's own user (the binary is not trusted with root).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Config } from '../config/config.ts';
import { parseEnvFile } from '../config/envfile.ts';
import { AgentError } from '../errors.ts';
import { PATHS, SERVICE_USER } from '../paths.ts';
import { lookupUser } from '../replication/runtime.ts';
import { readState } from '../state-file.ts';
import { parseImageRef } from './image-ref.ts';
import type { InstallDeps, ProbeFn, PullFn } from './install.ts';
import { pullVaultwarden } from './pull.ts';
import { probeVersion } from './upgrade.ts';
import { VersionStore } from './versions.ts';

export function registryPull(auth: Config['vaultwarden']['registryAuth']): PullFn {
  return async (image, destDir, opts) => {
    const p = await pullVaultwarden(parseImageRef(image), destDir, { ...(auth ? { auth } : {}), ...opts });
    return { ref: p.ref, digest: p.digest, manifestDigest: p.manifestDigest, files: p.files, bytes: p.bytes, downloadedBytes: p.downloadedBytes, layers: p.layers };
  };
}

/** The vaultwarden user's ids; as root without that user nothing is run (never as root). */
function serviceUser(): { uid?: number; gid?: number } {
  try {
    const ids = lookupUser(SERVICE_USER);
    return { uid: ids.uid, gid: ids.gid };
  } catch (err) {
    if (process.getuid?.() === 0) throw new AgentError(`the user ${SERVICE_USER} does not exist: Vaultwarden's binary is not run as root to ask its version (${(err as Error).message})`, { hint: 'reinstall the package (its postinst creates the user)' });
    return {}; // not root: as the caller (tests)
  }
}

/**
 * `<bin> --version` as the vaultwarden user. Under systemd, as root, through a transient
 * unit (systemd-run): the agent's own unit has no CAP_SETUID, and the binary gets a
 * sandbox of its own (no network, read-only system, 15 s). Elsewhere directly with that
 * user's ids.
 */
async function versionAsServiceUser(bin: string, cwd: string): Promise<{ version: string | undefined; line: string }> {
  const ids = serviceUser();
  if (ids.uid !== undefined && process.getuid?.() === 0 && existsSync('/run/systemd/system')) {
    return probeVersion('systemd-run', {
      args: ['--quiet', '--wait', '--pipe', '--collect', '--service-type=exec', `--uid=${ids.uid}`, `--gid=${ids.gid}`, `--working-directory=${cwd}`,
        '-p', 'NoNewPrivileges=yes', '-p', 'PrivateNetwork=yes', '-p', 'ProtectSystem=strict', '-p', 'ProtectHome=yes', '-p', 'PrivateTmp=yes', '-p', 'RuntimeMaxSec=15',
        '--', bin, '--version'],
      what: `${bin} --version`,
    });
  }
  return probeVersion(bin, { ...ids, cwd });
}

export const probeAsServiceUser: ProbeFn = async (bin) => (await versionAsServiceUser(bin, dirname(bin))).line;

/** --version's parsed version, as the service user (undefined when it does not say). */
export async function versionOf(bin: string): Promise<string | undefined> {
  return (await versionAsServiceUser(bin, '/')).version;
}

/** The version directory the unit's environment file names, if it is one of the store's. */
export function versionInEnvFile(store: VersionStore, envFile: string = PATHS.vaultwardenEnv): string | undefined {
  const bin = binInEnvFile(envFile);
  const prefix = `${store.root}/`;
  return bin?.startsWith(prefix) ? bin.slice(prefix.length).split('/')[0] : undefined;
}

/** VAULTWARDEN_BIN of the unit's environment file as it is now (what a running Vaultwarden was started with). */
export function binInEnvFile(envFile: string = PATHS.vaultwardenEnv): string | undefined {
  try {
    return parseEnvFile(readFileSync(envFile, 'utf8')).get('VAULTWARDEN_BIN')?.value;
  } catch {
    return undefined;
  }
}

/** The install deps of the real host. */
export function realInstallDeps(cfg: Config, store: VersionStore = new VersionStore()): InstallDeps {
  return {
    store, pull: registryPull(cfg.vaultwarden.registryAuth), probe: probeAsServiceUser,
    inUse: () => [versionInEnvFile(store), readState().vaultwarden?.lastRan?.version],
  };
}
