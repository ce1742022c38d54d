/**
 * agent/log.ts: secrets scrubbed from every serialized line and journal field; priorities
 * and VWSTREAM_* fields of the native journal entry; the three output modes and the
 * fallback to stdout when journald cannot take a datagram.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  createLogger, createSink, fieldName, prefixLines, isJournalStream, journalEntry, linePriority, MAX_FIELDS, MAX_VALUE_BYTES, scrub, setSecrets, WAIT_BUDGET_MS,
  type JournalAddon,
} from '../agent/log.ts';

const REPO = new URL('..', import.meta.url).pathname;
const NODE = process.execPath;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vws-log-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Parses an entry of the native protocol into its fields (binary-safe form included). */
function parseEntry(b: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < b.length) {
    const nl = b.indexOf(10, i);
    const eq = b.indexOf(61, i);
    if (eq !== -1 && eq < nl) {
      out.set(b.subarray(i, eq).toString(), b.subarray(eq + 1, nl).toString());
      i = nl + 1;
    } else {
      const key = b.subarray(i, nl).toString();
      const len = Number(b.readBigUInt64LE(nl + 1));
      out.set(key, b.subarray(nl + 9, nl + 9 + len).toString());
      assert.equal(b[nl + 9 + len], 10, `${key}: binary value ends with a newline`);
      i = nl + 10 + len;
    }
  }
  return out;
}

function capture(mode: 'journal' | 'prefix' | 'plain', addon?: JournalAddon) {
  const lines: string[] = [];
  const sink = createSink(mode, { write: (s: string) => lines.push(s) }, addon);
  return { lines, sink, log: createLogger(sink) };
}

test('a secret is scrubbed from object fields, nested objects, error messages, the message, in JSON-escaped form too', () => {
  const quoted = 'pa"ss\\wo/rd-1';
  setSecrets(['S3CRET-key-value', quoted, 'abc']);
  try {
    const { lines, log } = capture('plain');
    log.info({ key: 'S3CRET-key-value', nested: { deeper: { v: `x${quoted}y` } }, list: ['S3CRET-key-value'] }, 'one');
    log.error({ err: new Error(`failed with ${quoted}`) }, 'two');
    log.warn(`message ${quoted} and S3CRET-key-value`);
    log.info({ err: `string ${quoted}` }, 'three %s', 'S3CRET-key-value');
    assert.equal(lines.length, 4);
    const all = lines.join('');
    for (const form of ['S3CRET', quoted, JSON.stringify(quoted).slice(1, -1), 'pa\\"ss', 'ss\\\\wo']) assert.ok(!all.includes(form), `${form} leaked: ${all}`);
    const [one, two, three, four] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(one!.nested, { deeper: { v: 'x***y' } });
    assert.equal(one!.key, '***');
    assert.deepEqual(one!.list, ['***']);
    assert.equal((two!.err as { message: string }).message, 'failed with ***');
    assert.match(String((two!.err as { stack: string }).stack), /^Error: failed with \*\*\*\n/);
    assert.equal(three!.msg, 'message *** and ***');
    assert.equal(four!.err, 'string ***');
    assert.equal(four!.msg, 'three ***');
    // Shorter than 4 characters: never a secret (would scrub ordinary words).
    assert.equal(scrub('abc'), 'abc');
  } finally {
    setSecrets([]);
  }
});

test('a secret is scrubbed from every field of the journal entry', () => {
  setSecrets(['back\\slash"quote-secret']);
  try {
    const entries: Buffer[] = [];
    const { log } = capture('journal', { open: () => 0, send: (b) => { entries.push(Buffer.from(b)); return 0; }, pending: () => 0, notify: () => 0 });
    log.error({ reason: 'it was back\\slash"quote-secret', err: { message: 'back\\slash"quote-secret' }, obj: { s: 'back\\slash"quote-secret' } }, 'x back\\slash"quote-secret');
    assert.equal(entries.length, 1);
    const raw = entries[0]!.toString('latin1');
    assert.ok(!raw.includes('quote-secret'), raw);
    const f = parseEntry(entries[0]!);
    assert.equal(f.get('VWSTREAM_REASON'), 'it was ***');
    assert.equal(f.get('VWSTREAM_ERR'), '***');
    assert.equal(f.get('VWSTREAM_OBJ'), '{"s":"***"}');
    assert.equal(JSON.parse(f.get('MESSAGE')!).msg, 'x ***');
  } finally {
    setSecrets([]);
  }
});

