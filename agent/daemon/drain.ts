import type { DrainBudget } from '../config/budget.ts';
import { EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import { UNITS } from '../paths.ts';
import type { DrainStep } from '../state-file.ts';
import type { Fencing } from './fencing.ts';
import type { StateMachine } from './machine.ts';
import type { Clock, MirrorPort, NotifierPort, StartupPort, StatePort } from './ports.ts';
import type { ReplicationWatch } from './replication-watch.ts';
import type { UnitSupervisor } from './units.ts';

export interface DrainContext {
  role: 'primary' | 'secondary';
  /** Litestream was started for this run: the drain has something to confirm and upload. */
  replicating: boolean;
}

/**
 * The ordered stop: Vaultwarden first (no new writes) → Litestream's final sync,
 * confirmed by its ExecStop against the local WAL position → the final file upload. Each
 * step is bounded by its share of STOP_GRACE_PERIOD; systemd's unit ordering enforces
 * the same order at poweroff, where the agent waits for it. A fenced host only stops
 * Vaultwarden: it must not write any more.
 */
export class Drain {
  private readonly d: {
    machine: StateMachine; notifier: NotifierPort; units: UnitSupervisor; mirror: MirrorPort; fencing: Fencing;
    startup: StartupPort; state: StatePort; watch: ReplicationWatch; budget: DrainBudget; clock: Clock;
  };

  constructor(deps: Drain['d']) { this.d = deps; }

  async run(ctx: DrainContext): Promise<number> {
    const { machine, notifier, units, mirror, fencing, budget, clock } = this.d;
    const fenced = fencing.fenced;
    if (fenced) {
      await fencing.settled;
      fencing.keeper.stop();
      await units.kill(UNITS.litestream); // a start that raced the fence does not outlive it
      await units.stop(UNITS.vaultwarden, budget.vaultwardenMs).catch(() => undefined);
      await machine.enter('fence', fenced.reason);
      return fenced.exitCode;
    }
    const failedBefore = machine.state === 'failed' || machine.state === 'refused' ? { event: machine.state === 'failed' ? 'fail' as const : 'refuse' as const, detail: machine.detail } : null;
    await machine.enter('drain', 'stopping Vaultwarden');
    await notifier.stopping('draining: stopping Vaultwarden');
    if (ctx.role === 'secondary') {
      const vw = await units.stop(UNITS.vaultwarden, budget.vaultwardenMs + 2_000);
      log.info({ step: 'vaultwarden', ms: vw.ms }, `drain: vaultwarden ${vw.result} in ${vw.ms} ms (secondary: nothing to upload)`);
      return this.finish(failedBefore);
    }
    const started = clock.now();
    const steps: DrainStep[] = [];
    const step = (s: DrainStep) => {
      steps.push(s);
      log[s.ok ? 'info' : 'warn']({ step: s.step, ok: s.ok, ms: s.ms }, `drain: ${s.step} ${s.ok ? 'done' : 'FAILED'} in ${s.ms} ms: ${s.detail}`);
    };
    mirror.stopWatching();
    await units.systemdPort.stop(UNITS.syncTimer, 5_000).catch(() => undefined);

    const vw = await units.stop(UNITS.vaultwarden, budget.vaultwardenMs + 2_000);
    step({ step: 'vaultwarden', ok: vw.result === 'done', ms: vw.ms, detail: vw.result === 'done' ? 'stopped, no new writes' : `stop job ${vw.result}` });
    if (this.d.fencing.fenced) return this.run(ctx); // fenced while Vaultwarden stopped: nothing more is written

    await machine.enter('drain', 'Litestream final sync');
    const ls = await units.stop(UNITS.litestream, budget.litestreamMs + 2_000);
    const verdict = await this.d.startup.readFinalSync();
    if (ctx.replicating) {
      const suspended = fencing.suspended;
      const ok = ls.result === 'done' && verdict?.confirmed === true && !suspended;
      step({ step: 'litestream', ok, ms: ls.ms, detail: suspended && !verdict ? `replication suspended (${suspended}); the replica lacks the writes made since` : verdict ? `final sync ${verdict.confirmed ? 'confirmed' : 'NOT confirmed'}: ${verdict.detail}${ls.result === 'done' ? '' : `; stop job ${ls.result}`}` : `no final-sync verdict (Litestream was not running or its ExecStop was killed); stop job ${ls.result}` });
      if (this.d.fencing.fenced) return this.run(ctx);

      await machine.enter('drain', 'final file upload');
      const t = clock.now();
      if (mirror.fenced) {
        step({ step: 'files', ok: false, ms: 0, detail: `not uploaded: ${mirror.fenced}` });
      } else {
        try {
          const r = await mirror.sync('shutdown', AbortSignal.timeout(budget.filesMs));
          step({ step: 'files', ok: r.errors.length === 0, ms: clock.now() - t, detail: `${r.uploaded} uploaded, ${r.deleted} deleted${r.errors.length ? `, ${r.errors.length} errors: ${r.errors[0]}` : ''}` });
        } catch (err) {
          const name = (err as Error).name;
          step({ step: 'files', ok: false, ms: clock.now() - t, detail: mirror.fenced ? `stopped: ${mirror.fenced}` : name === 'TimeoutError' || name === 'AbortError' ? `timed out after ${budget.filesMs} ms` : errorMessage(err) });
        }
      }
      if (this.d.fencing.fenced) return this.run(ctx);
      const failed = steps.filter((s) => !s.ok).map((s) => s.step);
      const complete = failed.length === 0;
      const ms = clock.now() - started;
      const detail = complete ? `complete in ${ms} ms` : `incomplete: ${failed.join(', ')} did not finish (${steps.filter((s) => !s.ok).map((s) => s.detail).join('; ')})`;
      log[complete ? 'info' : 'error']({ complete, ms, steps }, `drain ${detail}`);
      await this.d.state.bump('drains', complete ? 'complete' : 'incomplete').catch(() => undefined);
      // A replacement may start at once after a complete drain; after an incomplete one the
      // lease expires by itself (LEASE_TTL), so nobody starts from a replica missing our tail.
      if (complete && fencing.keeper.held && (await fencing.keeper.release())) log.info({ lease: fencing.keeper.url }, 'lease released');
      const lastDbSync = this.d.watch.lastDbSync;
      await this.d.state.update({ lastDrain: { complete, at: new Date(clock.now()).toISOString(), detail, steps, ms }, ...(lastDbSync ? { lastDbSync: lastDbSync.toISOString() } : {}) }).catch(() => undefined);
    }
    fencing.keeper.stop();
    return this.finish(failedBefore);
  }

  private async finish(failedBefore: { event: 'fail' | 'refuse'; detail: string } | null): Promise<number> {
    // A failed run keeps its failure as the last word (systemctl status shows it).
    if (failedBefore) await this.d.machine.enter(failedBefore.event, failedBefore.detail);
    else await this.d.machine.enter('drained', 'drained');
    return EXIT.OK;
  }
}
