/**
 * Which Vaultwarden the unit runs, decided the same way by the start, check-config,
 * doctor, status and every command that rewrites /run/vwstream/vaultwarden.env:
 *
 * 1. VAULTWARDEN_BIN set in the config: the operator's binary; nothing is installed.
 * 2. Else the version `current` names in /var/lib/vwstream/vaultwarden (installed by
 *    `vwstream-agent vaultwarden install` or for VAULTWARDEN_VERSION), with its own web
 *    vault (WEB_VAULT_FOLDER set for the unit unless the config sets it or disables it).
 * 3. Else /usr/bin/vaultwarden (VAULTWARDEN_BIN's default), as before there was an install.
 */
import type { Config } from '../config/config.ts';
import { PATHS } from '../paths.ts';
import { VersionStore, type InstalledVersion } from './versions.ts';

export interface VaultwardenChoice {
  source: 'operator' | 'installed' | 'default';
  bin: string;
  /** The installed version's web vault (source installed). */
  webVault?: string;
  installed?: InstalledVersion;
}

export function chooseVaultwarden(cfg: Pick<Config, 'vaultwardenBin' | 'vaultwarden'>, store: VersionStore = new VersionStore()): VaultwardenChoice {
  if (cfg.vaultwarden.binGiven) return { source: 'operator', bin: cfg.vaultwardenBin };
  const cur = store.current();
  if (cur) return { source: 'installed', bin: cur.bin, webVault: cur.webVault, installed: cur };
  return { source: 'default', bin: PATHS.defaultVaultwardenBin };
}

/** The environment for the unit: cfg.vaultwardenEnv with the chosen binary (default: chosen now) and its web vault. */
export function vaultwardenEnvOf(cfg: Pick<Config, 'vaultwardenBin' | 'vaultwarden' | 'vaultwardenEnv'>, store?: VersionStore, chosen?: VaultwardenChoice): Record<string, string> {
  const choice = chosen ?? chooseVaultwarden(cfg, store);
  const env: Record<string, string> = { ...cfg.vaultwardenEnv, VAULTWARDEN_BIN: choice.bin };
  const ownWebVault = 'WEB_VAULT_FOLDER' in cfg.vaultwardenEnv || /^(false|0|no|off)$/i.test(cfg.vaultwardenEnv.WEB_VAULT_ENABLED ?? '');
  if (choice.webVault && !ownWebVault) env.WEB_VAULT_FOLDER = `${choice.webVault}/`;
  return env;
}

/**
 * For a command other than the agent's start rewriting the unit's environment: the
 * binary and web vault stay what the agent chose at its start (`previous`, the file as
 * it is). Only the agent's start switches them, after the snapshot an upgrade needs: a
 * command must never make a restart of the unit run a version that was not checked.
 */
export function keptVaultwardenEnv(cfg: Pick<Config, 'vaultwardenBin' | 'vaultwarden' | 'vaultwardenEnv'>, previous: Map<string, { value: string }> | undefined, store?: VersionStore): Record<string, string> {
  const env = vaultwardenEnvOf(cfg, store);
  const bin = previous?.get('VAULTWARDEN_BIN')?.value;
  if (!bin) return env;
  env.VAULTWARDEN_BIN = bin;
  const web = previous?.get('WEB_VAULT_FOLDER')?.value;
  if (web !== undefined && !('WEB_VAULT_FOLDER' in cfg.vaultwardenEnv)) env.WEB_VAULT_FOLDER = web;
  else if (web === undefined && !('WEB_VAULT_FOLDER' in cfg.vaultwardenEnv)) delete env.WEB_VAULT_FOLDER;
  return env;
}
