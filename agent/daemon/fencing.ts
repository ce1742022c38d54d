import type { HealthCheck } from '../api/types.ts';
import { EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { UNITS } from '../paths.ts';
import { describeHolder } from '../replication/lease.ts';
import type { StateMachine } from './machine.ts';
import type { Clock, LeaseEvents, LeasePort, MirrorPort } from './ports.ts';
import type { UnitSupervisor } from './units.ts';

export interface Fenced { reason: string; exitCode: number; at: number }

/**
 * Fencing: the single-writer lease and what follows from it. The lease is taken before
 * anything is written, renewed while serving (the keeper fences by itself at expiry minus
 * the safety margin, whatever is in flight); when it cannot be renewed, every writer
 * (Litestream and the file mirror) stops at once and Vaultwarden keeps serving locally
 * (suspended); when the store answers again and the lease is still ours, replication
 * resumes; when someone else holds it, the host is fenced: writers stopped, Vaultwarden
 * stopped, the run ends. This applies during a drain too.
 */
export class Fencing implements LeaseEvents {
  fenced: Fenced | null = null;
  /** Why Litestream is stopped on purpose (lease not renewable); null = replicating. */
  suspended: string | null = null;
  private readonly lease: LeasePort;
  private readonly machine: StateMachine;
  private readonly units: UnitSupervisor;
  private readonly mirror: MirrorPort;
  private readonly clock: Clock;
  private readonly leaseTtlMs: number;
  private readonly hooks: {
    /** The run is to end now (fenced). */
    endRun: (reason: string) => void;
    /** Whether a stop was requested (a drain runs or will): Litestream is then not restarted. */
    stopping: () => boolean;
    /** Litestream was started by this run's start (so a suspension during the start stopped it). */
    replicationStarted: () => boolean;
    /** Litestream restarted after a suspension: the drain info and replication watch follow it. */
    litestreamRestarted: () => Promise<void>;
    notify: (text: string) => void;
    /** What status reports while replicating normally. */
    servingDetail: () => string;
    /** The watchdog's heartbeat: the waiting loops go round too. */
    beat: () => void;
  };

  constructor(opts: { lease: LeasePort; machine: StateMachine; units: UnitSupervisor; mirror: MirrorPort; clock: Clock; leaseTtlMs: number; hooks: Fencing['hooks'] }) {
    this.lease = opts.lease;
    this.machine = opts.machine;
    this.units = opts.units;
    this.mirror = opts.mirror;
    this.clock = opts.clock;
    this.leaseTtlMs = opts.leaseTtlMs;
    this.hooks = opts.hooks;
  }

  get keeper(): LeasePort { return this.lease; }

  /** Takes the lease, waiting (READY sent once, state "waiting") while another live primary holds it. False: stopped while waiting. */
  async take(signal: AbortSignal, onFirstWait: (detail: string) => Promise<void>): Promise<boolean> {
    let told = false;
    while (!signal.aborted) {
      try {
        const d = await this.lease.tryAcquire();
        if (d.action !== 'wait') {
          log.info({ lease: this.lease.url, reason: d.action === 'acquire' ? d.reason : 'renew' }, `lease taken (${this.lease.url})`);
          if (!signal.aborted) return true;
          // Stopped meanwhile: nothing was written, a replacement need not wait for the expiry.
          if (await this.lease.release()) log.info({ lease: this.lease.url }, 'lease released (stopped before anything was written)');
          return false;
        }
        const detail = `lease held by ${describeHolder({ holder: d.holder, instance: d.instance ?? undefined })} until ${d.until.toISOString()}; taking over when it expires`;
        await this.machine.enter('wait_lease', detail);
        if (!told) { told = true; await onFirstWait(detail); }
      } catch (err) {
        await this.machine.enter('wait_lease', `cannot read the lease at ${this.lease.url}: ${errorMessage(err)}`);
      }
      this.hooks.beat();
      await this.clock.sleep(Math.min(5_000, Math.max(1_000, this.leaseTtlMs / 4)), signal);
    }
    return false;
  }

  /** Renewal (and its deadline timer) from the moment the lease is taken: a long start is covered too. */
  startRenewing(): void { this.lease.startRenewing(); }

  /**
   * Before the start writes anything (Litestream, the first file pass): while the lease is
   * suspended, wait until it is renewed again (or the run ends).
   */
  async untilWritable(signal: AbortSignal): Promise<void> {
    let said = false;
    while (this.suspended && !this.fenced && !signal.aborted) {
      if (!said) { said = true; await this.machine.enter(this.machine.state === 'restoring' ? 'restore' : 'replicate', `waiting for the lease to be renewed before writing: ${this.suspended}`); }
      this.hooks.beat();
      await this.clock.sleep(500, signal);
    }
  }

  /**
   * The lease could not be renewed before its deadline (store unreachable). Nobody else can
   * have taken it while nobody reaches the store, but someone may once it answers: every
   * writer stops now. Vaultwarden keeps serving from the local database.
   */
  onSuspended(reason: string): void { void this.suspend(reason); }

  async suspend(reason: string): Promise<void> {
    if (this.fenced || this.suspended) return;
    this.suspended = reason;
    // Writers first, words after: the deadline is what counts.
    this.mirror.fence(`replication suspended: ${reason}`);
    await this.units.kill(UNITS.litestream);
    log.error({ reason }, `REPLICATION SUSPENDED: ${reason}; Litestream and the file mirror stopped so they cannot write over another holder; Vaultwarden keeps serving; resuming when the lease can be renewed`);
    this.hooks.notify(`replication suspended: ${reason}`);
    if (this.machine.can('degrade')) await this.machine.enter('degrade', `replication suspended: ${reason}`);
  }

  onRegained(): void { void this.resume(); }

  /** The store answers again and the lease was still ours: Litestream and the mirror catch up. */
  async resume(): Promise<void> {
    if (!this.suspended || this.fenced) return;
    const st = this.machine.state;
    if (this.hooks.stopping() || !['starting', 'waiting', 'restoring', 'replicating', 'serving', 'degraded'].includes(st)) {
      // A drain (or a failure's) is under way: it goes on without Litestream; nothing restarts.
      log.info({ was: this.suspended, during: st }, 'lease renewed again during the stop: the drain goes on without restarting Litestream');
      return;
    }
    const starting = st !== 'serving' && st !== 'degraded';
    if (starting && !this.hooks.replicationStarted()) {
      // Still before Litestream's start: the start itself starts it now that the lease holds.
      log.info({ was: this.suspended }, 'lease renewed again during the start; it goes on');
      this.suspended = null;
      this.mirror.unfence();
      return;
    }
    log.info({ was: this.suspended }, 'lease renewed: restarting Litestream to catch up');
    try {
      await this.units.start(UNITS.litestream);
      // Fenced or stopping meanwhile: the start must not outlive that decision.
      if (this.fenced || this.hooks.stopping()) { await this.units.kill(UNITS.litestream); return; }
      await this.hooks.litestreamRestarted();
      if (this.fenced || this.hooks.stopping()) { await this.units.kill(UNITS.litestream); return; }
      this.suspended = null;
      this.mirror.unfence();
      if (this.machine.can('serve') && !starting) await this.machine.enter('serve', `replication resumed; ${this.hooks.servingDetail()}`);
    } catch (err) {
      log.error({ err: errorMessage(err) }, `could not restart Litestream after the outage: ${errorMessage(err)}`);
      if (this.fenced || this.hooks.stopping()) return;
      this.suspended = null; // the unit supervision restarts it
      this.mirror.unfence();
    }
  }

  /** A writer started while the lease was suspended or lost (a start racing the deadline) is killed at once. */
  async enforce(): Promise<void> {
    if (this.suspended || this.fenced) await this.units.kill(UNITS.litestream);
  }

  onLost(reason: string, stolen: boolean): void { void this.fence(reason, stolen); }

  /**
   * The lease was taken by another host: stop writing at once. Litestream is killed (no
   * final upload over the new holder's replica), the mirror fenced, Vaultwarden stopped by
   * the drain; local data stays. Stolen → exit 65 (an operator decides); otherwise exit 1
   * and systemd restarts the agent, which waits for the lease.
   */
  async fence(reason: string, stolen: boolean): Promise<void> {
    if (this.fenced) return;
    this.fenced = { reason, exitCode: stolen ? EXIT.REFUSED : EXIT.FAILED, at: this.clock.now() };
    let done!: () => void;
    this.settled = new Promise((r) => { done = r; });
    this.hooks.endRun(reason); // every phase sees it at once: nothing more is started
    this.lease.stop();
    this.mirror.fence(`fenced: ${reason}`);
    this.mirror.stopWatching();
    await this.units.kill(UNITS.litestream);
    log.error({ reason, stolen }, `FENCED: ${reason}; stopping Vaultwarden and Litestream, local data kept`);
    this.hooks.notify(`fenced: ${reason}`);
    await this.units.systemdPort.stop(UNITS.syncTimer, 5_000).catch(() => undefined);
    await this.machine.enter('fence', reason);
    done();
  }

  /** Resolves once the fencing steps (writers killed, timers stopped) are done. */
  settled: Promise<void> = Promise.resolve();

  healthCheck(): HealthCheck {
    const l = this.lease.seen;
    const ok = this.lease.held && !this.lease.suspended && !this.suspended;
    const why = this.lease.suspended ?? this.suspended;
    return { name: 'lease', ok, detail: why ? `not renewed: ${why}` : l ? `${ok ? 'held' : `held by ${describeHolder(l)}`} until ${l.expiresAt}` : 'not held' };
  }
}