test('journal entry: MESSAGE is the JSON line, PRIORITY per level, identifier, VWSTREAM_ fields of top-level values', () => {
  const entries: Buffer[] = [];
  const { log, lines, sink } = capture('journal', { open: () => 0, send: (b) => { entries.push(Buffer.from(b)); return 0; }, pending: () => 0, notify: () => 0 });
  log.level = 'trace';
  const want: Array<[string, number]> = [['fatal', 2], ['error', 3], ['warn', 4], ['info', 6], ['debug', 7], ['trace', 7]];
  for (const [level] of want) (log as unknown as Record<string, (o: object, m: string) => void>)[level]!({ state: 'fenced', from: 'serving', syncErrors: 3, ok: false, none: null, dnsName: 'a.ts.net' }, `${level} line`);
  assert.equal(lines.length, 0, 'nothing on stdout');
  assert.equal(sink.stats.sent, 6);
  for (const [i, [level, prio]] of want.entries()) {
    const f = parseEntry(entries[i]!);
    const msg = JSON.parse(f.get('MESSAGE')!) as Record<string, unknown>;
    assert.equal(msg.level, level);
    assert.equal(msg.msg, `${level} line`);
    assert.equal(f.get('PRIORITY'), String(prio));
    assert.equal(f.get('SYSLOG_IDENTIFIER'), 'vwstream-agent');
    assert.equal(f.get('VWSTREAM_LEVEL'), level);
    assert.equal(f.get('VWSTREAM_STATE'), 'fenced');
    assert.equal(f.get('VWSTREAM_FROM'), 'serving');
    assert.equal(f.get('VWSTREAM_SYNC_ERRORS'), '3');
    assert.equal(f.get('VWSTREAM_OK'), 'false');
    assert.equal(f.get('VWSTREAM_DNS_NAME'), 'a.ts.net');
    assert.ok(!f.has('VWSTREAM_NONE') && !f.has('VWSTREAM_MSG') && !f.has('VWSTREAM_TIME'), [...f.keys()].join(','));
  }
});

test('journal entry: values with newlines use the binary form; value size and field count are bounded', () => {
  const big = 'é'.repeat(MAX_VALUE_BYTES); // 2 bytes each: cut at a character boundary
  const obj: Record<string, unknown> = { level: 'warn', time: 't', multi: 'a\nb\n', big, err: { type: 'Error', message: 'boom', stack: 'Error: boom\n  at x' } };
  for (let i = 0; i < MAX_FIELDS + 10; i++) obj[`k${i}`] = i;
  obj.msg = 'm';
  const line = JSON.stringify(obj) + '\n';
  const { entry, priority } = journalEntry(line);
  assert.equal(priority, 4);
  const f = parseEntry(entry);
  assert.equal(f.get('MESSAGE'), line.slice(0, -1), 'MESSAGE is the whole line, uncut');
  assert.equal(f.get('VWSTREAM_MULTI'), 'a\nb\n');
  assert.equal(Buffer.byteLength(f.get('VWSTREAM_BIG')!), MAX_VALUE_BYTES);
  assert.equal(f.get('VWSTREAM_ERR'), 'boom', 'an error object gives its message');
  assert.equal([...f.keys()].filter((k) => k.startsWith('VWSTREAM_') && k !== 'VWSTREAM_LEVEL').length, MAX_FIELDS);
  assert.equal(fieldName('dnsName'), 'VWSTREAM_DNS_NAME');
  assert.equal(fieldName('a-b.c'), 'VWSTREAM_A_B_C');
  assert.equal(fieldName('x'.repeat(60)), undefined);
  // Not JSON: MESSAGE alone, at info.
  assert.deepEqual([...parseEntry(journalEntry('plain text\n').entry).entries()], [['MESSAGE', 'plain text'], ['PRIORITY', '6'], ['SYSLOG_IDENTIFIER', 'vwstream-agent'], ['VWSTREAM_LEVEL', 'info']]);
});

