import './cli/early-signals.ts'; // first: see the module
import yargs from 'yargs';
import { EXIT } from './errors.ts';
import { VERSION } from './version.ts';
import { checkConfigCommand } from './cli/check-config.ts';
import { doctorCommand } from './cli/doctor.ts';
import { confirmSyncCommand } from './cli/confirm-sync.ts';
import { stopWritersCommand } from './cli/stop-writers.ts';
import { syncCommand } from './cli/sync.ts';
import { promoteCommand } from './cli/promote.ts';
import { backupCommand } from './cli/backup.ts';
import { generationsCommand } from './cli/generations.ts';
import { snapshotsCommand } from './cli/snapshots.ts';
import { verifyCommand } from './cli/verify.ts';
import { keepLocalCommand } from './cli/keep-local.ts';
import { restoreCommand } from './cli/restore.ts';
import { runDaemon } from './cli/run.ts';
import { asideListCommand, asidePruneCommand } from './cli/aside.ts';
import { healthCommand, statusCommand } from './cli/status.ts';
import { vaultwardenInstallCommand, vaultwardenRollbackCommand } from './cli/vaultwarden.ts';
import { PATHS } from './paths.ts';
import { reportError, setJsonOutput, wantsJson, type GlobalArgs } from './cli/common.ts';
import { AgentError } from './errors.ts';

/** yargs does not carry global options into a command's inferred type. */
const g = (a: unknown) => a as GlobalArgs;

