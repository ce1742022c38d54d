import { replicaUrl } from '../config/config.ts';
import { updateState } from '../state-file.ts';
import { AgentError, EXIT } from '../errors.ts';
import { contentDigest, inspectDb } from '../replication/inspect.ts';
import { configFor, runCommand } from './common.ts';
import { requireStopped, runtimeFor } from './offline.ts';

/**
 * `vwstream-agent keep-local`: the operator's answer to a refused start when local data
 * and replica differ: keep the local vault; it becomes the replica's newest generation
 * (the older generations stay in the replica until retention removes them).
 */
export function keepLocalCommand(args: { config: string }): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const rt = await runtimeFor(cfg);
    await requireStopped('keep-local');
    const local = inspectDb(rt.dbPath);
    if (!local.exists || !local.intact) throw new AgentError(`no intact local database at ${rt.dbPath} to keep`);
    await updateState({ acceptedLocalDigest: contentDigest(rt.dbPath) });
    process.stdout.write(`the local vault (${local.users} users) will be kept and replicated to ${replicaUrl(cfg)} as a new generation\nstart it: systemctl start vwstream-agent\n`);
    return EXIT.OK;
  });
}
