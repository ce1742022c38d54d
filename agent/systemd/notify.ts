import { run } from '../exec.ts';
import { log } from '../log.ts';

/** What the notifier needs of journal.node (agent/native/journal.c). */
export interface NotifyAddon { notify(socket: string, message: Buffer): number }

/**
 * sd_notify. From the main process itself through the add-on (one datagram, no process);
 * without it, or when a send fails (EAGAIN: systemd's queue full), through systemd-notify,
 * a process per message (the unit is Type=notify with NotifyAccess=all, so a helper in
 * our cgroup may speak for us). Without NOTIFY_SOCKET (not under systemd) every call is a
 * no-op.
 */
export class Notifier {
  private readonly socket: string | undefined;
  private readonly addon: NotifyAddon | undefined;
  private lastStatus = '';
  private fallbackSaid = false;
  /** Messages sent through the add-on and through systemd-notify (for tests and /metrics). */
  readonly sent = { datagram: 0, process: 0 };
  constructor(notifySocket: string | undefined, addon?: NotifyAddon) {
    this.socket = notifySocket;
    this.addon = addon;
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** `assignments`: the protocol's KEY=value lines (STATUS's text on one line). */
  private async send(assignments: string[]): Promise<void> {
    if (!this.socket) return;
    if (this.addon) {
      const rc = this.addon.notify(this.socket, Buffer.from(`${assignments.join('\n')}\n`));
      if (rc === 0) { this.sent.datagram++; return; }
      if (!this.fallbackSaid) {
        this.fallbackSaid = true;
        log.warn({ errno: rc }, `sd_notify datagram to ${this.socket} failed (errno ${rc}); sending through systemd-notify`);
      }
    }
    const args = assignments.map((a) => a.startsWith('STATUS=') ? `--status=${a.slice(7)}` : a === 'READY=1' ? '--ready' : a);
    try {
      this.sent.process++;
      await run('systemd-notify', [`--pid=${process.pid}`, ...args], { env: { NOTIFY_SOCKET: this.socket }, timeoutMs: 10_000 });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'sd_notify failed');
    }
  }

  async status(text: string): Promise<void> {
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    await this.send([statusLine(text)]);
  }

  async ready(text: string): Promise<void> {
    this.lastStatus = text;
    await this.send(['READY=1', statusLine(text)]);
  }

  async stopping(text: string): Promise<void> {
    this.lastStatus = text;
    await this.send(['STOPPING=1', statusLine(text)]);
  }

  /**
   * Long work in progress (a restore): the unit's start (or stop) timeout is pushed
   * `ms` past now, and the progress shown. Sent as work advances, so a restore that
   * stops advancing still runs into the timeout.
   */
  async extendTimeout(ms: number, text: string): Promise<void> {
    this.lastStatus = text;
    await this.send([`EXTEND_TIMEOUT_USEC=${Math.round(ms * 1000)}`, statusLine(text)]);
  }

  async watchdog(): Promise<void> {
    await this.send(['WATCHDOG=1']);
  }
}

/** STATUS= of at most 200 characters on one line (a newline would start another assignment). */
export function statusLine(text: string): string {
  return `STATUS=${text.replace(/[\r\n]+/g, ' ').slice(0, 200)}`;
}
