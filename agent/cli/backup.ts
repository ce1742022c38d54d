import { BackupBusyError, runBackup } from '../backup/run.ts';
import { updateState } from '../daemon/state-file.ts';
import { AgentError, EXIT } from '../errors.ts';
import { configFor, printJson, runCommand } from './common.ts';

/**
 * `vwstream-agent backup`: one backup now (what vwstream-backup.service runs). Any
 * destination failing fails the run (exit 1) and pings URL/fail. SIGTERM during a run
 * (shutdown) does not abort it: the unit's TimeoutStopSec (BACKUP_SHUTDOWN_TIMEOUT) bounds it.
 */
export function backupCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    if (cfg.backup.remotes.length === 0) throw new AgentError('BACKUP_REMOTES is empty: nowhere to send a backup', { exitCode: EXIT.CONFIG });
    process.on('SIGTERM', () => process.stderr.write('vwstream-agent backup: shutdown requested; finishing the backup (bounded by BACKUP_SHUTDOWN_TIMEOUT)\n'));
    const tty = process.stderr.isTTY;
    let report;
    try {
      report = await runBackup(cfg, tty ? { onProgress: (l) => process.stderr.write(`${l}\n`) } : {});
    } catch (err) {
      if (err instanceof BackupBusyError) throw new AgentError(`another backup is running: ${err.message}`);
      throw err;
    }
    const detail = report.ok ? `${report.archive?.bytes ?? 0} bytes to ${report.destinations.length} destinations` : (report.error ?? 'failed');
    await updateState({ lastBackup: { at: report.startedAt, ok: report.ok, name: report.name, detail } }).catch(() => undefined);
    if (args.json) printJson(report);
    else if (report.ok) process.stdout.write(`backup ${report.name}: ${detail} in ${report.ms} ms\n`);
    else process.stderr.write(`vwstream-agent: backup ${report.name} FAILED: ${detail}\n`);
    return report.ok ? EXIT.OK : EXIT.FAILED;
  });
}
