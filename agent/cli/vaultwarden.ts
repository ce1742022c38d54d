/**
 * `vwstream-agent vaultwarden install [--version V | --image REF]` and
 * `vwstream-agent vaultwarden rollback [--force]`.
 */
import { copyFile, chmod, chown } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { humanBytes } from '../aside.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { setLogLevel } from '../log.ts';
import { effectiveRole } from '../replication/restore.ts';
import { performRestoreOp, isRecordedCopy } from '../replication/restore-op.ts';
import { removeDbCopy } from '../replication/runtime.ts';
import { contentDigest } from '../replication/inspect.ts';
import { finishRollback, rollbackReplacedDb } from '../vaultwarden/rollback.ts';
import { readState, updateVaultwardenState, type RollbackRecord } from '../state-file.ts';
import { imageToPull, installVaultwarden, type InstallResult, type PullProgressLike } from '../vaultwarden/install.ts';
import { realInstallDeps } from '../vaultwarden/source.ts';
import { SNAPSHOT_FILE, compareRows, describeChanges, migrationsFingerprint, readMarker, rowDigests, type RowChanges } from '../vaultwarden/upgrade.ts';
import { compareVersions } from '../vaultwarden/lifecycle.ts';
import { VersionStore } from '../vaultwarden/versions.ts';
import { configFor, printJson, requireRoot, runCommand, type GlobalArgs } from './common.ts';
import { daemonRunning, runtimeFor } from './offline.ts';
import { drainAgent, refuseWhileWritersRun, startAgent } from './restore.ts';

const mib = (b: number) => (b / 1048576).toFixed(1);

/** These commands print their own lines (or one JSON object): the log says only warnings and errors, unless LOG_LEVEL=debug. */
function quietConfig(args: GlobalArgs) {
  const cfg = configFor(args);
  if (cfg.logLevel !== 'debug' && cfg.logLevel !== 'trace') setLogLevel('warn');
  return cfg;
}

/** A progress line on a terminal (stderr), rewritten in place; nothing otherwise. */
function progressLine(image: string): { onProgress?: (p: PullProgressLike) => void; done(): void } {
  if (!process.stderr.isTTY) return { done: () => undefined };
  let last = 0;
  let shown = false;
  return {
    onProgress: (p) => {
      if (Date.now() - last < 200) return;
      last = Date.now();
      shown = true;
      process.stderr.write(`\rpulling ${image}: layer ${p.layer}/${p.layers}, ${mib(p.totalBytes)} of ${mib(p.total)} MiB   `);
    },
    done: () => { if (shown) process.stderr.write('\n'); },
  };
}

export interface InstallArgs extends GlobalArgs { version?: string; image?: string }

