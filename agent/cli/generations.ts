import { replicaUrl } from '../config/config.ts';
import { EXIT } from '../errors.ts';
import { listGenerations } from '../replication/litestream.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { runtimeFor } from './offline.ts';

/** `vwstream-agent generations`: what the replica holds. */
export function generationsCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const rt = await runtimeFor(cfg);
    const gens = await listGenerations(rt.litestreamConfig, rt.dbPath);
    if (args.json) {
      printJson({ replica: replicaUrl(cfg), generations: gens.map((g) => ({ generation: g.generation, start: g.start.toISOString(), end: g.end.toISOString() })) });
      return EXIT.OK;
    }
    if (gens.length === 0) {
      process.stdout.write(`no generations at ${replicaUrl(cfg)}\n`);
      return EXIT.OK;
    }
    process.stdout.write(`replica ${replicaUrl(cfg)}\n${'generation'.padEnd(18)} ${'first'.padEnd(21)} last\n`);
    for (const g of gens) process.stdout.write(`${g.generation.padEnd(18)} ${g.start.toISOString().replace(/\.\d+Z/, 'Z').padEnd(21)} ${g.end.toISOString().replace(/\.\d+Z/, 'Z')}\n`);
    return EXIT.OK;
  });
}
