import { replicaUrl } from '../config/config.ts';
import { EXIT } from '../errors.ts';
import { listSnapshots } from '../replication/litestream.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { formatBytes, replicaListing, table, when } from './generations.ts';
import { withReadOnlyRuntime } from './offline.ts';

/** `vwstream-agent snapshots`: the full copies the replica holds; restores start from one. */
export function snapshotsCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    // Reads only: nothing under /run/vwstream is written (the running agent's files stay as they are).
    const snaps = await withReadOnlyRuntime(cfg, (rt) => replicaListing(cfg, () => listSnapshots(rt.litestreamConfig, rt.dbPath)));
    if (args.json) {
      printJson({ replica: replicaUrl(cfg), snapshots: snaps.map((s) => ({ generation: s.generation, index: s.index, bytes: s.size, created: when(s.created) })) });
      return EXIT.OK;
    }
    if (snaps.length === 0) {
      process.stdout.write(`no snapshots at ${replicaUrl(cfg)}\n`);
      return EXIT.OK;
    }
    process.stdout.write(`replica ${replicaUrl(cfg)}\n`);
    process.stdout.write(table(['generation', 'index', 'created', 'size'], snaps.map((s) => [s.generation, String(s.index), when(s.created), formatBytes(s.size)])));
    return EXIT.OK;
  });
}
