import { errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import {
  LeaseAmbiguous, LeaseConflict, decideLease, describeHolder, newLease, safetyMargin,
  type ConditionalSupport, type Identity, type Lease, type LeaseDecision, type LeaseStore,
} from './lease.ts';

type Outcome = 'ok' | 'failed' | 'lost';

/** What the probe found, and the one sentence the journal, status and /metrics show. */
export type ConditionalState = ConditionalSupport & { message: string };

/** A signal that aborts at `atMs` (on the keeper's clock) or when `abort` is called; `done` frees its timer. */
interface Attempt { signal: AbortSignal; abort: (why: string) => void; done: () => void }

/**
 * Takes, renews and releases the lease.
 *
 * Two ways to know a write won, chosen by a probe at the first tryAcquire (or probe()):
 * - the store enforces conditional writes (Ceph RGW, AWS, …): creation with
 *   `If-None-Match: *`, replacement with `If-Match: <etag>`; a write that succeeds is the
 *   proof, a refused one (412/409) or an ambiguous one (5xx) is settled by one read. A
 *   renewal is then one request: `If-Match` on the etag our last write answered (another
 *   writer's version, or no object at all, fails the precondition). After a failed attempt
 *   the next one reads first.
 * - it ignores them (fauxqs, s3rver), or the probe could not run: a read, the write, then a
 *   read-back after every write and once more after a settle delay when taking the lease
 *   (of two racing writers only the last one reads itself).
 *
 * The holder fences itself at its lease's expiry minus the safety margin (`deadline`): a
 * timer, armed on every successful renewal, calls onSuspended (onLost when there is none)
 * at that moment whatever request is in flight; every request of a renewal is aborted at
 * the deadline at the latest, and a write that completes after it does not count.
 */
export class LeaseKeeper {
  private renewTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  private acquiredAt: string | undefined;
  private lostReported = false;
  private inFlight: Promise<Outcome> | null = null;
  private attempt: Attempt | null = null;
  private lastError: string | null = null;
  /** When the write of the lease we hold started (its expiresAt = this + TTL). */
  private lastSuccessMs = 0;
  /** The store's etag of the lease version we hold, as our last write (or read) of it answered; undefined = read first. */
  private heldEtag: string | undefined;
  /** Not renewed before its deadline and not (yet) seen taken: the store is unreachable. */
  suspended: string | null = null;
  /** The lease as last read or written. */
  seen: Lease | null = null;
  /** Ms epoch at which the holder stops writing: expiry of the lease we hold minus the margin; null when not held. */
  deadline: number | null = null;
  /** Whether the store enforces conditional writes; null until a probe succeeded. */
  conditional: ConditionalState | null = null;
  readonly me: Identity;
  private readonly store: LeaseStore;
  private readonly ttlMs: number;
  private readonly onLost: (reason: string, stolen: boolean) => void;
  private readonly onSuspended: ((reason: string) => void) | undefined;
  private readonly onRegained: (() => void) | undefined;
  private readonly settleMs: number;
  private readonly now: () => number;

  /**
   * onLost: the lease was seen taken (stolen=true), or it passed its deadline unrenewed and
   * there is no onSuspended (stolen=false). onSuspended: it passed its deadline unrenewed
   * (the store does not answer in time); renewal goes on (every 5 s) and either onRegained
   * (still ours when the store answers again) or onLost (someone took it meanwhile) follows.
   * now: the clock (ms epoch), for tests.
   */
  constructor(opts: {
    store: LeaseStore; me: Identity; ttlMs: number; onLost: (reason: string, stolen: boolean) => void;
    onSuspended?: (reason: string) => void; onRegained?: () => void; settleMs?: number; now?: () => number;
  }) {
    this.store = opts.store;
    this.me = opts.me;
    this.ttlMs = opts.ttlMs;
    this.onLost = opts.onLost;
    this.onSuspended = opts.onSuspended;
    this.onRegained = opts.onRegained;
    this.settleMs = opts.settleMs ?? 1_000;
    this.now = opts.now ?? Date.now;
  }

  get url(): string { return this.store.url; }
  get held(): boolean { return this.seen?.token === this.me.token; }
  /** The safety margin: the holder stops this long before expiry, a taker waits this long after it. */
  get marginMs(): number { return safetyMargin(this.ttlMs); }
  /**
   * Renewal cadence while all is well, counted from the last success: TTL/2 (30 s at the
   * default 60 s: 120 renewals an hour), leaving TTL/2 less the margin (25 s) for retries
   * every 1–2 s before the holder fences itself; TTL/3 below a TTL of 30 s, so that a
   * short lease keeps more than a third of it for them.
   */
  get renewEveryMs(): number { return Math.max(1_000, Math.floor(this.ttlMs >= 30_000 ? this.ttlMs / 2 : this.ttlMs / 3)); }
  /** After a failed renewal, before the deadline. */
  private get retryMs(): number { return Math.min(2_000, Math.max(1_000, Math.floor(this.ttlMs / 10))); }
  /** Upper bound of one attempt's requests (the deadline may cut it shorter). */
  private get attemptCapMs(): number { return Math.min(15_000, Math.max(2_000, this.renewEveryMs)); }
  private get enforced(): boolean { return this.conditional?.enforced === true; }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
  }

  /** An abortable attempt ending at `atMs` on our clock (timers: mockable in tests). */
  private startAttempt(atMs: number): Attempt {
    const ctl = new AbortController();
    const abort = (why: string) => { if (!ctl.signal.aborted) ctl.abort(new Error(why)); };
    const left = Math.max(0, atMs - this.now());
    const timer = setTimeout(() => abort(`no answer within ${left} ms`), left);
    return { signal: ctl.signal, abort, done: () => clearTimeout(timer) };
  }

  private async bounded<T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const a = this.startAttempt(this.now() + ms);
    try { return await fn(a.signal); } finally { a.done(); }
  }

  /** Reads the lease into `seen` (and its etag when ours); true when it is ours. */
  private async readBack(signal: AbortSignal): Promise<boolean> {
    const r = await this.store.read(signal);
    this.seen = r?.lease ?? null;
    this.heldEtag = this.held ? r?.etag : undefined;
    return this.held;
  }

  private waitOn(s: Lease | null): LeaseDecision {
    return { action: 'wait', holder: s?.holder ?? 'unknown', instance: s?.instance ?? null, until: new Date(s ? Date.parse(s.expiresAt) : this.now()) };
  }

  /** We hold `lease`, written at `startedMs`: the deadline follows from its expiry. */
  private holding(lease: Lease, startedMs: number): void {
    this.seen = lease;
    this.lastSuccessMs = startedMs;
    const exp = Date.parse(lease.expiresAt);
    this.deadline = Number.isFinite(exp) ? exp - this.marginMs : startedMs;
    this.armDeadline();
  }

  /**
   * Finds out once whether the store enforces conditional writes, and says so in the
   * journal. Never throws: when the store cannot be reached, `conditional` stays null (the
   * read-back path is used, safe either way) and the next tryAcquire probes again.
   */
  async probe(): Promise<ConditionalState | null> {
    try {
      const r = await this.bounded(15_000, (signal) => this.store.probe(signal));
      const overlapS = Math.ceil((this.renewEveryMs + this.attemptCapMs) / 1000);
      const message = !r.applicable ? `lease ${this.url}: conditional writes ${r.detail}`
        : r.enforced ? `lease ${this.url}: conditional writes enforced (${r.detail})`
          : `lease ${this.url}: conditional writes not enforced: read-back only; two primaries can overlap for up to ${overlapS} s (${r.detail})`;
      this.conditional = { ...r, message };
      log[r.enforced || !r.applicable ? 'info' : 'warn']({ lease: this.url, enforced: r.enforced, applicable: r.applicable }, message);
      return this.conditional;
    } catch (err) {
      log.warn({ err: errorMessage(err), lease: this.url }, `could not probe whether ${this.url} enforces conditional writes: ${errorMessage(err)}; reading back every write until a probe succeeds`);
      return null;
    }
  }

  /**
   * One attempt: acquire when the rule allows, else say who holds it. Enforcing store:
   * creation with If-None-Match: *, take-over with If-Match on the etag read; a refused or
   * ambiguous write is settled by one read (ours: a retried write of ours won; else wait).
   * Otherwise: read back, and again after the settle delay.
   */
  async tryAcquire(): Promise<LeaseDecision> {
    if (!this.conditional) await this.probe();
    return this.bounded(15_000 + this.settleMs, async (signal) => {
      const cur = await this.store.read(signal);
      this.seen = cur?.lease ?? null;
      const d = decideLease(cur?.lease ?? null, this.me, this.now(), this.marginMs);
      if (d.action === 'wait') return d;
      const startedMs = this.now();
      const lease = newLease(this.me, startedMs, this.ttlMs);
      // Without an etag to match, a take-over cannot be conditional: prove it by reading back.
      const conditional = this.enforced && (!cur || cur.etag !== undefined);
      let refused: Error | null = null;
      try {
        this.heldEtag = (await this.store.write(lease, { etag: cur ? (cur.etag ?? undefined) : null }, signal)).etag;
      } catch (err) {
        if (!(err instanceof LeaseConflict || err instanceof LeaseAmbiguous)) throw err;
        refused = err;
      }
      if (conditional) {
        // A successful conditional write is the proof. A refused or ambiguous one: one read
        // settles it (a lost race, or our write landed after all, e.g. retried after a 500).
        if (refused) {
          if (!(await this.readBack(signal))) return this.waitOn(this.seen);
          const mine = this.seen!;
          this.acquiredAt = mine.acquiredAt;
          this.holding(mine, Date.parse(mine.expiresAt) - mine.ttlMs);
          return d;
        }
      } else {
        for (const wait of [0, this.settleMs]) {
          if (wait) await this.sleep(wait);
          if (!(await this.readBack(signal))) return this.waitOn(this.seen);
        }
      }
      this.acquiredAt = lease.acquiredAt;
      this.lastError = null;
      this.holding(lease, startedMs);
      return d;
    });
  }

  /** Renews every renewEveryMs (retries within 1–2 s after a failure, every 5 s while suspended) until stop(). */
  startRenewing(): void {
    this.lostReported = false;
    this.renewing = true;
    this.armDeadline();
    this.schedule(Math.max(0, this.lastSuccessMs + this.renewEveryMs - this.now()));
  }

  private schedule(delayMs: number): void {
    if (!this.renewing) return;
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    const r = await this.attemptOnce();
    if (!this.renewing || r === 'lost') return;
    if (r === 'ok') this.schedule(Math.max(0, this.lastSuccessMs + this.renewEveryMs - this.now()));
    else this.schedule(this.suspended ? Math.min(this.renewEveryMs, 5_000) : this.retryMs);
  }

  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    if (!this.renewing || this.deadline === null || this.suspended || !this.held) return;
    this.deadlineTimer = setTimeout(() => this.deadlinePassed(), Math.max(0, this.deadline - this.now()));
  }

  /** The deadline timer fired with no successful renewal since it was armed: fence now. */
  private deadlinePassed(): void {
    this.deadlineTimer = undefined;
    if (this.suspended || this.lostReported || !this.held) return;
    this.attempt?.abort('the lease deadline passed');
    this.suspend();
  }

  private suspend(): void {
    const at = this.deadline === null ? 'unknown' : new Date(this.deadline).toISOString();
    const reason = `lease not renewed before its expiry minus ${this.marginMs} ms (${at}; ${this.store.url}: ${this.lastError ?? 'no renewal confirmed in time'})`;
    if (!this.onSuspended) { this.lost(reason, false); return; }
    this.suspended = reason;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.onSuspended(reason);
  }

  /** One renewal now (concurrent callers share the attempt in flight). */
  async renew(): Promise<void> {
    await this.attemptOnce();
  }

  private attemptOnce(): Promise<Outcome> {
    this.inFlight ??= this.renewal().finally(() => { this.inFlight = null; });
    return this.inFlight;
  }

  private async renewal(): Promise<Outcome> {
    if (this.lostReported) return 'lost';
    // Past the deadline with no timer to say so (renew() by hand): suspended now, and this
    // attempt is one to regain the lease.
    if (this.suspended === null && this.deadline !== null && this.held && this.now() >= this.deadline) this.suspend();
    if (this.lostReported) return 'lost';
    const wasSuspended = this.suspended !== null;
    // Bounded by the deadline while we hold a live lease; by the cap alone once suspended.
    const end = this.now() + this.attemptCapMs + (wasSuspended ? 2 * this.settleMs : 0);
    const a = this.startAttempt(!wasSuspended && this.deadline !== null ? Math.min(end, this.deadline) : end);
    this.attempt = a;
    try {
      // Where the store enforces preconditions and we know the etag of the version we
      // wrote, the conditional write alone proves the lease is still ours: no read first.
      let etag = this.enforced && !wasSuspended ? this.heldEtag : undefined;
      let acquiredAt = this.acquiredAt ?? this.seen?.acquiredAt;
      if (etag === undefined) {
        const cur = await this.store.read(a.signal);
        if (!cur || cur.lease.token !== this.me.token) {
          this.seen = cur?.lease ?? null;
          return this.lost(cur ? `lease taken by ${describeHolder(cur.lease)} until ${cur.lease.expiresAt}` : 'lease object disappeared', true);
        }
        etag = cur.etag;
        acquiredAt = this.acquiredAt ?? cur.lease.acquiredAt;
      }
      const startedMs = this.now();
      const next = newLease(this.me, startedMs, this.ttlMs, acquiredAt);
      const conditional = this.enforced && etag !== undefined;
      try {
        this.heldEtag = (await this.store.write(next, etag ? { etag } : {}, a.signal)).etag;
      } catch (err) {
        this.heldEtag = undefined;
        if (!(err instanceof LeaseConflict || err instanceof LeaseAmbiguous)) throw err;
        // Refused or ambiguous: one read decides. Someone else's lease: lost at once.
        if (!(await this.readBack(a.signal))) {
          return this.lost(`lease taken by ${this.seen ? describeHolder(this.seen) : 'nobody (lease object disappeared)'} (our renewal: ${err.message})`, true);
        }
        // Still ours: an earlier (ambiguous) write of ours won, or this one did after all.
        if (this.seen?.expiresAt !== next.expiresAt) throw err;
      }
      if (this.suspended !== null && !wasSuspended) throw new Error('renewal completed after the lease deadline: not counted');
      if (wasSuspended) {
        // After an expiry another host may have raced us: read back, and again after a settle.
        for (const wait of [0, this.settleMs]) {
          if (wait) await this.sleep(wait);
          if (!(await this.readBack(a.signal))) return this.lost(`lease taken by ${this.seen ? describeHolder(this.seen) : 'unknown'} during renewal`, true);
        }
      } else if (!conditional) {
        // The store ignores preconditions: only a read shows whether our write stood.
        if (!(await this.readBack(a.signal))) return this.lost(`lease taken by ${this.seen ? describeHolder(this.seen) : 'unknown'} during renewal`, true);
      }
      if (!wasSuspended && this.suspended !== null) throw new Error('renewal completed after the lease deadline: not counted');
      this.lastError = null;
      if (wasSuspended) {
        log.info({ lease: this.store.url, was: this.suspended }, 'lease renewed again: the store answers and nobody took it');
        this.suspended = null;
        this.holding(next, startedMs);
        this.onRegained?.();
      } else this.holding(next, startedMs);
      return 'ok';
    } catch (err) {
      // Whatever landed, the next attempt reads the lease first.
      this.heldEtag = undefined;
      this.lastError = errorMessage(err);
      log.warn({ err: this.lastError, lease: this.store.url }, 'lease renewal failed');
      // Without a running deadline timer (renew() called by hand), the check is here.
      if (!this.suspended && !this.lostReported && this.deadline !== null && this.now() >= this.deadline) this.suspend();
      return this.lostReported ? 'lost' : 'failed';
    } finally {
      a.done();
      if (this.attempt === a) this.attempt = null;
    }
  }

  private lost(reason: string, stolen: boolean): 'lost' {
    if (this.lostReported) return 'lost';
    this.lostReported = true;
    this.heldEtag = undefined;
    this.stop();
    this.onLost(reason, stolen);
    return 'lost';
  }

  /** No more renewals; the attempt in flight is aborted. The lease is left as it is. */
  stop(): void {
    this.renewing = false;
    clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.attempt?.abort('renewal stopped');
  }

  /** At the end of a complete drain: a replacement may start at once. */
  async release(): Promise<boolean> {
    this.stop();
    await this.inFlight?.catch(() => undefined);
    try {
      return await this.bounded(10_000, async (signal) => {
        const cur = await this.store.read(signal);
        if (cur?.lease.token !== this.me.token) return false;
        await this.store.remove(signal);
        this.deadline = null;
        this.heldEtag = undefined;
        return true;
      });
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'could not release the lease; it expires by itself');
      return false;
    }
  }

  /** The lease as it is in the store now (no decision, no write). */
  async peek(): Promise<Lease | null> {
    return (await this.bounded(15_000, (signal) => this.store.read(signal)))?.lease ?? null;
  }

  /** For promote --force: take the lease whoever holds it (an unconditional write). */
  async seize(): Promise<void> {
    const startedMs = this.now();
    const lease = newLease(this.me, startedMs, this.ttlMs);
    this.heldEtag = (await this.bounded(15_000, (signal) => this.store.write(lease, {}, signal))).etag;
    this.acquiredAt = lease.acquiredAt;
    this.holding(lease, startedMs);
  }
}
