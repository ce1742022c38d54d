/**
 * The cost of one log call under systemd, per output mode: the native journal protocol
 * (journal.node), stdout with `<N>` prefixes (the fallback without the add-on), plain
 * stdout to /dev/null (terminal/pipe path, no journald). Boots a test host with the
 * package (VWS_DEB or dist/), runs bench/log-child.ts there as a transient service, and
 * checks journald stored every native entry with its fields.
 *   node bench/log.ts     (BENCH_LOG_N: lines per run, 5000)
 */
import { build } from 'esbuild';
import { bootHost, installPackage } from '../test/system/harness.ts';
import { debPath } from '../test/system/common.ts';
import { envNum } from './common.ts';

const N = envNum('BENCH_LOG_N', 5000, 100);
const REPO = new URL('..', import.meta.url).pathname;
const bundle = '/tmp/vws-bench-log.mjs';
await build({
  entryPoints: [`${REPO}bench/log-child.ts`], outfile: bundle, bundle: true, format: 'esm', platform: 'node', target: 'node22', logLevel: 'warning',
  banner: { js: "import { createRequire as __c } from 'node:module'; const require = __c(import.meta.url);" },
});
const host = await bootHost('vws-bench-log');
try {
  await installPackage(host, debPath());
  await host.exec(['mkdir', '-p', '/var/tmp/vwsbench']);
  await host.copyIn(bundle, '/var/tmp/vwsbench/log-child.mjs', 0o644);
  const r = await host.exec(['systemd-run', '--wait', '--collect', '--unit', 'vws-bench-log', '-p', 'LogRateLimitIntervalSec=0',
    '/usr/lib/vwstream-agent/bin/node', '/var/tmp/vwsbench/log-child.mjs', '/var/tmp/vwsbench/report.json', '/usr/lib/vwstream-agent/journal.node', String(N)], { timeoutMs: 600_000 });
  const report = JSON.parse(await host.readFile('/var/tmp/vwsbench/report.json')) as { journalStream: boolean; n: number; runs: Array<Record<string, unknown>> };
  for (const run of report.runs.filter((x) => x.mode === 'journal')) {
    const bench = report.runs.indexOf(run) < 3 ? 'journal' : 'journal2';
    const stored = (await host.journal(['-u', 'vws-bench-log.service', `VWSTREAM_BENCH=${bench}`, '-o', 'cat'])).split('\n').filter(Boolean).length;
    run.storedWithFields = stored;
  }
  console.log(JSON.stringify({ ...report, systemdRun: r.stderr.trim().split('\n').slice(-3) }, null, 2));
} finally {
  await host.destroy();
}
