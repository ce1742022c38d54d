import { EXIT } from '../errors.ts';
import { log, setLogLevel } from '../log.ts';
import { verifyAndRecord } from '../verify/drill.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { runtimeFor } from './offline.ts';

/**
 * `vwstream-agent verify`: the restore drill (what vwstream-verify.timer runs). Prints one
 * line, exits 0 when the replica restores and matches the live data, 1 when not (and
 * sends the failure notification).
 */
export function verifyCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const rt = await runtimeFor(cfg);
    // The verdict is the one line on stdout; routine info lines (notification sent) would bury it.
    if (log.level === 'info') setLogLevel('warn');
    const say = process.stderr.isTTY && !args.json ? (l: string) => process.stderr.write(`verify: ${l}\n`) : undefined;
    const r = await verifyAndRecord(cfg, rt, say ? { say } : {});
    if (args.json) printJson(r);
    else process.stdout.write(`${r.summary}\n`);
    return r.ok ? EXIT.OK : EXIT.FAILED;
  });
}
