// The idle bench's parsing and counting (bench/idle-lib.ts): the numbers it prints come from these.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accumulate, areaOf, countRequests, median, opOf, parseProcStat, parseProcStatus, parseSample, perHour, sourceOf } from '../../bench/idle-lib.ts';
import type { ProxyRecord } from '../../test/system/s3-proxy.ts';

test('/proc/PID/status: VmRSS, VmHWM, RssAnon, RssFile in kB', () => {
  const text = 'Name:\tnode\nVmPeak:\t 1200000 kB\nVmHWM:\t  139264 kB\nVmRSS:\t  133120 kB\nRssAnon:\t   90112 kB\nRssFile:\t   43008 kB\n';
  assert.deepEqual(parseProcStatus(text), { rssKiB: 133120, hwmKiB: 139264, anonKiB: 90112, fileKiB: 43008 });
  assert.equal(parseProcStatus('Name:\tkthreadd\nState:\tS\n'), undefined);
});

test('/proc/PID/stat: fields count from the last parenthesis (a comm with spaces and parentheses)', () => {
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
  const stat = '173 (node (x) y) S 1 173 173 0 -1 4194560 9000 12 0 0 4521 879 31 17 20 0 11 0 1234 1e9 33000';
  assert.deepEqual(parseProcStat(stat), { ticks: 4521 + 879, childTicks: 31 + 17 });
  assert.equal(parseProcStat('173 node S 1'), undefined);
});

test('a sampler block per unit; PID 0 in cgroup.procs is a process of another host', () => {
  const out = [
    '@unit vwstream-agent.service 173', '@status', 'VmHWM: 2048 kB', 'VmRSS: 1024 kB', '@stat',
    '173 (node) S 1 173 173 0 -1 0 0 0 0 0 10 5 2 1 20 0', '@cpu', 'usage_usec 987654', 'user_usec 1', '@procs',
    '173 node 1024', '180 systemd-notify 512', '0', '@end',
    '@unit vwstream-litestream.service 0', '@cpu', '@procs', '@end', '',
  ].join('\n');
  const [a, l] = parseSample(out);
  assert.deepEqual(a, {
    unit: 'vwstream-agent.service', pid: 173, mem: { rssKiB: 1024, hwmKiB: 2048, anonKiB: undefined, fileKiB: undefined },
    cpu: { ticks: 15, childTicks: 3 }, cgroupUsec: 987654,
    procs: [{ pid: 173, comm: 'node', rssKiB: 1024 }, { pid: 180, comm: 'systemd-notify', rssKiB: 512 }, { pid: 0, comm: '', rssKiB: undefined }],
  });
  assert.deepEqual(l, { unit: 'vwstream-litestream.service', pid: 0, mem: undefined, cpu: undefined, cgroupUsec: undefined, procs: [] });
});

test('accumulate: deltas within one owner; a restart (new PID, or a counter that went down) counts whole', () => {
  assert.equal(accumulate([{ owner: 1, value: 100 }, { owner: 1, value: 130 }, { owner: 1, value: undefined }, { owner: 1, value: 150 }]), 50);
  assert.equal(accumulate([{ owner: 1, value: 100 }, { owner: 1, value: 130 }, { owner: 2, value: 7 }, { owner: 2, value: 9 }]), 30 + 7 + 2);
  assert.equal(accumulate([{ owner: 'cg', value: 500 }, { owner: 'cg', value: 40 }]), 40);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([]), undefined);
  assert.equal(perHour(12, 300_000), 144);
});

test('requests: sender by User-Agent, LIST vs GET, area relative to the prefix', () => {
  assert.equal(sourceOf('aws-sdk-js/3.1174.0 ua/2.1 os/linux lang/js md/nodejs#22.23.3 api/s3#3.1174.0'), 'agent');
  assert.equal(sourceOf('aws-sdk-go/1.44.245 (go1.21.0; linux; amd64)'), 'litestream');
  assert.equal(sourceOf('rclone/v1.60.1-DEV'), 'rclone');
  assert.equal(sourceOf('curl/7.88.1'), 'other');
  assert.equal(opOf('GET', '/b?list-type=2&prefix=idle%2Fvw%2Fdb%2F'), 'LIST');
  assert.equal(opOf('GET', '/b/?delimiter=%2F&prefix=x%2F'), 'LIST');
  assert.equal(opOf('GET', '/b?location'), 'GET');
  assert.equal(opOf('GET', '/b/idle/vw/lease.json?x-id=GetObject'), 'GET');
  assert.equal(opOf('PATCH', '/b/k'), 'OTHER');
  assert.equal(areaOf('/b/idle/vw/lease.json?x-id=PutObject', 'idle/vw'), 'lease.json');
  assert.equal(areaOf('/b/idle/vw/files/attachments/c1/a%20b.bin', 'idle/vw'), 'files');
  assert.equal(areaOf('/b?list-type=2&prefix=idle%2Fvw%2Fdb%2Fgenerations%2F', 'idle/vw/'), 'db');
  assert.equal(areaOf('/b/idle/vw/.vwstream-probe-12ab', 'idle/vw'), 'probe');
  assert.equal(areaOf('/b/idle/vw/db/generations/0a1b2c3d4e5f6a7b/wal/00000001_00000000.wal.lz4', 'idle/vw'), 'db/wal');
  assert.equal(areaOf('/b/idle/vw/db/generations/0a1b2c3d4e5f6a7b/snapshots/00000001.snapshot.lz4', 'idle/vw'), 'db/snapshots');
  assert.equal(areaOf('/b/other/thing', 'idle/vw'), '(outside the prefix)');
  assert.equal(areaOf('/b?location', 'idle/vw'), '(bucket)');
});

test('countRequests: only the window, per sender, kind and area; errors other than 404', () => {
  const r = (t: number, method: string, path: string, userAgent: string, status = 200): ProxyRecord => ({ t, method, path, userAgent, status, bytesUp: 10, bytesDown: 100 });
  const js = 'aws-sdk-js/3';
  const go = 'aws-sdk-go/1.44';
  const log = [
    r(999, 'PUT', '/b/p/lease.json', js), // before the window
    r(1000, 'GET', '/b/p/lease.json', js), r(1500, 'PUT', '/b/p/lease.json', js, 412),
    r(1600, 'GET', '/b/p/files/x', js, 404), r(1700, 'GET', '/b?list-type=2&prefix=p%2Fdb%2F', go),
    r(2000, 'GET', '/b/p/lease.json', js), // at the end: outside
  ];
  const c = countRequests(log, 'p', 1000, 2000);
  assert.equal(c.bySource.agent.total, 3);
  assert.deepEqual(c.bySource.agent.byAreaOp, { 'lease.json GET': 1, 'lease.json PUT': 1, 'files GET': 1 });
  assert.equal(c.bySource.agent.byOp.GET, 2);
  assert.equal(c.bySource.agent.errors, 1);
  assert.equal(c.bySource.agent.bytesDown, 300);
  assert.deepEqual(c.bySource.litestream.byAreaOp, { 'db LIST': 1 });
  assert.deepEqual(c.userAgents, { [js]: 3, [go]: 1 });
});
