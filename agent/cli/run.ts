import { runAgent } from '../daemon/build.ts';
import { EXIT } from '../errors.ts';
import { log } from '../log.ts';
import { configFor, runCommand } from './common.ts';

/** `vwstream-agent run`: the daemon (what vwstream-agent.service runs). */
export function runDaemon(args: { config: string }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    log.info({ role: cfg.role, config: cfg.source }, 'vwstream-agent starting');
    let target: { requestStop(signal: string): void } | undefined;
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => target?.requestStop(sig));
    const code = await runAgent(cfg, process.env.NOTIFY_SOCKET, (d) => { target = d; });
    log.info({ exitCode: code }, 'vwstream-agent exiting');
    return code ?? EXIT.OK;
  });
}
