import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { replicaUrl, type Config } from '../config/config.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { inspectDb, tableCounts } from '../replication/inspect.ts';
import type { RestoreProgress } from '../replication/litestream.ts';
import { effectiveRole, fileMirrorFor, installForced, resolveRestorePoint, restoreChecked, restorePointTo, type RestorePoint } from '../replication/restore.ts';
import { readState } from '../state-file.ts';
import { Systemd } from '../systemd/dbus.ts';
import { UNITS } from '../paths.ts';
import { configFor, printJson, runCommand } from './common.ts';
import { leftUnchanged, restoreFromBackup } from '../backup/restore-backup.ts';
import { isRecordedCopy } from '../replication/restore-op.ts';
import { daemonRunning, runtimeFor, withReadOnlyRuntime } from './offline.ts';
import { asideFolder, removeDbCopy, type Runtime } from '../replication/runtime.ts';

export interface RestoreArgs { config: string; json: boolean; force: boolean; backup?: string; to?: string; timestamp?: string; generation?: string; index?: string }

/** Progress on a terminal (stderr): the snapshot, then WAL indexes applied of the range. */
export function progressPrinter(): ((p: RestoreProgress) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let min = 0, max = 0, last = 0;
  return (p) => {
    if (p.phase === 'snapshot') process.stderr.write('restore: downloading the snapshot\n');
    else if (p.phase === 'wal' && p.walMax !== undefined) { min = p.walMin ?? 0; max = p.walMax; process.stderr.write(`restore: applying WAL ${min}..${max}\n`); }
    else if (p.phase === 'wal' && p.walIndex !== undefined && (Date.now() - last > 500 || p.walIndex === max)) {
      last = Date.now();
      process.stderr.write(`\rrestore: WAL ${p.walIndex - min + 1}/${max - min + 1}${p.walIndex === max ? '\n' : ''}`);
    } else if (p.phase === 'done') process.stderr.write('restore: database complete\n');
  };
}

const FILES_AS_OF_NOW = 'files: the file mirror keeps no history, so attachments, sends and keys cannot be rolled back; they are taken as of now';

/** Stops the agent (an orderly drain) when it runs; returns whether it ran. */
export async function drainAgent(cfg: Config, say: (l: string) => void): Promise<{ wasRunning: boolean; systemd: Systemd | undefined }> {
  let systemd: Systemd | undefined;
  try { systemd = await Systemd.connect(); } catch { /* no systemd (tests, chroots): the API check below decides */ }
  const active = systemd ? (await systemd.state(UNITS.agent)).activeState : undefined;
  const running = active === 'active' || active === 'activating' || (active === undefined && (await daemonRunning()));
  if (!running) return { wasRunning: false, systemd };
  if (!systemd) throw new AgentError('the agent is running; restore needs it stopped', { hint: 'systemctl stop vwstream-agent, then run this again' });
  say('stopping vwstream-agent (drain: Vaultwarden, then Litestream\'s final sync, then the files)');
  const result = await systemd.stop(UNITS.agent, cfg.stopGracePeriodMs + 60_000);
  if (result !== 'done') throw new AgentError(`vwstream-agent did not stop (job ${result}); nothing was restored`, { hint: 'journalctl -u vwstream-agent' });
  const d = readState().lastDrain;
  if (d) say(`drain ${d.complete ? 'complete' : `INCOMPLETE (${d.detail}); the local data is kept aside all the same`}`);
  return { wasRunning: true, systemd };
}

/** The units that write the database or the replica; the agent starts and stops them. */
const WRITERS = [UNITS.vaultwarden, UNITS.litestream] as const;
/** States in which a unit's process may still write. */
const RUNNING_STATES = new Set(['active', 'activating', 'deactivating', 'reloading']);

/**
 * The refusal when a writer runs with the agent stopped (started by hand, or a stop still
 * under way): restoring under a running Vaultwarden or Litestream would mix the restored
 * database with their writes and uploads. One line naming the unit and the command; exit 1.
 * undefined when neither runs.
 */
export function writerRefusal(states: { unit: string; activeState: string }[]): AgentError | undefined {
  const busy = states.find((s) => RUNNING_STATES.has(s.activeState));
  if (!busy) return undefined;
  return new AgentError(`${busy.unit} is ${busy.activeState} without vwstream-agent; nothing was restored; stop it first: systemctl stop ${busy.unit}`, { exitCode: EXIT.FAILED });
}

/**
 * After the drain, before anything live changes: refuses while vwstream-vaultwarden or
 * vwstream-litestream still runs. The agent, if it was running, is started again first
 * (nothing was changed, it serves the previous data). Without systemd there is nothing to ask.
 */
