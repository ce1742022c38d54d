import { readFile } from 'node:fs/promises';
import { EXIT } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { waitReplicaConfirmed } from '../replication/confirm.ts';
import { writePrivateFile } from '../fs.ts';
import { runCommand } from './common.ts';

export interface DrainInfo { metricsAddr: string; dbPath: string; confirmMs: number; litestreamStartedMs?: number }

/**
 * `vwstream-agent confirm-sync`: Litestream's ExecStop (root, before its SIGTERM). Waits
 * until the replica holds the local WAL position and records the verdict for the drain.
 * Reads only /run/vwstream/drain.json (written by the agent), not the config.
 */
export function confirmSyncCommand(): Promise<never> {
  return runCommand(async () => {
    let info: DrainInfo;
    try {
      info = JSON.parse(await readFile(PATHS.drainInfo, 'utf8')) as DrainInfo;
    } catch {
      process.stdout.write(`confirm-sync: no ${PATHS.drainInfo}; nothing to confirm\n`);
      return EXIT.OK;
    }
    const r = await waitReplicaConfirmed({ ...info, timeoutMs: info.confirmMs });
    await writePrivateFile(PATHS.finalSync, JSON.stringify({ ...r, at: new Date().toISOString() }) + '\n');
    process.stdout.write(`confirm-sync: final sync ${r.confirmed ? 'confirmed' : 'NOT confirmed'} in ${r.ms} ms: ${r.detail}\n`);
    return r.confirmed ? EXIT.OK : EXIT.FAILED;
  });
}
