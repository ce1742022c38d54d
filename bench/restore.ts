/**
 * New-host restore: `systemctl start vwstream-agent` on a host with no local data (until
 * READY) against the plain tools on the same replica and host (`litestream restore` plus
 * `rclone copy --transfers 8` of the mirrored files, one after the other and both at
 * once), and Vaultwarden's own start on the restored data. Prints where the agent's start
 * spends its time, from the journal.
 *
 *   make bench-restore                                   # RGW, 131 MiB database, 300 x 1 MiB
 *   BENCH_RUNS=2 BENCH_DB_MIB=20 BENCH_ATTACH=20 make bench-restore
 *
 * Environment: BENCH_RESTORE_S3 (rgw | fauxqs, default rgw), BENCH_DB_MIB (database size,
 * 131), BENCH_ATTACH (attachments, 300), BENCH_ATTACH_MIB (size of each, 1), BENCH_RUNS
 * (runs of each measurement, 3), BENCH_HOST_PREFIX (host names, br-), BENCH_RESTORE_DEBUG (1: one more agent restore with
 * LOG_LEVEL=debug, not counted, whose journal shows every command the agent ran; default 1).
 *
 * Seed: host br-primary, default settings plus the bucket. Its data folder is built with
 * sqlite3 (the stand-in's schema, big ciphers rows, users) and attachment files while no
 * replica exists; then the agent starts as primary, so Litestream uploads its own
 * generation and the file mirror its files; then an orderly stop (drain).
 *
 * Measurement on one host, br-restore, for every run: stop the agent, empty
 * /var/lib/vaultwarden, /var/lib/vwstream and the directory replica (a new host has none
 * of them), then time `systemctl start` inside the host (Type=notify: it returns at READY).
 * Each restored host becomes the primary and Litestream uploads a new generation of the
 * same data; the bench waits for that upload before the next step, so no run competes
 * with it. Timings are taken inside the host (date +%s%N around the command).
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import os from 'node:os';
import { freePort, s3ClientFor, startRgw, startS3, type S3Server } from '../test/system/harness.ts';
import { agentHost, journalTail, statusJson, waitDbSynced, type AgentHost } from '../test/system/common.ts';
import { envNum, MiB } from './common.ts';

const S3_KIND = process.env.BENCH_RESTORE_S3 || 'rgw';
if (S3_KIND !== 'rgw' && S3_KIND !== 'fauxqs') throw new Error(`BENCH_RESTORE_S3=${S3_KIND}: expected rgw or fauxqs`);
const DB_MIB = envNum('BENCH_DB_MIB', 131, 1);
const ATTACH = Math.trunc(envNum('BENCH_ATTACH', 300, 0));
const ATTACH_MIB = envNum('BENCH_ATTACH_MIB', 1, 0.001);
const RUNS = Math.trunc(envNum('BENCH_RUNS', 3, 1));
const DEBUG_RUN = process.env.BENCH_RESTORE_DEBUG !== '0';
/** BENCH_HOST_PREFIX: the hosts' name prefix (default br-), so two runs on one machine do not collide. */
const HOST_PREFIX = process.env.BENCH_HOST_PREFIX || 'br-';
if (!/^[a-z0-9][a-z0-9-]{0,20}$/.test(HOST_PREFIX)) throw new Error(`BENCH_HOST_PREFIX=${HOST_PREFIX}: expected letters, digits and dashes`);
const USERS = 50;
/** Text per ciphers row (hex of random bytes: as incompressible for lz4 as encrypted data). */
const ROW_BYTES = 32 * 1024;
const BUCKET = 'br-bench';
const PREFIX = 'vault';
const DATA = '/var/lib/vaultwarden';
const DB = `${DATA}/db.sqlite3`;
const AGENT = 'vwstream-agent.service';
const VW = 'vwstream-vaultwarden.service';
const LS = 'vwstream-litestream.service';
const LITESTREAM = '/usr/lib/vwstream-agent/bin/litestream';
const TOOLS_DIR = '/var/tmp/br-tools';

// ------------------------------------------------------------------ helpers

const sec = (ms: number) => (ms / 1000).toFixed(2);
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };
const stats = (xs: number[]) => ({ min: Math.min(...xs), median: median(xs), max: Math.max(...xs), runs: xs });
type Stats = ReturnType<typeof stats>;

