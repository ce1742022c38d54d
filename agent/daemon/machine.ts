import type { DaemonState } from '../api/types.ts';
import { log } from '../log.ts';

/**
 * The daemon's state machine. Every state change goes through `enter()`, which alone
 * performs a transition's side effects: one journal line, STATUS= for systemctl status,
 * and the transition counters /metrics exposes. The table below is the whole graph: an
 * event names where it leads and the states it may come from.
 */
export const EVENTS = {
  /** Checking the binary, the runtime, the lease store. */
  begin: { from: ['starting'], to: 'starting' },
  /** Another live primary holds the lease: READY is sent, the agent waits to take over. */
  wait_lease: { from: ['starting', 'waiting'], to: 'waiting' },
  /** Deciding on and restoring the database and files (a secondary: its copy). */
  restore: { from: ['starting', 'waiting', 'restoring'], to: 'restoring' },
  /** Litestream starts, the mirror syncs, Vaultwarden starts (from starting or waiting: running units adopted). */
  replicate: { from: ['starting', 'waiting', 'restoring', 'replicating'], to: 'replicating' },
  /** Vaultwarden answers and (primary) Litestream replicates; READY=1. Also back from degraded. */
  serve: { from: ['restoring', 'replicating', 'degraded'], to: 'serving' },
  /** A unit died and is being restarted, or replication is suspended (lease store unreachable). */
  degrade: { from: ['serving', 'degraded'], to: 'degraded' },
  /** The lease is held by another: every writer stopped at once (during a drain too). */
  fence: { from: ['starting', 'waiting', 'restoring', 'replicating', 'serving', 'degraded', 'draining', 'fenced'], to: 'fenced' },
  /** The ordered stop: Vaultwarden, Litestream's final sync, the files. */
  drain: { from: ['starting', 'waiting', 'restoring', 'replicating', 'serving', 'degraded', 'draining', 'failed', 'refused'], to: 'draining' },
  /** The drain finished. */
  drained: { from: ['draining'], to: 'stopped' },
  /** An error the agent cannot go on from (exit 1); after the drain it is the last word again. */
  fail: { from: ['starting', 'waiting', 'restoring', 'replicating', 'serving', 'degraded', 'draining'], to: 'failed' },
  /** It will not go on without an operator (exit 65: the restore rule refuses). */
  refuse: { from: ['restoring', 'draining'], to: 'refused' },
} as const satisfies Record<string, { from: readonly DaemonState[]; to: DaemonState }>;

export type DaemonEvent = keyof typeof EVENTS;

/** Every state, in the order /metrics lists them. */
export const STATES: readonly DaemonState[] = ['starting', 'restoring', 'replicating', 'serving', 'degraded', 'refused', 'waiting', 'fenced', 'draining', 'stopped', 'failed'];

export interface StatusSink { status(text: string): Promise<void> }

export interface Transition { at: number; event: DaemonEvent; from: DaemonState; to: DaemonState; detail: string }

export class StateMachine {
  state: DaemonState = 'starting';
  detail = 'starting';
  since: number;
  /** Transitions into each state since the agent started (for /metrics). */
  readonly entered: Partial<Record<DaemonState, number>> = {};
  /** Every transition, in order (the unit tests read it; bounded). */
  readonly history: Transition[] = [];
  /** Events fired from a state the table does not allow: a bug, logged and counted. */
  readonly refusedEvents: string[] = [];
  /** Every (event, from-state) pair fired and allowed, no-ops included (the unit tests check coverage). */
  readonly fired = new Set<string>();
  private readonly sink: StatusSink;
  private readonly now: () => number;

  constructor(sink: StatusSink, now: () => number = Date.now) {
    this.sink = sink;
    this.now = now;
    this.since = now();
  }

  can(event: DaemonEvent): boolean {
    return (EVENTS[event].from as readonly DaemonState[]).includes(this.state);
  }

  /**
   * Fires `event`: enters its state with `detail`. An event the table does not allow from
   * the current state is refused (logged; the state stays), so a late callback cannot
   * revive a stopped or fenced daemon.
   */
  async enter(event: DaemonEvent, detail: string, fields: Record<string, unknown> = {}): Promise<boolean> {
    const { to } = EVENTS[event];
    if (!this.can(event)) {
      this.refusedEvents.push(`${event} from ${this.state}`);
      log.debug({ event, state: this.state, to }, `state machine: ${event} is not allowed from ${this.state}; ignored`);
      return false;
    }
    const from = this.state;
    this.fired.add(`${event}:${from}`);
    if (to === from && detail === this.detail) return true;
    this.state = to;
    this.detail = detail;
    this.since = this.now();
    if (to !== from) this.entered[to] = (this.entered[to] ?? 0) + 1;
    this.history.push({ at: this.since, event, from, to, detail });
    if (this.history.length > 200) this.history.shift();
    const level = to === 'failed' || to === 'refused' || to === 'fenced' ? 'error' : to === 'degraded' ? 'warn' : 'info';
    log[level]({ ...fields, state: to, from }, `${to}: ${detail}`);
    await this.sink.status(`${to}: ${detail}`).catch(() => undefined);
    return true;
  }
}