await yargs(process.argv.slice(2))
  .scriptName('vwstream-agent')
  .usage('$0 <command> [--json]')
  .epilogue([
    'Runs Vaultwarden under systemd; its SQLite database streams to S3 (Litestream).',
    'Configuration: /etc/vwstream/vwstream.env (see check-config).',
    'Exit codes: 0 ok, 1 failed, 64 usage, 65 refused (needs your decision), 69 agent not running,',
    '77 needs root, 78 config. With --json, an error is one JSON object on stdout: {"error": {message, key, value, allowed, hint, exitCode}}.',
  ].join('\n'))
  .option('config', { type: 'string', default: PATHS.configFile, requiresArg: true, describe: 'Configuration file', global: true })
  .option('json', { type: 'boolean', default: false, describe: 'Machine-readable output', global: true })
  .command('run', 'Run the daemon (what vwstream-agent.service starts)', {}, (a) => runDaemon(g(a)))
  .command('status', 'One-screen summary of the running agent (--json: role, state, lastDbSync, units, …)', {}, (a) => statusCommand(g(a)))
  .command('health', 'Health checks; exit 0 when healthy, 1 when not', {}, (a) => healthCommand(g(a)))
  .command('check-config', 'Validate the configuration without starting anything (exit 78 on an error)', (y) => y.option('strict', { type: 'boolean', default: false, describe: 'Exit 78 on a warning too (likely typos, duplicated keys, lines bash reads differently)' }), (a) => checkConfigCommand({ ...g(a), strict: a.strict }))
  .command('doctor', 'Check everything the agent depends on (config, Vaultwarden, port, S3, remotes, disk, clock, timers, socket): each ok/warn/FAIL with the fix; exit 0 when nothing FAILs, 1 otherwise, 78 when the config does not load, 77 not root', {}, (a) => doctorCommand(g(a)))
  .command('sync', 'Mirror attachments, sends, config.json and rsa_key* now (what vwstream-sync.timer runs)', {}, (a) => syncCommand(g(a)))
  .command('backup', 'Back up now: DB snapshot + files → archive (encrypted with BACKUP_PASSWORD) → every BACKUP_REMOTES destination → retention (what vwstream-backup.timer runs)', {}, (a) => backupCommand(g(a)))
  .command('confirm-sync', false, {}, () => confirmSyncCommand())
  .command('stop-writers', false, {}, (a) => stopWritersCommand(g(a)))
  .command('generations', 'List the generations the replica holds (first/last time, size) and the oldest restorable point', {}, (a) => generationsCommand(g(a)))
  .command('snapshots', 'List the snapshots (full copies) the replica holds', {}, (a) => snapshotsCommand(g(a)))
  .command('verify', 'Restore drill: restore the latest replica (database and files) into a temporary directory, check it against the live data, remove it; exit 0/1 (what vwstream-verify.timer runs)', {}, (a) => verifyCommand(g(a)))
  .command(
    'restore',
    'Restore from the replica (latest, or a point in time) or a backup. Without --to it replaces the live data: refused over a vault with data unless --force, which drains the agent, keeps the current data aside, restores and starts the agent again',
    (y) => y
      .option('force', { type: 'boolean', default: false, describe: 'Replace a local vault that holds data (it is kept aside, never deleted)' })
      .option('to', { type: 'string', describe: 'Write a restored copy to this path and touch nothing live' })
      .option('backup', { type: 'string', describe: 'Restore database and files from a backup archive: a local file or rclone remote:path (decrypted with BACKUP_PASSWORD)' })
      .option('timestamp', { type: 'string', describe: 'Restore to this point in time: RFC 3339 with a zone (2026-11-25T10:00:00Z) or relative ("10 minutes ago")' })
      .option('generation', { type: 'string', describe: 'Restore this generation (see vwstream-agent generations)' })
      .option('index', { type: 'string', describe: 'Restore up to this WAL index (decimal as litestream wal lists it, or 0x… hex); the newest generation unless --generation' }),
    (a) => restoreCommand({ ...g(a), ...a }),
  )
  .command(
    'promote',
    'Turn this secondary into the primary (refused while a live primary holds the lease; --force takes it). Persists in /var/lib/vwstream/role-override',
    (y) => y.option('force', { type: 'boolean', default: false, describe: 'Take the lease even if another primary holds it (only when that host is dead)' }),
    (a) => promoteCommand({ ...g(a), force: a.force }),
  )
  .command('keep-local', 'After a refused start: keep the local vault; it becomes the replica\'s newest generation', {}, (a) => keepLocalCommand(g(a)))
  .command(
    'aside',
    'List the data the agent kept aside under /var/lib/vwstream/aside instead of deleting it (reason, time, size, path) and what the retention rule (ASIDE_MIN_KEEP, ASIDE_RETENTION_DAYS) prunes',
    (y) => y
      .command(
        'prune',
        'Apply the retention rule now and print what was removed (root only). Per reason the ASIDE_MIN_KEEP newest and everything younger than ASIDE_RETENTION_DAYS are kept; entries the agent did not make are never touched',
        (yy) => yy
          .option('dry-run', { type: 'boolean', default: false, describe: 'Only print what would be removed' })
          .epilogue('Exit codes: 0 ok, 1 failed (a folder could not be read or removed), 64 usage, 77 not root, 78 config.'),
        (a) => asidePruneCommand({ ...g(a), dryRun: a['dry-run'] }),
      )
      .epilogue('Exit codes: 0 ok, 1 failed (the folder cannot be read), 64 usage, 77 not root, 78 config.'),
    (a) => asideListCommand(g(a)),
  )
  .command(
    'vaultwarden',
    'Vaultwarden itself: install it from its official image (no Docker needed) and roll an upgrade back',
    (y) => y
      .command(
        'install',
        `Install Vaultwarden and its web vault from an OCI image (default VAULTWARDEN_IMAGE, Docker Hub's vaultwarden/server) into ${PATHS.vaultwardenDir}/<version>, every blob checked against its sha256; switched to atomically, the previous version kept for rollback, older ones removed. Nothing changes on a failure. It runs from the agent's next start (the database is snapshotted before it migrates)`,
        (yy) => yy
          .version(false)
          .option('version', { type: 'string', requiresArg: true, describe: 'The version (the image tag), e.g. 1.32.7; default VAULTWARDEN_VERSION, else latest' })
          .option('image', { type: 'string', requiresArg: true, describe: 'An image reference instead of VAULTWARDEN_IMAGE, e.g. vaultwarden/server:1.32.7 or registry.example/vw@sha256:…' })
          .epilogue('Exit codes: 0 ok, 1 failed (registry unreachable, unknown tag, no linux/amd64, digest mismatch, disk full: nothing changed), 64 usage, 77 not root, 78 config.'),
        (a) => vaultwardenInstallCommand({ ...g(a), ...(a.version ? { version: String(a.version) } : {}), ...(a.image ? { image: a.image } : {}) }),
      )
      .command(
        'rollback',
        'Undo the last upgrade: drain, put back the previous version and the snapshot taken before the upgrade (the newer database is kept aside), start. Refused (65) when rows changed since the upgrade unless --force',
        (yy) => yy
          .option('force', { type: 'boolean', default: false, describe: 'Roll back even though rows were written since the upgrade (they stay in the newer database, kept aside)' })
          .epilogue('Exit codes: 0 ok, 1 failed, 64 usage, 65 refused (writes since the upgrade; --force), 77 not root, 78 config.'),
        (a) => vaultwardenRollbackCommand({ ...g(a), force: a.force }),
      )
      .demandCommand(1, 'Name a vaultwarden command: install or rollback'),
    () => undefined,
  )
  // Hidden: prints the bash completion script (the package ships it, made at build time).
  .completion('completion', false)
  .demandCommand(1, 'Name a command; see --help')
  .recommendCommands()
  .strict()
  .version(VERSION)
  .help()
  .alias('h', 'help')
  .wrap(Math.min(110, process.stdout.columns || 100))
  .middleware((a) => setJsonOutput(Boolean(a.json)))
  // --config= (empty) is a usage error like --config with no value, not "the file '' is missing".
  .check((a) => a.config !== '' || 'Not enough arguments following: config (an empty --config names no file)')
  .fail((msg, err, y) => {
    if (err instanceof Error && err.name !== 'YError') throw err; // yargs' own parse errors (e.g. --config without a value) are usage
    void y;
    msg = msg || (err instanceof Error ? err.message : typeof err === 'string' ? err : '') || 'bad usage';
    // yargs' suggestion alone ("Did you mean status?") does not say what was wrong.
    if (/^Did you mean /.test(msg)) {
      const argv = process.argv.slice(2);
      const typed = argv.find((a, i) => !a.startsWith('-') && argv[i - 1] !== '--config');
      if (typed) msg = `unknown command '${typed}'. ${msg}`;
    }
    if (wantsJson(process.argv.slice(2))) {
      process.exit(reportError(new AgentError(msg, { hint: 'vwstream-agent --help', exitCode: EXIT.USAGE }), true));
    }
    process.stderr.write(`vwstream-agent: ${msg}\nRun vwstream-agent --help for usage.\n`);
    process.exit(EXIT.USAGE);
  })
  .parseAsync();