export async function refuseWhileWritersRun(systemd: Systemd | undefined, wasRunning: boolean, say: (l: string) => void): Promise<void> {
  if (!systemd) return;
  const states = [];
  for (const unit of WRITERS) states.push({ unit, activeState: (await systemd.state(unit)).activeState });
  const refusal = writerRefusal(states);
  if (!refusal) return;
  if (wasRunning) {
    const again = await startAgent(systemd, say).catch((e: unknown) => errorMessage(e));
    if (again !== 'done') say(`vwstream-agent did not start again (${again}): journalctl -u vwstream-agent`);
  }
  throw refusal;
}

export async function startAgent(systemd: Systemd, say: (l: string) => void): Promise<string> {
  say('starting vwstream-agent again');
  return systemd.start(UNITS.agent, 300_000);
}

/** `vwstream-agent restore`: take the replica (or a backup), under the contract's safety rule. */
export function restoreCommand(args: RestoreArgs): Promise<never> {
  return runCommand(async () => {
    const cfg = configFor(args);
    const say = (l: string) => { if (!args.json) process.stdout.write(`${l}\n`); };
    if (args.backup && (args.timestamp || args.generation || args.index)) throw new AgentError('--backup restores an archive; --timestamp, --generation and --index apply to the replica');
    if (args.to && args.backup) throw new AgentError('--to and --backup together are not supported yet; extract a backup by hand with openssl and tar');
    // --to touches nothing live, /run/vwstream included: its litestream.yml is a private temporary one.
    if (args.to) return withReadOnlyRuntime(cfg, (rt) => restoreCopy(cfg, rt, args));
    const rt = await runtimeFor(cfg);
    if (effectiveRole(cfg) === 'secondary') {
      throw new AgentError('this host is a secondary: it follows the replica and its next refresh would replace a restored vault', {
        hint: 'restore on the primary, or write a copy here with --to PATH',
      });
    }

    // Resolve (and reach) the replica before anything live is touched.
    const point = args.backup ? undefined : await resolveRestorePoint(cfg, rt, args);
    const local = inspectDb(rt.dbPath);
    if (local.exists && local.intact && local.users > 0 && !args.force) {
      const again = ['vwstream-agent restore', ...(args.backup ? [`--backup ${args.backup}`] : []), ...(args.timestamp ? [`--timestamp '${args.timestamp}'`] : []), ...(args.generation ? [`--generation ${args.generation}`] : []), ...(args.index ? [`--index ${args.index}`] : []), '--force'].join(' ');
      throw new AgentError(`the local vault ${rt.dbPath} holds ${local.users} users; refusing to replace it without --force`, {
        hint: `${again} (the agent is drained and restarted; the current database is kept aside under /var/lib/vwstream/aside)`,
      });
    }
    if (args.backup) {
      // The archive is fetched and checked inside restoreFromBackup before anything moves.
      const { wasRunning, systemd } = await drainAgent(cfg, say);
      try {
        await refuseWhileWritersRun(systemd, wasRunning, say);
        const progress = process.stderr.isTTY ? (l: string) => process.stderr.write(`restore: ${l}\n`) : undefined;
        const r = await restoreFromBackup(cfg, rt, args.backup, progress).catch(async (err: unknown) => {
          // Refused or failed before anything live changed: serve the previous vault again.
          if (leftUnchanged(err) && wasRunning && systemd) {
            const again = await startAgent(systemd, say).catch((e: unknown) => errorMessage(e));
            say(again === 'done' ? 'nothing was changed: vwstream-agent serves the previous data again' : `nothing was changed, but vwstream-agent did not start (${again}): journalctl -u vwstream-agent`);
          }
          throw err;
        });
        const started = wasRunning && systemd ? await startAgent(systemd, say) : undefined;
        if (args.json) printJson({ restored: true, ...r, agentRestarted: started ?? null });
        else {
          say(`restored ${rt.dbPath} and ${r.files} files from ${r.source} (${r.users} users, ${r.ms} ms)`);
          if (r.setAsideTo) say(`the previous data is kept at ${r.setAsideTo}`);
          say(started === undefined ? 'start serving it (it becomes the replica\'s newest generation): systemctl start vwstream-agent' : `vwstream-agent ${started === 'done' ? 'serves it again; it becomes the replica\'s newest generation' : `did not start (job ${started}): journalctl -u vwstream-agent`}`);
        }
        return started === undefined || started === 'done' ? EXIT.OK : EXIT.FAILED;
      } finally {
        systemd?.disconnect();
      }
    }
    return restoreLive(cfg, rt, args, point!);
  });
}