/** Runs `script` in the host and returns the `NAME=<ms>` values it prints (timed with date +%s%N there). */
async function timed(h: AgentHost, script: string, timeoutMs = 600_000): Promise<Record<string, number>> {
  const r = await h.host.sh(`set -euo pipefail\nnow() { date +%s%N; }\nms() { echo "$1=$(( ($3 - $2) / 1000000 ))"; }\n${script}`, { timeoutMs, check: false });
  if (r.exitCode !== 0) throw new Error(`[${h.host.name}] exit ${r.exitCode}\n${r.stdout}\n${r.stderr}\n--- agent journal ---\n${await journalTail(h.host, 40)}`);
  const out: Record<string, number> = {};
  for (const m of r.stdout.matchAll(/^([A-Za-z_][A-Za-z0-9_]*)=(-?\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** What a new host lacks: the agent stopped, no data folder contents, no agent state, no directory replica. */
async function wipe(h: AgentHost): Promise<void> {
  await h.host.sh([
    `systemctl stop ${AGENT} ${VW} ${LS} vwstream-sync.timer vwstream-verify.timer vwstream-backup.timer vwstream-backup.service`,
    `systemctl reset-failed ${AGENT} ${VW} ${LS} 2>/dev/null || true`,
    `find ${DATA} /var/lib/vwstream -mindepth 1 -delete`,
    'rm -rf /var/backups/vwstream/replica/* /var/backups/vwstream/replica/.[!.]*',
  ].join('\n'), { timeoutMs: 400_000 });
}

interface Line { t: number; src: string; msg: string }

/** The journal of the agent, Litestream and Vaultwarden units (and systemd about them) from `sinceMs` on. */
async function journalSince(h: AgentHost, sinceMs: number): Promise<Line[]> {
  const text = await h.host.journal(['-o', 'json', '-u', AGENT, '-u', LS, '-u', VW, '--since', `@${Math.floor(sinceMs / 1000) - 1}`]);
  const lines: Line[] = [];
  for (const raw of text.split('\n')) {
    if (!raw.startsWith('{')) continue;
    const e = JSON.parse(raw) as Record<string, unknown>;
    const t = Number(e.__REALTIME_TIMESTAMP) / 1000;
    if (t < sinceMs) continue;
    let msg = Array.isArray(e.MESSAGE) ? Buffer.from(e.MESSAGE as number[]).toString('utf8') : String(e.MESSAGE ?? '');
    const unit = String(e._SYSTEMD_UNIT ?? '');
    let src = e._PID === '1' || unit === 'init.scope' ? 'systemd' : unit === AGENT ? 'agent' : unit === LS ? 'litestream' : unit === VW ? 'vaultwarden' : unit || String(e.SYSLOG_IDENTIFIER ?? '?');
    if (src === 'agent' && msg.startsWith('{')) {
      try {
        const j = JSON.parse(msg) as Record<string, unknown>;
        // ms first: a "ran" line's args are long and the line is cut at 240 characters.
        const extra = ['ms', 'state', 'action', 'files', 'bytes', 'cmd', 'args'].filter((k) => j[k] !== undefined)
          .map((k) => `${k}=${typeof j[k] === 'string' ? j[k] : JSON.stringify(j[k]).slice(0, 120)}`).join(' ');
        msg = `${String(j.msg)}${extra ? ` [${extra}]` : ''}`;
      } catch { /* as it is */ }
    } else if (src === 'agent' && e.SYSLOG_IDENTIFIER && e.SYSLOG_IDENTIFIER !== 'vwstream-agent') {
      src = `agent:${String(e.SYSLOG_IDENTIFIER)}`;
    }
    if (src === 'litestream') msg = msg.replace(/^time=\S+ /, '');
    lines.push({ t, src, msg: msg.length > 240 ? `${msg.slice(0, 237)}...` : msg });
  }
  return lines.sort((a, b) => a.t - b.t);
}

/** A run's lines up to its READY (and a little after: the READY notification's own line), relative to its start. */
function phasesOf(run: { t0: number; ms: number; lines: Line[] }): Array<{ atMs: number; src: string; msg: string }> {
  return run.lines.filter((l) => l.t <= run.t0 + run.ms + 50).map((l) => ({ atMs: Math.round(l.t - run.t0), src: l.src, msg: l.msg }));
}

function phaseTable(lines: Line[], t0: number): string {
  const rows = ['    at s   +ms  source       message'];
  let prev = t0;
  for (const l of lines) {
    rows.push(`  ${sec(l.t - t0).padStart(6)} ${String(Math.round(l.t - prev)).padStart(5)}  ${l.src.padEnd(12)} ${l.msg}`);
    prev = l.t;
  }
  return rows.join('\n');
}

/** Object count and bytes under a prefix. */
async function bucketUsage(s3: S3Server, prefix: string): Promise<{ objects: number; bytes: number }> {
  const c = s3ClientFor(s3);
  let objects = 0;
  let bytes = 0;
  let token: string | undefined;
  try {
    do {
      const r = await c.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
      for (const o of r.Contents ?? []) { objects++; bytes += o.Size ?? 0; }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  } finally {
    c.destroy();
  }
  return { objects, bytes };
}

// ------------------------------------------------------------------ the run

const s3Env = (s3: S3Server): Record<string, string> => ({
  S3_BUCKET: BUCKET, S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: s3.accessKey, S3_SECRET_ACCESS_KEY: s3.secretKey,
  S3_REGION: 'us-east-1', S3_PREFIX: PREFIX,
});

/** The seed on the primary: data folder by sqlite3, then the agent uploads it as its own generation and files. */
async function seed(p: AgentHost, s3: S3Server): Promise<Record<string, unknown>> {
  await wipe(p);
  // The stand-in's schema and rsa_key.pem: run it once, as the unit would, until it answers.
  const port = await freePort();
  await p.host.sh(`set -e
umask 0007
runuser -u vaultwarden -- env DATA_FOLDER=${DATA} ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT=${port} WEB_VAULT_ENABLED=false /usr/bin/vaultwarden >/var/tmp/br-seed.log 2>&1 &
pid=$!
for i in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:${port}/alive && break; sleep 0.05; done
kill -TERM $pid; wait $pid || true
test -s ${DB}`, { timeoutMs: 120_000 });
  const rows = Math.max(1, Math.round((DB_MIB * MiB) / (ROW_BYTES * 1.012)));
  const t0 = Date.now();
  await p.host.sh(`set -e
umask 0007
cd ${DATA}
runuser -u vaultwarden -- sqlite3 ${DB} <<'SQL'
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${USERS})
INSERT INTO users (uuid, email, created_at) SELECT lower(hex(randomblob(16))), 'bench-' || i || '@standin.test', datetime('now') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${rows})
INSERT INTO ciphers (uuid, user_uuid, data, created_at) SELECT lower(hex(randomblob(16))), (SELECT uuid FROM users ORDER BY rowid LIMIT 1), hex(randomblob(${ROW_BYTES / 2})), datetime('now') FROM n;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
n=0
runuser -u vaultwarden -- sqlite3 ${DB} "SELECT uuid FROM ciphers ORDER BY rowid LIMIT ${ATTACH}" > /var/tmp/br-ciphers
: > /var/tmp/br-att.sql
echo 'BEGIN;' >> /var/tmp/br-att.sql
while read -r c; do
  id=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \\n')
  runuser -u vaultwarden -- mkdir -p attachments/$c
  head -c ${Math.round(ATTACH_MIB * MiB)} /dev/urandom | runuser -u vaultwarden -- sh -c "cat > attachments/$c/$id"
  echo "INSERT INTO attachments (id, cipher_uuid, file_name, file_size) VALUES ('$id', '$c', 'bench-$id.bin', ${Math.round(ATTACH_MIB * MiB)});" >> /var/tmp/br-att.sql
done < /var/tmp/br-ciphers
echo 'COMMIT;' >> /var/tmp/br-att.sql
runuser -u vaultwarden -- sqlite3 ${DB} < /var/tmp/br-att.sql`, { timeoutMs: 900_000 });
  const buildMs = Date.now() - t0;
  const dbBytes = Number((await p.host.exec(['stat', '-c', '%s', DB])).stdout.trim());
  const t1 = Date.now();
  const ready = await timed(p, `a=$(now); systemctl start ${AGENT}; b=$(now); ms start $a $b`);
  await waitDbSynced(p.host, t1, 600_000);
  const s = await statusJson(p.host);
  if (!s.lastFileSync || Date.parse(s.lastFileSync) < t1) throw new Error(`the primary's files are not in sync: ${JSON.stringify(s)}`);
  const uploadMs = Date.now() - t1;
  const stop = await timed(p, `a=$(now); systemctl stop ${AGENT}; b=$(now); ms stop $a $b`);
  const db = await bucketUsage(s3, `${PREFIX}/db/`);
  const files = await bucketUsage(s3, `${PREFIX}/files/`);
  if (files.objects < ATTACH) throw new Error(`the bucket holds ${files.objects} file objects, expected at least ${ATTACH}`);
  return { rows, users: USERS, dbBytes, attachments: ATTACH, attachmentBytes: Math.round(ATTACH_MIB * MiB), buildMs, startToReadyMs: ready.start, uploadMs, drainMs: stop.stop, bucket: { db, files } };
}

interface AgentRun { ms: number; t0: number; lines: Line[]; counts: object; restoreAction: unknown; restoreMs: unknown }

/** One new-host restore on R: wipe, time `systemctl start` to READY, check what it restored, wait for its upload, stop. */
async function agentRun(r: AgentHost, expect: { ciphers: number; users: number; attachments: number }): Promise<AgentRun> {
  await wipe(r);
  const t = await timed(r, `a=$(now); echo t0=$(( a / 1000000 )); systemctl start ${AGENT}; b=$(now); ms start $a $b`);
  const counts = await r.vw.countsAll();
  if (counts.ciphers !== expect.ciphers || counts.users !== expect.users || counts.attachments !== expect.attachments) {
    throw new Error(`restored ${JSON.stringify(counts)}, expected ${JSON.stringify(expect)}`);
  }
  const status = await statusJson(r.host);
  if (status.state !== 'serving') throw new Error(`not serving after READY: ${JSON.stringify(status)}`);
  // Its Litestream uploads a new generation of the restored database: let it finish alone.
  await waitDbSynced(r.host, t.t0!, 180_000);
  const lines = await journalSince(r, t.t0!);
  await timed(r, `systemctl stop ${AGENT}`);
  return { ms: t.start!, t0: t.t0!, lines, counts, restoreAction: status.restore?.action, restoreMs: status.restore?.ms };
}

async function setEnvLogLevel(r: AgentHost, level: string | undefined): Promise<void> {
  await r.host.sh(`sed -i '/^LOG_LEVEL=/d' /etc/vwstream/vwstream.env${level ? ` && echo LOG_LEVEL=${level} >> /etc/vwstream/vwstream.env` : ''}`);
}

async function main(): Promise<void> {
  const started = new Date();
  const s3 = S3_KIND === 'fauxqs' ? await startS3() : await startRgw();
  const hosts: AgentHost[] = [];
  try {
    await s3.createBucket(BUCKET);
    const env = s3Env(s3);
    const [p, r] = await Promise.all([agentHost(`${HOST_PREFIX}primary`, env), agentHost(`${HOST_PREFIX}restore`, env)]);
    hosts.push(p, r);
    console.error(`# seeding: ${DB_MIB} MiB database, ${ATTACH} attachments of ${ATTACH_MIB} MiB on ${p.host.name} (${S3_KIND})`);
    const seeded = await seed(p, s3);
    console.error(`# seeded: ${JSON.stringify(seeded)}`);
    await p.host.destroy();
    hosts.shift();
    const rows = seeded.rows as number;
    const expect = { ciphers: rows, users: USERS, attachments: ATTACH };

    const agent: AgentRun[] = [];
    for (let i = 0; i < RUNS; i++) {
      agent.push(await agentRun(r, expect));
      console.error(`# agent restore ${i + 1}/${RUNS}: ${agent.at(-1)!.ms} ms (${String(agent.at(-1)!.restoreAction)}, database step ${String(agent.at(-1)!.restoreMs)} ms)`);
    }
    let debugRun: AgentRun | undefined;
    if (DEBUG_RUN) {
      await setEnvLogLevel(r, 'debug');
      debugRun = await agentRun(r, expect);
      await setEnvLogLevel(r, undefined);
      console.error(`# agent restore with LOG_LEVEL=debug (not counted): ${debugRun.ms} ms`);
    }

    // Vaultwarden's own start on the restored data (the agent stopped; its runtime env stays in /run/vwstream).
    const vw: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const v = await timed(r, `systemctl stop ${VW}
a=$(now); systemctl start ${VW}
until curl -sf -o /dev/null http://127.0.0.1:${r.port}/alive; do sleep 0.01; done
b=$(now); ms vw $a $b
systemctl stop ${VW}`, 120_000);
      vw.push(v.vw!);
      console.error(`# Vaultwarden start ${i + 1}/${RUNS}: ${v.vw} ms`);
    }

    // Plain tools on the same host and replica: Litestream with the agent's own generated
    // config (same endpoint and credentials), rclone with a remote from the environment.
    await r.host.sh(`rm -rf ${TOOLS_DIR} && mkdir -p ${TOOLS_DIR} && install -m 0600 /run/vwstream/litestream.yml ${TOOLS_DIR}/litestream.yml`);
    const rcloneEnv = [
      'RCLONE_CONFIG_BRS3_TYPE=s3', 'RCLONE_CONFIG_BRS3_PROVIDER=Other', `RCLONE_CONFIG_BRS3_ENDPOINT=${s3.endpoint}`,
      `RCLONE_CONFIG_BRS3_ACCESS_KEY_ID=${s3.accessKey}`, `RCLONE_CONFIG_BRS3_SECRET_ACCESS_KEY=${s3.secretKey}`,
      'RCLONE_CONFIG_BRS3_REGION=us-east-1', 'RCLONE_CONFIG_BRS3_FORCE_PATH_STYLE=true',
    ].map((e) => `export ${e}`).join('\n');
    const ls = (out: string) => `${LITESTREAM} restore -config ${TOOLS_DIR}/litestream.yml -no-expand-env -o ${out}/db.sqlite3 ${DB} 2>${out}/litestream.log`;
    const rc = (out: string) => `rclone copy --transfers 8 BRS3:${BUCKET}/${PREFIX}/files ${out}/files 2>${out}/rclone.log`;
    const fileObjects = (seeded.bucket as { files: { objects: number } }).files.objects;
    const check = async (out: string) => {
      const c = await r.host.sh(`sqlite3 -readonly ${out}/db.sqlite3 'SELECT count(*) FROM ciphers;'; find ${out}/files -type f | wc -l`);
      const [ciphers, files] = c.stdout.trim().split('\n').map(Number);
      if (ciphers !== rows || files !== fileObjects) throw new Error(`plain tools restored ${ciphers} ciphers and ${files} files into ${out}, expected ${rows} and ${fileObjects}`);
      await r.host.exec(['rm', '-rf', out]);
    };
    const seq: number[] = [];
    const seqLs: number[] = [];
    const seqRc: number[] = [];
    const par: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const out = `${TOOLS_DIR}/seq-${i}`;
      const t = await timed(r, `${rcloneEnv}\nmkdir -p ${out}\na=$(now); ${ls(out)}; b=$(now); ${rc(out)}; c=$(now)\nms litestream $a $b; ms rclone $b $c; ms total $a $c`);
      await check(out);
      seq.push(t.total!); seqLs.push(t.litestream!); seqRc.push(t.rclone!);
      const outP = `${TOOLS_DIR}/par-${i}`;
      const tp = await timed(r, `${rcloneEnv}\nmkdir -p ${outP}\na=$(now); ( ${ls(outP)} ) & l=$!; ( ${rc(outP)} ) & c=$!; wait $l; wait $c; b=$(now)\nms total $a $b`);
      await check(outP);
      par.push(tp.total!);
      console.error(`# tools ${i + 1}/${RUNS}: sequential ${t.total} ms (litestream ${t.litestream}, rclone ${t.rclone}), parallel ${tp.total} ms`);
    }

    // ---------------------------------------------------------------- report
    const a = stats(agent.map((x) => x.ms));
    const medianRun = [...agent].sort((x, y) => x.ms - y.ms)[agent.length >> 1]!;
    const vws = stats(vw);
    const sq = stats(seq);
    const pr = stats(par);
    const judge = (tools: Stats) => {
      const ratio = a.median / (tools.median + vws.median);
      const budget = 1.2 * tools.median + vws.median;
      return { ratio: Number(ratio.toFixed(2)), budgetMs: Math.round(budget), meets: a.median <= budget };
    };
    const jSeq = judge(sq);
    const jPar = judge(pr);
    const cpu = os.cpus()[0]?.model ?? '?';
    const version = (await r.host.exec(['vwstream-agent', '--version'], { check: false })).stdout.trim();
    const lsVersion = (await r.host.exec([LITESTREAM, 'version'], { check: false })).stdout.trim();
    const rcVersion = (await r.host.exec(['rclone', 'version'], { check: false })).stdout.split('\n')[0]?.trim();
    const row = (name: string, s: Stats) => `  ${name.padEnd(34)} ${sec(s.min).padStart(6)} ${sec(s.median).padStart(7)} ${sec(s.max).padStart(6)}   [${s.runs.map(sec).join(', ')}]`;
    const out: string[] = [];
    out.push(`new-host restore: ${(Number(seeded.dbBytes) / MiB).toFixed(1)} MiB database (${rows} ciphers), ${ATTACH} attachments of ${ATTACH_MIB} MiB, S3 ${S3_KIND}, ${RUNS} runs`);
    out.push(`machine: ${os.cpus().length} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; ${started.toISOString()}; ${version}; ${lsVersion}; ${rcVersion}`);
    out.push('                                        min  median    max   (s)');
    out.push(row('agent: systemctl start -> READY', a));
    out.push(row('tools sequential (ls + rclone)', sq));
    out.push(row('  litestream restore', stats(seqLs)));
    out.push(row('  rclone copy --transfers 8', stats(seqRc)));
    out.push(row('tools parallel', pr));
    out.push(row('Vaultwarden start -> /alive', vws));
    out.push(`  ratio agent / (tools sequential + Vaultwarden start) = ${jSeq.ratio}  goal <= 1.2 (budget 1.2 x tools + Vaultwarden = ${sec(jSeq.budgetMs)} s): ${jSeq.meets ? 'MEETS' : 'MISSES'}`);
    out.push(`  ratio agent / (tools parallel + Vaultwarden start)   = ${jPar.ratio}  goal <= 1.2 (budget ${sec(jPar.budgetMs)} s): ${jPar.meets ? 'MEETS' : 'MISSES'}`);
    out.push('');
    out.push(`phase breakdown of the median agent run (${sec(medianRun.ms)} s; t=0 just before systemctl start; +ms = since the line before):`);
    out.push(phaseTable(medianRun.lines.filter((l) => l.t <= medianRun.t0 + medianRun.ms + 50), medianRun.t0));
    if (debugRun) {
      out.push('');
      out.push(`the same with LOG_LEVEL=debug (${sec(debugRun.ms)} s, not counted; a "ran" line is logged when its command ends, with its ms):`);
      out.push(phaseTable(debugRun.lines.filter((l) => l.t <= debugRun.t0 + debugRun.ms + 50), debugRun.t0));
    }
    console.log(out.join('\n'));
    console.log(JSON.stringify({
      date: started.toISOString(), machine: { nproc: os.cpus().length, cpu, memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)) },
      version, litestream: lsVersion, rclone: rcVersion, s3: S3_KIND, runs: RUNS, seed: seeded,
      agentMs: a, toolsSequentialMs: sq, litestreamMs: stats(seqLs), rcloneMs: stats(seqRc), toolsParallelMs: pr, vaultwardenStartMs: vws,
      goal: { factor: 1.2, sequential: jSeq, parallel: jPar },
      medianRun: agent.indexOf(medianRun),
      agentRuns: agent.map((run) => ({ ms: run.ms, phases: phasesOf(run) })),
      ...(debugRun ? { debugRun: { ms: debugRun.ms, phases: phasesOf(debugRun) } } : {}),
      restoreAction: medianRun.restoreAction,
    }, null, 2));
  } finally {
    for (const h of hosts) await h.host.destroy().catch((e) => console.error(`# destroy ${h.host.name}: ${(e as Error).message}`));
    await s3.stop().catch((e) => console.error(`# stopping S3: ${(e as Error).message}`));
  }
}

await main();
