/**
 * File mirror benchmark: this agent's FileMirror against the "tar-everything" method it
 * replaces, on the same generated Vaultwarden data folder, for
 *   (a) the first full sync, (b) an idle sync interval, (c) one changed 1 MiB attachment.
 * For each: bytes read from disk, bytes written to disk, bytes uploaded, store requests and
 * wall time, measured in this process.
 *
 *   make bench-files                                  # 2,000 attachments, ~500 MiB
 *   BENCH_FILES=50 BENCH_MIB=20 make bench-files      # small
 *
 * Environment: BENCH_FILES (attachments, default 2000), BENCH_MIB (their total size in MiB,
 * default 500), BENCH_SENDS (send files, default 20), BENCH_TMPDIR (default /var/tmp).
 *
 * Measurement
 * - Disk read/written: deltas of rchar/wchar in /proc/self/io around each operation.
 *   rchar counts every byte the process got from read()/pread()/sendfile()/
 *   copy_file_range() (node's copyFile), page cache included: it is the I/O the method asks
 *   for, not what reached the block device (read_bytes; shown as a footnote, usually ~0
 *   here because the freshly written data is still cached).
 * - Uploaded/requests: counted at the client. Agent: DirStore.stats (a PUT per file, a LIST
 *   at start). Tar: one request and the whole tar size per tar copied to the destination.
 * - Both methods write to a local directory (DirStore for the agent; a directory copy of each
 *   changed tar for the tar method), so neither pays network time.
 *
 * The tar method, per interval and per group (attachments/, sends/, config.json+rsa_key*):
 * write a plain (uncompressed) tar of the group to a temp file with the npm package
 * tar-stream (in-process, so its reads show in /proc/self/io), sha256 the temp tar, compare
 * with the group's last checksum, and copy the whole tar to the destination on change.
 */
