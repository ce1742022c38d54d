import { humanBytes, listAside, planAsidePrune, pruneAside, type AsideEntry, type AsideRule, type AsideVerdict, type ForeignEntry } from '../aside.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { configFor, printJson, requireRoot, runCommand } from './common.ts';
import { table, when } from './generations.ts';

const ruleText = (r: AsideRule) => `the ${r.minKeep} newest per reason${r.retentionDays ? ` and everything younger than ${r.retentionDays} days` : ' and everything else (ASIDE_RETENTION_DAYS=0)'} are kept`;

const entryJson = (e: AsideEntry) => ({ name: e.name, path: e.path, reason: e.reason, time: e.at.toISOString(), bytes: e.bytes, files: e.files });
const foreignJson = (f: ForeignEntry) => ({ name: f.name, path: f.path, kind: f.kind, why: f.why });

function readFailed(dir: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code;
  return new AgentError(`cannot read ${dir}: ${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : errorMessage(err)}`, {});
}


function foreignLines(foreign: ForeignEntry[]): string {
  return foreign.map((f) => `left alone (not the agent's): ${f.path}: ${f.why}\n`).join('');
}

/** `vwstream-agent aside`: what the agent kept aside (reason, time, size, path) and what the rule would prune. */
export function asideListCommand(args: { config: string; json: boolean }, dir: string = PATHS.asideDir): Promise<never> {
  return runCommand(async () => {
    requireRoot('aside', 'it reads the folders under /var/lib/vwstream/aside, which only root may');
    const cfg = configFor(args);
    const listing = await listAside(dir).catch((err) => { throw readFailed(dir, err); });
    const plan = planAsidePrune(listing.entries, cfg.aside, new Date());
    const verdict = new Map<string, AsideVerdict>([...plan.keep, ...plan.remove].map((v) => [v.entry.name, v]));
    if (args.json) {
      printJson({
        dir, rule: cfg.aside, count: listing.entries.length, bytes: listing.bytes,
        entries: listing.entries.map((e) => ({ ...entryJson(e), prune: verdict.get(e.name)!.remove, why: verdict.get(e.name)!.why })),
        foreign: listing.foreign.map(foreignJson),
      });
      return EXIT.OK;
    }
    if (listing.entries.length === 0) process.stdout.write(`nothing kept aside under ${dir}\n`);
    else {
      process.stdout.write(`kept aside under ${dir}: ${listing.entries.length} folders, ${humanBytes(listing.bytes)} (${ruleText(cfg.aside)})\n`);
      process.stdout.write(table(['reason', 'time', 'size', 'next prune', 'path'], listing.entries.map((e) => [e.reason, when(e.at), humanBytes(e.bytes), verdict.get(e.name)!.remove ? 'removes it' : 'keeps it', e.path])));
    }
    process.stdout.write(foreignLines(listing.foreign));
    return EXIT.OK;
  });
}

/** `vwstream-agent aside prune [--dry-run]`: applies the rule now (root only); prints what it removed. */
export function asidePruneCommand(args: { config: string; json: boolean; dryRun: boolean }, dir: string = PATHS.asideDir): Promise<never> {
  return runCommand(async () => {
    requireRoot('aside prune', 'it removes folders under /var/lib/vwstream/aside');
    const cfg = configFor(args);
    const r = await pruneAside(dir, cfg.aside, { dryRun: args.dryRun }).catch((err) => { throw readFailed(dir, err); });
    if (args.json) {
      printJson({
        dir, rule: cfg.aside, dryRun: r.dryRun,
        removed: r.removed.map((v) => ({ ...entryJson(v.entry), why: v.why })), removedBytes: r.removedBytes,
        kept: r.kept.map((v) => ({ ...entryJson(v.entry), why: v.why })),
        foreign: r.foreign.map(foreignJson), errors: r.errors,
      });
    } else {
      const verb = r.dryRun ? 'would remove' : 'removed';
      for (const v of r.removed) process.stdout.write(`${verb} ${v.entry.path} (${v.entry.reason}, ${when(v.entry.at)}, ${humanBytes(v.entry.bytes)}): ${v.why}\n`);
      for (const e of r.errors) process.stderr.write(`vwstream-agent: could not remove ${e}\n`);
      process.stdout.write(`${r.dryRun ? 'dry run: ' : ''}${verb} ${r.removed.length} folders (${humanBytes(r.removedBytes)}); kept ${r.kept.length} (${ruleText(cfg.aside)})\n`);
      process.stdout.write(foreignLines(r.foreign));
    }
    return r.errors.length ? EXIT.FAILED : EXIT.OK;
  });
}
