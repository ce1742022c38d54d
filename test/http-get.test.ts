import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { httpGetText } from '../agent/http-get.ts';
import { checkAlive } from '../agent/daemon/build.ts';

// 'ä' and a 3-byte character split across two writes: the text is decoded from all bytes at once.
const METRICS = 'litestream_db_size{db="/var/lib/vaultwarden/db.sqlite3"} 4096\n# ä €\n';
let server: Server;
let base = '';
before(async () => {
  server = createServer((req, res) => {
    if (req.url === '/metrics') {
      const b = Buffer.from(METRICS);
      res.writeHead(200, { 'content-length': String(b.length) });
      res.write(b.subarray(0, b.length - 2));
      setTimeout(() => res.end(b.subarray(b.length - 2)), 20);
    } else if (req.url === '/alive') res.end('');
    else if (req.url === '/hang') res.writeHead(200).write('partial'); // never ends
    else if (req.url === '/cut') { res.writeHead(200, { 'content-length': '100' }); res.write('12'); setTimeout(() => res.socket?.destroy(), 20); }
    else { res.writeHead(503); res.end('no'); }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => { server.closeAllConnections(); server.close(); });

test('httpGetText: status and the whole body, decoded once', async () => {
  assert.deepEqual(await httpGetText(`${base}/metrics`, 2000), { status: 200, text: METRICS });
  assert.deepEqual(await httpGetText(`${base}/nope`, 2000), { status: 503, text: 'no' });
});

test('httpGetText: an answer still incomplete at the deadline is an error naming the URL', async () => {
  const t = Date.now();
  await assert.rejects(httpGetText(`${base}/hang`, 300), { message: `GET ${base}/hang: no complete answer within 300 ms` });
  assert.ok(Date.now() - t < 2000);
});

test('httpGetText: a connection cut mid-answer rejects; a refused one too', async () => {
  await assert.rejects(httpGetText(`${base}/cut`, 2000));
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await assert.rejects(httpGetText(`http://127.0.0.1:${port}/alive`, 2000), { code: 'ECONNREFUSED' });
});

test('checkAlive: 2xx is alive; 5xx, a hang and no listener are not', async () => {
  assert.equal(await checkAlive(`${base}/alive`), true);
  assert.equal(await checkAlive(`${base}/nope`), false);
  assert.equal(await checkAlive(`${base}/hang`, 200), false);
  assert.equal(await checkAlive('http://127.0.0.1:1/alive', 500), false);
});

test('neither touches fetch (undici): the daemon\'s idle path stays off Node\'s second HTTP stack', async () => {
  const real = globalThis.fetch;
  let calls = 0;
  globalThis.fetch = (async () => { calls++; throw new Error('fetch used'); }) as typeof fetch;
  try {
    await httpGetText(`${base}/metrics`, 2000);
    await checkAlive(`${base}/alive`);
  } finally { globalThis.fetch = real; }
  assert.equal(calls, 0);
});