test('journald cannot take the datagram: the line goes to stdout with its <N> prefix, counted', () => {
  let rc = 0;
  const entries: Buffer[] = [];
  const { log, lines, sink } = capture('journal', { open: () => 0, send: (b) => { if (rc === 0) entries.push(Buffer.from(b)); return rc; }, pending: () => 0, notify: () => 0 });
  log.info({ state: 'serving' }, 'sent');
  rc = 11; // EAGAIN
  log.error({ state: 'fenced' }, 'queue full');
  rc = 90; // EMSGSIZE
  log.warn('too big');
  rc = 0;
  log.info('sent again');
  assert.equal(entries.length, 2);
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /^<3>\{"level":"error".*"msg":"queue full"\}\n$/);
  assert.match(lines[1]!, /^<4>\{"level":"warn".*"msg":"too big"\}\n$/);
  assert.deepEqual({ ...sink.stats }, { mode: 'journal', sent: 2, fallbacks: 2, lastError: 90 });
});

test('a full queue: waited for while journald catches up; a stuck journald costs one wait, then each line one try', () => {
  let busy = 3;
  let calls = 0;
  const entries: Buffer[] = [];
  const addon: JournalAddon = { open: () => 0, send: (b) => { calls++; if (busy > 0) { busy--; return 11; } entries.push(Buffer.from(b)); return 0; }, pending: () => 0, notify: () => 0 };
  const { log, lines, sink } = capture('journal', addon);
  log.info('slow journald');
  assert.equal(entries.length, 1, 'sent once journald read its queue');
  assert.equal(calls, 4);
  assert.equal(lines.length, 0);
  busy = Infinity;
  calls = 0;
  log.error('stuck 1');
  const first = calls;
  assert.ok(first > 1, 'retried while waiting');
  for (let i = 2; i <= 100; i++) log.error(`stuck ${i}`);
  assert.equal(calls, first + 99, 'after the first wait: one try per line');
  assert.equal(lines.length, 100);
  assert.deepEqual(lines.map((l) => JSON.parse(l.slice(3)).msg), Array.from({ length: 100 }, (_, i) => `stuck ${i + 1}`));
  assert.equal(sink.stats.fallbacks, 100);
  busy = 0;
  log.info('recovered');
  assert.equal(entries.length, 2);
  busy = 1;
  calls = 0;
  log.info('waits again after a success');
  assert.equal(calls, 2);
  assert.equal(entries.length, 3);
});

test('prefix mode: <N> per level; plain mode: the line as it is', () => {
  const p = capture('prefix');
  p.log.level = 'debug';
  p.log.error('e'); p.log.warn('w'); p.log.info('i'); p.log.debug('d'); p.log.fatal('f');
  assert.deepEqual(p.lines.map((l) => l.slice(0, 3)), ['<3>', '<4>', '<6>', '<7>', '<2>']);
  assert.ok(p.lines.every((l) => JSON.parse(l.slice(3)).msg), 'JSON after the prefix');
  const q = capture('plain');
  q.log.error('e');
  assert.match(q.lines[0]!, /^\{"level":"error","time":"[^"]+","msg":"e"\}\n$/);
  assert.equal(linePriority('{"level":"warn"}'), 4);
  assert.equal(linePriority('nonsense'), 6);
});

test('JOURNAL_STREAM is honoured only when it names stdout (dev:ino)', () => {
  const file = path.join(tmp, 'stream');
  const fd = fs.openSync(file, 'w');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    assert.equal(isJournalStream(fd, { JOURNAL_STREAM: `${st.dev}:${st.ino}` }), true);
    assert.equal(isJournalStream(fd, { JOURNAL_STREAM: `${st.dev}:${st.ino + 1n}` }), false);
    assert.equal(isJournalStream(fd, {}), false);
    assert.equal(isJournalStream(fd, { JOURNAL_STREAM: 'junk' }), false);
  } finally {
    fs.closeSync(fd);
  }
});

