import { readFile } from 'node:fs/promises';
import type { DrainBudget } from '../daemon/budget.ts';
import { UNITS } from '../paths.ts';
import { renderTimerDropIn } from '../backup/schedule.ts';
import { writePrivateFile } from '../replication/litestream.ts';

/** Per-host values for the static units, as runtime drop-ins (gone at reboot, rewritten at start). */
export const DROPIN_ROOT = '/run/systemd/system';

export function renderDropins(budget: DrainBudget, syncIntervalMs: number, backupCron?: string, verifyCron?: string, localReplicaPath?: string): Record<string, string> {
  const head = '# Written by vwstream-agent from /etc/vwstream/vwstream.env at every start.\n';
  const syncSec = Math.max(1, Math.round(syncIntervalMs / 1000));
  const rw = replicaWritePaths(localReplicaPath);
  return {
    [`${UNITS.agent}.d/50-vwstream.conf`]: `${head}[Service]\nTimeoutStopSec=${budget.units.agentSec}\n${rw}`,
    [`${UNITS.vaultwarden}.d/50-vwstream.conf`]: `${head}[Service]\nTimeoutStopSec=${budget.units.vaultwardenSec}\n`,
    [`${UNITS.litestream}.d/50-vwstream.conf`]: `${head}[Service]\nTimeoutStopSec=${budget.units.litestreamSec}\n${rw}`,
    // One reset only: an empty OnActiveSec= or OnUnitActiveSec= empties *every* monotonic
    // trigger of the timer, so a second reset would drop the OnActiveSec= just set and
    // leave only OnUnitActiveSec=, which never fires before the service's first run.
    [`${UNITS.syncTimer}.d/50-vwstream.conf`]: `${head}[Timer]\nOnActiveSec=\nOnActiveSec=${syncSec}s\nOnUnitActiveSec=${syncSec}s\n`,
    [`${UNITS.backup}.d/50-vwstream.conf`]: `${head}[Service]\nTimeoutStopSec=${budget.units.backupSec}\n`,
    ...(backupCron ? { [`${UNITS.backupTimer}.d/50-vwstream.conf`]: head + renderTimerDropIn(backupCron) } : {}),
    ...(verifyCron ? { [`${UNITS.verifyTimer}.d/50-vwstream.conf`]: head + renderTimerDropIn(verifyCron, 'VERIFY_CRON') } : {}),
  };
}

/**
 * The sandboxed units (ProtectSystem=strict) may write /var/lib/vwstream; a directory
 * replica elsewhere (LOCAL_REPLICA_PATH) is opened to the agent and Litestream here.
 */
export function replicaWritePaths(localReplicaPath: string | undefined): string {
  if (!localReplicaPath || localReplicaPath === '/var/lib/vwstream' || localReplicaPath.startsWith('/var/lib/vwstream/')) return '';
  const p = /[\s"'\\]/.test(localReplicaPath) ? JSON.stringify(`-${localReplicaPath}`) : `-${localReplicaPath}`;
  return `ReadWritePaths=${p}\n`;
}

/** Writes the drop-ins that differ; returns true when systemd must reload. */
export async function writeDropins(files: Record<string, string>, root = DROPIN_ROOT): Promise<boolean> {
  let changed = false;
  for (const [rel, text] of Object.entries(files)) {
    const path = `${root}/${rel}`;
    const old = await readFile(path, 'utf8').catch(() => '');
    if (old === text) continue;
    await writePrivateFile(path, text);
    changed = true;
  }
  return changed;
}