import { createHash, randomBytes, randomFillSync, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { copyFile, lstat, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import type { Pack } from 'tar-stream';
import { log } from '../agent/log.ts';
import { FileMirror, type SyncReport } from '../agent/files/mirror.ts';
import { scopeOf } from '../agent/files/scope.ts';
import { DirStore } from '../agent/files/store.ts';

import { MiB, envNum } from './common.ts';

const FILES = Math.trunc(envNum('BENCH_FILES', 2000, 1));
const TOTAL = Math.round(envNum('BENCH_MIB', 500, 1) * MiB);
const SENDS = Math.trunc(envNum('BENCH_SENDS', 20, 0));
const TMPDIR = process.env.BENCH_TMPDIR || '/var/tmp';
const CHANGED_SIZE = 1 * MiB;

// ---------------------------------------------------------------- measurement

interface Io { rchar: number; wchar: number; readBytes: number; writeBytes: number }

function readIo(): Io {
  const v: Record<string, number> = {};
  for (const line of readFileSync('/proc/self/io', 'utf8').split('\n')) {
    const [k, n] = line.split(':');
    if (k && n) v[k.trim()] = Number(n.trim());
  }
  return { rchar: v.rchar ?? 0, wchar: v.wchar ?? 0, readBytes: v.read_bytes ?? 0, writeBytes: v.write_bytes ?? 0 };
}

/** What reading /proc/self/io itself adds to rchar between two snapshots. */
let ioOverhead = 0;
function calibrate(): void {
  const d: number[] = [];
  for (let i = 0; i < 9; i++) { const a = readIo(); const b = readIo(); d.push(b.rchar - a.rchar); }
  ioOverhead = d.sort((x, y) => x - y)[4] ?? 0;
}

interface Cost { read: number; written: number; blockRead: number; uploaded: number; requests: number; ms: number }

async function measure(counters: () => { requests: number; bytesUp: number }, fn: () => Promise<void>): Promise<Cost> {
  const c0 = { ...counters() };
  const io0 = readIo();
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  const io1 = readIo();
  const c1 = counters();
  return {
    read: Math.max(0, io1.rchar - io0.rchar - ioOverhead),
    written: io1.wchar - io0.wchar,
    blockRead: io1.readBytes - io0.readBytes,
    uploaded: c1.bytesUp - c0.bytesUp,
    requests: c1.requests - c0.requests,
    ms,
  };
}

// ---------------------------------------------------------------- data

/** Deterministic sizes (mulberry32): the same layout on every run of the same size. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Log-normal-ish sizes summing exactly to `total` (a few large files, many small). */
function sizes(n: number, total: number, rnd: () => number): number[] {
  if (n <= 0) return [];
  const w = Array.from({ length: n }, () => {
    const g = Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
    return Math.exp(1.2 * g);
  });
  const sum = w.reduce((a, b) => a + b, 0);
  const out = w.map((x) => Math.floor((x / sum) * total));
  out[n - 1]! += total - out.reduce((a, b) => a + b, 0);
  return out;
}

const idChars = 'abcdefghijklmnopqrstuvwxyz0123456789';
function attachmentId(): string {
  return [...randomBytes(20)].map((b) => idChars[b % idChars.length]).join('');
}

let fill = Buffer.alloc(0);
async function writeRandom(path: string, size: number): Promise<void> {
  if (fill.length < size) fill = Buffer.allocUnsafe(Math.max(size, 4 * MiB));
  randomFillSync(fill, 0, size);
  await writeFile(path, fill.subarray(0, size), { mode: 0o600 });
}

interface Generated { changed: string; attachments: number; attachmentBytes: number; sends: number; sendBytes: number; rootFiles: number }

/** A Vaultwarden data folder: attachments/<cipher>/<id>, sends/<send>/<id>, config.json, rsa_key*, db. */
async function generate(data: string): Promise<Generated> {
  const rnd = prng(0x5eed ^ FILES ^ TOTAL);
  if (TOTAL < CHANGED_SIZE + (FILES - 1)) throw new Error('BENCH_MIB too small for BENCH_FILES (need >= 1 MiB + 1 byte per other file)');
  const attach = [CHANGED_SIZE, ...sizes(FILES - 1, TOTAL - CHANGED_SIZE, rnd)];
  let changed = '';
  let cipher = '';
  for (let i = 0; i < attach.length; i++) {
    if (i % 2 === 0 || rnd() < 0.3) { cipher = randomUUID(); await mkdir(join(data, 'attachments', cipher), { recursive: true, mode: 0o700 }); }
    const rel = `attachments/${cipher}/${attachmentId()}`;
    await writeRandom(join(data, rel), attach[i]!);
    if (i === 0) changed = rel;
  }
  const sendSizes = Array.from({ length: SENDS }, () => Math.floor(10 * 1024 + rnd() * 490 * 1024));
  for (const size of sendSizes) {
    const dir = join(data, 'sends', randomUUID());
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeRandom(join(dir, randomUUID()), size);
  }
  await writeFile(join(data, 'config.json'), JSON.stringify({ domain: 'https://vault.example.org', signups_allowed: false, admin_token: randomBytes(32).toString('base64'), smtp_host: 'smtp.example.org' }, null, 2) + '\n', { mode: 0o600 });
  await writeRandom(join(data, 'rsa_key.pem'), 1679);
  await writeRandom(join(data, 'rsa_key.pub.pem'), 451);
  await writeRandom(join(data, 'db.sqlite3'), 4 * MiB); // not mirrored by either method (Litestream's)
  return {
    changed,
    attachments: attach.length,
    attachmentBytes: attach.reduce((a, b) => a + b, 0),
    sends: SENDS,
    sendBytes: sendSizes.reduce((a, b) => a + b, 0),
    rootFiles: 3,
  };
}

// ---------------------------------------------------------------- tar-everything

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

function addEntry(pack: Pack, header: Parameters<Pack['entry']>[0], body?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (body === undefined) pack.entry(header, cb);
    else {
      const sink = pack.entry(header, cb);
      pipeline(createReadStream(body), sink).catch(reject);
    }
  });
}

async function addPath(pack: Pack, base: string, rel: string): Promise<void> {
  const st = await lstat(join(base, rel)).catch(() => undefined);
  if (!st) return;
  const common = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
  if (st.isDirectory()) {
    await addEntry(pack, { ...common, name: `${rel}/`, type: 'directory' });
    for (const name of (await readdir(join(base, rel))).sort()) await addPath(pack, base, `${rel}/${name}`);
  } else if (st.isFile()) {
    await addEntry(pack, { ...common, name: rel, type: 'file', size: st.size }, st.size > 0 ? join(base, rel) : undefined);
  }
}

