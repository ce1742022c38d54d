import { createServer, type Server } from 'node:http';
import { log } from '../log.ts';
import type { Notifier } from '../systemd/notify.ts';

/**
 * sd_notify WATCHDOG=1 at half of WatchdogSec (systemd passes WATCHDOG_USEC and
 * WATCHDOG_PID). A ping is sent only while `responsive()` holds, so a wedged main loop
 * (not just a blocked event loop) stops the pings and systemd restarts the agent.
 */
export class Watchdog {
  private readonly timer: NodeJS.Timeout;
  private missed = false;

  private constructor(notifier: Notifier, everyMs: number, responsive: () => boolean) {
    this.timer = setInterval(() => {
      if (!responsive()) {
        if (!this.missed) log.error('the agent main loop has not run for 60 s; withholding the watchdog ping so systemd restarts the agent');
        this.missed = true;
        return;
      }
      this.missed = false;
      void notifier.watchdog();
    }, everyMs);
    this.timer.unref();
  }

  /** Null when systemd set no watchdog for this process. */
  static fromEnv(notifier: Notifier, responsive: () => boolean, env: NodeJS.ProcessEnv = process.env): Watchdog | undefined {
    const usec = Number(env.WATCHDOG_USEC);
    if (!Number.isFinite(usec) || usec <= 0) return undefined;
    if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== process.pid) return undefined;
    const everyMs = Math.max(500, Math.floor(usec / 1000 / 2));
    log.debug({ everyMs }, 'watchdog enabled');
    void notifier.watchdog();
    return new Watchdog(notifier, everyMs, responsive);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** METRICS_LISTEN: GET /metrics over TCP (nothing else is served there). */
export async function startMetricsListener(listen: string, render: () => Promise<string>): Promise<Server> {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(i + 1));
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://metrics').pathname;
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n');
      return;
    }
    render().then(
      (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
