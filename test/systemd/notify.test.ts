/**
 * sd_notify from the agent's own process: journal.node built as the package builds it,
 * against datagram sockets of Python's (Node has none to receive on), at a path and in
 * the abstract namespace as $NOTIFY_SOCKET names them; systemd-notify when the add-on
 * cannot send. systemd's own socket: test/system (every Type=notify start).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadJournalAddon } from '../../agent/log.ts';
import { Notifier, statusLine } from '../../agent/systemd/notify.ts';

const REPO = new URL('../..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'vws-notify-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const python = spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status === 0;

/** A datagram receiver at `address` ("@name": abstract); each datagram comes back hex-encoded, one per line. */
async function receiver(address: string): Promise<{ next(): Promise<string>; close(): void }> {
  const py = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a = sys.argv[1]
s.bind('\\0' + a[1:] if a.startswith('@') else a); print('ready', flush=True)
while True: print(s.recv(1 << 16).hex(), flush=True)`;
  const child = spawn('python3', ['-c', py, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line); else lines.push(line);
    }
  });
  const next = () => new Promise<string>((resolve, reject) => {
    const l = lines.shift();
    if (l !== undefined) return resolve(l);
    const t = setTimeout(() => reject(new Error(`nothing received at ${address}`)), 5_000);
    waiters.push((x) => { clearTimeout(t); resolve(x); });
  });
  assert.equal(await next(), 'ready');
  return { next: async () => Buffer.from(await next(), 'hex').toString(), close: () => child.kill() };
}

test('statusLine: one line, at most 200 characters', () => {
  assert.equal(statusLine('a\nb\r\nc'), 'STATUS=a b c');
  assert.equal(statusLine('x'.repeat(300)).length, 'STATUS='.length + 200);
});

test('Notifier through journal.node: one datagram per message, from this process, at a path and in the abstract namespace', { skip: python ? false : 'needs python3' }, async () => {
  const file = join(tmp, 'journal.node');
  execFileSync(join(REPO, 'agent/native/build.sh'), [file]);
  const addon = loadJournalAddon(file)!;
  assert.equal(addon.notify('relative', Buffer.from('X=1\n')), 22 /* EINVAL */);
  assert.equal(addon.notify(join(tmp, 'none.sock'), Buffer.from('X=1\n')), 2 /* ENOENT */);
  for (const address of [join(tmp, 'notify.sock'), `@vws-notify-test-${process.pid}`]) {
    const r = await receiver(address);
    try {
      const n = new Notifier(address, addon);
      await n.ready('serving:\nall good');
      assert.equal(await r.next(), 'READY=1\nSTATUS=serving: all good\n');
      await n.watchdog();
      assert.equal(await r.next(), 'WATCHDOG=1\n');
      await n.status('same');
      await n.status('same'); // unchanged: not sent again
      await n.extendTimeout(120_000, 'restoring');
      assert.equal(await r.next(), 'STATUS=same\n');
      assert.equal(await r.next(), 'EXTEND_TIMEOUT_USEC=120000000\nSTATUS=restoring\n');
      await n.stopping('draining');
      assert.equal(await r.next(), 'STOPPING=1\nSTATUS=draining\n');
      assert.deepEqual(n.sent, { datagram: 5, process: 0 });
    } finally {
      r.close();
    }
  }
});

test('Notifier: an add-on that cannot send (EAGAIN) falls back to systemd-notify, which sends the same', { skip: python && spawnSync('systemd-notify', ['--help'], { stdio: 'ignore' }).status === 0 ? false : 'needs python3 and systemd-notify' }, async () => {
  const address = join(tmp, 'fallback.sock');
  const r = await receiver(address);
  try {
    const n = new Notifier(address, { notify: () => 11 });
    await n.ready('up');
    const got = await r.next();
    assert.match(got, /^READY=1\n/m);
    assert.match(got, /^STATUS=up$/m);
    assert.match(got, new RegExp(`^MAINPID=${process.pid}$`, 'm'));
    assert.deepEqual(n.sent, { datagram: 0, process: 1 });
  } finally {
    r.close();
  }
});

test('Notifier without NOTIFY_SOCKET: nothing is sent', async () => {
  let calls = 0;
  const n = new Notifier(undefined, { notify: () => { calls++; return 0; } });
  await n.ready('x');
  await n.watchdog();
  assert.equal(calls, 0);
  assert.deepEqual(n.sent, { datagram: 0, process: 0 });
});
