import { replicaUrl } from '../config/config.ts';
import { formatHuman } from '../config/duration.ts';
import { ConfigError, EXIT } from '../errors.ts';
import { chooseVaultwarden } from '../vaultwarden/choose.ts';
import { chosenBinProblem } from '../vaultwarden/start.ts';
import { configFor, printJson, runCommand } from './common.ts';

/**
 * `vwstream-agent check-config`: the daemon's validation, nothing started. Errors exit 78
 * (through runCommand); warnings are printed and, with --strict, also exit 78.
 */
export function checkConfigCommand(args: { config: string; json: boolean; strict?: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const vw = chooseVaultwarden(cfg);
    const binProblem = chosenBinProblem(cfg, vw);
    if (binProblem) throw new ConfigError(binProblem.key, binProblem.value, `${binProblem.message}: ${binProblem.hint}`);
    const strictFailed = Boolean(args.strict) && cfg.warnings.length > 0;
    const summary = {
      ok: !strictFailed,
      ...(args.strict ? { strict: true } : {}),
      config: cfg.source,
      role: cfg.role,
      replica: replicaUrl(cfg),
      litestream: { profile: cfg.litestream.profile, syncInterval: formatHuman(cfg.litestream.syncIntervalMs), snapshotInterval: formatHuman(cfg.litestream.snapshotIntervalMs), retention: formatHuman(cfg.litestream.retentionMs) },
      vaultwardenBin: vw.bin,
      vaultwarden: { source: vw.source, bin: vw.bin, version: vw.installed?.version ?? null, pin: cfg.vaultwarden.version ?? null, image: cfg.vaultwarden.image },
      vaultwardenPort: cfg.rocketPort,
      warnings: cfg.warnings,
    };
    if (args.json) {
      // A strict failure is an error like any other with --json ({"error": …}), the summary beside it.
      const failure = `check-config --strict failed: ${cfg.warnings.length} warning${cfg.warnings.length === 1 ? '' : 's'} in ${cfg.source}`;
      printJson(strictFailed ? { error: { message: failure, key: null, value: null, allowed: null, hint: 'fix every warning listed, then run check-config --strict again', exitCode: EXIT.CONFIG }, ...summary } : summary);
    } else if (strictFailed) {
      for (const w of cfg.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write(`vwstream-agent: check-config --strict failed: ${cfg.warnings.length} warning${cfg.warnings.length === 1 ? '' : 's'} in ${cfg.source}\n`);
    } else {
      process.stdout.write(`config OK: ${cfg.source} (${cfg.role}, replica ${summary.replica})\n`);
      for (const w of cfg.warnings) process.stdout.write(`warning: ${w}\n`);
    }
    return strictFailed ? EXIT.CONFIG : EXIT.OK;
  });
}