/** `--to PATH`: a checked copy of the database at PATH; nothing live is touched. */
async function restoreCopy(cfg: Config, rt: Runtime, args: RestoreArgs): Promise<number> {
  const to = resolve(args.to!);
  if (existsSync(to)) throw new AgentError(`${to} already exists; choose a new path`);
  const point = await resolveRestorePoint(cfg, rt, args);
  const started = Date.now();
  await restorePointTo(cfg, rt, point, to, progressPrinter());
  const facts = inspectDb(to);
  if (!facts.intact) {
    await rm(to, { force: true });
    throw new AgentError(`the restored copy fails integrity_check (${facts.integrityMessage}); it was removed`);
  }
  const counts = tableCounts(to);
  const ms = Date.now() - started;
  if (args.json) printJson({ restoredTo: to, point: point.describe, target: point.target, counts, users: facts.users, replica: replicaUrl(cfg), ms, live: 'untouched' });
  else {
    process.stdout.write(`restored a copy of ${point.describe} from ${replicaUrl(cfg)} to ${to} (${Object.entries(counts).map(([t, n]) => `${n} ${t}`).join(', ')}; ${ms} ms)\n`);
    process.stdout.write('live data untouched; --to writes the database only (files stay in the mirror)\n');
  }
  return EXIT.OK;
}

/**
 * Replaces the live data: restore into a temporary file and check it first (the agent
 * still serves meanwhile), then drain the agent, keep the current database aside, put
 * the copy in place, bring back the mirrored files, and start the agent again.
 */
async function restoreLive(cfg: Config, rt: Runtime, args: RestoreArgs, point: RestorePoint): Promise<number> {
  const started = Date.now();
  const say = (l: string) => { if (!args.json) process.stdout.write(`${l}\n`); };
  say(`restoring ${point.describe} from ${replicaUrl(cfg)}`);
  const onProgress = progressPrinter();
  const { tmp, facts } = await restoreChecked(rt, point.target, { cfg, ...(point.endFallback ? { endFallback: point.endFallback } : {}), ...(onProgress ? { onProgress } : {}) });
  let systemd: Systemd | undefined;
  try {
    say(`restored copy checked: integrity ok, ${facts.users} users`);
    const drained = await drainAgent(cfg, say);
    systemd = drained.systemd;
    await refuseWhileWritersRun(systemd, drained.wasRunning, say);
    const { setAsideTo } = await installForced(cfg, rt, tmp, point.describe, point.target);
    // Files: what the mirror holds (its latest state); local files it would replace are kept aside.
    let files = { files: 0, bytes: 0 };
    let filesError: string | undefined;
    try {
      files = await fileMirrorFor(cfg).restore(rt.ids, setAsideTo ?? asideFolder('files-replaced-by-restore'));
    } catch (err) {
      filesError = errorMessage(err);
    }
    const restarted = drained.wasRunning && systemd ? await startAgent(systemd, say) : undefined;
    const ms = Date.now() - started;
    const out = {
      restored: true, point: point.describe, target: point.target, users: facts.users, replica: replicaUrl(cfg), setAsideTo: setAsideTo ?? null, ms,
      files: { restored: files.files, bytes: files.bytes, rolledBack: false, note: point.pointInTime ? FILES_AS_OF_NOW : 'files: the mirror\'s latest state', error: filesError ?? null },
      agentRestarted: restarted ?? null,
    };
    if (args.json) printJson(out);
    else {
      say(`restored ${rt.dbPath} from ${replicaUrl(cfg)}: ${point.describe} (${facts.users} users, ${ms} ms)`);
      if (setAsideTo) say(`the previous database is kept at ${setAsideTo} (never deleted)`);
      say(point.pointInTime ? `${FILES_AS_OF_NOW} (${files.files} files fetched from the mirror)` : `files: ${files.files} fetched from the mirror (the others were already here)`);
      if (filesError) say(`files could not be fetched from the mirror: ${filesError}; the agent fetches them again at its next start`);
      if (restarted === undefined) say('start serving it: systemctl start vwstream-agent (it becomes the replica\'s newest generation)');
      else if (restarted === 'done') say('vwstream-agent serves it again; Litestream replicates it as a new generation, so the replica continues from the restored point');
      else say(`vwstream-agent did not start again (job ${restarted}): journalctl -u vwstream-agent`);
    }
    return restarted === undefined || restarted === 'done' ? EXIT.OK : EXIT.FAILED;
  } finally {
    systemd?.disconnect();
    // A copy recorded for an interrupted install stays: the next start finishes with it.
    if (!isRecordedCopy(tmp)) await removeDbCopy(tmp);
  }
}
