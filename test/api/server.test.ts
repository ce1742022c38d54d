import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startApiServers, type Route } from '../../agent/api/server.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-api-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function call(socketPath: string, method: string, path: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('reads on both sockets; state-changing requests only on the control socket (0600), refused with 403 on the group socket (0660)', async () => {
  const calls: string[] = [];
  const routes: Record<string, Route> = {
    'GET /status': async () => { calls.push('status'); return { status: 200, body: { state: 'serving' } }; },
    'POST /promote': async (req) => { calls.push(`promote ${req.url}`); return { status: 200, body: { promoted: true } }; },
    'POST /sync': async () => { calls.push('sync'); return { status: 200, body: { uploaded: 0 } }; },
  };
  const readPath = join(dir, 'agent.sock');
  const controlPath = join(dir, 'control.sock');
  const api = await startApiServers({ readPath, controlPath }, routes);
  try {
    assert.equal(statSync(readPath).mode & 0o777, 0o660);
    assert.equal(statSync(controlPath).mode & 0o777, 0o600);
    assert.ok(statSync(readPath).isSocket() && statSync(controlPath).isSocket());

    assert.deepEqual(await call(readPath, 'GET', '/status'), { status: 200, body: { state: 'serving' } });
    assert.deepEqual(await call(controlPath, 'GET', '/status'), { status: 200, body: { state: 'serving' } });
    assert.deepEqual(calls, ['status', 'status']);

    for (const [method, path] of [['POST', '/promote?force=1'], ['POST', '/sync'], ['PUT', '/promote'], ['DELETE', '/status'], ['POST', '/nothing']] as const) {
      const r = await call(readPath, method, path);
      assert.equal(r.status, 403, `${method} ${path} on the group socket: ${JSON.stringify(r)}`);
      assert.equal(r.body.error, `${method} ${path.split('?')[0]} changes the agent's state: only root may do that (on ${controlPath}); this socket serves reads (status, health, metrics)`);
    }
    assert.deepEqual(calls, ['status', 'status'], 'a refused request reached its route');

    assert.deepEqual(await call(controlPath, 'POST', '/promote?force=1'), { status: 200, body: { promoted: true } });
    assert.deepEqual(await call(controlPath, 'POST', '/sync'), { status: 200, body: { uploaded: 0 } });
    assert.equal((await call(controlPath, 'POST', '/nothing')).status, 404);
    assert.deepEqual(calls, ['status', 'status', 'promote /promote?force=1', 'sync']);
  } finally {
    api.close();
  }
});

test('a stale socket file from a crashed run is replaced', async () => {
  const readPath = join(dir, 'stale-agent.sock');
  const controlPath = join(dir, 'stale-control.sock');
  const first = await startApiServers({ readPath, controlPath }, {});
  // Simulate a crash: the files stay (close() would unlink them), the servers go.
  first.read.unref(); first.control.unref();
  const second = await startApiServers({ readPath, controlPath }, { 'GET /status': async () => ({ status: 200, body: { n: 2 } }) });
  try {
    assert.deepEqual(await call(readPath, 'GET', '/status'), { status: 200, body: { n: 2 } });
  } finally {
    second.close();
    first.close();
  }
});