export function vaultwardenInstallCommand(args: InstallArgs): Promise<never> {
  return runCommand(async () => {
    requireRoot('vaultwarden install', `it writes ${PATHS.vaultwardenDir}`);
    const cfg = quietConfig(args);
    const say = (l: string) => { if (!args.json) process.stdout.write(`${l}\n`); };
    const pin = cfg.vaultwarden.version;
    if (args.version && args.image) throw new AgentError('--version and --image together: give the version as the image\'s tag, or --version alone (VAULTWARDEN_IMAGE then names the image)', { exitCode: EXIT.USAGE });
    if (args.version && !/^v?\d+\.\d+\.\d+(?:[-+.][0-9A-Za-z][0-9A-Za-z.+-]*)?$/.test(args.version)) {
      throw new AgentError(`--version ${args.version}: expected a Vaultwarden version like 1.32.7`, { exitCode: EXIT.USAGE });
    }
    const version = args.version?.replace(/^v/, '') ?? (args.image ? undefined : pin);
    if (pin && version && version !== pin) {
      throw new AgentError(`VAULTWARDEN_VERSION=${pin} in ${cfg.source} pins another version: the agent would go back to ${pin} at its next start`, {
        hint: `set VAULTWARDEN_VERSION=${version} there instead (the agent installs it at its next start: systemctl restart vwstream-agent)`, exitCode: EXIT.CONFIG,
      });
    }
    if (pin && args.image) throw new AgentError(`VAULTWARDEN_VERSION=${pin} in ${cfg.source} pins a version of VAULTWARDEN_IMAGE; --image would be replaced by it at the next start`, { hint: 'remove the pin, or set VAULTWARDEN_IMAGE and VAULTWARDEN_VERSION in the config', exitCode: EXIT.CONFIG });
    const image = args.image ?? cfg.vaultwarden.image;
    const suffix = args.image && /:[^/]+$|@/.test(args.image) ? '' : cfg.vaultwarden.tagSuffix;
    const ref = imageToPull(image, version, suffix);
    const ran = readState().vaultwarden?.lastRan;
    if (version && ran && compareVersions(version, ran.version) < 0 && existsSync(PATHS.dbFile) && ran.migrations === migrationsFingerprint(PATHS.dbFile)) {
      throw new AgentError(`Vaultwarden ${version} is older than ${ran.version}, which last ran on this database and migrated it; nothing was changed`, {
        hint: 'vwstream-agent vaultwarden rollback goes back to the database of before the upgrade with the older version',
      });
    }
    const store = new VersionStore();
    const before = store.current();
    const progress = progressLine(ref);
    say(`installing Vaultwarden from ${ref}${before ? ` (installed now: ${before.version})` : ''}`);
    let r: InstallResult;
    try {
      r = await installVaultwarden({ image, tagSuffix: suffix, ...(version ? { version } : {}), ...(progress.onProgress ? { onProgress: progress.onProgress } : {}) }, realInstallDeps(cfg, store));
    } finally {
      progress.done();
    }
    const running = await daemonRunning().catch(() => false);
    const next = !r.switched ? 'nothing to change'
      : running ? 'it runs from the agent\'s next start: systemctl restart vwstream-agent (the database is snapshotted before it migrates it)'
        : 'start it: systemctl restart vwstream-agent';
    if (args.json) {
      printJson({ installed: r.installed, previous: r.previous ?? null, downloaded: r.downloaded, switched: r.switched, pruned: r.pruned, pullMs: r.pullMs, ms: r.ms, agentRunning: running, binGiven: cfg.vaultwarden.binGiven });
    } else {
      const i = r.installed;
      if (!r.switched && !r.downloaded) say(`Vaultwarden ${i.version} is already installed and current (${i.dir})`);
      else if (!r.switched) say(`Vaultwarden ${i.version} from ${i.image} is already installed and current (${i.digest})`);
      else say(`installed Vaultwarden ${i.version} from ${i.image} (${i.digest}) into ${i.dir}${r.pulled ? `: ${r.pulled.files} files, ${humanBytes(r.pulled.bytes)}; pulled ${humanBytes(r.pulled.downloadedBytes)} in ${(r.pullMs / 1000).toFixed(1)} s` : ' (already downloaded)'}`);
      if (r.previous) say(`previous: Vaultwarden ${r.previous} (kept for vwstream-agent vaultwarden rollback)`);
      if (r.pruned.length) say(`removed older versions: ${r.pruned.join(', ')}`);
      if (cfg.vaultwarden.binGiven) say(`note: VAULTWARDEN_BIN=${cfg.vaultwardenBin} in ${cfg.source} is your own binary and keeps running; remove that line to run this version`);
      else say(next);
    }
    return EXIT.OK;
  });
}

export interface RollbackArgs extends GlobalArgs { force: boolean }

/** Rows written since the upgrade (against the marker taken when the new version first answered), or null when that cannot be told. */
async function changesSinceUpgrade(marker: string | undefined, dbPath: string): Promise<RowChanges | null> {
  if (!marker || !existsSync(marker)) return null;
  return compareRows(await readMarker(marker), rowDigests(dbPath));
}

function refusal(changes: RowChanges | null, up: { to: string; at: string; from: string | null }, from: string, when: string): AgentError {
  const what = changes
    ? `${describeChanges(changes)} changed since the upgrade to ${up.to} at ${up.at}${when}, as far as row hashes tell: the snapshot of ${up.from ?? from} does not have them`
    : `whether rows changed since the upgrade to ${up.to} at ${up.at} cannot be told (no row marker: ${up.to} never answered, or the marker was not written)`;
  return new AgentError(`${what}; nothing was changed`, {
    hint: 'vwstream-agent vaultwarden rollback --force goes back all the same (the newer database is kept aside, never deleted)', exitCode: EXIT.REFUSED,
  });
}

