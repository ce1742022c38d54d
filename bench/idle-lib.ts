/**
 * The pure parts of bench/idle.ts: what the sampler reads from a host's /proc and cgroup
 * files, and how the counting proxy's records are told apart (who sent them, what kind of
 * request, which part of the replica).
 */
import type { ProxyRecord } from '../test/system/s3-proxy.ts';

// ---------------------------------------------------------------------------------------
// /proc and cgroup files

export interface ProcMem {
  rssKiB: number;
  hwmKiB: number;
  /** VmRSS = RssAnon (heaps, stacks) + RssFile (mapped files: the binary, its libraries) + RssShmem. */
  anonKiB: number | undefined;
  fileKiB: number | undefined;
}

/** VmRSS, VmHWM, RssAnon, RssFile (kB) from /proc/PID/status; undefined without VmRSS or VmHWM (a kernel thread, a zombie). */
export function parseProcStatus(text: string): ProcMem | undefined {
  const kib = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  const rssKiB = kib('VmRSS');
  const hwmKiB = kib('VmHWM');
  return rssKiB === undefined || hwmKiB === undefined ? undefined : { rssKiB, hwmKiB, anonKiB: kib('RssAnon'), fileKiB: kib('RssFile') };
}

export interface ProcCpu {
  /** utime + stime of the process itself, in clock ticks. */
  ticks: number;
  /** cutime + cstime: children it has waited for (e.g. systemd-notify), in clock ticks. */
  childTicks: number;
}

/** Fields 14-17 of /proc/PID/stat. The command name (field 2) may hold spaces and parentheses: fields count from the last ')'. */
export function parseProcStat(text: string): ProcCpu | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  // After ") ": field 3 (state) is index 0, so field N is index N - 3.
  const f = text.slice(close + 2).trim().split(/\s+/).map(Number);
  const [ut, st, cut, cst] = [f[11], f[12], f[13], f[14]];
  if ([ut, st, cut, cst].some((x) => x === undefined || !Number.isFinite(x))) return undefined;
  return { ticks: ut! + st!, childTicks: cut! + cst! };
}