async function writeTar(base: string, roots: string[], out: string): Promise<void> {
  const pack = tarStream.pack();
  const written = pipeline(pack, createWriteStream(out, { mode: 0o600 }));
  try {
    for (const rel of roots) await addPath(pack, base, rel);
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
  }
  await written;
}

/** The method the product replaces: tar each group, sha256 it, upload the whole tar on change. */
class TarEverything {
  readonly stats = { requests: 0, bytesUp: 0 };
  private readonly last = new Map<string, string>();
  private readonly data: string;
  private readonly tmp: string;
  private readonly dest: string;

  constructor(data: string, tmp: string, dest: string) {
    this.data = data;
    this.tmp = tmp;
    this.dest = dest;
  }

  private async groups(): Promise<{ name: string; roots: string[] }[]> {
    const root = (await readdir(this.data)).filter((n) => n === 'config.json' || /^rsa_key/.test(n)).sort();
    return [
      { name: 'attachments', roots: ['attachments'] },
      { name: 'sends', roots: ['sends'] },
      { name: 'config', roots: root },
    ];
  }

  async interval(): Promise<{ uploaded: number; tarBytes: number }> {
    let uploaded = 0;
    let tarBytes = 0;
    for (const g of await this.groups()) {
      const tar = join(this.tmp, `${g.name}.tar`);
      await writeTar(this.data, g.roots, tar);
      const sha = await sha256File(tar);
      const { size } = await stat(tar);
      tarBytes += size;
      if (this.last.get(g.name) !== sha) {
        this.stats.requests++;
        const dest = join(this.dest, `${g.name}.tar`);
        await copyFile(tar, `${dest}.tmp`);
        await rename(`${dest}.tmp`, dest);
        this.stats.bytesUp += size;
        this.last.set(g.name, sha);
        uploaded++;
      }
      await rm(tar, { force: true });
    }
    return { uploaded, tarBytes };
  }
}

