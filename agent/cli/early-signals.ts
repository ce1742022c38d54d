/**
 * Loaded first by main.ts. A SIGTERM that reaches `vwstream-agent backup` while it is
 * still loading (a stop right after BACKUP_ON_STARTUP launched it) is noted here instead
 * of killing it; the backup command then starts its shutdown grace period at once.
 */
export const earlySignals = { sigtermAt: 0 };

if (process.argv[2] === 'backup') {
  process.on('SIGTERM', () => { earlySignals.sigtermAt ||= Date.now(); });
}