/** usage_usec from a cgroup v2 cpu.stat (counts every process of the cgroup, children included). */
export function parseCgroupCpuStat(text: string): number | undefined {
  const m = /^usage_usec (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

export interface CgroupProc { pid: number; comm: string; rssKiB: number | undefined }

export interface UnitSample {
  unit: string;
  /** systemd's MainPID as seen in the host (0: not running). */
  pid: number;
  mem: ProcMem | undefined;
  cpu: ProcCpu | undefined;
  cgroupUsec: number | undefined;
  procs: CgroupProc[];
}

/**
 * The sampler script's output: per unit a block
 *   @unit NAME PID / @status (VmRSS, VmHWM lines) / @stat (one line) / @cpu (cpu.stat) /
 *   @procs ("PID COMM RSS_KIB" lines) / @end
 */
export function parseSample(text: string): UnitSample[] {
  const out: UnitSample[] = [];
  let cur: UnitSample | undefined;
  let section = '';
  let buf: string[] = [];
  const flush = () => {
    if (!cur) return;
    const body = buf.join('\n');
    if (section === 'status') cur.mem = parseProcStatus(body);
    else if (section === 'stat') cur.cpu = parseProcStat(body);
    else if (section === 'cpu') cur.cgroupUsec = parseCgroupCpuStat(body);
    else if (section === 'procs') {
      for (const l of buf) {
        // PID 0: a process of another PID namespace (another host sharing this cgroup).
        const m = /^(\d+)(?: (.*?))?(?: (\d+))?$/.exec(l.trim());
        if (m) cur.procs.push({ pid: Number(m[1]), comm: m[2] ?? '', rssKiB: m[3] === undefined ? undefined : Number(m[3]) });
      }
    }
    buf = [];
  };
  for (const line of text.split('\n')) {
    const unit = /^@unit (\S+) (\d+)$/.exec(line);
    if (unit) {
      flush();
      cur = { unit: unit[1]!, pid: Number(unit[2]), mem: undefined, cpu: undefined, cgroupUsec: undefined, procs: [] };
      out.push(cur);
      section = '';
      continue;
    }
    const sec = /^@(status|stat|cpu|procs|end)$/.exec(line);
    if (sec) {
      flush();
      section = sec[1]!;
      continue;
    }
    if (section && line !== '') buf.push(line);
  }
  flush();
  return out;
}

/**
 * The growth of a cumulative counter over a series of readings, across restarts: a new
 * owner (another PID) or a counter that went down (a new cgroup) starts a new segment,
 * whose whole reading counts (it began inside the window). Undefined readings are skipped.
 */
export function accumulate(points: Array<{ owner: number | string; value: number | undefined }>): number {
  let total = 0;
  let prev: { owner: number | string; value: number } | undefined;
  for (const p of points) {
    if (p.value === undefined) continue;
    if (prev && p.owner === prev.owner && p.value >= prev.value) total += p.value - prev.value;
    else if (prev) total += p.value;
    prev = { owner: p.owner, value: p.value };
  }
  return total;
}

export function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ---------------------------------------------------------------------------------------
// S3 requests

export type Source = 'agent' | 'litestream' | 'rclone' | 'other';

/** Who sent it, by User-Agent: the agent's @aws-sdk/client-s3, Litestream's aws-sdk-go, rclone. */
export function sourceOf(userAgent: string): Source {
  if (/aws-sdk-js|aws-sdk-nodejs|@aws-sdk/i.test(userAgent)) return 'agent';
  if (/aws-sdk-go|litestream/i.test(userAgent)) return 'litestream';
  if (/rclone/i.test(userAgent)) return 'rclone';
  return 'other';
}

interface ParsedPath { bucket: string; key: string; query: URLSearchParams }

/** A path-style request target: /bucket/key?query. */
export function parsePath(target: string): ParsedPath {
  const q = target.indexOf('?');
  const p = q < 0 ? target : target.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
  const parts = p.replace(/^\//, '').split('/');
  const bucket = decodeURIComponent(parts[0] ?? '');
  const key = parts.slice(1).map((s) => decodeURIComponent(s)).join('/');
  return { bucket, key, query };
}

export type Op = 'GET' | 'PUT' | 'LIST' | 'HEAD' | 'DELETE' | 'POST' | 'OTHER';
export const OPS: readonly Op[] = ['GET', 'PUT', 'LIST', 'HEAD', 'DELETE', 'POST', 'OTHER'];

/** The kind of request: a GET on the bucket itself with a listing query is a LIST. */
export function opOf(method: string, target: string): Op {
  const { key, query } = parsePath(target);
  if (method === 'GET' && key === '' && (query.has('list-type') || query.has('prefix') || query.has('delimiter') || [...query.keys()].length === 0)) return 'LIST';
  return (OPS as readonly string[]).includes(method) ? method as Op : 'OTHER';
}

/**
 * Which part of the replica a request touches, relative to S3_PREFIX: `lease.json`,
 * `db/wal`, `db/snapshots` (Litestream's generations), `db` (the rest of it), `files` (the file mirror), `probe` (conditional-write
 * probes), the first path segment otherwise; a LIST counts for the prefix it lists.
 */
export function areaOf(target: string, prefix: string): string {
  const { key, query } = parsePath(target);
  const name = key === '' ? (query.get('prefix') ?? '') : key;
  if (key === '' && name === '') return '(bucket)';
  const base = prefix.replace(/\/+$/, '');
  let rel = name;
  if (base) {
    if (name === base || name === `${base}/`) return '(prefix)';
    if (!name.startsWith(`${base}/`)) return '(outside the prefix)';
    rel = name.slice(base.length + 1);
  }
  if (rel === 'lease.json') return 'lease.json';
  if (/^\.vwstream-probe-|\/\.vwstream-probe-/.test(rel)) return 'probe';
  // Litestream's layout: db/generations/<id>/{snapshots,wal}/…
  const gen = /^db\/generations\/[^/]+\/([^/]+)\//.exec(rel);
  if (gen) return `db/${gen[1]}`;
  return rel.split('/')[0] || '(prefix)';
}

export interface Tally {
  total: number;
  byOp: Record<Op, number>;
  byArea: Record<string, number>;
  /** "area OP" → count. */
  byAreaOp: Record<string, number>;
  /** Answers other than 2xx/3xx/404 (errors the sender saw). */
  errors: number;
  bytesUp: number;
  bytesDown: number;
}

const emptyTally = (): Tally => ({
  total: 0, byOp: Object.fromEntries(OPS.map((o) => [o, 0])) as Record<Op, number>,
  byArea: {}, byAreaOp: {}, errors: 0, bytesUp: 0, bytesDown: 0,
});

export interface Counted { bySource: Record<Source, Tally>; userAgents: Record<string, number> }

/** Counts the records sent in [from, to) by source, kind and area; and the distinct User-Agents. */
export function countRequests(log: readonly ProxyRecord[], prefix: string, from: number, to: number): Counted {
  const bySource: Record<Source, Tally> = { agent: emptyTally(), litestream: emptyTally(), rclone: emptyTally(), other: emptyTally() };
  const userAgents: Record<string, number> = {};
  for (const r of log) {
    if (r.t < from || r.t >= to) continue;
    const t = bySource[sourceOf(r.userAgent)];
    const op = opOf(r.method, r.path);
    const area = areaOf(r.path, prefix);
    t.total++;
    t.byOp[op]++;
    t.byArea[area] = (t.byArea[area] ?? 0) + 1;
    t.byAreaOp[`${area} ${op}`] = (t.byAreaOp[`${area} ${op}`] ?? 0) + 1;
    if (r.status !== undefined && r.status >= 400 && r.status !== 404) t.errors++;
    t.bytesUp += r.bytesUp;
    t.bytesDown += r.bytesDown;
    userAgents[r.userAgent] = (userAgents[r.userAgent] ?? 0) + 1;
  }
  return { bySource, userAgents };
}

/** A count over windowMs as a rate per hour. */
export const perHour = (n: number, windowMs: number): number => (windowMs > 0 ? (n * 3_600_000) / windowMs : 0);
