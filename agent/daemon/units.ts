import type { HealthCheck, UnitSummary } from '../api/types.ts';
import { AgentError } from '../errors.ts';
import { UNITS } from '../paths.ts';
import { describeUnit, type UnitState } from '../systemd/dbus.ts';
import type { Clock, SystemdPort } from './ports.ts';

/** Restarts allowed per unit within RESTART_WINDOW_MS before the agent gives up. */
export const RESTART_BUDGET = 5;
export const RESTART_WINDOW_MS = 600_000;

/**
 * Unit supervision: starting and stopping Vaultwarden and Litestream, watching them
 * (a unit that dies is restarted, within a budget), and Vaultwarden's /alive.
 */
export class UnitSupervisor {
  readonly units: Record<string, UnitSummary> = {};
  readonly restartCounts: Record<string, number> = {};
  readonly events: Record<string, { at: string; what: string }> = {};
  vaultwardenAlive = false;
  private restarts: number[] = [];
  private readonly systemd: SystemdPort;
  private readonly clock: Clock;
  private readonly alive: () => Promise<boolean>;
  readonly aliveUrl: string;

  constructor(opts: { systemd: SystemdPort; clock: Clock; alive: () => Promise<boolean>; aliveUrl: string }) {
    this.systemd = opts.systemd;
    this.clock = opts.clock;
    this.alive = opts.alive;
    this.aliveUrl = opts.aliveUrl;
  }

  get systemdPort(): SystemdPort { return this.systemd; }

  async isActive(unit: string): Promise<boolean> {
    return (await this.systemd.state(unit)).activeState === 'active';
  }

  async start(unit: string): Promise<void> {
    const result = await this.systemd.start(unit);
    if (result !== 'done') {
      const s = await this.systemd.state(unit).catch(() => undefined);
      throw new AgentError(`${unit} did not start (job ${result}${s ? `; ${describeUnit(unit, s)}` : ''})`, { hint: `journalctl -u ${unit}` });
    }
  }

  async stop(unit: string, timeoutMs: number): Promise<{ result: string; ms: number }> {
    const started = this.clock.now();
    const result = await this.systemd.stop(unit, timeoutMs);
    return { result, ms: this.clock.now() - started };
  }

  /** SIGKILL: the unit is gone at once, without its ExecStop (no final upload). */
  async kill(unit: string): Promise<void> {
    await this.systemd.kill(unit).catch(() => undefined);
  }

  async checkAlive(): Promise<boolean> {
    this.vaultwardenAlive = await this.alive().catch(() => false);
    return this.vaultwardenAlive;
  }

  /** Until Vaultwarden answers /alive; fails when it exits or the time is up; returns early on stop. */
  async waitAlive(timeoutMs: number, signal: AbortSignal): Promise<void> {
    const started = this.clock.now();
    const deadline = started + timeoutMs;
    while (this.clock.now() < deadline && !signal.aborted) {
      if (await this.checkAlive()) return;
      const s = await this.systemd.state(UNITS.vaultwarden);
      if (s.activeState !== 'active' && s.activeState !== 'activating') {
        throw new AgentError(`Vaultwarden exited during start (${describeUnit(UNITS.vaultwarden, s)})`, { hint: `journalctl -u ${UNITS.vaultwarden}` });
      }
      // Asked often while it usually comes up (READY waits for its answer), then at an easier pace.
      await this.clock.sleep(this.clock.now() - started < 3000 ? 50 : 250, signal);
    }
    if (!signal.aborted) throw new AgentError(`Vaultwarden did not answer ${this.aliveUrl} within ${timeoutMs / 1000}s`, { hint: `journalctl -u ${UNITS.vaultwarden}` });
  }

  /** The units' states: one call where the port can (a unit it did not answer for, or a failed call: state() per unit). */
  private async statesOf(units: readonly string[]): Promise<(UnitState | undefined)[]> {
    const all = this.systemd.states ? await this.systemd.states(units).catch(() => undefined) : undefined;
    return Promise.all(units.map((u) => all?.get(u) ?? this.systemd.state(u).catch(() => undefined)));
  }

  /** Refreshes the units' states for status (not while stopping). */
  async refresh(units: readonly string[]): Promise<void> {
    const states = await this.statesOf(units);
    units.forEach((unit, i) => {
      const s = states[i];
      if (s) this.units[unit] = { activeState: s.activeState, subState: s.subState, result: s.result };
    });
  }

  /**
   * One supervision round: each of `units` that is not running (and not `excused`, i.e.
   * stopped on purpose) is restarted after a back-off; `onDown`/`onBack` report it.
   * Throws when a unit used up its restart budget.
   */
  async poll(units: readonly string[], opts: { excused: (unit: string) => boolean; signal: AbortSignal; onDown: (unit: string, what: string) => Promise<void>; onBack: (unit: string) => Promise<void>; beforeStart?: (unit: string) => Promise<void> }): Promise<void> {
    const states = await this.statesOf(units);
    for (const [i, unit] of units.entries()) {
      const s = states[i];
      if (!s) continue;
      this.units[unit] = { activeState: s.activeState, subState: s.subState, result: s.result };
      if (opts.signal.aborted || ['active', 'activating', 'reloading'].includes(s.activeState) || opts.excused(unit)) continue;
      const what = describeUnit(unit, s);
      this.restartCounts[unit] = (this.restartCounts[unit] ?? 0) + 1;
      this.events[unit] = { at: new Date(this.clock.now()).toISOString(), what: `${what}; restarted by the agent` };
      await opts.onDown(unit, what);
      this.restarts = this.restarts.filter((t) => this.clock.now() - t < RESTART_WINDOW_MS);
      if (this.restarts.length >= RESTART_BUDGET) {
        throw new AgentError(`${unit} keeps dying (${RESTART_BUDGET} restarts in ${RESTART_WINDOW_MS / 60_000} minutes)`, { hint: `journalctl -u ${unit}` });
      }
      this.restarts.push(this.clock.now());
      await this.clock.sleep(1000 * this.restarts.length, opts.signal);
      if (opts.signal.aborted) return;
      if (opts.excused(unit)) continue; // stopped on purpose meanwhile (lease suspended): not restarted
      try {
        await opts.beforeStart?.(unit);
        await this.start(unit);
        if (opts.excused(unit)) { await this.kill(unit); continue; } // suspended while it started
        if (unit === UNITS.vaultwarden) await this.waitAlive(120_000, opts.signal);
        await opts.onBack(unit);
      } catch (err) {
        await opts.onDown(unit, `restart failed: ${(err as Error).message}`);
      }
    }
  }

  healthCheck(): HealthCheck {
    return { name: 'vaultwarden', ok: this.vaultwardenAlive, detail: this.vaultwardenAlive ? `${this.aliveUrl} answers` : `${this.aliveUrl} does not answer` };
  }
}
