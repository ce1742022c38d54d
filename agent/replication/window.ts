import type { Generation } from './litestream.ts';
import { oldestRestorable } from './pitr.ts';

/** What the replica can restore: from its oldest generation's start to its newest write. */
export interface RestorableRange { oldest: string | null; newest: string | null; generations: number; checkedAt: string; error: string | null }

/**
 * The restorable range for `status`, read from the replica at most every `maxAgeMs`
 * (listing it costs a Litestream run and a few S3 requests). A status call waits briefly
 * for a fresh answer, else shows the previous one.
 */
export class RestorableWindow {
  private value: RestorableRange | null = null;
  private inflight: Promise<void> | null = null;
  private readonly query: () => Promise<Generation[]>;
  private readonly maxAgeMs: number;
  private readonly emptyMaxAgeMs: number;

  /**
   * An empty answer is asked again after 2 s and a failed one after `emptyMaxAgeMs`: a new
   * vault's first generation appears a second or two after start, and status must not
   * say "nothing yet" for the next ten minutes.
   */
  constructor(query: () => Promise<Generation[]>, maxAgeMs = 600_000, emptyMaxAgeMs = 15_000) {
    this.query = query;
    this.maxAgeMs = maxAgeMs;
    this.emptyMaxAgeMs = emptyMaxAgeMs;
  }

  private refresh(): Promise<void> {
    this.inflight ??= (async () => {
      const checkedAt = new Date().toISOString();
      try {
        const gens = await this.query();
        const oldest = oldestRestorable(gens);
        const newest = gens.reduce<Date | undefined>((a, g) => (!a || g.end > a ? g.end : a), undefined);
        this.value = { oldest: oldest?.toISOString() ?? null, newest: newest?.toISOString() ?? null, generations: gens.length, checkedAt, error: null };
      } catch (err) {
        this.value = { oldest: this.value?.oldest ?? null, newest: this.value?.newest ?? null, generations: this.value?.generations ?? 0, checkedAt, error: (err as Error).message.slice(0, 300) };
      } finally {
        this.inflight = null;
      }
    })();
    return this.inflight;
  }

  /** The range, refreshed when older than maxAgeMs (waiting up to waitMs for it). */
  async current(waitMs = 3000): Promise<RestorableRange | null> {
    const empty = !this.value || this.value.generations === 0 || this.value.error !== null;
    const limit = !empty ? this.maxAgeMs : this.value?.error ? this.emptyMaxAgeMs : Math.min(this.emptyMaxAgeMs, 2_000);
    if (!this.value || Date.now() - Date.parse(this.value.checkedAt) > limit) {
      const p = this.refresh();
      // Never longer than waitMs: status must answer well within the CLI's 10 s timeout.
      await Promise.race([p, new Promise((r) => setTimeout(r, waitMs).unref())]);
    }
    return this.value;
  }

  /** Forget the cached range (after a restore or a new generation). */
  invalidate(): void {
    if (this.value) this.value = { ...this.value, checkedAt: new Date(0).toISOString() };
  }
}