test('prefixLines: each line, across writes that split lines', () => {
  let r = prefixLines('one\ntwo', '<3>', true);
  assert.equal(r.text, '<3>one\n<3>two');
  r = prefixLines(' still two\nthree\n', '<3>', r.atStart);
  assert.equal(r.text, ' still two\n<3>three\n');
  assert.equal(r.atStart, true);
  assert.equal(prefixLines('', '<3>', true).text, '');
});

test('a process on its journal stream: stderr lines are <3> and scrubbed; on a file without JOURNAL_STREAM they are as written', () => {
  const run = (name: string, journal: boolean) => {
    const file = path.join(tmp, name);
    const fd = fs.openSync(file, 'w');
    try {
      const st = fs.fstatSync(fd);
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
      if (journal) env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
      const script = `import { setSecrets } from ${JSON.stringify(path.join(REPO, 'agent/log.ts'))}; setSecrets(['hunter2-secret']);
        process.stderr.write('vwstream-agent: config error: X=hunter2-secret\\n  → hint'); process.stderr.write(' more\\nlast\\n'); process.exit(78);`;
      const r = spawnSync(NODE, ['--no-warnings', '--input-type=module', '-e', script], { env, stdio: ['ignore', fd, fd] });
      assert.equal(r.status, 78);
    } finally {
      fs.closeSync(fd);
    }
    return fs.readFileSync(file, 'utf8');
  };
  assert.equal(run('stderr-journal', true), '<3>vwstream-agent: config error: X=***\n<3>  → hint more\n<3>last\n');
  assert.equal(run('stderr-plain', false), 'vwstream-agent: config error: X=hunter2-secret\n  → hint more\nlast\n');
});

/** Runs a child that logs then exits at once, stdout to a file; returns the file's text. */
function childOutput(name: string, journalStream: boolean): string {
  const file = path.join(tmp, name);
  const fd = fs.openSync(file, 'w');
  try {
    const st = fs.fstatSync(fd);
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
    if (journalStream) env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
    const script = `import { log } from ${JSON.stringify(path.join(REPO, 'agent/log.ts'))};
      log.info({ state: 'serving' }, 'info line'); log.error({ state: 'refused' }, 'refused line'); process.exit(65);`;
    const r = spawnSync(NODE, ['--no-warnings', '--input-type=module', '-e', script], { env, stdio: ['ignore', fd, 'pipe'] });
    assert.equal(r.status, 65, r.stderr.toString());
  } finally {
    fs.closeSync(fd);
  }
  return fs.readFileSync(file, 'utf8');
}

test('a process: on its journal stream without the add-on, <N> prefixes; elsewhere plain; the last line before exit is there', () => {
  const journal = childOutput('journal', true).split('\n').filter(Boolean);
  assert.equal(journal.length, 2);
  assert.match(journal[0]!, /^<6>\{"level":"info".*"msg":"info line"\}$/);
  assert.match(journal[1]!, /^<3>\{"level":"error".*"state":"refused".*"msg":"refused line"\}$/);
  const plain = childOutput('plain', false).split('\n').filter(Boolean);
  assert.equal(plain.length, 2);
  assert.match(plain[1]!, /^\{"level":"error".*"msg":"refused line"\}$/);
});

