import { replicaUrl } from '../config/config.ts';
import { formatHuman } from '../config/duration.ts';
import { EXIT } from '../errors.ts';
import { configFor, printJson, runCommand } from './common.ts';

/** `vwstream-agent check-config`: the daemon's validation, nothing started. */
export function checkConfigCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const summary = {
      ok: true,
      config: cfg.source,
      role: cfg.role,
      replica: replicaUrl(cfg),
      litestream: { profile: cfg.litestream.profile, syncInterval: formatHuman(cfg.litestream.syncIntervalMs), snapshotInterval: formatHuman(cfg.litestream.snapshotIntervalMs), retention: formatHuman(cfg.litestream.retentionMs) },
      vaultwardenBin: cfg.vaultwardenBin,
      vaultwardenPort: cfg.rocketPort,
      warnings: cfg.warnings,
    };
    if (args.json) printJson(summary);
    else {
      process.stdout.write(`config OK: ${cfg.source} (${cfg.role}, replica ${summary.replica})\n`);
      for (const w of cfg.warnings) process.stdout.write(`warning: ${w}\n`);
    }
    return EXIT.OK;
  });
}
