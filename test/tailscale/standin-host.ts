/**
 * Installs the Tailscale STAND-IN (test/fixtures/tailscale-standin.mjs) in a system-test
 * host: the CLI at /usr/bin/tailscale, the daemon at /usr/sbin/tailscaled run by a
 * stand-in tailscaled.service, so the package's tailscaled.service.d drop-in applies to
 * a real unit. Not Tailscale: it joins no network.
 */
import type { Host } from '../system/harness.ts';

const FIXTURES = new URL('../fixtures/', import.meta.url).pathname;
export const STANDIN_STATE = '/var/lib/tailscale-standin';

export interface StandinCall { argv: string[]; uid: number; at: string; code: number; authKey?: { source: string; path?: string; mode?: string; uid?: number; sha256: string; prefix: string } }

export async function installTailscaleStandin(host: Host): Promise<void> {
  await host.copyIn(`${FIXTURES}tailscale-standin.mjs`, '/usr/bin/tailscale', 0o755);
  await host.exec(['ln', '-sf', '/usr/bin/tailscale', '/usr/sbin/tailscaled']);
  await host.copyIn(`${FIXTURES}tailscale-standin-tailscaled.service`, '/etc/systemd/system/tailscaled.service', 0o644);
  await host.exec(['systemctl', 'daemon-reload']);
  await host.exec(['systemctl', 'enable', '--now', 'tailscaled.service']);
}

/** Every CLI call the stand-in daemon recorded, oldest first. */
export async function standinCalls(host: Host): Promise<StandinCall[]> {
  const text = await host.readFile(`${STANDIN_STATE}/calls.jsonl`).catch(() => '');
  return text.trim() ? text.trim().split('\n').map((l) => JSON.parse(l) as StandinCall) : [];
}

export async function standinServeConfig(host: Host): Promise<Record<string, any>> {
  return JSON.parse((await host.exec(['tailscale', 'serve', 'status', '--json'])).stdout) as Record<string, any>;
}

/**
 * Samples every process's argv in the host in a tight loop (a Node process reading
 * /proc, no forks), so short-lived children such as `tailscale up`, rclone or openssl
 * are caught too. Returns a function that stops it and returns every distinct command
 * line seen (one per line, arguments joined by spaces), then a line "# passes N".
 */
export async function sampleArgv(host: Host): Promise<() => Promise<string>> {
  const script = [
    "const fs = require('fs');",
    'const seen = new Set(); let passes = 0;',
    "const dump = () => fs.writeFileSync('/root/argv-samples.log', [...seen].join('\\n') + '\\n# passes ' + passes + '\\n');",
    "process.on('SIGTERM', () => { dump(); process.exit(0); });",
    'const tick = () => {',
    "  for (const p of fs.readdirSync('/proc')) {",
    '    if (!/^\\d+$/.test(p)) continue;',
    "    try { const c = fs.readFileSync('/proc/' + p + '/cmdline', 'latin1'); if (c) seen.add(c.split('\\0').join(' ').trim()); } catch {}",
    '  }',
    '  passes++;',
    '  setTimeout(tick, 2);',
    '};',
    'tick();',
  ].join('\n');
  await host.writeFile('/root/argv-sampler.cjs', script, 0o600);
  await host.exec(['systemd-run', '--unit=vws-test-argv-sampler', '--quiet', '/usr/lib/vwstream-agent/bin/node', '/root/argv-sampler.cjs']);
  return async () => {
    await host.exec(['systemctl', 'stop', 'vws-test-argv-sampler.service'], { check: false });
    return (await host.exec(['cat', '/root/argv-samples.log'], { timeoutMs: 120_000 })).stdout;
  };
}
