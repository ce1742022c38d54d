import { errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { LeaseConflict, decideLease, describeHolder, newLease, safetyMargin, type Identity, type Lease, type LeaseDecision, type LeaseStore } from './lease.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Takes, renews and releases the lease. Conditional writes are used, but servers that
 * ignore them (fauxqs does) are covered by reading back after every write and once
 * more after a settle delay: of two racing writers only the last one reads itself.
 */
export class LeaseKeeper {
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;
  private acquiredAt: string | undefined;
  private lostReported = false;
  /** Not renewed before its expiry and not (yet) seen taken: the store is unreachable. */
  suspended: string | null = null;
  /** The lease as last read or written. */
  seen: Lease | null = null;
  readonly me: Identity;
  private readonly store: LeaseStore;
  private readonly ttlMs: number;
  private readonly onLost: (reason: string, stolen: boolean) => void;
  private readonly onSuspended: ((reason: string) => void) | undefined;
  private readonly onRegained: (() => void) | undefined;
  private readonly settleMs: number;

  /**
   * onLost: the lease was seen taken (stolen=true), or it expired unrenewed and there is
   * no onSuspended (stolen=false). onSuspended: it expired unrenewed because the store
   * does not answer; renewal goes on (every 5 s) and either onRegained (still ours when
   * the store answers again) or onLost (someone took it meanwhile) follows.
   */
  constructor(opts: {
    store: LeaseStore; me: Identity; ttlMs: number; onLost: (reason: string, stolen: boolean) => void;
    onSuspended?: (reason: string) => void; onRegained?: () => void; settleMs?: number;
  }) {
    this.store = opts.store;
    this.me = opts.me;
    this.ttlMs = opts.ttlMs;
    this.onLost = opts.onLost;
    this.onSuspended = opts.onSuspended;
    this.onRegained = opts.onRegained;
    this.settleMs = opts.settleMs ?? 1_000;
  }

  get url(): string { return this.store.url; }
  get held(): boolean { return this.seen?.token === this.me.token; }

  private async readBack(): Promise<boolean> {
    const r = await this.store.read(AbortSignal.timeout(15_000));
    this.seen = r?.lease ?? null;
    return this.held;
  }

  /** One attempt: acquire when the rule allows, else say who holds it. */
  async tryAcquire(): Promise<LeaseDecision> {
    const cur = await this.store.read(AbortSignal.timeout(15_000));
    this.seen = cur?.lease ?? null;
    const d = decideLease(cur?.lease ?? null, this.me, Date.now(), safetyMargin(this.ttlMs));
    if (d.action === 'wait') return d;
    const lease = newLease(this.me, Date.now(), this.ttlMs);
    try {
      await this.store.write(lease, { etag: cur ? (cur.etag ?? undefined) : null }, AbortSignal.timeout(15_000));
    } catch (err) {
      if (!(err instanceof LeaseConflict)) throw err;
    }
    for (const wait of [0, this.settleMs]) {
      await sleep(wait);
      if (!(await this.readBack())) {
        const s = this.seen as Lease | null;
        return { action: 'wait', holder: s?.holder ?? 'unknown', instance: s?.instance ?? null, until: new Date(s ? Date.parse(s.expiresAt) : Date.now()) };
      }
    }
    this.acquiredAt = lease.acquiredAt;
    return d;
  }

  /** Renews every TTL/3 (every 5 s while suspended) until stop(). */
  startRenewing(): void {
    this.lostReported = false;
    this.renewing = true;
    this.schedule();
  }

  private schedule(): void {
    if (!this.renewing) return;
    const every = Math.max(1_000, Math.floor(this.ttlMs / 3));
    this.timer = setTimeout(() => void this.renew().finally(() => this.schedule()), this.suspended ? Math.min(every, 5_000) : every);
  }

  async renew(): Promise<void> {
    const mine = this.seen?.token === this.me.token ? this.seen : null;
    const deadline = mine ? Date.parse(mine.expiresAt) - safetyMargin(this.ttlMs) : 0;
    try {
      const left = deadline - Date.now();
      const cur = await this.store.read(AbortSignal.timeout(left > 0 ? Math.max(1_000, Math.min(15_000, left)) : 10_000));
      if (!cur || cur.lease.token !== this.me.token) {
        this.seen = cur?.lease ?? null;
        return this.lost(cur ? `lease taken by ${describeHolder(cur.lease)} until ${cur.lease.expiresAt}` : 'lease object disappeared', true);
      }
      const next = newLease(this.me, Date.now(), this.ttlMs, this.acquiredAt);
      await this.store.write(next, cur.etag ? { etag: cur.etag } : {}, AbortSignal.timeout(15_000));
      // After an expiry another host may have raced us: read back, and once more after a settle.
      for (const wait of this.suspended ? [0, this.settleMs] : [0]) {
        await sleep(wait);
        if (!(await this.readBack())) return this.lost(`lease taken by ${this.seen ? describeHolder(this.seen) : 'unknown'} during renewal`, true);
      }
      if (this.suspended) {
        log.info({ lease: this.store.url, was: this.suspended }, 'lease renewed again: the store answers and nobody took it');
        this.suspended = null;
        this.onRegained?.();
      }
    } catch (err) {
      log.warn({ err: errorMessage(err), lease: this.store.url }, 'lease renewal failed');
      if (Date.now() < deadline || this.suspended) return;
      const reason = `lease not renewed before its expiry (${this.store.url}: ${errorMessage(err)})`;
      if (!this.onSuspended) return this.lost(reason, false);
      this.suspended = reason;
      this.onSuspended(reason);
    }
  }

  private lost(reason: string, stolen: boolean): void {
    if (this.lostReported) return;
    this.lostReported = true;
    this.stop();
    this.onLost(reason, stolen);
  }

  stop(): void {
    this.renewing = false;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** At the end of a complete drain: a replacement may start at once. */
  async release(): Promise<boolean> {
    this.stop();
    try {
      const cur = await this.store.read(AbortSignal.timeout(10_000));
      if (cur?.lease.token !== this.me.token) return false;
      await this.store.remove(AbortSignal.timeout(10_000));
      return true;
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'could not release the lease; it expires by itself');
      return false;
    }
  }

  /** The lease as it is in the store now (no decision, no write). */
  async peek(): Promise<Lease | null> {
    return (await this.store.read(AbortSignal.timeout(15_000)))?.lease ?? null;
  }

  /** For promote --force: take the lease whoever holds it. */
  async seize(): Promise<void> {
    const lease = newLease(this.me, Date.now(), this.ttlMs);
    await this.store.write(lease, {}, AbortSignal.timeout(15_000));
    this.seen = lease;
  }
}
