import { readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { parseEnvFile, type EnvEntry } from './envfile.ts';
import { AGENT_PREFIXES, SCHEMA, checkKey, type KeyDef } from './schema.ts';

export type Role = 'primary' | 'secondary';
export type Profile = 'critical' | 'standard' | 'relaxed';

export interface S3Settings {
  provider: string;
  bucket: string;
  endpoint: string | undefined;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  prefix: string;
  acl: string | undefined;
  noCheckBucket: boolean;
  forcePathStyle: boolean;
  skipVerify: boolean;
}

export interface Config {
  source: string;
  /** null = the embedded default: a local directory replica. */
  s3: S3Settings | null;
  localReplicaPath: string;
  rcloneRemoteName: string;
  rcloneFlags: string;
  /** RCLONE_CONFIG_* variables, passed to rclone only. */
  rcloneEnv: Record<string, string>;
  role: Role;
  deploymentMode: 'persistent' | 'serverless';
  secondaryServe: boolean;
  primarySyncIntervalMs: number;
  secondarySyncIntervalMs: number;
  syncInclude: { attachments: boolean; sends: boolean; config: boolean; rsaKey: boolean; iconCache: boolean };
  syncShutdownTimeoutMs: number;
  litestream: {
    syncIntervalMs: number;
    snapshotIntervalMs: number;
    retentionMs: number;
    shutdownTimeoutMs: number;
    profile: Profile;
  };
  backup: {
    enabled: boolean; cron: string; format: 'tar.gz' | 'tar'; password: string; remotes: string[];
    retentionDays: number; minKeep: number; onStartup: boolean; shutdownTimeoutMs: number;
  };
  notification: { url: string | undefined; timeoutMs: number };
  tailscale: {
    enabled: boolean; authKey: string; hostname: string; loginServer: string | undefined; tags: string[];
    serveMode: 'https' | 'tls-terminated-tcp'; servePort: number; funnel: boolean;
  };
  vaultwardenBin: string;
  stopGracePeriodMs: number;
  leaseTtlMs: number;
  healthcheckMaxSyncAgeMs: number;
  verifyCron: string;
  /** Retention of /var/lib/vwstream/aside (ASIDE_MIN_KEEP per reason, ASIDE_RETENTION_DAYS). */
  aside: { minKeep: number; retentionDays: number };
  metricsListen: string;
  logLevel: string;
  rocketPort: number;
  rocketAddress: string;
  /** The environment Vaultwarden runs with: every unknown key unchanged, DATA_FOLDER fixed. */
  vaultwardenEnv: Record<string, string>;
  /** Non-fatal findings (likely typos), shown by check-config and logged at start. */
  warnings: string[];
  /** Values that must never appear in logs or argv. */
  secrets: string[];
}

export const PROFILES: Record<Profile, { snapshotIntervalMs: number; retentionMs: number }> = {
  critical: { snapshotIntervalMs: 1 * 3_600_000, retentionMs: 336 * 3_600_000 },
  standard: { snapshotIntervalMs: 6 * 3_600_000, retentionMs: 168 * 3_600_000 },
  relaxed: { snapshotIntervalMs: 24 * 3_600_000, retentionMs: 72 * 3_600_000 },
};

/** Vaultwarden keys that are the agent's to decide or that would defeat replication. */
function checkVaultwardenKeys(env: Map<string, EnvEntry>, where: (k: string) => string, dataFolder: string): void {
  const df = env.get('DATA_FOLDER');
  if (df && df.value.replace(/\/+$/, '') !== dataFolder) {
    throw new ConfigError('DATA_FOLDER', df.value, `the data folder is fixed to ${dataFolder} by vwstream-agent; remove the line`, where('DATA_FOLDER'));
  }
  const dbUrl = env.get('DATABASE_URL');
  if (dbUrl) {
    const path = dbUrl.value.replace(/^sqlite:\/\//, '');
    if (path !== `${dataFolder}/db.sqlite3`) {
      throw new ConfigError('DATABASE_URL', dbUrl.value, `expected the data folder's SQLite file ${dataFolder}/db.sqlite3 (only SQLite is replicated); remove the line`, where('DATABASE_URL'));
    }
  }
  const wal = env.get('ENABLE_DB_WAL');
  if (wal && ['false', '0', 'no', 'off'].includes(wal.value.toLowerCase())) {
    throw new ConfigError('ENABLE_DB_WAL', wal.value, 'expected true: Litestream replicates the WAL', where('ENABLE_DB_WAL'));
  }
  const init = env.get('DATABASE_CONN_INIT');
  if (init && /journal_mode/i.test(init.value)) {
    throw new ConfigError('DATABASE_CONN_INIT', init.value, 'must not change journal_mode: Litestream needs WAL', where('DATABASE_CONN_INIT'));
  }
}

/** Validates a parsed env file into a Config. Throws ConfigError naming the first bad key. */
export function buildConfig(env: Map<string, EnvEntry>, source: string, paths: { dataFolder: string } = PATHS): Config {
  const where = (k: string) => `${source} line ${env.get(k)?.line}`;
  const raw = (k: string): string | undefined => {
    const e = env.get(k);
    return e === undefined || e.value === '' ? undefined : e.value;
  };
  function get<T>(def: KeyDef<T>): T;
  function get<T>(def: KeyDef<T>, optional: true): T | undefined;
  function get<T>(def: KeyDef<T>, optional?: boolean): T | undefined {
    const given = raw(def.key);
    if (given !== undefined) return checkKey(def, given, where(def.key));
    if (def.default === undefined || def.default === '') {
      if (optional) return undefined;
      return def.parse('') as T;
    }
    return checkKey(def, def.default);
  }
  const S = SCHEMA;

  const bucket = get(S.S3_BUCKET, true);
  let s3: S3Settings | null = null;
  if (bucket) {
    for (const k of ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'] as const) {
      if (!raw(k)) throw new ConfigError(k, raw(k), `a value is required when S3_BUCKET is set (S3_BUCKET=${bucket})`);
    }
    const endpoint = get(S.S3_ENDPOINT, true);
    s3 = {
      provider: get(S.S3_PROVIDER),
      bucket,
      endpoint,
      region: get(S.S3_REGION),
      accessKeyId: raw('S3_ACCESS_KEY_ID')!,
      secretAccessKey: raw('S3_SECRET_ACCESS_KEY')!,
      prefix: get(S.S3_PREFIX),
      acl: get(S.S3_ACL, true),
      noCheckBucket: get(S.S3_NO_CHECK_BUCKET),
      forcePathStyle: get(S.LITESTREAM_FORCE_PATH_STYLE, true) ?? endpoint !== undefined,
      skipVerify: get(S.LITESTREAM_SKIP_VERIFY),
    };
  } else {
    // Validate them anyway: a typo in an unused key is still a typo.
    for (const k of ['S3_ENDPOINT', 'S3_REGION', 'S3_PREFIX', 'S3_ACL', 'S3_NO_CHECK_BUCKET', 'S3_PROVIDER', 'LITESTREAM_FORCE_PATH_STYLE', 'LITESTREAM_SKIP_VERIFY'] as const) get(S[k] as KeyDef<unknown>, true);
  }

  const profile = get(S.LITESTREAM_PROFILE);
  const role = get(S.NODE_ROLE);
  const backupEnabled = get(S.BACKUP_ENABLED);
  const remotes = get(S.BACKUP_REMOTES, true) ?? [];
  if (backupEnabled && remotes.length === 0) {
    throw new ConfigError('BACKUP_REMOTES', raw('BACKUP_REMOTES'), 'expected at least one rclone destination remote:path when BACKUP_ENABLED=true');
  }
  const tsEnabled = get(S.TAILSCALE_ENABLED);
  if (tsEnabled && get(S.TAILSCALE_FUNNEL) && ![443, 8443, 10000].includes(get(S.TAILSCALE_SERVE_PORT))) {
    throw new ConfigError('TAILSCALE_SERVE_PORT', raw('TAILSCALE_SERVE_PORT'), 'expected 443, 8443 or 10000: the ports Tailscale Funnel offers (TAILSCALE_FUNNEL=true)', where('TAILSCALE_SERVE_PORT'));
  }

  checkVaultwardenKeys(env, where, paths.dataFolder);

  const rcloneEnv: Record<string, string> = {};
  const vaultwardenEnv: Record<string, string> = {};
  const warnings: string[] = [];
  for (const [k, e] of env) {
    if (k in SCHEMA && !['ROCKET_PORT', 'ROCKET_ADDRESS'].includes(k)) continue;
    if (k.startsWith('RCLONE_CONFIG_')) { rcloneEnv[k] = e.value; continue; }
    if (!(k in SCHEMA) && AGENT_PREFIXES.some((p) => k.startsWith(p))) {
      warnings.push(`${k} (${where(k)}) is not a vwstream-agent setting and is passed to Vaultwarden; is it a typo?`);
    }
    vaultwardenEnv[k] = e.value;
  }
  const rocketPort = get(S.ROCKET_PORT);
  const rocketAddress = get(S.ROCKET_ADDRESS);
  const vaultwardenBin = get(S.VAULTWARDEN_BIN);
  Object.assign(vaultwardenEnv, {
    DATA_FOLDER: paths.dataFolder,
    DATABASE_URL: `${paths.dataFolder}/db.sqlite3`,
    ENABLE_DB_WAL: 'true',
    ROCKET_PORT: String(rocketPort),
    ROCKET_ADDRESS: rocketAddress,
    VAULTWARDEN_BIN: vaultwardenBin,
  });

  const cfg: Config = {
    source,
    s3,
    localReplicaPath: get(S.LOCAL_REPLICA_PATH),
    rcloneRemoteName: get(S.RCLONE_REMOTE_NAME),
    rcloneFlags: get(S.RCLONE_FLAGS, true) ?? '',
    rcloneEnv,
    role,
    deploymentMode: get(S.DEPLOYMENT_MODE),
    secondaryServe: get(S.SECONDARY_SERVE),
    primarySyncIntervalMs: get(S.PRIMARY_SYNC_INTERVAL),
    secondarySyncIntervalMs: get(S.SECONDARY_SYNC_INTERVAL),
    syncInclude: {
      attachments: get(S.SYNC_INCLUDE_ATTACHMENTS),
      sends: get(S.SYNC_INCLUDE_SENDS),
      config: get(S.SYNC_INCLUDE_CONFIG),
      rsaKey: get(S.SYNC_INCLUDE_RSA_KEY),
      iconCache: get(S.SYNC_INCLUDE_ICON_CACHE),
    },
    syncShutdownTimeoutMs: get(S.SYNC_SHUTDOWN_TIMEOUT),
    litestream: {
      syncIntervalMs: get(S.LITESTREAM_SYNC_INTERVAL),
      snapshotIntervalMs: get(S.LITESTREAM_SNAPSHOT_INTERVAL, true) ?? PROFILES[profile].snapshotIntervalMs,
      retentionMs: get(S.LITESTREAM_RETENTION, true) ?? PROFILES[profile].retentionMs,
      shutdownTimeoutMs: get(S.LITESTREAM_SHUTDOWN_TIMEOUT),
      profile,
    },
    backup: {
      enabled: backupEnabled,
      cron: get(S.BACKUP_CRON),
      format: get(S.BACKUP_FORMAT),
      password: raw('BACKUP_PASSWORD') ?? '',
      remotes,
      retentionDays: get(S.BACKUP_RETENTION_DAYS),
      minKeep: get(S.BACKUP_MIN_KEEP),
      onStartup: get(S.BACKUP_ON_STARTUP),
      shutdownTimeoutMs: get(S.BACKUP_SHUTDOWN_TIMEOUT),
    },
    notification: { url: get(S.NOTIFICATION_URL, true), timeoutMs: get(S.NOTIFICATION_TIMEOUT) },
    tailscale: {
      enabled: tsEnabled,
      authKey: raw('TAILSCALE_AUTHKEY') ?? '',
      hostname: get(S.TAILSCALE_HOSTNAME),
      loginServer: get(S.TAILSCALE_LOGIN_SERVER, true),
      tags: get(S.TAILSCALE_TAGS, true) ?? [],
      serveMode: get(S.TAILSCALE_SERVE_MODE),
      servePort: get(S.TAILSCALE_SERVE_PORT),
      funnel: get(S.TAILSCALE_FUNNEL),
    },
    vaultwardenBin,
    stopGracePeriodMs: get(S.STOP_GRACE_PERIOD),
    leaseTtlMs: get(S.LEASE_TTL),
    healthcheckMaxSyncAgeMs: get(S.HEALTHCHECK_MAX_SYNC_AGE),
    verifyCron: get(S.VERIFY_CRON),
    aside: { minKeep: get(S.ASIDE_MIN_KEEP), retentionDays: get(S.ASIDE_RETENTION_DAYS) },
    metricsListen: get(S.METRICS_LISTEN),
    logLevel: get(S.LOG_LEVEL),
    rocketPort,
    rocketAddress,
    vaultwardenEnv,
    warnings,
    secrets: [],
  };
  cfg.secrets = collectSecrets(env);
  return cfg;
}

function collectSecrets(env: Map<string, EnvEntry>): string[] {
  const secretKeys = Object.values(SCHEMA).filter((d) => d.secret).map((d) => d.key);
  const out: string[] = [];
  for (const [k, e] of env) {
    const isSecret = secretKeys.includes(k) || (!(k in SCHEMA) && /(SECRET|PASSWORD|PASS|TOKEN|_KEY|SKEY|AUTHKEY)$/.test(k));
    if (isSecret && e.value.length >= 4 && !/^(true|false|\d+)$/i.test(e.value)) out.push(e.value);
  }
  return out;
}

/** Reads and validates the config file. Throws ConfigError (exit 78) naming the key. */
export function loadConfig(path: string = PATHS.configFile): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError('config file', path, code === 'ENOENT' ? 'file not found (reinstall the package or create it)' : `cannot be read (${code})`);
  }
  const st = statSync(path);
  const cfg = buildConfig(parseEnvFile(text, path), path);
  if ((st.mode & 0o004) !== 0) {
    cfg.warnings.push(`${path} is world-readable (mode ${(st.mode & 0o777).toString(8)}); it holds secrets: chmod 600 ${path}`);
  }
  return cfg;
}

/** Where the replica lives, for messages: s3://bucket/prefix or file:///path. */
export function replicaUrl(cfg: Config): string {
  return cfg.s3 ? `s3://${cfg.s3.bucket}/${cfg.s3.prefix ? cfg.s3.prefix + '/' : ''}db` : `file://${cfg.localReplicaPath}`;
}
