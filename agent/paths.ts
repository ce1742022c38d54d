/** Fixed locations of the contract. Functions take paths as arguments so tests can point them elsewhere. */
export const PATHS = {
  configFile: '/etc/vwstream/vwstream.env',
  dataFolder: '/var/lib/vaultwarden',
  dbFile: '/var/lib/vaultwarden/db.sqlite3',
  stateDir: '/var/lib/vwstream',
  stateFile: '/var/lib/vwstream/state.json',
  asideDir: '/var/lib/vwstream/aside',
  /** Default LOCAL_REPLICA_PATH: backups live under /var/backups, and purge keeps them. */
  localReplica: '/var/backups/vwstream/replica',
  /** Where releases before 0.1.1 kept the default directory replica (postinst moves it). */
  legacyLocalReplica: '/var/lib/vwstream/replica',
  runDir: '/run/vwstream',
  socket: '/run/vwstream/agent.sock',
  litestreamConfig: '/run/vwstream/litestream.yml',
  vaultwardenEnv: '/run/vwstream/vaultwarden.env',
  /** What confirm-sync (Litestream's ExecStop) needs, written by the agent. */
  drainInfo: '/run/vwstream/drain.json',
  /** confirm-sync's verdict, read by the agent's drain. */
  finalSync: '/run/vwstream/final-sync.json',
  /** This agent's instance id for the lease: created at the first start of a boot (see replication/instance.ts). */
  instanceFile: '/run/vwstream/instance.json',
  /** Root-only socket (0600) for the API's state-changing requests; agent.sock serves reads to group vwstream. */
  controlSocket: '/run/vwstream/control.sock',
  filesManifest: '/var/lib/vwstream/files-manifest.json',
  /** A file restore in progress (removed when it completes; the next start finishes it). */
  filesRestore: '/var/lib/vwstream/files-restore.json',
  /** Staging for downloads and snapshots, never inside the data folder. */
  tmpDir: '/var/lib/vwstream/tmp',
  /** Written by `promote`: the role that overrides NODE_ROLE (delete it to undo). */
  roleOverride: '/var/lib/vwstream/role-override',
  litestreamBin: '/usr/lib/vwstream-agent/bin/litestream',
  /** Vaultwarden versions installed from its image: `<version>/` each, `current` and `previous` links. */
  vaultwardenDir: '/var/lib/vwstream/vaultwarden',
  defaultVaultwardenBin: '/usr/bin/vaultwarden',
} as const;

export const UNITS = {
  agent: 'vwstream-agent.service',
  vaultwarden: 'vwstream-vaultwarden.service',
  litestream: 'vwstream-litestream.service',
  syncTimer: 'vwstream-sync.timer',
  backup: 'vwstream-backup.service',
  backupTimer: 'vwstream-backup.timer',
  verify: 'vwstream-verify.service',
  verifyTimer: 'vwstream-verify.timer',
} as const;

export const SERVICE_USER = 'vaultwarden';
/**
 * Litestream runs as its own system user, a member of SERVICE_USER's group (the data
 * folder and the database are group-writable): the S3 credentials in litestream.yml are
 * readable by this user only, never by Vaultwarden's.
 */
export const LITESTREAM_USER = 'vwstream-litestream';
export const API_GROUP = 'vwstream';
