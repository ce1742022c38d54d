import type { HealthCheck } from '../api/types.ts';
import { formatHuman } from '../config/duration.ts';
import { errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { UNITS } from '../paths.ts';
import { describeHolder, safetyMargin } from '../replication/lease.ts';
import type { StateMachine } from './machine.ts';
import type { Clock, CopyPort, LeasePort, NotifierPort, StatePort, SystemdPort } from './ports.ts';
import type { UnitSupervisor } from './units.ts';

export interface SecondarySettings {
  serve: boolean;
  serverless: boolean;
  intervalMs: number;
  maxSyncAgeMs: number;
  leaseTtlMs: number;
  replica: string;
  /** What to say when the replica does not exist yet (config.ts replicaMissingWarning). */
  replicaMissing: string;
}

/** How long one refresh may keep the loop from going round before the watchdog counts it hung. */
const REFRESH_BOUND_MS = 30 * 60_000;

export interface RefreshRecord { at: number; ok: boolean; detail: string }

/**
 * The secondary: a copy of the replica, refreshed every SECONDARY_SYNC_INTERVAL (once in
 * serverless mode), served unless SECONDARY_SERVE=false; promote makes it primary. Never
 * uploads, never takes the lease except on promote.
 */
export class Secondary {
  lastRefresh: Date | null = null;
  lastDowntimeMs: number | null = null;
  readonly counts = { swapped: 0, skipped: 0, localChangesKept: 0, failed: 0 };
  /** The last attempt, successful or not. */
  lastAttempt: RefreshRecord | null = null;
  /** Set while the replica this secondary follows does not exist (a status warning). */
  replicaMissing: string | null = null;
  private promoted = false;
  /** Refreshes (timer, promote) never overlap. */
  private busy: Promise<unknown> = Promise.resolve();
  private readonly d: {
    machine: StateMachine; notifier: NotifierPort; units: UnitSupervisor; systemd: SystemdPort; copy: CopyPort; state: StatePort;
    lease: LeasePort; clock: Clock; settings: SecondarySettings;
    notifyLocalChanges: (text: string) => void; pruneAside: () => Promise<void>;
    beat: () => void; startExtras: (signal: AbortSignal) => Promise<void>;
    /** Runs a bounded long step (a restore of the replica) that the watchdog allows. */
    step: <T>(what: string, boundMs: number, fn: () => Promise<T>) => Promise<T>;
  };

  constructor(deps: Secondary['d']) { this.d = deps; }

  get detail(): string {
    const s = this.d.settings;
    return `${s.serve ? 'serving' : 'warm standby (not serving)'} a copy of ${s.replica}${s.serverless ? ', restored once (serverless)' : `, refreshed every ${formatHuman(s.intervalMs)}`}`;
  }

  /** Restores until it succeeds, serves, then refreshes on the interval until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const { machine, notifier, units, clock, settings } = this.d;
    for (const u of [UNITS.litestream, UNITS.vaultwarden]) {
      if (await units.isActive(u)) await units.stop(u, 60_000);
    }
    await machine.enter('restore', `restoring from ${settings.replica} (secondary)`);
    let ready = false;
    for (;;) {
      this.d.beat();
      try {
        await this.d.step('restoring the copy', REFRESH_BOUND_MS, () => this.refresh('start', signal));
        this.replicaMissing = null;
        break;
      } catch (err) {
        if (signal.aborted) return;
        // Say once, as a warning, when there is nothing at all to follow (a prefix that does not match the primary's?).
        const exists = await this.d.copy.replicaExists().catch(() => true);
        if (!exists && this.replicaMissing === null) log.warn({ replica: settings.replica }, settings.replicaMissing);
        this.replicaMissing = exists ? null : settings.replicaMissing;
        await machine.enter('restore', `secondary cannot restore yet: ${errorMessage(err)}; retrying`);
        if (!ready) { ready = true; await notifier.ready(`restoring: ${machine.detail}`); }
        await clock.sleep(10_000, signal);
        if (signal.aborted) return;
      }
    }
    if (settings.serve) {
      if (!(await units.isActive(UNITS.vaultwarden))) await units.start(UNITS.vaultwarden);
      await units.waitAlive(120_000, signal);
      if (signal.aborted) return;
      await this.settleAfterStart();
      await this.d.startExtras(signal);
    }
    await machine.enter('serve', this.detail);
    await notifier.ready(`serving: ${this.detail}`);
    let tick = 0;
    while (!signal.aborted) {
      this.d.beat(); // the watchdog follows whichever loop runs
      await clock.sleep(1000, signal);
      if (signal.aborted) break;
      tick++;
      if (tick % 5 === 0 && settings.serve) await units.checkAlive();
      if (settings.serverless || this.promoted) continue;
      if (clock.now() - (this.lastAttempt?.at ?? this.lastRefresh?.getTime() ?? 0) >= this.retryAfterMs()) {
        await this.d.step('refreshing the copy', REFRESH_BOUND_MS, () => this.refresh('interval', signal)).catch((err) => log.warn({ err: errorMessage(err) }, `secondary refresh failed: ${errorMessage(err)}; serving the previous copy`));
      }
    }
  }

  /** After a failed attempt, try again sooner than the interval (but not in a tight loop). */
  private retryAfterMs(): number {
    const every = this.d.settings.intervalMs;
    return this.lastAttempt && !this.lastAttempt.ok ? Math.min(every, 60_000) : every;
  }

  refresh(why: string, signal: AbortSignal): Promise<void> {
    const next = this.busy.then(() => this.refreshNow(why, signal));
    this.busy = next.catch(() => undefined);
    return next;
  }

  /**
   * One refresh: restore into a temporary file, check it, swap it in only when it differs,
   * with Vaultwarden stopped for just the swap. Local changes made on the secondary since
   * the last refresh are set aside, never dropped. Whatever fails after Vaultwarden was
   * stopped, it is started again on the copy in place (the previous one when the swap did
   * not happen).
   */
  private async refreshNow(why: string, signal: AbortSignal): Promise<void> {
    const { copy, units, state, clock } = this.d;
    const t0 = clock.now();
    let fetched: { tmp: string; digest: string; users: number } | undefined;
    let stopped = false;
    try {
      fetched = await copy.fetch(signal);
      this.d.beat();
      signal.throwIfAborted(); // stopping: the copy in place stays as it is
      const previous = state.read().secondaryDigest;
      const local = copy.local();
      if (local.digest === fetched.digest) {
        this.counts.skipped++;
        await copy.restoreFiles(signal);
        this.succeeded(`unchanged (${fetched.users} users)`);
        return;
      }
      let localChanged = local.exists && (!local.intact || local.digest !== previous);
      const serving = await units.isActive(UNITS.vaultwarden);
      const t = clock.now();
      if (serving) { await units.stop(UNITS.vaultwarden, 60_000); stopped = true; }
      // Decided again now that Vaultwarden is stopped: a write that landed between the check
      // above and the stop is in the file too, and must be kept, not replaced.
      let lateWrite = false;
      if (!localChanged && local.exists) {
        const after = copy.local();
        lateWrite = after.exists && (!after.intact || after.digest !== previous);
        localChanged = lateWrite;
      }
      if (localChanged) {
        const kept = await copy.keepAside('secondary-local-changes');
        this.counts.localChangesKept++;
        log.warn({ keptAt: kept, lateWrite }, `local changes on the secondary kept at ${kept} (a secondary's writes are not replicated${lateWrite ? '; written while the refresh stopped Vaultwarden' : ''})`);
        this.d.notifyLocalChanges(`local changes on the secondary kept at ${kept}`);
      }
      await copy.install(fetched.tmp);
      this.counts.swapped++; // counted when swapped in (status shows it as soon as the new copy is live)
      await state.update({ secondaryDigest: fetched.digest });
      await copy.restoreFiles(signal);
      if (stopped && !signal.aborted) { // stopping: the drain has nothing to start again for
        await units.start(UNITS.vaultwarden);
        stopped = false;
        await units.waitAlive(120_000, signal);
        this.lastDowntimeMs = clock.now() - t;
        await this.settleAfterStart();
      }
      this.succeeded(`swapped in (${fetched.users} users)`);
      log.info({ why, users: fetched.users, downtimeMs: this.lastDowntimeMs, ms: clock.now() - t0 }, `secondary refreshed from ${this.d.settings.replica} (${fetched.users} users${serving ? `, Vaultwarden down ${this.lastDowntimeMs} ms` : ''})`);
      if (localChanged) await this.d.pruneAside();
    } catch (err) {
      this.counts.failed++;
      this.lastAttempt = { at: clock.now(), ok: false, detail: errorMessage(err) };
      if (stopped && !signal.aborted) {
        // Never leave the standby dark because a refresh failed: back on the copy in place.
        log.warn({ err: errorMessage(err) }, `secondary refresh failed after Vaultwarden was stopped (${errorMessage(err)}); starting it again on the previous copy`);
        await units.start(UNITS.vaultwarden).then(() => units.waitAlive(120_000, signal)).catch((e) => log.error({ err: errorMessage(e) }, `could not start Vaultwarden again after the failed refresh: ${errorMessage(e)}`));
      }
      throw err;
    } finally {
      if (fetched) await copy.discard(fetched.tmp).catch(() => undefined);
    }
  }

  /**
   * What Vaultwarden wrote to the copy as it started — its migrations, when this host runs
   * another version than the primary (a rolling upgrade does standbys first) — is not a
   * local change: the copy as it answers is the reference for the next refresh.
   */
  private async settleAfterStart(): Promise<void> {
    const local = this.d.copy.local();
    const previous = this.d.state.read().secondaryDigest;
    if (!local.exists || !local.intact || !local.digest || local.digest === previous) return;
    await this.d.state.update({ secondaryDigest: local.digest });
    log.info('the copy changed while Vaultwarden started (its migrations: this host runs another version than the primary?); that is the reference for local changes now');
  }

  private succeeded(detail: string): void {
    this.lastRefresh = new Date(this.d.clock.now());
    this.lastAttempt = { at: this.d.clock.now(), ok: true, detail };
  }

  /**
   * `promote`: refused while a live primary holds the lease (unless forced); a last
   * refresh when the replica is reachable; the lease taken; the role persisted; then the
   * agent restarts itself as primary.
   */
  async promote(force: boolean, signal: AbortSignal): Promise<{ status: number; body: unknown }> {
    const { lease, settings, systemd } = this.d;
    const cur = await lease.peek().catch(() => null);
    if (cur && !force && this.d.clock.now() <= Date.parse(cur.expiresAt) + safetyMargin(settings.leaseTtlMs)) {
      return { status: 409, body: { error: `primary ${describeHolder(cur)} holds the lease until ${cur.expiresAt}; if that host is dead: vwstream-agent promote --force` } };
    }
    this.promoted = true;
    try {
      await this.refresh('promote', signal);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'promote: last refresh failed; promoting with the copy this host has');
    }
    await lease.seize();
    const override = await this.d.copy.persistPrimary();
    log.warn({ previousHolder: cur?.holder ?? null }, `PROMOTED to primary${cur ? ` (lease taken from ${cur.holder})` : ''}; role persisted in ${override}; restarting as primary`);
    setTimeout(() => void systemd.restartNoWait(UNITS.agent).catch((err) => log.error({ err: errorMessage(err) }, 'self-restart failed')), 200);
    return { status: 200, body: { promoted: true, previousHolder: cur?.holder ?? null, override } };
  }

  /**
   * The copy's age against the role's own interval: one missed refresh is tolerated
   * (2 × SECONDARY_SYNC_INTERVAL, at least HEALTHCHECK_MAX_SYNC_AGE); a serverless
   * secondary is restored once and is healthy while it has that copy.
   */
  healthCheck(): HealthCheck {
    const s = this.d.settings;
    if (!this.lastRefresh) return { name: 'refresh_age', ok: false, detail: `copy refreshed from the replica: never${this.lastAttempt ? ` (last attempt: ${this.lastAttempt.detail})` : ''}` };
    const age = this.d.clock.now() - this.lastRefresh.getTime();
    const failed = this.lastAttempt && !this.lastAttempt.ok ? `; last attempt failed: ${this.lastAttempt.detail}` : '';
    if (s.serverless) return { name: 'refresh_age', ok: true, detail: `copy restored ${Math.round(age / 1000)}s ago (serverless: restored once)${failed}` };
    const max = Math.max(s.maxSyncAgeMs, 2 * s.intervalMs);
    return { name: 'refresh_age', ok: age <= max, detail: `copy refreshed from the replica ${Math.round(age / 1000)}s ago (max ${max / 1000}s: twice SECONDARY_SYNC_INTERVAL)${failed}` };
  }
}
