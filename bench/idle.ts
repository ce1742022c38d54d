/**
 * What an idle agent costs, beside Litestream, at the operator's default intervals: memory
 * (peak and steady RSS), CPU seconds per hour and S3 requests per hour, on an idle primary
 * and on a serving secondary, measured in the same window.
 *
 * A Ceph RGW (or fauxqs: BENCH_IDLE_S3=fauxqs) with one counting proxy per host in front
 * of it; host A (bi-primary) serves with a little data seeded through the stand-in, host B
 * (bi-secondary, NODE_ROLE=secondary, same bucket and prefix) restores and serves it. Then
 * every second for BENCH_IDLE_S (default 300) seconds: VmRSS/VmHWM and utime+stime of each
 * unit's MainPID, the unit cgroup's cpu.stat usage_usec (children included) and its
 * process list. S3 requests are told apart by User-Agent (agent: aws-sdk-js; Litestream:
 * aws-sdk-go) and by key. Prints a table per host, then the whole result as JSON.
 *   node bench/idle.ts     (VWS_DEB: the package; BENCH_IDLE_S: window seconds;
 *   BENCH_HOST_PREFIX: host names, default bi-)
 */
import fs from 'node:fs';
import os from 'node:os';
import { startRgw, startS3, type Host, type S3Server } from '../test/system/harness.ts';
import { agentHost, s3Env, startAgentQuick, statusJson, waitDbSynced, waitFilesSynced, waitFor, type AgentHost } from '../test/system/common.ts';
import { recordingProxy, type RecordingProxy } from '../test/system/s3-proxy.ts';
import { envNum, MiB } from './common.ts';
import { accumulate, countRequests, median, OPS, parseSample, perHour, type Counted, type Source, type UnitSample } from './idle-lib.ts';

// Each host in a cgroup of its own: otherwise every host on this machine (also those of
// other test runs) shares one system.slice/<unit> cgroup and its cpu.stat adds them up.
if (process.env.VWS_HOST_CGROUP === 'shared') throw new Error('bench-idle needs each host in a cgroup of its own (VWS_HOST_CGROUP unset)');
const WINDOW_S = envNum('BENCH_IDLE_S', 300, 10);
const S3_KIND = process.env.BENCH_IDLE_S3 || 'rgw';
if (S3_KIND !== 'rgw' && S3_KIND !== 'fauxqs') throw new Error(`BENCH_IDLE_S3=${S3_KIND}: expected rgw or fauxqs`);
const BUCKET = 'bench-idle';
const PREFIX = 'idle/vw';
const AGENT = 'vwstream-agent.service';
const LS = 'vwstream-litestream.service';
const STEADY_S = 60;
/** Host names start with this (default bi-): runs beside other benches need names of their own. */
const HOST_PREFIX = process.env.BENCH_HOST_PREFIX || 'bi-';
/** Goals of the issue: steady RSS of the agent, its S3 requests per idle hour at the default LEASE_TTL. */
const GOAL_RSS_MIB = 64;
const GOAL_S3_PER_HOUR = 130;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const say = (s: string) => process.stderr.write(`# bench-idle: ${s}\n`);

const REPO = new URL('..', import.meta.url).pathname;
const SAMPLER_IN_HOST = '/var/tmp/vws-bench-idle-sampler.sh';

interface Sample { t: number; units: UnitSample[] }