// ---------------------------------------------------------------- output

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MiB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024 / MiB).toFixed(2)} GiB`;
}

function fmtMs(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function ratio(tar: number, agent: number): string {
  if (tar === 0 && agent === 0) return '=';
  if (agent === 0) return '∞ (agent 0)';
  const r = tar / agent;
  if (r < 0.1) return `${r.toPrecision(2)}×`;
  return r >= 100 ? `${Math.round(r)}×` : `${r.toFixed(r >= 10 ? 1 : 2)}×`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  log.level = 'silent'; // the mirror logs each uploading pass; keep the bench output a table
  calibrate();
  const root = await mkdtemp(join(TMPDIR, 'vws-bench-files-'));
  let cleaned = false;
  const cleanup = async () => { if (!cleaned) { cleaned = true; await rm(root, { recursive: true, force: true }); } };
  const onSignal = (sig: NodeJS.Signals) => { void cleanup().finally(() => process.kill(process.pid, sig)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const data = join(root, 'data');
    const dirs = { agentDest: join(root, 'dest-agent'), tarDest: join(root, 'dest-tar'), tarTmp: join(root, 'tar-tmp'), state: join(root, 'state') };
    for (const d of [data, ...Object.values(dirs)]) await mkdir(d, { recursive: true, mode: 0o700 });

    const tGen = performance.now();
    const gen = await generate(data);
    console.log(`vwstream-agent file mirror vs tar-everything — ${gen.attachments} attachments (${fmtBytes(gen.attachmentBytes)}), ` +
      `${gen.sends} sends (${fmtBytes(gen.sendBytes)}), config.json + rsa_key* — data folder ${data} (generated in ${fmtMs(performance.now() - tGen)})`);

    const store = new DirStore(dirs.agentDest);
    const mirror = new FileMirror({
      dataFolder: data,
      scope: scopeOf({ attachments: true, sends: true, config: true, rsaKey: true, iconCache: false }),
      store,
      manifestPath: join(dirs.state, 'files-manifest.json'),
    });
    const tar = new TarEverything(data, dirs.tarTmp, dirs.tarDest);
    const expectFiles = gen.attachments + gen.sends + gen.rootFiles;
    const notes: string[] = [];
    const check = (what: string, ok: boolean) => { if (!ok) notes.push(`UNEXPECTED: ${what}`); };

    const results: { scenario: string; agent: Cost; tar: Cost }[] = [];
    const run = async (scenario: string, expectAgent: (r: SyncReport) => boolean, expectTar: (u: number) => boolean) => {
      let rep: SyncReport | undefined;
      let tarUploads = -1;
      const agentCost = await measure(() => store.stats, async () => { rep = await mirror.sync('bench'); });
      const tarCost = await measure(() => tar.stats, async () => { tarUploads = (await tar.interval()).uploaded; });
      check(`${scenario}: agent pass ${JSON.stringify({ uploaded: rep?.uploaded, deleted: rep?.deleted, unchanged: rep?.unchanged, errors: rep?.errors })}`, !!rep && rep.errors.length === 0 && expectAgent(rep));
      check(`${scenario}: tar uploaded ${tarUploads} tars`, expectTar(tarUploads));
      results.push({ scenario, agent: agentCost, tar: tarCost });
    };

    await run('(a) first full sync', (r) => r.uploaded === expectFiles, (u) => u === 3);
    await run('(b) idle interval', (r) => r.uploaded === 0 && r.unchanged === expectFiles, (u) => u === 0);
    await writeRandom(join(data, gen.changed), CHANGED_SIZE); // new content, same size, new mtime
    await run('(c) 1 MiB attachment changed', (r) => r.uploaded === 1 && r.uploadedBytes === CHANGED_SIZE, (u) => u === 1);

    // The agent's destination now holds the changed file as it is locally.
    const [a, b] = await Promise.all([sha256File(join(data, gen.changed)), sha256File(join(dirs.agentDest, gen.changed))]);
    check('agent destination differs from the changed file', a === b);

    const rows: string[][] = [['scenario', 'method', 'disk read', 'disk written', 'uploaded', 'requests', 'wall time']];
    for (const r of results) {
      const line = (m: string, c: Cost) => [m === 'agent' ? r.scenario : '', m, fmtBytes(c.read), fmtBytes(c.written), fmtBytes(c.uploaded), String(c.requests), fmtMs(c.ms)];
      rows.push(line('agent', r.agent), line('tar', r.tar));
      rows.push(['', 'tar ÷ agent', ratio(r.tar.read, r.agent.read), ratio(r.tar.written, r.agent.written), ratio(r.tar.uploaded, r.agent.uploaded),
        ratio(r.tar.requests, r.agent.requests), ratio(r.tar.ms, r.agent.ms)]);
    }
    console.log('');
    console.log(table(rows));
    console.log('');
    console.log('agent = FileMirror.sync() → DirStore (a LIST at start, a PUT per new/changed file; manifest of size, mtime, sha256).');
    console.log('tar   = per interval, per group (attachments/, sends/, config.json+rsa_key*): plain tar to a temp file with tar-stream (npm, in-process),');
    console.log('        sha256 of the temp tar, whole tar copied to the destination directory when its checksum changed (1 request per tar).');
    console.log(`disk read/written = rchar/wchar deltas of /proc/self/io: bytes asked of read()/copy_file_range()/write(), page cache included ` +
      `(block-device read_bytes: ${results.map((r) => `${fmtBytes(r.agent.blockRead)}/${fmtBytes(r.tar.blockRead)}`).join(', ')} agent/tar per scenario).`);
    console.log(`        A few KiB of rchar/wchar with no file read are libuv's 8-byte eventfd wake-ups, one per async fs call (lstat, readdir).`);
    console.log(`uploaded/requests counted at the client; both destinations are local directories on the same disk, so wall time has no network in it.`);
    for (const n of notes) console.log(n);
    const [, idle, change] = results;
    console.log('');
    console.log(`Summary: idle interval — agent read ${fmtBytes(idle!.agent.read)} with ${idle!.agent.requests} requests in ${fmtMs(idle!.agent.ms)}, ` +
      `tar read ${fmtBytes(idle!.tar.read)} in ${fmtMs(idle!.tar.ms)}; one changed 1 MiB attachment — agent uploaded ${fmtBytes(change!.agent.uploaded)} ` +
      `in ${change!.agent.requests} request, tar ${fmtBytes(change!.tar.uploaded)} (${ratio(change!.tar.uploaded, change!.agent.uploaded)}).`);
    if (notes.length) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

await main();
