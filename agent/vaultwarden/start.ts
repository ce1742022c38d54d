/**
 * At the agent's start, before anything runs: VAULTWARDEN_VERSION installed (or switched
 * to) so that the unit runs the pinned version — unless a rollback holds it back — and
 * the web-vault rule Vaultwarden itself applies, checked before its unit starts.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { vaultwardenBinProblem, type Config } from '../config/config.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { PATHS } from '../paths.ts';
import type { VaultwardenState } from '../state-file.ts';
import { chooseVaultwarden, vaultwardenEnvOf, type VaultwardenChoice } from './choose.ts';
import { imageToPull, type InstallRequest, type InstallResult } from './install.ts';
import type { VersionStore } from './versions.ts';

export interface PrepareDeps {
  store: VersionStore;
  install(req: InstallRequest): Promise<InstallResult>;
  readState(): VaultwardenState;
  updateState(change: (v: VaultwardenState) => VaultwardenState): Promise<unknown>;
  /** Pushes systemd's start timeout out while a pull runs. */
  extendTimeout(ms: number, text: string): void;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  now(): number;
  signal?: AbortSignal;
}

export interface PreparedVaultwarden extends VaultwardenChoice {
  /** The pin could not be installed (the installed version runs meanwhile) or is held after a rollback. */
  problem?: string;
  held?: string;
}

/** Delay before the next install attempt after `failures` failed ones (Docker Hub counts anonymous pulls). */
export function pullBackoffMs(failures: number): number {
  return failures <= 0 ? 0 : Math.min(300_000, 15_000 * 2 ** (failures - 1));
}

export async function prepareVaultwarden(cfg: Config, deps: PrepareDeps): Promise<PreparedVaultwarden> {
  const pin = cfg.vaultwarden.version;
  if (cfg.vaultwarden.binGiven || !pin) return chooseVaultwarden(cfg, deps.store);
  const state = deps.readState();
  const cur = deps.store.current();
  const hold = state.hold;
  if (hold) {
    if (hold.version === pin && cur) {
      const held = `VAULTWARDEN_VERSION=${pin} names the version rolled back from on ${hold.since}; Vaultwarden ${cur.version} runs until the pin changes (set VAULTWARDEN_VERSION=${cur.version} to keep it, or a newer version to upgrade again)`;
      log.warn({ pin, runs: cur.version, since: hold.since }, held);
      return { ...chooseVaultwarden(cfg, deps.store), problem: held, held: pin };
    }
    await deps.updateState((v) => { const { hold: _, ...rest } = v; return rest; });
    log.info({ pin, was: hold.version }, `VAULTWARDEN_VERSION changed to ${pin} after the rollback from ${hold.version}: the hold is lifted`);
  }
  if (cur?.version === pin) return chooseVaultwarden(cfg, deps.store);
  if (deps.store.get(pin)) {
    log.info({ pin, from: cur?.version }, `VAULTWARDEN_VERSION=${pin}: switching to the installed ${pin}${cur ? ` (from ${cur.version})` : ''}`);
    await deps.install({ image: cfg.vaultwarden.image, version: pin, tagSuffix: cfg.vaultwarden.tagSuffix });
    return chooseVaultwarden(cfg, deps.store);
  }
  const ref = imageToPull(cfg.vaultwarden.image, pin, cfg.vaultwarden.tagSuffix);
  const failed = state.pullFailure?.image === ref ? state.pullFailure : undefined;
  if (failed && !cur) {
    const wait = pullBackoffMs(failed.failures) - (deps.now() - Date.parse(failed.at));
    if (wait > 0) {
      log.warn({ image: ref, failures: failed.failures, waitMs: wait }, `the last ${failed.failures} install attempt(s) of ${ref} failed (${failed.error}); waiting ${Math.ceil(wait / 1000)} s before the next`);
      deps.extendTimeout(wait + 60_000, `waiting to retry the install of ${ref}`);
      await deps.sleep(wait, deps.signal);
    }
  }
  log.info({ image: ref, from: cur?.version }, `VAULTWARDEN_VERSION=${pin}: installing ${ref}${cur ? ` (Vaultwarden ${cur.version} is installed)` : ''}`);
  let shown = 0;
  try {
    const r = await deps.install({
      image: cfg.vaultwarden.image, version: pin, tagSuffix: cfg.vaultwarden.tagSuffix, ...(deps.signal ? { signal: deps.signal } : {}),
      onProgress: (p) => {
        // Each progress pushes the start timeout out; a stalled pull times out on its own bounds.
        if (deps.now() - shown < 5000) return;
        shown = deps.now();
        deps.extendTimeout(120_000, `installing Vaultwarden ${pin}: layer ${p.layer}/${p.layers}, ${mib(p.totalBytes)} of ${mib(p.total)} MiB`);
      },
    });
    log.info({ version: r.installed.version, image: r.installed.image, digest: r.installed.digest, ms: r.ms, pruned: r.pruned }, `installed Vaultwarden ${r.installed.version} from ${r.installed.image} (${r.installed.digest}) in ${r.ms} ms`);
    if (state.pullFailure) await deps.updateState((v) => { const { pullFailure: _, ...rest } = v; return rest; });
    return chooseVaultwarden(cfg, deps.store);
  } catch (err) {
    if (deps.signal?.aborted) throw err;
    const msg = errorMessage(err);
    await deps.updateState((v) => ({ ...v, pullFailure: { image: ref, at: new Date(deps.now()).toISOString(), failures: (failed?.failures ?? 0) + 1, error: msg.slice(0, 300) } })).catch(() => undefined);
    if (cur) {
      const problem = `VAULTWARDEN_VERSION=${pin} could not be installed: ${msg}; Vaultwarden ${cur.version} (installed) runs meanwhile, the next start tries again`;
      log.error({ pin, image: ref, runs: cur.version }, problem);
      return { ...chooseVaultwarden(cfg, deps.store), problem };
    }
    throw new AgentError(`VAULTWARDEN_VERSION=${pin}: ${msg}`, {
      hint: `check the registry and VAULTWARDEN_IMAGE=${cfg.vaultwarden.image}; the agent retries (with a back-off) — or run vwstream-agent vaultwarden install`,
      exitCode: EXIT.FAILED, cause: err,
    });
  }
}

