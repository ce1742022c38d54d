/**
 * An HTTP proxy in front of a test S3 server (RGW or fauxqs) that records every request:
 * when it was sent, method, path with query, User-Agent, status, when the answer ended,
 * bytes each way. The Host header is passed as it is, so SigV4 signatures stay valid.
 * Used by the fencing test (what was sent when) and by the idle bench (who sends what).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3Server } from './harness.ts';

export interface ProxyRecord {
  /** ms since the epoch when the request reached the proxy. */
  t: number;
  method: string;
  /** Path and query as the client sent them (path style: /bucket/key?query). */
  path: string;
  userAgent: string;
  status?: number;
  /** When the upstream answer ended (undefined: still in flight, or cut). */
  doneAt?: number;
  bytesUp: number;
  bytesDown: number;
  /** The request body of PUTs to lease.json (utf8), for tests that read what was sent. */
  body?: string;
}

export interface RecordingProxy {
  endpoint: string;
  port: number;
  log: ProxyRecord[];
  close(): Promise<void>;
}

export async function recordingProxy(target: Pick<S3Server, 'port'>): Promise<RecordingProxy> {
  const log: ProxyRecord[] = [];
  const srv = http.createServer((req, res) => {
    const rec: ProxyRecord = {
      t: Date.now(), method: req.method ?? '?', path: req.url ?? '',
      userAgent: String(req.headers['user-agent'] ?? ''), bytesUp: 0, bytesDown: 0,
    };
    log.push(rec);
    // Node's server has answered "Expect: 100-continue" itself already: upstream gets the body at once.
    const { expect: _e, ...headers } = req.headers;
    const up = http.request({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers }, (r) => {
      rec.status = r.statusCode;
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.on('data', (c: Buffer) => { rec.bytesDown += c.length; });
      r.pipe(res);
      r.on('end', () => { rec.doneAt = Date.now(); });
    });
    up.on('error', () => res.destroy());
    // A client that gives up closes its connection to the server: so does the proxy.
    res.on('close', () => { if (rec.doneAt === undefined) up.destroy(); });
    const keepBody = /lease\.json/.test(rec.path) && req.method === 'PUT';
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      rec.bytesUp += c.length;
      if (keepBody) chunks.push(c);
    });
    if (keepBody) req.on('end', () => { rec.body = Buffer.concat(chunks).toString('utf8'); });
    req.pipe(up);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    log,
    close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
  };
}
