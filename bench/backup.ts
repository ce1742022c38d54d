/**
 * Backup benchmark (issue 6): this agent's runBackup() against the by-hand pipeline it
 * replaces, on the same generated Vaultwarden data folder:
 *   (a) agent:   runBackup() in a child process (bench/backup-agent.ts): VACUUM INTO
 *                snapshot → tar → gzip → aes-256-cbc, streamed to one staged file →
 *                rclone copyto a local destination (+ retention listing).
 *   (b) by hand: sqlite3 .backup snapshot; tar czf (the data folder with the snapshot in
 *                place of the live db); openssl enc -aes-256-cbc -pbkdf2; rclone copy to a
 *                local destination. Four commands, each with its own intermediate file.
 * For each: wall time, peak RSS, archive size. Then the agent's archive is decrypted with
 * openssl and its database's row counts are checked against the generated ones.
 *
 *   make bench-backup                    # ~1 GiB data folder
 *   BENCH_MIB=100 make bench-backup      # quick
 *
 * Environment: BENCH_MIB (data folder total, default 1024), BENCH_DB_MIB (database share,
 * default 50 MiB per GiB of total, at least 2), BENCH_FILE_KIB (mean attachment size,
 * default 512), BENCH_TMPDIR (default /var/tmp). Needs sqlite3, tar, gzip, openssl, rclone
 * and /usr/bin/time (apt-get install -y time).
 *
 * Measurement
 * - Every process runs under `/usr/bin/time -v`; peak RSS is its "Maximum resident set
 *   size", which (wait4's rusage) covers the process and the descendants it waited for:
 *   for the agent that is max(node, the rclone it spawns); for the by-hand pipeline it is
 *   the max over the four steps (they run one after another).
 * - Wall time is measured around each spawn here (the agent's includes node's start-up and
 *   module loading, ~0.1–0.3 s; its own report.ms is shown as well). By hand: sum of steps.
 * - The data folder was just written, so both methods read it from the page cache (the
 *   machine has to have RAM for it; a cold cache would slow both alike).
 * - While measuring, this process keeps the database open with its last inserts still in
 *   the WAL (as a running Vaultwarden would), so both snapshots must read the WAL.
 */