// The add-on itself, built as the package builds it, against a datagram socket of
// Python's (Node has none to receive on). journald's own socket: test/system/journal.test.ts.
const python = spawnSync('python3', ['-c', 'import socket'], { stdio: 'ignore' }).status === 0;
test('journal.node: sends one datagram per entry, never blocks (EAGAIN when the queue is full), reports what is unread', { skip: python ? false : 'needs python3' }, async () => {
  const addonFile = path.join(tmp, 'journal.node');
  execFileSync(path.join(REPO, 'agent/native/build.sh'), [addonFile]);
  const { loadJournalAddon } = await import('../agent/log.ts');
  const addon = loadJournalAddon(addonFile)!;
  assert.ok(addon, 'loads');
  assert.equal(addon.send(Buffer.from('MESSAGE=x\n')), 9 /* EBADF: not opened */);
  assert.equal(addon.open(path.join(tmp, 'missing.sock')), 0);
  assert.equal(addon.send(Buffer.from('MESSAGE=x\n')), 2 /* ENOENT */);
  assert.equal(addon.open('x'.repeat(200)), 36 /* ENAMETOOLONG */);

  const sock = path.join(tmp, 'j.sock');
  const py = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); print('ready', flush=True)
sys.stdin.readline()
s.setblocking(False); n = 0; first = None
while True:
    try: d = s.recv(1 << 20)
    except BlockingIOError: break
    first = first or d; n += 1
print(n, first.hex(), flush=True)
sys.stdin.readline()`;
  const { spawn } = await import('node:child_process');
  const child = spawn('python3', ['-c', py, sock], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const waitOut = (re: RegExp) => new Promise<string>((resolve) => {
    const check = () => { const m = re.exec(out); if (m) { child.stdout.off('data', on); resolve(m[0]); } };
    const on = (d: Buffer) => { out += d.toString(); check(); };
    child.stdout.on('data', on);
    check();
  });
  try {
    await waitOut(/ready\n/);
    assert.equal(addon.open(sock), 0);
    const first = journalEntry(`${JSON.stringify({ level: 'error', state: 'fenced', note: 'two\nlines' })}\n`).entry;
    assert.equal(addon.send(first), 0);
    // Nobody reads: the queue fills and send() answers EAGAIN at once instead of blocking.
    let sent = 1;
    let rc = 0;
    const t0 = process.hrtime.bigint();
    while (sent < 100_000 && (rc = addon.send(Buffer.from('MESSAGE=filler\n'))) === 0) sent++;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.equal(rc, 11, `EAGAIN after ${sent} datagrams`);
    assert.ok(addon.pending() > 0, 'unread bytes are reported');
    console.log(`# queue full after ${sent} datagrams, ${ms.toFixed(1)} ms`);
    child.stdin.write('\n');
    const [n, hex] = (await waitOut(/^\d+ [0-9a-f]+\n/m)).trim().split(' ');
    assert.equal(Number(n), sent, 'every datagram sent was received');
    assert.equal(hex, first.toString('hex'), 'the first entry arrived byte for byte');
    assert.equal(addon.pending(), 0, 'all read');
  } finally {
    child.kill();
  }
});

test('a slow journald that takes each line only after a wait: the waits stay within WAIT_BUDGET_MS per second', () => {
  // Each line meets a full queue, and the queue frees only after ~20 ms: without a budget a
  // burst of 50 lines would block the event loop for a second.
  let freeAt = Date.now() + 20;
  const addon: JournalAddon = { open: () => 0, send: () => { const now = Date.now(); if (now < freeAt) return 11; freeAt = now + 20; return 0; }, pending: () => 0, notify: () => 0 };
  const { log, sink } = capture('journal', addon);
  const t0 = Date.now();
  for (let i = 0; i < 50; i++) log.info(`burst ${i}`);
  const took = Date.now() - t0;
  assert.ok(took < 250, `50 lines blocked for ${took} ms (budget ${WAIT_BUDGET_MS} ms per second)`);
  assert.equal(sink.stats.sent + sink.stats.fallbacks, 50, 'every line kept: sent or on stdout');
});
