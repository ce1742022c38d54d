import type { Config } from './config.ts';

/**
 * The drain budget (contract behaviour 4): each step gets its own bound, and together
 * they stay within STOP_GRACE_PERIOD. When the configured step timeouts add up to more,
 * each is scaled down in proportion. The unit timeouts systemd enforces follow from it.
 */
export interface DrainBudget {
  /** A backup still running at stop may finish within this (BACKUP_SHUTDOWN_TIMEOUT). */
  backupMs: number;
  vaultwardenMs: number;
  /** Litestream step: confirmation (ExecStop) + SIGTERM final sync, each half. */
  litestreamMs: number;
  filesMs: number;
  scaled: boolean;
  /** TimeoutStopSec values, in seconds. */
  units: { agentSec: number; vaultwardenSec: number; litestreamSec: number; backupSec: number };
  /** How long `confirm-sync` waits for the replica to catch up. */
  confirmMs: number;
}

export const DRAIN_MARGIN_MS = 10_000;
export const VAULTWARDEN_STOP_MS = 60_000;

export const VAULTWARDEN_MIN_MS = 10_000;
/** What confirm-sync's own start and verdict may take inside Litestream's stop timeout. */
export const CONFIRM_MARGIN_MS = 2_000;

/**
 * Litestream's and the file upload's configured timeouts are kept when they fit;
 * Vaultwarden (which stops in seconds) gets what remains, up to 60 s and at least 10 s.
 * Only when even that does not fit are Litestream and files scaled down in proportion.
 */
export function drainBudget(graceMs: number, steps: { litestreamShutdownMs: number; syncShutdownMs: number; vaultwardenMs?: number; backupShutdownMs?: number }): DrainBudget {
  // A running backup goes first (it reads the database, Vaultwarden may keep serving),
  // and may take at most a third of the grace period so the data steps keep theirs.
  const backupMs = Math.min(steps.backupShutdownMs ?? 0, Math.floor(graceMs / 3));
  const available = Math.max(graceMs - DRAIN_MARGIN_MS - backupMs, VAULTWARDEN_MIN_MS + 4_000);
  let litestreamMs = steps.litestreamShutdownMs;
  let filesMs = steps.syncShutdownMs;
  let vaultwardenMs = Math.min(steps.vaultwardenMs ?? VAULTWARDEN_STOP_MS, available - litestreamMs - filesMs);
  const scaled = vaultwardenMs < (steps.vaultwardenMs ?? VAULTWARDEN_STOP_MS);
  if (vaultwardenMs < VAULTWARDEN_MIN_MS) {
    vaultwardenMs = VAULTWARDEN_MIN_MS;
    const k = (available - vaultwardenMs) / (litestreamMs + filesMs);
    litestreamMs = Math.max(2_000, Math.floor(litestreamMs * k));
    filesMs = Math.max(2_000, Math.floor(filesMs * k));
  }
  const halfLs = Math.max(1_000, Math.floor(litestreamMs / 2));
  return {
    backupMs,
    vaultwardenMs,
    litestreamMs,
    filesMs,
    scaled,
    // confirm-sync runs as Litestream's ExecStop within the same TimeoutStopSec: leave it
    // time to start (Node loads the agent, slower on a busy host) and write its verdict.
    confirmMs: Math.max(halfLs - CONFIRM_MARGIN_MS, 1_500),
    units: {
      agentSec: Math.ceil((graceMs + 15_000) / 1000),
      vaultwardenSec: Math.ceil(vaultwardenMs / 1000),
      litestreamSec: Math.ceil(halfLs / 1000),
      backupSec: Math.max(1, Math.ceil(backupMs / 1000)),
    },
  };
}

/** The budget of a configuration (a backup share only when backups are enabled). */
export function drainBudgetOf(cfg: Pick<Config, 'stopGracePeriodMs' | 'litestream' | 'syncShutdownTimeoutMs' | 'backup'>): DrainBudget {
  return drainBudget(cfg.stopGracePeriodMs, {
    litestreamShutdownMs: cfg.litestream.shutdownTimeoutMs,
    syncShutdownMs: cfg.syncShutdownTimeoutMs,
    ...(cfg.backup.enabled ? { backupShutdownMs: cfg.backup.shutdownTimeoutMs } : {}),
  });
}