export function vaultwardenRollbackCommand(args: RollbackArgs): Promise<never> {
  return runCommand(async () => {
    requireRoot('vaultwarden rollback', 'it replaces the database and the Vaultwarden binary');
    const cfg = quietConfig(args);
    const say = (l: string) => { if (!args.json) process.stdout.write(`${l}\n`); };
    const st = readState().vaultwarden ?? {};
    const up = st.upgrade;
    if (!up) throw new AgentError('no upgrade to roll back: the agent has not upgraded Vaultwarden on this database since its last rollback', { hint: 'vwstream-agent status shows the version that runs; restore --timestamp goes back in time without changing the version' });
    const snapshot = join(up.snapshot, SNAPSHOT_FILE);
    if (!existsSync(snapshot)) throw new AgentError(`the snapshot taken before the upgrade to ${up.to} (${up.snapshot}) is gone (kept-aside retention: ASIDE_RETENTION_DAYS)`, { hint: 'restore --timestamp with a time before the upgrade, after installing the older version (vwstream-agent vaultwarden install --version …)' });
    if (cfg.vaultwarden.binGiven) {
      throw new AgentError(`VAULTWARDEN_BIN=${cfg.vaultwardenBin} is your own binary: the agent cannot put the previous version back`, { hint: `put Vaultwarden ${up.from ?? 'of before the upgrade'} back at ${cfg.vaultwardenBin} yourself, stop the agent and copy ${snapshot} over /var/lib/vaultwarden/db.sqlite3 (owner vaultwarden, mode 0660); or remove VAULTWARDEN_BIN and use vwstream-agent vaultwarden install` });
    }
    if (effectiveRole(cfg) === 'secondary') throw new AgentError('this host is a secondary: roll back on the primary (the secondaries follow its replica)');
    const store = new VersionStore();
    // Only a snapshot taken before a known older version was replaced is a way back.
    const from = up.from && !up.from.startsWith('sha256:') && compareVersions(up.from, up.to) < 0 ? up.from : undefined;
    if (!from) {
      throw new AgentError(`the snapshot of ${up.at} was taken before Vaultwarden ${up.to} started on a database ${up.from ? `that ${up.from} ran on (not an older version)` : 'whose earlier version is not known on this host (restored from the replica, or promoted)'}: it is not a way back to a known version`, {
        hint: `if it is what you want, stop the agent, install the version that wrote it and copy ${snapshot} over /var/lib/vaultwarden/db.sqlite3 by hand (owner vaultwarden, mode 0660)`,
      });
    }
    const rt = await runtimeFor(cfg);

    // 1. What would be lost: rows written since the new version first answered.
    const changes = await changesSinceUpgrade(up.marker, rt.dbPath);
    if ((changes === null || changes.total > 0) && !args.force) throw refusal(changes, up, from, '');
    // 2. The version to go back to, fetched first if it was removed (nothing else changes yet).
    if (!store.get(from)) {
      say(`Vaultwarden ${from} is not installed any more: installing it from ${imageToPull(cfg.vaultwarden.image, from, cfg.vaultwarden.tagSuffix)} first`);
      await installVaultwarden({ image: cfg.vaultwarden.image, version: from, tagSuffix: cfg.vaultwarden.tagSuffix, switch: false }, realInstallDeps(cfg, store));
    }
    // From here to the switch no install or prune runs beside it (one that did would fail at once).
    const release = store.lock();
    if (!store.get(from)) { release(); throw new AgentError(`Vaultwarden ${from} was removed while the rollback prepared; nothing was changed`, { hint: 'run the rollback again' }); }
    say(`rolling back Vaultwarden ${up.to} → ${from}: the database of ${up.at} (${humanBytes(up.bytes)})${changes ? `; ${describeChanges(changes)} changed since` : ''}`);
    // 3. Drain; writes during the drain count too.
    let drained: { wasRunning: boolean; systemd: Awaited<ReturnType<typeof drainAgent>>['systemd'] };
    try {
      drained = await drainAgent(cfg, say);
    } catch (err) {
      release();
      throw err;
    }
    const { wasRunning, systemd } = drained;
    const prepared = `${rt.dbPath.slice(0, rt.dbPath.lastIndexOf('/'))}/.vwstream-rollback-${process.pid}.sqlite3`;
    let rec: RollbackRecord | undefined;
    let done = false;
    let handled = false; // the refusals below start the agent again themselves
    try {
      handled = true;
      await refuseWhileWritersRun(systemd, wasRunning, say);
      handled = false;
      const after = await changesSinceUpgrade(up.marker, rt.dbPath);
      if (!args.force && (after === null || after.total > 0)) {
        handled = true;
        const again = wasRunning && systemd ? await startAgent(systemd, say).catch((e: unknown) => errorMessage(e)) : undefined;
        if (again !== undefined && again !== 'done') say(`vwstream-agent did not start again (${again}): journalctl -u vwstream-agent`);
        throw refusal(after, up, from, ' (written while the agent drained)');
      }
      // 4. The record first: a crash from here on is finished (or dropped) by the next start.
      await copyFile(snapshot, prepared);
      await chmod(prepared, 0o660);
      await chown(prepared, rt.ids.uid, rt.ids.gid);
      rec = {
        from: up.to, to: from, at: new Date().toISOString(), snapshot: up.snapshot, snapshotDigest: contentDigest(prepared),
        hold: cfg.vaultwarden.version === up.to, forced: args.force, changedRows: (after ?? changes)?.total ?? null,
      };
      const record = rec;
      await updateVaultwardenState((v) => ({ ...v, rollingBack: record }));
      const op = await performRestoreOp({
        kind: 'operator', describe: `the snapshot before the upgrade to Vaultwarden ${up.to} (${up.at})`, source: up.snapshot, dbPath: rt.dbPath, prepared,
        operatorChoice: true, reason: `rolled back Vaultwarden ${up.to} → ${from} by the operator`, asideReason: 'vaultwarden-rollback',
      }, rt.ids);
      rec.newerKeptAt = op.asideDir ?? '';
      await finishRollback(rec, { store, dbPath: rt.dbPath, updateState: (c) => updateVaultwardenState(c), now: () => new Date(), locked: true });
      done = true;
      release();
      const started = wasRunning && systemd ? await startAgent(systemd, say).catch((e: unknown) => errorMessage(e)) : undefined;
      if (args.json) {
        printJson({ rolledBack: true, from: up.to, to: from, snapshot: up.snapshot, newerKeptAt: op.asideDir, changedRows: rec.changedRows, held: rec.hold ? up.to : null, agentRestarted: started ?? null });
      } else {
        say(`Vaultwarden ${from} and the database of ${up.at} are in place; the newer database is kept at ${op.asideDir} (never deleted)`);
        if (rec.hold) say(`VAULTWARDEN_VERSION=${up.to} still names the newer version: the agent keeps ${from} until you change it (VAULTWARDEN_VERSION=${from} to stay, or a newer version)`);
        say('files (attachments, sends) are not rolled back: the ones added since the upgrade stay');
        if (started === undefined) say('start it: systemctl start vwstream-agent (Litestream continues from the restored database as a new generation)');
        else if (started === 'done') say('vwstream-agent serves it again; Litestream continues from the restored database as a new generation');
        else say(`vwstream-agent did not start again (${started}): journalctl -u vwstream-agent`);
      }
      return started === undefined || started === 'done' ? EXIT.OK : EXIT.FAILED;
    } catch (err) {
      if (!done) {
        release();
        // Not left stopped: a rollback that had not replaced the database is dropped and the
        // agent serves the newer version again; one that had is finished by the agent's start.
        if (rec && !rollbackReplacedDb(rec, { dbPath: rt.dbPath })) await updateVaultwardenState((v) => { const { rollingBack: _, ...rest } = v; return rest; }).catch(() => undefined);
        if (!handled && wasRunning && systemd) {
          const again = await startAgent(systemd, say).catch((e: unknown) => errorMessage(e));
          say(again === 'done' ? 'vwstream-agent was started again' : `vwstream-agent did not start again (${again}): journalctl -u vwstream-agent`);
        }
      }
      throw err;
    } finally {
      systemd?.disconnect();
      if (!isRecordedCopy(prepared)) await removeDbCopy(prepared).catch(() => undefined);
    }
  });
}
