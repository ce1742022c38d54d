/**
 * Child of bench/log.ts, run inside a test host as a transient systemd service (stdout is
 * its journal stream): the cost of one log call per output mode. Writes its report to
 * argv[2] (JSON).
 */
import fs from 'node:fs';
import pino from 'pino';
import { createLogger, createSink, isJournalStream, JOURNAL_SOCKET, journalEntry, loadJournalAddon, type LogMode } from '../agent/log.ts';

const [reportFile, addonFile, nRaw] = process.argv.slice(2);
const N = Number(nRaw ?? 5000);
const addon = loadJournalAddon(addonFile);
if (!addon || addon.open(JOURNAL_SOCKET) !== 0) throw new Error(`journal.node: not loadable or no ${JOURNAL_SOCKET}`);
const stdout = pino.destination({ fd: 1, sync: true });
const devnull = pino.destination({ dest: '/dev/null', sync: true });

function run(mode: LogMode, bench: string): Record<string, number | string> {
  const sink = createSink(mode, mode === 'plain' ? devnull : stdout, mode === 'journal' ? addon : undefined);
  const log = createLogger(sink);
  for (let i = 0; i < 200; i++) log.info({ state: 'serving', bench: `${bench}-warmup`, i }, 'warm-up');
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    log.info({ state: 'serving', from: 'replicating', lease: 's3://vault/vw/lease.json', ms: 1234, bench, i }, 'serving: Vaultwarden answers on 127.0.0.1:8000; replica s3://vault/vw/db in sync');
  }
  const ns = Number(process.hrtime.bigint() - t0);
  return { mode, usPerCall: +(ns / N / 1000).toFixed(2), sent: sink.stats.sent, fallbacks: sink.stats.fallbacks };
}

/** The agent's pace (a few lines a second, not a flood): each call timed alone, 1 ms apart. */
function paced(mode: LogMode, bench: string): Record<string, number | string> {
  const sink = createSink(mode, mode === 'plain' ? devnull : stdout, mode === 'journal' ? addon : undefined);
  const log = createLogger(sink);
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const times: number[] = [];
  for (let i = 0; i < Math.min(N, 2000); i++) {
    const t0 = process.hrtime.bigint();
    log.info({ state: 'serving', from: 'replicating', lease: 's3://vault/vw/lease.json', ms: 1234, bench, i }, 'serving: Vaultwarden answers on 127.0.0.1:8000; replica s3://vault/vw/db in sync');
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
    Atomics.wait(cell, 0, 0, 1);
  }
  times.sort((a, b) => a - b);
  const q = (f: number) => +times[Math.floor(f * (times.length - 1))]!.toFixed(2);
  return { mode: `${mode} paced`, medianUs: q(0.5), p90Us: q(0.9), p99Us: q(0.99), sent: sink.stats.sent, fallbacks: sink.stats.fallbacks };
}

function entryOnly(): Record<string, number | string> {
  const line = JSON.stringify({ level: 'info', time: new Date().toISOString(), state: 'serving', from: 'replicating', lease: 's3://vault/vw/lease.json', ms: 1234, msg: 'serving: Vaultwarden answers' }) + '\n';
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) journalEntry(line);
  return { mode: 'journalEntry() alone', usPerCall: +(Number(process.hrtime.bigint() - t0) / N / 1000).toFixed(2) };
}

const out = {
  journalStream: isJournalStream(1),
  n: N,
  runs: [run('plain', 'plain'), run('prefix', 'prefix'), run('journal', 'journal'), run('plain', 'plain2'), run('prefix', 'prefix2'), run('journal', 'journal2'),
    entryOnly(), paced('plain', 'pplain'), paced('prefix', 'pprefix'), paced('journal', 'pjournal')],
  qlen: fs.readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim(),
};
fs.writeFileSync(reportFile!, JSON.stringify(out));
