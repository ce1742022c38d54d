import { replicaUrl, type Config } from '../config/config.ts';
import { EXIT } from '../errors.ts';
import { listSnapshots, listWalSegments, type Generation, type Snapshot, type WalSegment } from '../replication/litestream.ts';
import { oldestRestorable } from '../replication/pitr.ts';
import { generationsOrFail, litestreamReason } from '../replication/restore.ts';
import { AgentError } from '../errors.ts';
import type { Runtime } from '../replication/runtime.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { withReadOnlyRuntime } from './offline.ts';

export const when = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A plain text table: columns padded to their widest cell. */
export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

export interface GenerationRow { generation: string; first: string; last: string; snapshots: number; walSegments: number; bytes: number }

export function generationRows(gens: Generation[], snaps: Snapshot[], wal: WalSegment[]): GenerationRow[] {
  return gens.map((g) => {
    const s = snaps.filter((x) => x.generation === g.generation);
    const w = wal.filter((x) => x.generation === g.generation);
    return {
      generation: g.generation, first: when(g.start), last: when(g.end), snapshots: s.length, walSegments: w.length,
      bytes: s.reduce((a, x) => a + x.size, 0) + w.reduce((a, x) => a + x.size, 0),
    };
  });
}

export async function replicaListing<T>(cfg: Config, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new AgentError(`cannot reach the replica at ${replicaUrl(cfg)}: ${litestreamReason(err)}`, { hint: 'check S3_* settings and that the bucket is reachable' });
  }
}

async function inventory(cfg: Config, rt: Runtime) {
  const gens = await generationsOrFail(cfg, rt);
  const snaps = await replicaListing(cfg, () => listSnapshots(rt.litestreamConfig, rt.dbPath));
  const wal = await replicaListing(cfg, () => listWalSegments(rt.litestreamConfig, rt.dbPath));
  return { gens, snaps, wal };
}

/** `vwstream-agent generations`: what the replica holds, one row per generation (oldest first). */
export function generationsCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    // Reads only: nothing under /run/vwstream is written (the running agent's files stay as they are).
    const { gens, snaps, wal } = await withReadOnlyRuntime(cfg, (rt) => inventory(cfg, rt));
    const rows = generationRows(gens, snaps, wal);
    const oldest = oldestRestorable(gens);
    if (args.json) {
      printJson({ replica: replicaUrl(cfg), oldestRestorable: oldest ? when(oldest) : null, generations: rows });
      return EXIT.OK;
    }
    if (rows.length === 0) {
      process.stdout.write(`no generations at ${replicaUrl(cfg)}\n`);
      return EXIT.OK;
    }
    process.stdout.write(`replica ${replicaUrl(cfg)}\n`);
    process.stdout.write(table(['generation', 'first', 'last', 'snapshots', 'wal', 'size'], rows.map((r) => [r.generation, r.first, r.last, String(r.snapshots), String(r.walSegments), formatBytes(r.bytes)])));
    process.stdout.write(`oldest restorable point: ${oldest ? when(oldest) : 'none'}; the newest generation (last row) is the one a restore takes by default\n`);
    return EXIT.OK;
  });
}