class Sampler {
  readonly samples: Sample[] = [];
  readonly errors: string[] = [];
  #pids: Record<string, number> = { [AGENT]: 0, [LS]: 0 };
  readonly host: Host;
  constructor(host: Host) { this.host = host; }
  async take(): Promise<void> {
    const t = Date.now();
    try {
      const r = await this.host.exec(['bash', SAMPLER_IN_HOST, ...Object.entries(this.#pids).map(([u, p]) => `${u}=${p}`)], { timeoutMs: 10_000 });
      const units = parseSample(r.stdout);
      for (const u of units) this.#pids[u.unit] = u.pid;
      this.samples.push({ t, units });
    } catch (e) {
      if (this.errors.length < 5) this.errors.push(`${new Date(t).toISOString()}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
    }
  }
}

interface UnitResult {
  unit: string;
  running: boolean;
  /** The MainPIDs seen in the window (more than one: the unit restarted). */
  mainPids: number[];
  peakRssMiB: number | undefined;
  steadyRssMiB: number | undefined;
  /** The steady RSS split: anonymous memory (V8 heap, malloc, stacks) and mapped files (binary, libraries). */
  steadyAnonMiB: number | undefined;
  steadyFileMiB: number | undefined;
  /** Steady RSS of every process in the unit's cgroup together. */
  steadyCgroupRssMiB: number | undefined;
  cpuSecPerHour: { cgroup: number | undefined; mainPid: number | undefined; reapedChildren: number | undefined };
  /** Processes seen in the cgroup besides the MainPID: comm → distinct PIDs. */
  children: Record<string, number>;
  /** Most processes of other PID namespaces seen in the cgroup at once: > 0 means the cgroup is shared with another host. */
  foreignProcs: number;
}

function unitResult(samples: Sample[], unit: string, windowMs: number, clkTck: number): UnitResult {
  const rows = samples.map((s) => ({ t: s.t, u: s.units.find((x) => x.unit === unit) })).filter((x) => x.u !== undefined) as Array<{ t: number; u: UnitSample }>;
  const live = rows.filter((r) => r.u.pid > 0 && r.u.mem);
  const mib = (kib: number) => kib / 1024;
  const steadyFrom = (rows.at(-1)?.t ?? 0) - STEADY_S * 1000;
  const steady = live.filter((r) => r.t >= steadyFrom);
  const children: Record<string, Set<number>> = {};
  for (const r of rows) for (const p of r.u.procs) if (p.pid !== r.u.pid && p.pid !== 0) (children[p.comm || '?'] ??= new Set()).add(p.pid);
  const foreignProcs = Math.max(0, ...rows.map((r) => r.u.procs.filter((p) => p.pid === 0).length));
  const rate = (v: number | undefined) => (v === undefined || live.length < 2 ? undefined : perHour(v, windowMs) / 1000);
  const mainTicks = accumulate(live.map((r) => ({ owner: r.u.pid, value: r.u.cpu?.ticks })));
  const childTicks = accumulate(live.map((r) => ({ owner: r.u.pid, value: r.u.cpu?.childTicks })));
  const cgUsec = accumulate(rows.map((r) => ({ owner: 'cgroup', value: r.u.cgroupUsec })));
  const hasCg = rows.some((r) => r.u.cgroupUsec !== undefined);
  return {
    unit,
    running: live.length > 0,
    mainPids: [...new Set(live.map((r) => r.u.pid))],
    peakRssMiB: live.length ? mib(Math.max(...live.map((r) => r.u.mem!.hwmKiB))) : undefined,
    steadyRssMiB: steady.length ? mib(median(steady.map((r) => r.u.mem!.rssKiB))!) : undefined,
    steadyAnonMiB: steady.some((r) => r.u.mem!.anonKiB !== undefined) ? mib(median(steady.map((r) => r.u.mem!.anonKiB ?? 0))!) : undefined,
    steadyFileMiB: steady.some((r) => r.u.mem!.fileKiB !== undefined) ? mib(median(steady.map((r) => r.u.mem!.fileKiB ?? 0))!) : undefined,
    steadyCgroupRssMiB: steady.length ? mib(median(steady.map((r) => r.u.procs.reduce((n, p) => n + (p.rssKiB ?? 0), 0)))!) : undefined,
    cpuSecPerHour: {
      // ms-per-window → s-per-hour: perHour gives units per hour; /1000 turns ms into s.
      cgroup: hasCg ? rate(cgUsec / 1000) : undefined,
      mainPid: rate((mainTicks / clkTck) * 1000),
      reapedChildren: rate((childTicks / clkTck) * 1000),
    },
    children: Object.fromEntries(Object.entries(children).map(([k, v]) => [k, v.size])),
    foreignProcs,
  };
}

interface HostResult {
  host: string;
  role: 'primary' | 'secondary';
  stateAtEnd: string;
  agent: UnitResult;
  litestream: UnitResult;
  s3: Counted & { perHour: Record<Source, number> };
  samples: number;
  samplerErrors: string[];
}

// ---------------------------------------------------------------------------------------
// output

const f1 = (x: number | undefined, unit = '') => (x === undefined ? '—' : `${x.toFixed(1)}${unit}`);
const yesNo = (ok: boolean | undefined) => (ok === undefined ? '?' : ok ? 'yes' : 'NO');

function opsLine(c: Counted, src: Source, windowMs: number): string {
  const t = c.bySource[src];
  return ['GET', 'PUT', 'LIST', 'HEAD', 'DELETE'].map((o) => `${o} ${perHour(t.byOp[o as keyof typeof t.byOp], windowMs).toFixed(0)}`).join(' / ')
    + (t.byOp.POST || t.byOp.OTHER ? ` / POST ${perHour(t.byOp.POST, windowMs).toFixed(0)} / other ${perHour(t.byOp.OTHER, windowMs).toFixed(0)}` : '');
}

function areasLine(c: Counted, src: Source, windowMs: number): string {
  const t = c.bySource[src];
  const e = Object.entries(t.byAreaOp).sort((a, b) => b[1] - a[1]);
  return e.length ? e.map(([k, n]) => `${k} ${perHour(n, windowMs).toFixed(0)}`).join(', ') : 'none';
}

function table(r: HostResult, windowMs: number, lsRef: UnitResult): string {
  const a = r.agent;
  const l = r.litestream;
  const lsCpu = l.running ? l.cpuSecPerHour.cgroup : lsRef.cpuSecPerHour.cgroup;
  const lsCpuNote = l.running ? 'Litestream here' : 'the primary\'s Litestream';
  const agentS3 = r.s3.perHour.agent;
  const lease = r.s3.bySource.agent.byArea['lease.json'] ?? 0;
  const leaseShare = r.s3.bySource.agent.total ? ` (lease.json ${perHour(lease, windowMs).toFixed(0)}, ${((100 * lease) / r.s3.bySource.agent.total).toFixed(0)} %)` : '';
  const ls = (s: string) => (l.running ? s : 'not running');
  const rows: string[][] = [
    ['', 'agent', 'Litestream', 'goal', 'meets?'],
    ['peak RSS (max VmHWM)', f1(a.peakRssMiB, ' MiB'), ls(f1(l.peakRssMiB, ' MiB')), '—', ''],
    [`steady RSS (median, last ${STEADY_S} s)`, f1(a.steadyRssMiB, ' MiB'), ls(f1(l.steadyRssMiB, ' MiB')), `agent <= ${GOAL_RSS_MIB} MiB`, yesNo(a.steadyRssMiB === undefined ? undefined : a.steadyRssMiB <= GOAL_RSS_MIB)],
    ['  of which anon / file-backed', `${f1(a.steadyAnonMiB)} / ${f1(a.steadyFileMiB)} MiB`, ls(`${f1(l.steadyAnonMiB)} / ${f1(l.steadyFileMiB)} MiB`), '', ''],
    ['steady RSS, whole cgroup', f1(a.steadyCgroupRssMiB, ' MiB'), ls(f1(l.steadyCgroupRssMiB, ' MiB')), '', ''],
    ['CPU s/hour (cgroup usage_usec)', f1(a.cpuSecPerHour.cgroup), ls(f1(l.cpuSecPerHour.cgroup)), `agent <= ${lsCpuNote} (${f1(lsCpu)})`, yesNo(a.cpuSecPerHour.cgroup === undefined || lsCpu === undefined ? undefined : a.cpuSecPerHour.cgroup <= lsCpu)],
    ['CPU s/hour, MainPID utime+stime', f1(a.cpuSecPerHour.mainPid), ls(f1(l.cpuSecPerHour.mainPid)), '', ''],
    ['CPU s/hour, reaped children', f1(a.cpuSecPerHour.reapedChildren), ls(f1(l.cpuSecPerHour.reapedChildren)), '', ''],
    ['S3 requests/hour', `${agentS3.toFixed(0)}${leaseShare}`, r.s3.perHour.litestream.toFixed(0), `agent <= ${GOAL_S3_PER_HOUR}`, yesNo(agentS3 <= GOAL_S3_PER_HOUR)],
    ['  GET / PUT / LIST / HEAD / DELETE', opsLine(r.s3, 'agent', windowMs), opsLine(r.s3, 'litestream', windowMs), '', ''],
  ];
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(w[i]!)).join(' | ')} |`;
  const out = [line(rows[0]!), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.slice(1).map(line)];
  out.push(`S3 per key and kind, per hour — agent: ${areasLine(r.s3, 'agent', windowMs)}`);
  out.push(`S3 per key and kind, per hour — Litestream: ${areasLine(r.s3, 'litestream', windowMs)}`);
  for (const src of ['rclone', 'other'] as const) if (r.s3.bySource[src].total) out.push(`S3 per hour — ${src}: ${areasLine(r.s3, src, windowMs)}`);
  const errs = (['agent', 'litestream', 'rclone', 'other'] as const).filter((s) => r.s3.bySource[s].errors).map((s) => `${s} ${r.s3.bySource[s].errors}`);
  if (errs.length) out.push(`S3 error answers in the window (not 2xx/3xx/404): ${errs.join(', ')}`);
  out.push(`User-Agents seen (requests): ${Object.entries(r.s3.userAgents).map(([ua, n]) => `${n}× "${ua}"`).join('; ') || 'none'}`);
  const pids = (u: UnitResult) => `MainPID ${u.mainPids.join(', ') || '—'}${Object.keys(u.children).length ? `; also in the cgroup: ${Object.entries(u.children).map(([c, n]) => `${c} (${n} PIDs)`).join(', ')}` : '; nothing else in the cgroup'}`;
  out.push(`Counted: agent ${pids(a)}; Litestream ${l.running ? pids(l) : 'not running'}. RSS rows are the MainPID's; the cgroup's CPU includes every child process.`);
  for (const u of [a, l]) if (u.foreignProcs) out.push(`WARNING: ${u.unit}'s cgroup also holds ${u.foreignProcs} process(es) of another host: its cgroup CPU is not this host's alone`);
  if (r.samplerErrors.length) out.push(`Sampler errors: ${r.samplerErrors.join('; ')}`);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------

async function secondaryServing(h: AgentHost): Promise<void> {
  await waitFor(`${h.host.name} serving as secondary`, 300_000, async () => {
    const s = await statusJson(h.host);
    return s.state === 'serving' && s.role === 'secondary' ? true : undefined;
  }, h.host, 500);
}

const cpuModel = (): string => /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? '?';

const hosts: AgentHost[] = [];
const proxies: RecordingProxy[] = [];
let s3: S3Server | undefined;
try {
  say(`S3 ${S3_KIND}, window ${WINDOW_S} s, default intervals (LEASE_TTL, sync intervals unset)`);
  s3 = S3_KIND === 'rgw' ? await startRgw() : await startS3();
  await s3.createBucket(BUCKET);
  const pa = await recordingProxy(s3);
  const pb = await recordingProxy(s3);
  proxies.push(pa, pb);
  const base: Record<string, string> = s3Env(s3, BUCKET, PREFIX);
  delete base.LEASE_TTL; // the operator's default
  say(`booting ${HOST_PREFIX}primary and ${HOST_PREFIX}secondary, installing the package`);
  const [a, b] = await Promise.all([
    agentHost(`${HOST_PREFIX}primary`, { ...base, S3_ENDPOINT: pa.endpoint }),
    agentHost(`${HOST_PREFIX}secondary`, { ...base, S3_ENDPOINT: pb.endpoint, NODE_ROLE: 'secondary' }),
  ]);
  hosts.push(a, b);
  const t0 = Date.now();
  await startAgentQuick(a.host, 300_000);
  await waitFor(`${HOST_PREFIX}primary serving`, 300_000, async () => ((await statusJson(a.host)).state === 'serving' ? true : undefined), a.host, 500);
  const aServingMs = Date.now() - t0;
  say(`${HOST_PREFIX}primary serving after ${aServingMs} ms; seeding 5 users, 20 ciphers, 2 attachments`);
  await a.vw.addUsers(5);
  await a.vw.addCiphers(20);
  await a.vw.addAttachment('bench-idle-1.bin', 60_000);
  await a.vw.addAttachment('bench-idle-2.bin', 400_000);
  const seeded = Date.now();
  await waitDbSynced(a.host, seeded, 60_000);
  await waitFilesSynced(a.host, seeded);
  const t1 = Date.now();
  await startAgentQuick(b.host, 300_000);
  await secondaryServing(b);
  const bServingMs = Date.now() - t1;
  const counts = [await a.vw.counts(), await b.vw.counts()];
  if (JSON.stringify(counts[0]) !== JSON.stringify(counts[1])) throw new Error(`the secondary serves ${JSON.stringify(counts[1])}, the primary ${JSON.stringify(counts[0])}`);
  say(`${HOST_PREFIX}secondary serving after ${bServingMs} ms with ${JSON.stringify(counts[1])}`);
  const version = (await a.host.exec(['vwstream-agent', '--version'])).stdout.trim();
  const clkTck = Number((await a.host.exec(['getconf', 'CLK_TCK'])).stdout.trim()) || 100;

  for (const h of [a, b]) await h.host.copyIn(`${REPO}bench/idle-sampler.sh`, SAMPLER_IN_HOST, 0o755);
  const samplers = [new Sampler(a.host), new Sampler(b.host)];
  const load0 = os.loadavg();
  const w0 = Date.now();
  say(`window starts (${WINDOW_S} s)`);
  for (let i = 0; i <= WINDOW_S; i++) {
    const due = w0 + i * 1000;
    if (Date.now() < due) await sleep(due - Date.now());
    else if (Date.now() - due > 1000) continue; // a slow sample: skip, do not pile up
    await Promise.all(samplers.map((s) => s.take()));
    if (i > 0 && i % 60 === 0) say(`${i} s of ${WINDOW_S}`);
  }
  const w1 = Date.now();
  const load1 = os.loadavg();
  const windowMs = w1 - w0;
  const results: HostResult[] = [];
  for (const [i, h] of [a, b].entries()) {
    const smp = samplers[i]!;
    const c = countRequests(proxies[i]!.log, PREFIX, w0, w1);
    const st = await statusJson(h.host).catch((e: Error) => ({ state: `status failed: ${e.message.split('\n')[0]}` }));
    results.push({
      host: h.host.name,
      role: i === 0 ? 'primary' : 'secondary',
      stateAtEnd: String(st.state),
      agent: unitResult(smp.samples, AGENT, windowMs, clkTck),
      litestream: unitResult(smp.samples, LS, windowMs, clkTck),
      s3: { ...c, perHour: Object.fromEntries(Object.entries(c.bySource).map(([k, t]) => [k, perHour(t.total, windowMs)])) as Record<Source, number> },
      samples: smp.samples.length,
      samplerErrors: smp.errors,
    });
  }
  // Before the window: start-up, restore and seeding (what an operator sees once per start).
  const startup = proxies.map((p) => Object.fromEntries(Object.entries(countRequests(p.log, PREFIX, 0, w0).bySource).map(([k, t]) => [k, t.total])));

  const machine = { nproc: os.availableParallelism(), cpu: cpuModel(), kernel: os.release(), memTotalMiB: Math.round(os.totalmem() / MiB), loadavgStart: load0, loadavgEnd: load1 };
  console.log(`# Idle cost of vwstream-agent beside Litestream (${S3_KIND === 'rgw' ? 'Ceph RGW' : 'fauxqs'} behind one counting proxy per host)`);
  console.log(`date ${new Date(w0).toISOString()}; agent ${version}; window ${(windowMs / 1000).toFixed(0)} s (${results.map((r) => `${r.host} ${r.samples} samples`).join(', ')}); default intervals`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.cpu}, Linux ${machine.kernel}, ${machine.memTotalMiB} MiB; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at the start, ${load1.map((x) => x.toFixed(2)).join(' ')} at the end (shared machine: CPU numbers are noisy)`);
  console.log(`${HOST_PREFIX}primary serving ${aServingMs} ms after its start; ${HOST_PREFIX}secondary ${bServingMs} ms after its start; requests before the window (start-up, seeding, restore): primary ${JSON.stringify(startup[0])}, secondary ${JSON.stringify(startup[1])}`);
  for (const r of results) {
    console.log(`\n## ${r.host} (${r.role}, state at the end: ${r.stateAtEnd})`);
    console.log(table(r, windowMs, results[0]!.litestream));
  }
  console.log('\n```json');
  console.log(JSON.stringify({ s3: S3_KIND, version, windowMs, date: new Date(w0).toISOString(), machine, goals: { steadyRssMiB: GOAL_RSS_MIB, agentS3PerHour: GOAL_S3_PER_HOUR, cpu: 'agent <= Litestream' }, startupRequests: startup, hosts: results, ops: OPS }, null, 2));
  console.log('```');
} finally {
  for (const h of hosts) await h.host.destroy().catch((e: Error) => say(`destroy ${h.host.name}: ${e.message}`));
  for (const p of proxies) await p.close().catch(() => undefined);
  await s3?.stop();
}
