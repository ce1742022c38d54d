import { apiRequest } from '../api/client.ts';
import type { StatusReport } from '../api/types.ts';
import { AgentError, EXIT } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { printJson, runCommand } from './common.ts';

/**
 * `vwstream-agent promote [--force]`: turn this secondary into the primary. Returns once
 * the agent serves again as primary (it restarts itself).
 */
export function promoteCommand(args: { json: boolean; force: boolean }): Promise<never> {
  return runCommand(async () => {
    const r = await apiRequest<{ error?: string; previousHolder?: string | null }>('POST', `/promote${args.force ? '?force=1' : ''}`, { timeoutMs: 600_000 });
    if (r.status !== 200) throw new AgentError(`promote refused: ${r.body.error ?? r.status}`);
    if (!args.json) process.stdout.write(`promoted${r.body.previousHolder ? ` (lease taken from ${r.body.previousHolder})` : ''}; the role is kept in ${PATHS.roleOverride} (delete it and restart to undo); restarting as primary…\n`);
    const deadline = Date.now() + 300_000;
    await new Promise((res) => setTimeout(res, 1500));
    for (;;) {
      try {
        const s = await apiRequest<StatusReport>('GET', '/status', { timeoutMs: 5_000 });
        if (s.body.role === 'primary' && s.body.state === 'serving') {
          if (args.json) printJson({ promoted: true, previousHolder: r.body.previousHolder ?? null, status: s.body });
          else process.stdout.write(`serving as primary: ${s.body.detail}\n`);
          return EXIT.OK;
        }
        if (s.body.role === 'primary' && (s.body.state === 'failed' || s.body.state === 'refused' || s.body.state === 'fenced')) {
          throw new AgentError(`the promoted agent is ${s.body.state}: ${s.body.detail}`, { hint: 'journalctl -u vwstream-agent' });
        }
      } catch (err) {
        if (err instanceof AgentError && /promoted agent/.test(err.message)) throw err;
      }
      if (Date.now() > deadline) throw new AgentError('the agent did not come back as primary within 5 minutes', { hint: 'vwstream-agent status; journalctl -u vwstream-agent' });
      await new Promise((res) => setTimeout(res, 500));
    }
  });
}
