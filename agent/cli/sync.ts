import { apiRequest } from '../api/client.ts';
import type { SyncReport } from '../files/mirror.ts';
import { AgentError, EXIT } from '../errors.ts';
import { printJson, runCommand } from './common.ts';

/** `vwstream-agent sync`: mirror files now (what vwstream-sync.timer runs). */
export function syncCommand(args: { json: boolean }): Promise<never> {
  return runCommand(async () => {
    const r = await apiRequest<SyncReport | { error: string }>('POST', '/sync', { timeoutMs: 3_600_000 });
    if ('error' in r.body) throw new AgentError(`sync refused: ${r.body.error}`);
    const rep = r.body;
    if (args.json) printJson(rep);
    else {
      process.stdout.write(`files: ${rep.uploaded} uploaded (${rep.uploadedBytes} bytes), ${rep.deleted} deleted, ${rep.unchanged} unchanged, ${rep.ms} ms\n`);
      for (const h of rep.heldBack) process.stdout.write(`held back: ${h.group} is empty locally while the remote holds ${h.files} files\n`);
      for (const e of rep.errors) process.stdout.write(`error: ${e}\n`);
    }
    return rep.errors.length ? EXIT.FAILED : EXIT.OK;
  });
}
