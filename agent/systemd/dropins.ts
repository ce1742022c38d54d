import { readFile } from 'node:fs/promises';
import type { DrainBudget } from '../config/budget.ts';
import { PATHS, UNITS } from '../paths.ts';
import { renderTimerDropIn } from '../config/cron.ts';
import { writePrivateFile } from '../fs.ts';

/** Per-host values for the static units, as runtime drop-ins (gone at reboot, rewritten at start). */
export const DROPIN_ROOT = '/run/systemd/system';

export function renderDropins(budget: DrainBudget, syncIntervalMs: number, backupCron?: string, verifyCron?: string, localReplicaPath?: string, backupLocalPaths: string[] = []): Record<string, string> {
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
    [`${UNITS.backup}.d/50-vwstream.conf`]: `${head}[Service]\nTimeoutStopSec=${budget.units.backupSec}\n${backupWritePaths(backupLocalPaths)}`,
    ...(backupCron ? { [`${UNITS.backupTimer}.d/50-vwstream.conf`]: head + renderTimerDropIn(backupCron) } : {}),
    ...(verifyCron ? { [`${UNITS.verifyTimer}.d/50-vwstream.conf`]: head + renderTimerDropIn(verifyCron, 'VERIFY_CRON') } : {}),
  };
}

function unitPath(p: string): string {
  return /[\s"'\\]/.test(p) ? JSON.stringify(p) : p;
}

/**
 * The sandboxed agent and Litestream (ProtectSystem=strict) may write the default
 * directory replica (/var/backups/vwstream/replica, in their static units); any other
 * LOCAL_REPLICA_PATH is opened to them here.
 */
export function replicaWritePaths(localReplicaPath: string | undefined): string {
  if (!localReplicaPath || localReplicaPath === PATHS.localReplica) return '';
  return `ReadWritePaths=${unitPath(`-${localReplicaPath}`)}\n`;
}

/**
 * vwstream-backup.service may write the local rclone destinations of BACKUP_REMOTES. Each
 * is created first when missing (ExecStartPre=+, as rclone would create it; an existing
 * one keeps its mode). systemd sets up each process's namespace when it spawns it, and
 * fails a ReadWritePaths= entry that does not exist then unless it has "-": with it, the
 * mkdir runs, and the backup's own process finds the directory and gets it writable.
 */
export function backupWritePaths(paths: string[]): string {
  if (paths.length === 0) return '';
  return paths.map((p) => `ExecStartPre=+/bin/mkdir -p -m 0700 ${unitPath(p)}\n`).join('') + `ReadWritePaths=${paths.map((p) => unitPath(`-${p}`)).join(' ')}\n`;
}

/** rclone backends that wrap another remote named by their REMOTE setting. */
const WRAPPERS = new Set(['crypt', 'alias', 'chunker', 'compress', 'hasher', 'union']);

/**
 * The local directories BACKUP_REMOTES writes to: a plain absolute path, `name:path` of a
 * `local` remote, and the directory under a crypt/alias/… remote whose REMOTE is local
 * (crypt names are encrypted, so its whole REMOTE directory). Remotes are looked up in
 * the RCLONE_CONFIG_* settings; others (S3, SFTP, …) need no local path.
 */
export function backupLocalPaths(remotes: string[], rcloneEnv: Record<string, string>): string[] {
  const out = new Set<string>();
  const envName = (n: string) => n.toUpperCase().replace(/-/g, '_');
  const resolve = (target: string, depth: number): void => {
    if (depth > 5) return;
    if (target.startsWith('/')) { out.add(normalize(target)); return; }
    const i = target.indexOf(':');
    if (i <= 0) return;
    const name = envName(target.slice(0, i));
    const rest = target.slice(i + 1);
    const type = rcloneEnv[`RCLONE_CONFIG_${name}_TYPE`];
    if (type === 'local') { if (rest.startsWith('/')) out.add(normalize(rest)); return; }
    const inner = type && WRAPPERS.has(type) ? rcloneEnv[`RCLONE_CONFIG_${name}_REMOTE`] ?? rcloneEnv[`RCLONE_CONFIG_${name}_UPSTREAMS`] : undefined;
    if (!inner) return;
    for (const up of inner.split(/\s+/).filter(Boolean)) {
      // union upstreams may carry a policy suffix (":ro", ":nc"); alias/crypt: the remote itself.
      const u = type === 'union' ? up.replace(/:(ro|nc|writeback)$/, '') : up;
      resolve(type === 'alias' && rest ? `${u.replace(/\/$/, '')}/${rest}` : u, depth + 1);
    }
  };
  for (const r of remotes) resolve(r.trim(), 0);
  return [...out].filter((p) => p !== '/').sort();
}

function normalize(p: string): string {
  const parts: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') parts.pop();
    else parts.push(seg);
  }
  return `/${parts.join('/')}`;
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
