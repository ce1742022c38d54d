import assert from 'node:assert/strict';
import { test } from 'node:test';
import { litestreamFamilies, renderMetrics, type MetricsInput } from '../../agent/daemon/metrics.ts';

const LITESTREAM = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 12
# HELP litestream_db_size The current size of the real DB
# TYPE litestream_db_size gauge
litestream_db_size{db="/var/lib/vaultwarden/db.sqlite3"} 118784
# HELP litestream_replica_wal_offset The current WAL offset
# TYPE litestream_replica_wal_offset gauge
litestream_replica_wal_offset{db="/var/lib/vaultwarden/db.sqlite3",name="s3"} 4152
`;

const input: MetricsInput = {
  version: '0.1.0', role: 'primary', state: 'serving',
  lastDbSync: new Date('2026-11-25T12:00:00Z'), lastFileSync: null,
  syncErrors: { litestream: 2, files: 1 },
  lease: { held: true, suspended: false, expiresAt: '2026-11-25T12:01:00Z' },
  backup: { lastAt: '2026-11-25T03:00:00Z', lastOk: true, lastSuccessAt: '2026-11-25T03:00:00Z', lastMs: 51_300, lastBytes: 1_048_576 },
  restores: { restore: 2, keep: 5 },
  drain: { complete: 3, incomplete: 1, lastAt: '2026-11-25T11:00:00Z', lastComplete: true, lastMs: 2_200 },
  unitRestarts: { 'vwstream-litestream.service': 1, 'vwstream-vaultwarden.service': 0 },
  verify: { at: '2026-11-22T04:00:00Z', ok: false },
  walBytes: 4152, dbBytes: 118_784, litestreamText: LITESTREAM,
};

test('the exposition holds every family with HELP/TYPE, labels and values', () => {
  const text = renderMetrics(input);
  const lines = text.trimEnd().split('\n');
  const value = (series: string) => lines.find((l) => l.startsWith(`${series} `))?.split(' ')[1];
  assert.equal(value('vwstream_info{version="0.1.0",role="primary"}'), '1');
  assert.equal(value('vwstream_state{state="serving"}'), '1');
  assert.equal(value('vwstream_state{state="degraded"}'), '0');
  assert.equal(value('vwstream_last_db_sync_timestamp_seconds'), String(Date.parse('2026-11-25T12:00:00Z') / 1000));
  assert.equal(value('vwstream_last_file_sync_timestamp_seconds'), '0');
  assert.equal(value('vwstream_sync_errors_total{kind="database"}'), '2');
  assert.equal(value('vwstream_sync_errors_total{kind="files"}'), '1');
  assert.equal(value('vwstream_lease_held'), '1');
  assert.equal(value('vwstream_lease_suspended'), '0');
  assert.equal(value('vwstream_backup_last_run_success'), '1');
  assert.equal(value('vwstream_backup_last_duration_seconds'), '51.3');
  assert.equal(value('vwstream_backup_last_size_bytes'), '1048576');
  assert.equal(value('vwstream_restores_total{action="keep"}'), '5');
  assert.equal(value('vwstream_restores_total{action="restore"}'), '2');
  assert.equal(value('vwstream_drains_total{outcome="incomplete"}'), '1');
  assert.equal(value('vwstream_drain_last_duration_seconds'), '2.2');
  assert.equal(value('vwstream_unit_restarts_total{unit="vwstream-litestream.service"}'), '1');
  assert.equal(value('vwstream_verify_last_success'), '0');
  assert.equal(value('vwstream_litestream_up'), '1');
  // Litestream's families pass through unchanged; Go runtime metrics do not.
  assert.equal(value('litestream_replica_wal_offset{db="/var/lib/vaultwarden/db.sqlite3",name="s3"}'), '4152');
  assert.ok(lines.includes('# TYPE litestream_db_size gauge'));
  assert.ok(!text.includes('go_goroutines'));
  // Every sample's family has HELP and TYPE before it, once.
  const families = new Set(lines.filter((l) => !l.startsWith('#')).map((l) => /^[a-z_:]+/.exec(l)![0]));
  for (const f of families) {
    assert.equal(lines.filter((l) => l.startsWith(`# TYPE ${f} `)).length, 1, f);
    assert.equal(lines.filter((l) => l.startsWith(`# HELP ${f} `)).length, 1, f);
  }
});

