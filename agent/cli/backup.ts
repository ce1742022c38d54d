import { BackupBusyError, runBackup } from '../backup/run.ts';
import { drainBudgetOf } from '../config/budget.ts';
import { earlySignals } from './early-signals.ts';
import { updateState } from '../state-file.ts';
import { AgentError, EXIT } from '../errors.ts';
import { configFor, printJson, runCommand } from './common.ts';

/**
 * `vwstream-agent backup`: one backup now (what vwstream-backup.service runs). Any
 * destination failing fails the run (exit 1) and pings URL/fail. SIGTERM during a run
 * (shutdown) does not abort it at once: it may finish within its share of the drain budget
 * (BACKUP_SHUTDOWN_TIMEOUT, the unit's TimeoutStopSec). Shortly before that runs out the
 * run is abandoned cleanly (uploads stopped, partial archives removed, /fail pinged), so
 * systemd's SIGKILL never leaves a truncated archive under a valid name.
 */
export function backupCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    if (cfg.backup.remotes.length === 0) throw new AgentError('BACKUP_REMOTES is empty: nowhere to send a backup', { exitCode: EXIT.CONFIG });
    const stop = new AbortController();
    const budgetMs = drainBudgetOf(cfg).backupMs;
    const graceMs = Math.max(budgetMs - Math.min(5_000, Math.floor(budgetMs / 4)), 0);
    let stopping = false;
    const onStop = (): void => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`vwstream-agent backup: shutdown requested; the backup may finish within ${Math.round(graceMs / 1000)} s (BACKUP_SHUTDOWN_TIMEOUT)\n`);
      setTimeout(() => stop.abort(new Error(`shutdown: BACKUP_SHUTDOWN_TIMEOUT reached after ${Math.round(graceMs / 1000)} s`)), Math.max(0, graceMs - (earlySignals.sigtermAt ? Date.now() - earlySignals.sigtermAt : 0))).unref();
    };
    process.on('SIGTERM', onStop);
    if (earlySignals.sigtermAt) onStop();
    const tty = process.stderr.isTTY;
    let report;
    try {
      report = await runBackup(cfg, { signal: stop.signal, ...(tty ? { onProgress: (l: string) => process.stderr.write(`${l}\n`) } : {}) });
    } catch (err) {
      if (err instanceof BackupBusyError) throw new AgentError(`another backup is running: ${err.message}`);
      throw err;
    }
    const detail = report.ok ? `${report.archive?.bytes ?? 0} bytes to ${report.destinations.length} destinations` : (report.error ?? 'failed');
    const bytes = report.archive?.bytes ?? 0;
    await updateState({
      lastBackup: { at: report.startedAt, ok: report.ok, name: report.name, detail, bytes, ms: report.ms },
      ...(report.ok ? { lastBackupSuccess: { at: report.startedAt, name: report.name, bytes, ms: report.ms } } : {}),
    }).catch(() => undefined);
    if (args.json) printJson(report);
    else if (report.ok) process.stdout.write(`backup ${report.name}: ${detail} in ${report.ms} ms\n`);
    else process.stderr.write(`vwstream-agent: backup ${report.name} FAILED: ${detail}\n`);
    return report.ok ? EXIT.OK : EXIT.FAILED;
  });
}
