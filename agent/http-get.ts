import { Agent, get } from 'node:http';

/**
 * GET over plain HTTP with node:http, for the daemon's local polls (Litestream's /metrics,
 * Vaultwarden's /alive): no Accept-Encoding (nothing gzipped per poll) and no fetch (its
 * undici machinery is never loaded by an idle agent). Rejects on a connection error or
 * when `timeoutMs` passes before the whole body arrived.
 */
export function httpGetText(url: string, opts: { timeoutMs: number; agent?: Agent }): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { signal: AbortSignal.timeout(opts.timeoutMs), ...(opts.agent ? { agent: opts.agent } : {}) }, (res) => {
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** One kept-alive connection per poll target (idle sockets do not keep a process alive). */
export function pollAgent(): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1 });
}
