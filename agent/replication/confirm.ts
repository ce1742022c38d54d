import { fetchMetrics, replicaCaughtUp, shadowPosition, type ShadowPosition } from './litestream.ts';

export interface ConfirmResult { confirmed: boolean; ms: number; detail: string; local?: ShadowPosition; replica?: { index?: number; offset?: number } }

/**
 * Waits until the replica holds the local WAL position, bounded by `timeoutMs`. The
 * shadow WAL trails the real WAL by up to one monitor tick, so it takes two
 * observations at least 1.2 s apart, the shadow unchanged between them, both caught up.
 */
export async function waitReplicaConfirmed(opts: { metricsAddr: string; dbPath: string; timeoutMs: number; litestreamStartedMs?: number }): Promise<ConfirmResult> {
  const started = Date.now();
  let firstOk: { at: number; pos: ShadowPosition } | undefined;
  let last: Pick<ConfirmResult, 'local' | 'replica'> = {};
  let lastError = '';
  while (Date.now() - started < opts.timeoutMs) {
    try {
      const { position } = await fetchMetrics(opts.metricsAddr, Math.max(500, Math.min(2000, opts.timeoutMs - (Date.now() - started))));
      const local = await shadowPosition(opts.dbPath);
      last = { ...(local ? { local } : {}), replica: { ...(position.replicaIndex !== undefined ? { index: position.replicaIndex } : {}), ...(position.replicaOffset !== undefined ? { offset: position.replicaOffset } : {}) } };
      if (local && replicaCaughtUp(position, local, opts.litestreamStartedMs)) {
        const same = firstOk && firstOk.pos.generation === local.generation && firstOk.pos.index === local.index && firstOk.pos.size === local.size;
        if (same && Date.now() - firstOk!.at >= 1200) {
          return { confirmed: true, ms: Date.now() - started, detail: `replica at ${local.generation}/${local.index}:${local.size} = local WAL`, ...last };
        }
        if (!same) firstOk = { at: Date.now(), pos: local };
      } else firstOk = undefined;
    } catch (err) {
      lastError = (err as Error).message;
      firstOk = undefined;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const where = last.local ? `local WAL ${last.local.generation}/${last.local.index}:${last.local.size}, replica ${last.replica?.index ?? '?'}:${last.replica?.offset ?? '?'}` : lastError || 'no local WAL position';
  return { confirmed: false, ms: Date.now() - started, detail: `not confirmed within ${opts.timeoutMs} ms (${where})`, ...last };
}
