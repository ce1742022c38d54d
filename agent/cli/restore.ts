import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { replicaUrl } from '../config/config.ts';
import { AgentError, EXIT } from '../errors.ts';
import { inspectDb } from '../replication/inspect.ts';
import { restoreTo, type RestoreTarget } from '../replication/litestream.ts';
import { forceRestore } from '../replication/restore.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { restoreFromBackup } from '../backup/restore-backup.ts';
import { requireStopped, runtimeFor } from './offline.ts';

export interface RestoreArgs { config: string; json: boolean; force: boolean; backup?: string; to?: string; timestamp?: string; generation?: string; index?: string }

function targetOf(a: RestoreArgs): RestoreTarget {
  return { ...(a.timestamp ? { timestamp: a.timestamp } : {}), ...(a.generation ? { generation: a.generation } : {}), ...(a.index ? { index: a.index } : {}) };
}

/** `vwstream-agent restore`: take the replica, under the contract's safety rule. */
export function restoreCommand(args: RestoreArgs): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const rt = await runtimeFor(cfg);
    const target = targetOf(args);
    if (args.to && args.backup) throw new AgentError('--to and --backup together are not supported yet; extract a backup by hand with openssl and tar');
    if (args.to) {
      if (existsSync(args.to)) throw new AgentError(`${args.to} already exists; choose a new path`);
      await restoreTo(rt.litestreamConfig, rt.dbPath, args.to, target);
      const facts = inspectDb(args.to);
      if (!facts.intact) {
        await rm(args.to, { force: true });
        throw new AgentError(`the restored copy fails integrity_check (${facts.integrityMessage})`);
      }
      const out = { restoredTo: args.to, users: facts.users, replica: replicaUrl(cfg), live: 'untouched' };
      if (args.json) printJson(out);
      else process.stdout.write(`restored a copy of the database to ${args.to} (${facts.users} users); live data untouched\n`);
      return EXIT.OK;
    }
    await requireStopped('restore');
    const local = inspectDb(rt.dbPath);
    if (local.exists && local.intact && local.users > 0 && !args.force) {
      throw new AgentError(`the local vault ${rt.dbPath} holds ${local.users} users; refusing to replace it without --force`, {
        hint: `vwstream-agent restore${args.backup ? ` --backup ${args.backup}` : ''} --force (the current database is kept aside under /var/lib/vwstream/aside)`,
      });
    }
    if (args.backup) {
      const progress = process.stderr.isTTY ? (l: string) => process.stderr.write(`restore: ${l}\n`) : undefined;
      const r = await restoreFromBackup(cfg, rt, args.backup, progress);
      if (args.json) printJson({ restored: true, ...r });
      else {
        process.stdout.write(`restored ${rt.dbPath} and ${r.files} files from ${r.source} (${r.users} users, ${r.ms} ms)\n`);
        if (r.setAsideTo) process.stdout.write(`the previous data is kept at ${r.setAsideTo}\n`);
        process.stdout.write('start serving it (it becomes the replica\'s newest generation): systemctl start vwstream-agent\n');
      }
      return EXIT.OK;
    }
    const outcome = await forceRestore(cfg, rt, target);
    const facts = inspectDb(rt.dbPath);
    const out = { restored: true, users: facts.users, replica: replicaUrl(cfg), setAsideTo: outcome.setAsideTo ?? null, ms: outcome.ms };
    if (args.json) printJson(out);
    else {
      process.stdout.write(`restored ${rt.dbPath} from ${replicaUrl(cfg)} (${facts.users} users, ${outcome.ms} ms)\n`);
      if (outcome.setAsideTo) process.stdout.write(`the previous database is kept at ${outcome.setAsideTo}\n`);
      process.stdout.write('start serving it: systemctl start vwstream-agent\n');
    }
    return EXIT.OK;
  });
}