const mib = (b: number) => (b / 1048576).toFixed(1);

/**
 * Vaultwarden exits at start when its web vault is missing (`Web vault is not found`)
 * unless WEB_VAULT_ENABLED=false: the same rule, as one line naming the key, before its
 * unit starts. WEB_VAULT_FOLDER is relative to the unit's working directory, the data folder.
 */
export function webVaultProblem(cfg: Pick<Config, 'vaultwardenBin' | 'vaultwarden' | 'vaultwardenEnv'>, store?: VersionStore, exists: (p: string) => boolean = existsSync, chosen?: VaultwardenChoice): string | undefined {
  const env = vaultwardenEnvOf(cfg, store, chosen);
  if (/^(false|0|no|off)$/i.test(env.WEB_VAULT_ENABLED ?? '')) return undefined;
  const folder = env.WEB_VAULT_FOLDER || 'web-vault/';
  const dir = resolve(PATHS.dataFolder, folder);
  if (exists(join(dir, 'index.html'))) return undefined;
  return `WEB_VAULT_FOLDER=${folder}: no web vault at ${dir} (index.html missing) — Vaultwarden would exit at start ("Web vault is not found")`;
}

/**
 * Why the chosen binary cannot run (check-config and the start say the same), or
 * undefined. `pinPending`: VAULTWARDEN_VERSION is set and the start installs it.
 */
export function chosenBinProblem(cfg: Pick<Config, 'vaultwardenBin' | 'vaultwarden' | 'source'>, choice: VaultwardenChoice, access?: (path: string, mode: number) => void): { key: string; value: string; message: string; hint: string } | undefined {
  const problem = vaultwardenBinProblem(choice.bin, access);
  if (!problem) return undefined;
  if (choice.source === 'operator') {
    return { key: 'VAULTWARDEN_BIN', value: choice.bin, message: problem, hint: `install Vaultwarden at ${choice.bin} or set VAULTWARDEN_BIN in ${cfg.source}` };
  }
  if (choice.source === 'installed') {
    return { key: 'VAULTWARDEN_VERSION', value: choice.installed?.version ?? '', message: `the installed Vaultwarden ${choice.installed?.version} at ${choice.bin}: ${problem}`, hint: 'install it again: vwstream-agent vaultwarden install' };
  }
  if (cfg.vaultwarden.version) return undefined; // installed at start
  return {
    key: 'VAULTWARDEN_BIN', value: choice.bin,
    message: `no Vaultwarden installed (nothing under ${PATHS.vaultwardenDir}, and ${choice.bin}: ${problem})`,
    hint: `run vwstream-agent vaultwarden install (the official image with its web vault), or set VAULTWARDEN_VERSION=<version> in ${cfg.source} (installed at start), or VAULTWARDEN_BIN to your own binary`,
  };
}
