import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { notificationTarget, notify } from '../../agent/notify/notify.ts';

interface Hit { method: string; url: string; body: string; event: string | undefined }
const hits: Hit[] = [];
let server: Server;
let base = '';

before(async () => {
  server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      hits.push({ method: req.method!, url: req.url!, body, event: req.headers['x-vwstream-event'] as string | undefined });
      if (req.url!.startsWith('/hang')) return; // never answers
      if (req.url!.startsWith('/error')) { res.writeHead(500).end('no'); return; }
      res.writeHead(200).end('OK');
    });
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

test('failure URLs get /fail appended to the path, the query kept', () => {
  assert.equal(notificationTarget('https://hc.example/ping/abc', 'backup_success'), 'https://hc.example/ping/abc');
  assert.equal(notificationTarget('https://hc.example/ping/abc', 'backup_failure'), 'https://hc.example/ping/abc/fail');
  assert.equal(notificationTarget('https://hc.example/ping/abc/', 'sync_error'), 'https://hc.example/ping/abc/fail');
  assert.equal(notificationTarget('https://k.example/api/push/T?status=up', 'backup_failure'), 'https://k.example/api/push/T/fail?status=up');
});

test('success pings the URL, failures ping URL/fail, with the detail as body', async () => {
  hits.length = 0;
  const ok = await notify({ url: `${base}/ping/check1`, timeoutMs: 2000 }, 'backup_success', '2 destinations, 12 MB');
  assert.equal(ok.sent, true);
  assert.equal(ok.status, 200);
  const fail = await notify({ url: `${base}/ping/check1`, timeoutMs: 2000 }, 'backup_failure', 'b2:vault: upload failed');
  assert.equal(fail.sent, true);
  const sync = await notify({ url: `${base}/ping/check1`, timeoutMs: 2000 }, 'sync_error', 'litestream lag');
  assert.equal(sync.sent, true);
  assert.deepEqual(hits.map((h) => [h.method, h.url, h.event]), [
    ['POST', '/ping/check1', 'backup_success'], ['POST', '/ping/check1/fail', 'backup_failure'], ['POST', '/ping/check1/fail', 'sync_error'],
  ]);
  assert.match(hits[1]!.body, /b2:vault: upload failed/);
});

test('a receiver that never answers: returns within the timeout, never throws', async () => {
  const started = Date.now();
  const r = await notify({ url: `${base}/hang`, timeoutMs: 300 }, 'backup_failure', 'x');
  const ms = Date.now() - started;
  assert.equal(r.sent, false);
  assert.match(r.error!, /300 ms/);
  assert.ok(ms >= 250 && ms < 1500, `${ms} ms`);
});

test('an HTTP error, a refused port and no URL are reported, not thrown', async () => {
  const e = await notify({ url: `${base}/error`, timeoutMs: 2000 }, 'backup_success', 'x');
  assert.deepEqual([e.sent, e.status, e.error], [false, 500, 'HTTP 500']);
  const refused = await notify({ url: 'http://127.0.0.1:1/ping', timeoutMs: 2000 }, 'backup_success', 'x');
  assert.equal(refused.sent, false);
  assert.match(refused.error!, /ECONNREFUSED|fetch failed/);
  assert.deepEqual(await notify({ url: undefined, timeoutMs: 2000 }, 'backup_success', 'x'), { sent: false, event: 'backup_success', ms: 0 });
});
