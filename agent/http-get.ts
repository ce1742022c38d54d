import { get } from 'node:http';

/**
 * A plain-HTTP GET on loopback for the daemon's polls (Vaultwarden's /alive, Litestream's
 * /metrics) over node:http rather than fetch(): the first fetch() loads undici, Node's
 * second HTTP stack, which costs a long-running process about 13 MiB of RSS for requests
 * node:http makes as well; and no Accept-Encoding, so nothing is gzipped per poll. The
 * whole answer is read (UTF-8); rejects on a connection error, an answer cut off, or when
 * it is not complete `timeoutMs` after the start. One connection per request (loopback: a
 * kept-alive one could be closed by the server's idle timeout under the next request).
 */
export function httpGetText(url: string, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { clearTimeout(overall); resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }); });
      // Cut off mid-answer (a reset, or the destroy below): no 'end'; a settled promise ignores it.
      res.on('close', () => { clearTimeout(overall); if (!res.complete) reject(new Error(`GET ${url}: the answer was cut off`)); });
    });
    const overall = setTimeout(() => req.destroy(new Error(`GET ${url}: no complete answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => { clearTimeout(overall); reject(e); });
  });
}
