/**
 * The drain budget (contract behaviour 4): each step gets its own bound, and together
 * they stay within STOP_GRACE_PERIOD. When the configured step timeouts add up to more,
 * each is scaled down in proportion. The unit timeouts systemd enforces follow from it.
 */
export interface DrainBudget {
  vaultwardenMs: number;
  /** Litestream step: confirmation (ExecStop) + SIGTERM final sync, each half. */
  litestreamMs: number;
  filesMs: number;
  scaled: boolean;
  /** TimeoutStopSec values, in seconds. */
  units: { agentSec: number; vaultwardenSec: number; litestreamSec: number };
  /** How long `confirm-sync` waits for the replica to catch up. */
  confirmMs: number;
}

export const DRAIN_MARGIN_MS = 10_000;
export const VAULTWARDEN_STOP_MS = 60_000;

export function drainBudget(graceMs: number, steps: { litestreamShutdownMs: number; syncShutdownMs: number; vaultwardenMs?: number }): DrainBudget {
  const want = [steps.vaultwardenMs ?? VAULTWARDEN_STOP_MS, steps.litestreamShutdownMs, steps.syncShutdownMs];
  const available = Math.max(graceMs - DRAIN_MARGIN_MS, 3_000);
  const total = want.reduce((a, b) => a + b, 0);
  const scaled = total > available;
  const [vaultwardenMs, litestreamMs, filesMs] = want.map((w) => Math.max(1_000, Math.floor(scaled ? (w * available) / total : w))) as [number, number, number];
  const halfLs = Math.max(1_000, Math.floor(litestreamMs / 2));
  return {
    vaultwardenMs,
    litestreamMs,
    filesMs,
    scaled,
    confirmMs: Math.max(500, halfLs - 1_000),
    units: {
      agentSec: Math.ceil((graceMs + 15_000) / 1000),
      vaultwardenSec: Math.ceil(vaultwardenMs / 1000),
      litestreamSec: Math.ceil(halfLs / 1000),
    },
  };
}