import { randomBytes, randomFillSync, randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';

import { MiB, envNum } from './common.ts';

const TOTAL = Math.round(envNum('BENCH_MIB', 1024, 4) * MiB);
const DB_TARGET = Math.round(envNum('BENCH_DB_MIB', Math.max(2, (TOTAL / MiB) * 50 / 1024), 1) * MiB);
const FILE_MEAN = Math.round(envNum('BENCH_FILE_KIB', 512, 1) * 1024);
const TMPDIR = process.env.BENCH_TMPDIR || '/var/tmp';
const TIME_BIN = '/usr/bin/time';
const PASSWORD = `bench-${randomBytes(12).toString('hex')}`;
const CIPHER_DATA = 1536; // bytes of (base64, encrypted-looking) data per cipher row

// ---------------------------------------------------------------- helpers

interface Measured { ms: number; maxRssKiB: number; code: number; stdout: string; stderr: string }

/** Runs argv under /usr/bin/time -v; wall time measured here, peak RSS from time's report. */
async function measure(argv: string[], opts: { env?: NodeJS.ProcessEnv; timeFile: string }): Promise<Measured> {
  const started = performance.now();
  const child = spawn(TIME_BIN, ['-v', '-o', opts.timeFile, ...argv], { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? -1));
  });
  const ms = performance.now() - started;
  const t = readFileSync(opts.timeFile, 'utf8');
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(t);
  return { ms, maxRssKiB: m ? Number(m[1]) : NaN, code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** Runs a shell command to completion, throwing on failure; returns stdout. */
async function sh(cmd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const child = spawn('bash', ['-o', 'pipefail', '-c', cmd], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const code = await new Promise<number>((resolve, reject) => { child.on('error', reject); child.on('close', (c) => resolve(c ?? -1)); });
  if (code !== 0) throw new Error(`${cmd}: exit ${code}: ${Buffer.concat(err).toString().trim().slice(-500)}`);
  return Buffer.concat(out).toString();
}

function check(m: Measured, what: string): void {
  if (m.code !== 0) throw new Error(`${what} exited ${m.code}: ${(m.stderr || m.stdout).trim().split('\n').slice(-5).join(' | ')}`);
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const fmtMiB = (b: number) => `${(b / MiB).toFixed(1)} MiB`;
const fmtS = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function sizeOfTree(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

// ---------------------------------------------------------------- data folder

interface Generated { users: number; ciphers: number; files: number; fileBytes: number; dbBytes: number; db: DatabaseSync }

async function generate(data: string): Promise<Generated> {
  await mkdir(join(data, 'attachments'), { recursive: true });
  const db = new DatabaseSync(join(data, 'db.sqlite3'));
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec(`CREATE TABLE users (uuid TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    password_hash BLOB NOT NULL, salt BLOB NOT NULL, akey TEXT NOT NULL, private_key TEXT, public_key TEXT,
    created_at TEXT NOT NULL)`);
  db.exec(`CREATE TABLE ciphers (uuid TEXT PRIMARY KEY, user_uuid TEXT REFERENCES users(uuid), atype INTEGER NOT NULL,
    name TEXT NOT NULL, notes TEXT, data TEXT NOT NULL, favorite INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL)`);
  db.exec('CREATE INDEX ciphers_user ON ciphers(user_uuid)');
  db.exec('CREATE TABLE attachments (id TEXT PRIMARY KEY, cipher_uuid TEXT NOT NULL REFERENCES ciphers(uuid), file_name TEXT NOT NULL, file_size INTEGER NOT NULL)');

  const perRow = CIPHER_DATA + 400; // data + name/notes + uuids + index entries, roughly
  const cipherCount = Math.max(100, Math.round(DB_TARGET / perRow));
  const userCount = Math.max(5, Math.round(cipherCount / 100));
  const enc = (n: number) => `2.${randomBytes(16).toString('base64')}|${randomBytes(Math.ceil(n * 3 / 4)).toString('base64').slice(0, n)}|${randomBytes(32).toString('base64')}`;
  const now = new Date().toISOString();
  const users: string[] = [];
  db.exec('BEGIN');
  const insU = db.prepare('INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
  for (let i = 0; i < userCount; i++) {
    const id = randomUUID();
    users.push(id);
    insU.run(id, `user${i}@example.org`, `User ${i}`, randomBytes(32), randomBytes(64), enc(100), enc(1600), randomBytes(294).toString('base64'), now);
  }
  db.exec('COMMIT');

  // Attachment sizes: uniform in [0.1, 1.9] × mean, scaled to what remains of the total.
  const attachBudget = Math.max(0, TOTAL - DB_TARGET - 8 * 1024);
  const fileCount = Math.max(1, Math.round(attachBudget / FILE_MEAN));
  const raw = Array.from({ length: fileCount }, () => 0.1 + Math.random() * 1.8);
  const sum = raw.reduce((a, b) => a + b, 0);
  const sizes = raw.map((r) => Math.max(1, Math.round((r / sum) * attachBudget)));

  const insC = db.prepare('INSERT INTO ciphers VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)');
  const insA = db.prepare('INSERT INTO attachments VALUES (?, ?, ?, ?)');
  const cipherIds: string[] = [];
  // The first ~90% is checkpointed into the db file; the rest stays in the WAL (see below).
  const walFrom = Math.floor(cipherCount * 0.9);
  db.exec('BEGIN');
  for (let i = 0; i < cipherCount; i++) {
    if (i === walFrom) {
      db.exec('COMMIT');
      db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
      db.exec('PRAGMA wal_autocheckpoint = 0');
      db.exec('BEGIN');
    }
    const id = randomUUID();
    cipherIds.push(id);
    insC.run(id, users[i % users.length]!, 1 + (i % 4), enc(40), i % 5 === 0 ? enc(200) : null, enc(CIPHER_DATA), now, now);
  }
  const buf = Buffer.allocUnsafe(MiB);
  let fileBytes = 0;
  for (let i = 0; i < fileCount; i++) {
    const cipher = cipherIds[i % cipherIds.length]!;
    const fileId = randomBytes(10).toString('hex');
    const size = sizes[i]!;
    insA.run(fileId, cipher, enc(30), size);
    await mkdir(join(data, 'attachments', cipher), { recursive: true });
    const fh = await open(join(data, 'attachments', cipher, fileId), 'w', 0o600);
    try {
      for (let left = size; left > 0;) {
        const n = Math.min(left, buf.length);
        randomFillSync(buf, 0, n); // attachments are client-encrypted: incompressible
        await fh.write(buf, 0, n);
        left -= n;
      }
    } finally {
      await fh.close();
    }
    fileBytes += size;
  }
  db.exec('COMMIT');
  await writeFile(join(data, 'rsa_key.pem'), `-----BEGIN PRIVATE KEY-----\n${randomBytes(1190).toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END PRIVATE KEY-----\n`, { mode: 0o600 });
  await writeFile(join(data, 'config.json'), `${JSON.stringify({ domain: 'https://vault.example.org', signups_allowed: false, admin_token: randomBytes(24).toString('hex') }, null, 2)}\n`, { mode: 0o600 });
  // db stays open (as Vaultwarden's would): its last ~10% of ciphers remain in the WAL.
  const dbBytes = (await stat(join(data, 'db.sqlite3'))).size + ((await stat(join(data, 'db.sqlite3-wal')).catch(() => undefined))?.size ?? 0);
  return { users: userCount, ciphers: cipherCount, files: fileCount, fileBytes, dbBytes, db };
}

// ---------------------------------------------------------------- the two methods

interface Result { ms: number; maxRssKiB: number; archiveBytes: number; steps?: { name: string; ms: number; maxRssKiB: number }[]; reportMs?: number; nodeMaxRssKiB?: number }

async function runAgent(work: string, data: string): Promise<Result & { dest: string }> {
  const dest = join(work, 'dest-agent');
  const tmp = join(work, 'agent-tmp');
  await mkdir(dest, { recursive: true });
  const envFile = join(work, 'agent.env');
  await writeFile(envFile, [
    'BACKUP_ENABLED=true',
    `BACKUP_PASSWORD=${PASSWORD}`,
    `BACKUP_REMOTES=LOCALBENCH:${dest}`,
    'RCLONE_CONFIG_LOCALBENCH_TYPE=local',
    '',
  ].join('\n'), { mode: 0o600 });
  const script = fileURLToPath(new URL('./backup-agent.ts', import.meta.url));
  const m = await measure([process.execPath, ...process.execArgv, script, envFile, join(data, 'db.sqlite3'), data, tmp], { timeFile: join(work, 'time-agent') });
  const line = m.stdout.split('\n').find((l) => l.startsWith('BENCH_REPORT '));
  if (m.code !== 0 || !line) throw new Error(`agent backup failed (exit ${m.code}): ${(line ?? m.stderr ?? m.stdout).trim().slice(-800)}`);
  const report = JSON.parse(line.slice('BENCH_REPORT '.length)) as { ok: boolean; ms: number; archive: { bytes: number } | null; nodeMaxRssKiB: number };
  if (!report.ok || !report.archive) throw new Error(`agent backup not ok: ${line.slice(0, 800)}`);
  return { ms: m.ms, maxRssKiB: m.maxRssKiB, archiveBytes: report.archive.bytes, reportMs: report.ms, nodeMaxRssKiB: report.nodeMaxRssKiB, dest };
}

async function runByHand(work: string, data: string): Promise<Result> {
  const dir = join(work, 'hand');
  const snapDir = join(dir, 'snap');
  const dest = join(work, 'dest-hand');
  await mkdir(snapDir, { recursive: true });
  await mkdir(dest, { recursive: true });
  const pwFile = join(work, 'pw');
  await writeFile(pwFile, PASSWORD, { mode: 0o600 });
  const snap = join(snapDir, 'db.sqlite3');
  const tgz = join(dir, 'vaultwarden.tar.gz');
  const enc = `${tgz}.enc`;
  const entries = (await readdir(data)).filter((n) => !/^db\.sqlite3(-wal|-shm|-journal)?$/.test(n)).sort();
  const rcloneEnv = { ...process.env, RCLONE_CONFIG_LOCALBENCH_TYPE: 'local' };
  const steps: { name: string; argv: string[]; env?: NodeJS.ProcessEnv }[] = [
    { name: 'sqlite3 .backup', argv: ['sqlite3', join(data, 'db.sqlite3'), `.backup ${q(snap)}`] },
    { name: 'tar czf', argv: ['tar', 'czf', tgz, '-C', snapDir, 'db.sqlite3', '-C', data, ...entries] },
    { name: 'openssl enc', argv: ['openssl', 'enc', '-aes-256-cbc', '-pbkdf2', '-salt', '-in', tgz, '-out', enc, '-pass', `file:${pwFile}`] },
    { name: 'rclone copy', argv: ['rclone', 'copy', enc, `LOCALBENCH:${dest}`], env: rcloneEnv },
  ];
  const out: { name: string; ms: number; maxRssKiB: number }[] = [];
  for (const [i, s] of steps.entries()) {
    const m = await measure(s.argv, { timeFile: join(work, `time-hand-${i}`), ...(s.env ? { env: s.env } : {}) });
    check(m, s.name);
    out.push({ name: s.name, ms: m.ms, maxRssKiB: m.maxRssKiB });
  }
  const archiveBytes = (await stat(join(dest, 'vaultwarden.tar.gz.enc'))).size;
  return { ms: out.reduce((a, s) => a + s.ms, 0), maxRssKiB: Math.max(...out.map((s) => s.maxRssKiB)), archiveBytes, steps: out };
}

// ---------------------------------------------------------------- verification

async function verifyAgentArchive(work: string, dest: string, gen: Generated): Promise<string> {
  const names = (await readdir(dest)).filter((n) => !n.startsWith('.'));
  if (names.length !== 1) throw new Error(`expected one archive in ${dest}, found: ${names.join(', ') || 'none'}`);
  const archive = join(dest, names[0]!);
  const pwFile = join(work, 'pw');
  const vdir = join(work, 'verify');
  await mkdir(vdir, { recursive: true });
  const dec = `openssl enc -d -aes-256-cbc -pbkdf2 -pass file:${q(pwFile)} -in ${q(archive)}`;
  const listed = (await sh(`${dec} | tar tzf -`)).split('\n').filter(Boolean);
  await sh(`${dec} | tar xzf - -C ${q(vdir)} db.sqlite3`);
  const counts = (await sh(`sqlite3 ${q(join(vdir, 'db.sqlite3'))} 'SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM ciphers), (SELECT count(*) FROM attachments)'`)).trim();
  const expected = `${gen.users}|${gen.ciphers}|${gen.files}`;
  const wantEntries = 1 + gen.files + 2; // db + attachments + rsa_key.pem + config.json
  const problems: string[] = [];
  if (counts !== expected) problems.push(`row counts users|ciphers|attachments ${counts}, expected ${expected}`);
  if (listed.length !== wantEntries) problems.push(`${listed.length} archive entries, expected ${wantEntries}`);
  if (problems.length) throw new Error(`agent archive verification failed: ${problems.join('; ')}`);
  return `${names[0]}: decrypts with openssl enc -d -aes-256-cbc -pbkdf2; ${listed.length} entries; rows users|ciphers|attachments = ${counts} (expected ${expected})`;
}

// ---------------------------------------------------------------- main

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n');
}

async function main(): Promise<void> {
  for (const bin of ['sqlite3', 'tar', 'gzip', 'openssl', 'rclone']) {
    await sh(`command -v ${bin}`).catch(() => { throw new Error(`${bin} not found (apt-get install -y ${bin})`); });
  }
  if (!existsSync(TIME_BIN)) throw new Error(`${TIME_BIN} not found (apt-get install -y time)`);

  const work = await mkdtemp(join(TMPDIR, 'vwstream-bench-backup-'));
  let db: DatabaseSync | undefined;
  const cleanup = () => { try { db?.close(); } catch { /* closed */ } };
  const onSignal = () => { cleanup(); void rm(work, { recursive: true, force: true }).finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const data = join(work, 'data');
    console.log(`generating ~${fmtMiB(TOTAL)} data folder in ${data} ...`);
    const t0 = performance.now();
    const gen = await generate(data);
    db = gen.db;
    const walBytes = (await stat(join(data, 'db.sqlite3-wal')).catch(() => undefined))?.size ?? 0;
    const total = await sizeOfTree(data);
    console.log(`  ${gen.users} users, ${gen.ciphers} ciphers; db ${fmtMiB(gen.dbBytes - walBytes)} + WAL ${fmtMiB(walBytes)}; `
      + `${gen.files} attachments ${fmtMiB(gen.fileBytes)}; total ${fmtMiB(total)} (${fmtS(performance.now() - t0)})`);

    console.log('running the agent (runBackup in a child process) ...');
    const agent = await runAgent(work, data);
    console.log('running the by-hand pipeline ...');
    const hand = await runByHand(work, data);
    console.log('verifying the agent archive ...');
    const verified = await verifyAgentArchive(work, agent.dest, gen);

    const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
    console.log('');
    console.log(`Backup of a ${fmtMiB(total)} data folder (${gen.files} attachments, ${fmtMiB(gen.dbBytes)} database incl. WAL), to a local rclone remote`);
    console.log('');
    console.log(table([
      ['method', 'wall time', 'peak RSS', 'archive'],
      ['agent (runBackup, child process)', fmtS(agent.ms), fmtMiB(agent.maxRssKiB * 1024), fmtMiB(agent.archiveBytes)],
      ['by hand (sum of 4 steps, max RSS)', fmtS(hand.ms), fmtMiB(hand.maxRssKiB * 1024), fmtMiB(hand.archiveBytes)],
      ...hand.steps!.map((s) => [`  ${s.name}`, fmtS(s.ms), fmtMiB(s.maxRssKiB * 1024), '']),
      ['agent ÷ by hand', ratio(agent.ms, hand.ms), ratio(agent.maxRssKiB, hand.maxRssKiB), ratio(agent.archiveBytes, hand.archiveBytes)],
    ]));
    console.log('');
    console.log(`agent: report.ms ${fmtS(agent.reportMs ?? 0)} inside the process (the rest is node start-up and module loading)`);
    console.log(`peak RSS from /usr/bin/time -v (agent: max of node and its rclone child; by hand: max over steps); the agent's node process alone: ${fmtMiB((agent.nodeMaxRssKiB ?? 0) * 1024)}`);
    console.log(`verified: ${verified}`);
  } finally {
    cleanup();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
