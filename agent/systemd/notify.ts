import { run } from '../exec.ts';
import { log } from '../log.ts';

/**
 * sd_notify through systemd-notify (Node has no unix datagram sockets). The unit is
 * Type=notify with NotifyAccess=all, so a helper process in our cgroup may speak for us.
 * Without NOTIFY_SOCKET (not under systemd) every call is a no-op.
 */
export class Notifier {
  private readonly socket: string | undefined;
  private lastStatus = '';
  constructor(notifySocket: string | undefined) {
    this.socket = notifySocket;
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  private async send(args: string[]): Promise<void> {
    if (!this.socket) return;
    try {
      await run('systemd-notify', [`--pid=${process.pid}`, ...args], { env: { NOTIFY_SOCKET: this.socket }, timeoutMs: 10_000 });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'sd_notify failed');
    }
  }

  async status(text: string): Promise<void> {
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    await this.send([`--status=${text.slice(0, 200)}`]);
  }

  async ready(text: string): Promise<void> {
    this.lastStatus = text;
    await this.send(['--ready', `--status=${text.slice(0, 200)}`]);
  }

  async stopping(text: string): Promise<void> {
    this.lastStatus = text;
    await this.send(['STOPPING=1', `--status=${text.slice(0, 200)}`]);
  }

  /**
   * Long work in progress (a restore): the unit's start (or stop) timeout is pushed
   * `ms` past now, and the progress shown. Sent as work advances, so a restore that
   * stops advancing still runs into the timeout.
   */
  async extendTimeout(ms: number, text: string): Promise<void> {
    this.lastStatus = text;
    await this.send([`EXTEND_TIMEOUT_USEC=${Math.round(ms * 1000)}`, `--status=${text.slice(0, 200)}`]);
  }

  async watchdog(): Promise<void> {
    await this.send(['WATCHDOG=1']);
  }
}
