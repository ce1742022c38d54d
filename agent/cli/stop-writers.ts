import { readFileSync } from 'node:fs';
import { EXIT, errorMessage } from '../errors.ts';
import { PATHS, UNITS } from '../paths.ts';
import { loadConfig } from '../config/config.ts';
import { setSecrets } from '../log.ts';
import { s3Client } from '../files/store.ts';
import { FileLeaseStore, S3LeaseStore, describeHolder, safetyMargin, type Lease } from '../replication/lease.ts';
import { Systemd, type UnitState } from '../systemd/dbus.ts';
import { runCommand } from './common.ts';

/** Below this, a final sync is not worth starting: Litestream is killed instead. */
export const MIN_FINAL_SYNC_MS = 3_000;
/** Vaultwarden's stop (120 s) + this + the kill (30 s) stay within the agent's TimeoutStopSec (330 s). */
const MAX_FINAL_SYNC_MS = 150_000;
/** How long the lease read may take (the agent is gone; nothing waits for us but the restart). */
const LEASE_READ_MS = 5_000;
/** States in which a unit's process may still write. */
const RUNNING = new Set(['active', 'activating', 'deactivating', 'reloading']);

export type LitestreamPlan =
  | { action: 'final-sync'; withinMs: number; why: string }
  | { action: 'kill'; why: string };

/**
 * What to do with a Litestream the agent left running. Its final sync (confirm-sync, then
 * SIGTERM) uploads to the replica: right only while the lease is provably this host's
 * (same instance id: this boot's agent) and not about to lapse; the stop is bounded by
 * the lease's expiry less the safety margin, the point by which a holder must have
 * stopped writing. Anything else (another holder, no lease, unreadable) → SIGKILL, no
 * upload: the local WAL and Litestream's shadow WAL keep the tail, and the next agent
 * that holds the lease uploads it.
 */
export function planLitestream(lease: Lease | null | { error: string }, myInstance: string | undefined, nowMs: number): LitestreamPlan {
  if (lease && 'error' in lease) return { action: 'kill', why: `the lease cannot be read (${lease.error})` };
  if (!lease) return { action: 'kill', why: 'there is no lease' };
  if (!myInstance || lease.instance !== myInstance) return { action: 'kill', why: `the lease is held by ${describeHolder(lease)}, not by this host` };
  const until = Date.parse(lease.expiresAt) - safetyMargin(lease.ttlMs);
  const left = until - nowMs;
  if (!Number.isFinite(left) || left < MIN_FINAL_SYNC_MS) return { action: 'kill', why: `this host's lease runs out at ${lease.expiresAt} (${Number.isFinite(left) ? `${Math.round(left / 1000)} s left before its safety margin` : 'no valid expiry'})` };
  return { action: 'final-sync', withinMs: left, why: `this host holds the lease until ${lease.expiresAt}` };
}

/** This boot's instance id, read only (never created: the agent creates it). */
function myInstance(): string | undefined {
  try {
    const r = JSON.parse(readFileSync(PATHS.instanceFile, 'utf8')) as { id?: unknown };
    return typeof r.id === 'string' ? r.id : undefined;
  } catch {
    return undefined;
  }
}

async function readLease(configPath: string): Promise<Lease | null | { error: string }> {
  try {
    const cfg = loadConfig(configPath);
    setSecrets(cfg.secrets);
    const store = cfg.s3 ? new S3LeaseStore(cfg.s3, s3Client(cfg.s3)) : new FileLeaseStore(cfg.localReplicaPath);
    return (await store.read(AbortSignal.timeout(LEASE_READ_MS)))?.lease ?? null;
  } catch (err) {
    return { error: errorMessage(err) };
  }
}

/**
 * `vwstream-agent stop-writers`: the agent unit's ExecStopPost, run after every exit of
 * the agent's main process. After a drain (or any exit that stopped them) both writers
 * are inactive and it does nothing. Otherwise — a crash, a kill, the watchdog, exit 78
 * at a restart, a drain cut short by TimeoutStopSec — nobody renews the lease any more:
 * Vaultwarden is stopped (no new writes), then Litestream, with its confirmed final sync
 * only within this host's lease (see planLitestream), else killed without one.
 */
export function stopWritersCommand(args: { config: string }): Promise<never> {
  return runCommand(async () => {
    const say = (l: string) => process.stdout.write(`stop-writers: ${l}\n`);
    const systemd = await Systemd.connect();
    try {
      const state = (u: string): Promise<UnitState> => systemd.state(u);
      const vw = await state(UNITS.vaultwarden);
      const ls = await state(UNITS.litestream);
      if (!RUNNING.has(vw.activeState) && !RUNNING.has(ls.activeState)) return EXIT.OK; // drained: nothing to do
      const why = [process.env.SERVICE_RESULT && `result ${process.env.SERVICE_RESULT}`, process.env.EXIT_CODE && `${process.env.EXIT_CODE} ${process.env.EXIT_STATUS ?? ''}`.trim()].filter(Boolean).join(', ');
      say(`vwstream-agent stopped without a drain${why ? ` (${why})` : ''}; stopping ${[RUNNING.has(vw.activeState) && UNITS.vaultwarden, RUNNING.has(ls.activeState) && UNITS.litestream].filter(Boolean).join(', then ')}: nobody renews the lease now`);
      let t = Date.now();
      if (RUNNING.has(vw.activeState)) {
        // Bounded by the unit's own TimeoutStopSec (the agent's drop-in), plus slack.
        const r = await systemd.stop(UNITS.vaultwarden, 120_000);
        say(`${UNITS.vaultwarden} stop ${r} in ${Date.now() - t} ms`);
      }
      if (!RUNNING.has((await state(UNITS.litestream)).activeState)) return EXIT.OK;
      const plan = planLitestream(await readLease(args.config), myInstance(), Date.now());
      t = Date.now();
      if (plan.action === 'final-sync') {
        say(`${plan.why}: ${UNITS.litestream} stops with its confirmed final sync, within ${Math.round(plan.withinMs / 1000)} s`);
        // Capped so that this ExecStopPost ends within the agent's TimeoutStopSec (330 s).
        const r = await systemd.stop(UNITS.litestream, Math.min(plan.withinMs, MAX_FINAL_SYNC_MS));
        if (r !== 'timeout') {
          say(`${UNITS.litestream} stop ${r} in ${Date.now() - t} ms`);
          return EXIT.OK;
        }
        say(`${UNITS.litestream} still stopping when the lease's margin began: killed (SIGKILL), no more uploads`);
      } else {
        say(`${plan.why}: ${UNITS.litestream} killed (SIGKILL) without a final sync; the local WAL keeps the tail for the next start`);
      }
      await systemd.kill(UNITS.litestream).catch(() => undefined);
      // Let systemd see the SIGKILLed main process die first: a stop job queued before that
      // would run the unit's ExecStop (confirm-sync) as for an orderly stop.
      for (let i = 0; i < 50 && RUNNING.has((await state(UNITS.litestream)).activeState); i++) await new Promise((r) => setTimeout(r, 100));
      const after = await state(UNITS.litestream);
      if (!RUNNING.has(after.activeState)) {
        say(`${UNITS.litestream} ${after.activeState} (${after.result}) in ${Date.now() - t} ms`);
        return EXIT.OK;
      }
      const r = await systemd.stop(UNITS.litestream, 30_000);
      say(`${UNITS.litestream} stop ${r} in ${Date.now() - t} ms`);
      return EXIT.OK;
    } finally {
      systemd.disconnect();
    }
  });
}