test('absent facts are left out rather than invented; a silent Litestream is litestream_up 0', () => {
  const text = renderMetrics({ ...input, lease: null, verify: null, backup: {}, walBytes: null, dbBytes: null, litestreamText: null, drain: { complete: 0, incomplete: 0 } });
  for (const name of ['vwstream_lease_held', 'vwstream_verify_last_success', 'vwstream_backup_last_run_success', 'vwstream_wal_size_bytes', 'vwstream_drain_last_duration_seconds']) {
    assert.ok(!text.includes(name), name);
  }
  assert.doesNotMatch(text, /^(# (HELP|TYPE) )?litestream_/m);
  assert.match(text, /^vwstream_litestream_up 0$/m);
  assert.match(text, /^vwstream_backup_last_success_timestamp_seconds 0$/m);
});

test('label values are escaped', () => {
  const text = renderMetrics({ ...input, version: 'a"b\\c\nd' });
  assert.match(text, /^vwstream_info\{version="a\\"b\\\\c\\nd",role="primary"\} 1$/m);
  assert.deepEqual(litestreamFamilies('litestream_x 1\nlitestreamy 2\n# HELP litestream_x h'), ['litestream_x 1', '# HELP litestream_x h']);
});

test('state age and transitions, the lease store probe, fencing and the standby\'s refresh', () => {
  const text = renderMetrics({
    ...input, role: 'secondary', stateSince: new Date('2026-11-25T12:00:00Z'), transitions: { serving: 2, degraded: 1 },
    lease: { held: true, suspended: false, expiresAt: null, conditionalWrites: false }, fenced: false, mirrorStopped: true,
    secondary: { lastRefresh: new Date('2026-11-25T11:00:00Z'), ageSeconds: 3600, lastOk: false, counts: { swapped: 4, skipped: 7, localChangesKept: 0, failed: 1 }, lastDowntimeMs: 1500 },
  });
  const value = (series: string) => text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1];
  assert.equal(value('vwstream_state_since_timestamp_seconds'), String(Date.parse('2026-11-25T12:00:00Z') / 1000));
  assert.equal(value('vwstream_state_transitions_total{state="serving"}'), '2');
  assert.equal(value('vwstream_state_transitions_total{state="fenced"}'), '0');
  assert.equal(value('vwstream_lease_store_conditional_writes'), '0');
  assert.equal(value('vwstream_fenced'), '0');
  assert.equal(value('vwstream_file_mirror_stopped'), '1');
  assert.equal(value('vwstream_secondary_refresh_age_seconds'), '3600');
  assert.equal(value('vwstream_secondary_last_refresh_success'), '0');
  assert.equal(value('vwstream_secondary_refreshes_total{result="failed"}'), '1');
  assert.equal(value('vwstream_secondary_refreshes_total{result="swapped"}'), '4');
  assert.equal(value('vwstream_secondary_last_swap_downtime_seconds'), '1.5');
  // Unknown (no probe yet): no sample rather than a wrong one.
  assert.equal(renderMetrics({ ...input, lease: { held: true, suspended: false, expiresAt: null, conditionalWrites: null } }).includes('vwstream_lease_store_conditional_writes'), false);
});

test('how the log reaches journald: the mode and the lines that fell back to stdout', () => {
  const text = renderMetrics({ ...input, log: { mode: 'journal', sent: 120, fallbacks: 3 } });
  const value = (series: string) => text.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ')[1];
  assert.equal(value('vwstream_log_mode{mode="journal"}'), '1');
  assert.equal(value('vwstream_log_mode{mode="prefix"}'), '0');
  assert.equal(value('vwstream_log_journal_fallbacks_total'), '3');
  assert.equal(renderMetrics(input).includes('vwstream_log_'), false, 'not reported when not given');
});

test('the agent process: resident memory split anon/file from /proc/self/status, heap, CPU, start time', async () => {
  const { processStats } = await import('../../agent/daemon/metrics.ts');
  const status = 'Name:\tnode\nVmHWM:\t  92296 kB\nVmRSS:\t   78384 kB\nRssAnon:\t   29264 kB\nRssFile:\t   49100 kB\nRssShmem:\t      20 kB\n';
  const p = processStats(status);
  assert.deepEqual([p.rssBytes, p.rssAnonBytes, p.rssFileBytes], [78384 * 1024, 29264 * 1024, 49120 * 1024]);
  assert.ok(p.heapUsedBytes > 0 && p.heapTotalBytes >= p.heapUsedBytes && p.cpuSeconds > 0);
  assert.ok(Math.abs(p.startSeconds - (Date.now() / 1000 - process.uptime())) < 2);
  const text = renderMetrics({ ...input, process: p });
  assert.match(text, /^process_resident_memory_bytes 80265216$/m);
  assert.match(text, /^vwstream_process_resident_memory_bytes\{kind="anon"\} 29966336$/m);
  assert.match(text, /^vwstream_process_resident_memory_bytes\{kind="file"\} 50298880$/m);
  assert.match(text, /^# TYPE process_cpu_seconds_total counter$/m);
  assert.match(text, /^nodejs_heap_size_used_bytes \d+$/m);
  // Without /proc (not Linux): memoryUsage's rss, no split.
  const bare = processStats(undefined);
  assert.equal(bare.rssAnonBytes, undefined);
  assert.doesNotMatch(renderMetrics({ ...input, process: bare }), /vwstream_process_resident_memory_bytes/);
});
