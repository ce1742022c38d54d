import type { Config } from '../config/config.ts';
import { log, scrub } from '../log.ts';
import { VERSION } from '../version.ts';

/**
 * NOTIFICATION_URL pings (healthchecks.io style): success → the URL, failure → the URL
 * with `/fail` appended to its path (query kept). One POST with the detail as text
 * (healthchecks shows it as the ping's body; Uptime Kuma and most receivers accept POST).
 * Bounded by NOTIFICATION_TIMEOUT; never throws: a dead endpoint never fails a backup.
 */
export type NotifyEvent = 'backup_success' | 'backup_failure' | 'sync_error' | 'verify_failure';

export interface NotifyResult { sent: boolean; event: NotifyEvent; status?: number; error?: string; ms: number }

export function isFailure(event: NotifyEvent): boolean {
  return event !== 'backup_success';
}

/** The URL an event goes to: the URL itself, or with `/fail` appended to the path. */
export function notificationTarget(url: string, event: NotifyEvent): string {
  if (!isFailure(event)) return url;
  const u = new URL(url);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/fail`;
  return u.toString();
}

/** For logs: where, without path or query (they often hold the check's token). */
function where(url: string): string {
  try { return new URL(url).origin; } catch { return '(invalid url)'; }
}

export async function notify(n: Config['notification'], event: NotifyEvent, detail: string): Promise<NotifyResult> {
  const started = Date.now();
  if (!n.url) return { sent: false, event, ms: 0 };
  const timeoutMs = Math.max(1, n.timeoutMs);
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`no answer within ${timeoutMs} ms`);
      controller.abort(err);
      reject(err);
    }, timeoutMs);
  });
  try {
    const target = notificationTarget(n.url, event);
    const body = scrub(`${event}: ${detail}`).slice(0, 10_000);
    const attempt = (async () => {
      const res = await fetch(target, {
        method: 'POST',
        body,
        headers: { 'content-type': 'text/plain; charset=utf-8', 'user-agent': `vwstream-agent/${VERSION}`, 'x-vwstream-event': event },
        signal: controller.signal,
        redirect: 'follow',
      });
      await res.arrayBuffer().catch(() => undefined); // drain, within the same deadline
      return res.status;
    })();
    attempt.catch(() => undefined);
    const status = await Promise.race([attempt, deadline]);
    const ok = status >= 200 && status < 300;
    const result: NotifyResult = { sent: ok, event, status, ms: Date.now() - started, ...(ok ? {} : { error: `HTTP ${status}` }) };
    if (ok) log.info({ event, to: where(n.url), status, ms: result.ms }, `notification ${event} sent`);
    else log.warn({ event, to: where(n.url), status, ms: result.ms }, `notification ${event}: the receiver answered HTTP ${status}`);
    return result;
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause;
    const message = scrub(`${(err as Error).message}${cause?.message && cause.message !== (err as Error).message ? ` (${cause.message})` : ''}`);
    log.warn({ event, to: where(n.url), ms: Date.now() - started, err: message }, `notification ${event} failed: ${message}`);
    return { sent: false, event, error: message, ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}
