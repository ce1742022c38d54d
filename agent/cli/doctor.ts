import { request } from 'node:http';
import { realEnv, runDoctor, type CheckResult } from '../doctor/checks.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { setSecrets } from '../log.ts';
import { printJson, runCommand } from './common.ts';

const LABEL: Record<CheckResult['level'], string> = { ok: 'ok', warn: 'warn', fail: 'FAIL' };

/** One line per check, `→ fix` under each warn/FAIL, then a summary line. */
export function formatReport(results: CheckResult[], ms: number, configLoaded: boolean): string {
  const width = Math.max(...results.map((r) => r.check.length), 5);
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${LABEL[r.level].padEnd(4)}  ${r.check.padEnd(width)}  ${r.detail}`);
    if (r.fix && r.level !== 'ok') lines.push(`${' '.repeat(6 + width)}  → ${r.fix}`);
  }
  const n = (l: CheckResult['level']) => results.filter((r) => r.level === l).length;
  lines.push(`doctor: ${n('fail')} FAIL, ${n('warn')} warn, ${n('ok')} ok in ${(ms / 1000).toFixed(1)} s${configLoaded ? '' : ' (the config does not load: the checks that need it did not run)'}`);
  return lines.join('\n') + '\n';
}

/** The exit code: 78 when the config does not load, else 1 with any FAIL, else 0 (warn is not a failure). */
export function doctorExit(results: CheckResult[], configLoaded: boolean): number {
  if (!configLoaded) return EXIT.CONFIG;
  return results.some((r) => r.level === 'fail') ? EXIT.FAILED : EXIT.OK;
}

/**
 * GET /status on the read socket, bounded. Its own small request (not api/client.ts): a
 * socket that does not answer is a finding here, never a reason to exit.
 */
export function agentStatus(socketPath: string, timeoutMs: number): Promise<{ state: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ socketPath, method: 'GET', path: '/status', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err) => resolve({ error: errorMessage(err) }));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve({ error: `GET /status answered ${res.statusCode}` });
        try {
          resolve({ state: String((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { state?: unknown }).state ?? 'unknown') });
        } catch {
          resolve({ error: 'GET /status answered with invalid JSON' });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code === 'ECONNREFUSED' ? 'connection refused (nothing listens: the agent is not running)' : errorMessage(err) }));
    req.end();
  });
}

/**
 * `vwstream-agent doctor`: runs every check (agent running or not) and prints each as ok,
 * warn or FAIL with the fix; --json prints [{check, ok, level, detail, fix}]. Root only:
 * the config (0600) holds the credentials the S3 and remote checks use.
 */
export function doctorCommand(args: { config: string; json: boolean }): Promise<never> {
  return runCommand(async () => {
    if (process.getuid?.() !== 0) {
      throw new AgentError(`vwstream-agent doctor needs root (it reads ${args.config}, mode 0600, for the S3 and backup credentials)`, { hint: 'sudo vwstream-agent doctor', exitCode: EXIT.NOPERM });
    }
    const report = await runDoctor(args.config, realEnv(agentStatus), undefined, setSecrets);
    if (args.json) {
      printJson(report.results.map((r) => ({ check: r.check, ok: r.level !== 'fail', level: r.level, detail: r.detail, fix: r.fix })));
    } else process.stdout.write(formatReport(report.results, report.ms, report.configLoaded));
    return doctorExit(report.results, report.configLoaded);
  });
}
