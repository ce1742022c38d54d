import { constants as osConstants } from 'node:os';
import dbus from 'dbus-next';
import { AgentError } from '../errors.ts';

/**
 * systemd's Manager over D-Bus: the only module that talks to systemd (besides
 * notify.ts). Jobs are waited for through the JobRemoved signal, registered before the
 * call so a fast job is never missed.
 */
/** `result`/`execMainStatus`: a service's last outcome ('success'/0 while it is active: systemd resets them at each start). */
export interface UnitState { activeState: string; subState: string; result: string; execMainStatus: number }

type MessageBus = ReturnType<typeof dbus.systemBus>;
type Iface = dbus.ClientInterface;

export class Systemd {
  private bus: MessageBus;
  private manager!: Iface;
  private jobWaiters = new Map<string, (result: string) => void>();
  /** Unit object paths (fixed per name; systemd loads a unit when its path is asked for). */
  private unitPaths = new Map<string, string>();
  private finishedJobs = new Map<string, string>();

  private constructor(bus: MessageBus) {
    this.bus = bus;
  }

  static async connect(): Promise<Systemd> {
    const s = new Systemd(dbus.systemBus());
    try {
      const obj = await s.bus.getProxyObject('org.freedesktop.systemd1', '/org/freedesktop/systemd1');
      s.manager = obj.getInterface('org.freedesktop.systemd1.Manager');
      await s.manager.Subscribe();
    } catch (err) {
      s.bus.disconnect();
      throw new AgentError(`cannot reach systemd over D-Bus: ${(err as Error).message}`, { cause: err });
    }
    s.manager.on('JobRemoved', (_id: number, job: string, _unit: string, result: string) => {
      const waiter = s.jobWaiters.get(job);
      if (waiter) { s.jobWaiters.delete(job); waiter(result); } else {
        s.finishedJobs.set(job, result);
        if (s.finishedJobs.size > 200) s.finishedJobs.delete(s.finishedJobs.keys().next().value!);
      }
    });
    return s;
  }

  disconnect(): void {
    this.bus.disconnect();
  }

  private waitJob(job: string, timeoutMs: number): Promise<string> {
    const done = this.finishedJobs.get(job);
    if (done !== undefined) { this.finishedJobs.delete(job); return Promise.resolve(done); }
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.jobWaiters.delete(job); resolve('timeout'); }, timeoutMs);
      this.jobWaiters.set(job, (r) => { clearTimeout(timer); resolve(r); });
    });
  }

  /** Starts a unit and waits for the job: 'done' or the failure (failed, timeout, dependency…). */
  async start(unit: string, timeoutMs = 90_000): Promise<string> {
    await this.manager.ResetFailedUnit(unit).catch(() => undefined);
    const job = (await this.manager.StartUnit(unit, 'replace')) as string;
    return this.waitJob(job, timeoutMs);
  }

  /** Stops a unit and waits until its stop job is over (bounded). */
  async stop(unit: string, timeoutMs = 90_000): Promise<string> {
    const job = (await this.manager.StopUnit(unit, 'replace')) as string;
    return this.waitJob(job, timeoutMs);
  }

  /**
   * A unit's state: Properties.Get calls on its object (two while it is active, five when a
   * service is not). No proxy object: that introspects the unit (tens of KB of XML parsed
   * per call), which polled every 2 s was most of the agent's idle CPU.
   */
  async state(unit: string): Promise<UnitState> {
    let path = this.unitPaths.get(unit);
    if (!path) {
      path = (await this.manager.LoadUnit(unit)) as string;
      this.unitPaths.set(unit, path);
    }
    const get = async (iface: string, name: string): Promise<any> => {
      const reply = await this.bus.call(new dbus.Message({
        destination: 'org.freedesktop.systemd1', path, interface: 'org.freedesktop.DBus.Properties', member: 'Get', signature: 'ss', body: [iface, name],
      }));
      return (reply?.body[0] as dbus.Variant | undefined)?.value;
    };
    const [activeState, subState] = await Promise.all([
      get('org.freedesktop.systemd1.Unit', 'ActiveState'),
      get('org.freedesktop.systemd1.Unit', 'SubState'),
    ]) as [string, string];
    if (!unit.endsWith('.service')) return { activeState, subState, result: '', execMainStatus: 0 };
    if (activeState === 'active') return { activeState, subState, result: 'success', execMainStatus: 0 };
    const [result, execMainStatus] = await Promise.all([
      get('org.freedesktop.systemd1.Service', 'Result'),
      get('org.freedesktop.systemd1.Service', 'ExecMainStatus'),
    ]) as [string, number];
    return { activeState, subState, result, execMainStatus };
  }

  /** SIGKILL to every process of a unit: stops a writer at once, without its stop logic. */
  async kill(unit: string): Promise<void> {
    await this.manager.KillUnit(unit, 'all', 9);
  }

  /** Starts a unit without waiting for its job (a oneshot that runs long). */
  async startNoWait(unit: string): Promise<void> {
    await this.manager.StartUnit(unit, 'replace');
  }

  /** Restarts a unit without waiting (used by the agent to restart itself). */
  async restartNoWait(unit: string): Promise<void> {
    await this.manager.RestartUnit(unit, 'replace');
  }

  /** Re-reads unit files (after writing drop-ins or timers). */
  async reload(): Promise<void> {
    await this.manager.Reload();
  }
}

export function describeUnit(unit: string, s: UnitState): string {
  const base = `${unit} ${s.activeState}/${s.subState}`;
  if (s.result === 'signal' || s.result === 'core-dump') {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === s.execMainStatus)?.[0] ?? `signal ${s.execMainStatus}`;
    return `${base} (killed by ${name})`;
  }
  return s.result && s.result !== 'success' ? `${base} (result ${s.result}, exit status ${s.execMainStatus})` : base;
}

