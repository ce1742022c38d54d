import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import { PATHS } from '../paths.ts';
import { drainBudgetOf } from './budget.ts';
import { formatHuman } from './duration.ts';
import { EnvMap, isSecretKey, parseEnvFile, type EnvEntry } from './envfile.ts';
import { orList, suggestKey } from './keys.ts';
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
  /** The operator's VAULTWARDEN_BIN, or its default (see `vaultwarden` for what runs). */
  vaultwardenBin: string;
  vaultwarden: {
    /** VAULTWARDEN_BIN is set in the config: the operator's binary runs, nothing is installed. */
    binGiven: boolean;
    /** VAULTWARDEN_VERSION: the pin installed at start. */
    version: string | undefined;
    /** VAULTWARDEN_IMAGE as written. */
    image: string;
    /** VAULTWARDEN_TAG_SUFFIX: the tag of a version is `<version><suffix>`. */
    tagSuffix: string;
    registryAuth: { username: string; password: string } | undefined;
  };
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
      throw new ConfigError('DATABASE_URL', dbUrl.value.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:<hidden>@'), `expected the data folder's SQLite file ${dataFolder}/db.sqlite3 (only SQLite is replicated); remove the line`, where('DATABASE_URL'));
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

/**
 * The rclone config file the agent's rclone reads (RCLONE_CONFIG in its environment, an
 * env-file RCLONE_CONFIG= wins). Not root's ~/.config/rclone/rclone.conf: the units run
 * with ProtectHome=yes, so a remote defined there would work from a root shell and fail
 * in every timer backup. /etc/vwstream is readable inside the units.
 */
export const DEFAULT_RCLONE_CONFIG = '/etc/vwstream/rclone.conf';
/** Where an operator's own rclone config usually is: checked only to say why it is not used. */
const ROOT_RCLONE_CONFIG = '/root/.config/rclone/rclone.conf';

export interface BuildOptions {
  dataFolder: string;
  /** rclone's config file whose [sections] define remotes; default RCLONE_CONFIG or DEFAULT_RCLONE_CONFIG. */
  rcloneConfigPath?: string;
  /** Root's own rclone config (tests). */
  rootRcloneConfigPath?: string;
}

/** Validates a parsed env file into a Config. Throws ConfigError naming the first bad key. */
export function buildConfig(env: Map<string, EnvEntry>, source: string, paths: BuildOptions = PATHS): Config {
  const where = (k: string) => `${source} line ${env.get(k)?.line}`;
  const warnings: string[] = env instanceof EnvMap ? [...env.warnings] : [];
  checkKeyNames(env, where, warnings);
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
  for (const [k, e] of env) {
    if (k in SCHEMA && !['ROCKET_PORT', 'ROCKET_ADDRESS'].includes(k)) continue;
    if (k.startsWith('RCLONE_CONFIG_') || k === 'RCLONE_CONFIG') { rcloneEnv[k] = e.value; continue; }
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
    vaultwarden: {
      binGiven: raw('VAULTWARDEN_BIN') !== undefined,
      version: get(S.VAULTWARDEN_VERSION, true),
      image: get(S.VAULTWARDEN_IMAGE),
      // Empty is a value here (bare version tags), not "unset".
      tagSuffix: env.get('VAULTWARDEN_TAG_SUFFIX')?.value === '' ? '' : get(S.VAULTWARDEN_TAG_SUFFIX),
      registryAuth: raw('VAULTWARDEN_REGISTRY_USERNAME') ? { username: raw('VAULTWARDEN_REGISTRY_USERNAME')!, password: raw('VAULTWARDEN_REGISTRY_PASSWORD') ?? '' } : undefined,
    },
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
  crossChecks(cfg, env, where, paths.rcloneConfigPath ?? raw('RCLONE_CONFIG') ?? DEFAULT_RCLONE_CONFIG, paths.rootRcloneConfigPath ?? ROOT_RCLONE_CONFIG);
  return cfg;
}

/**
 * Unknown keys: the same as an agent key but for case is an error (the setting would
 * silently not apply, e.g. s3_bucket leaves the replica local); one close to a known
 * agent or Vaultwarden key, or with an agent prefix, is a warning (it is passed to
 * Vaultwarden, which ignores it).
 */
function checkKeyNames(env: Map<string, EnvEntry>, where: (k: string) => string, warnings: string[]): void {
  for (const [k, e] of env) {
    const s = suggestKey(k);
    if (s?.caseOfAgentKey) {
      throw new ConfigError(k, isSecretKey(s.keys[0]!) ? '<hidden>' : e.value, `keys are case-sensitive; did you mean ${s.keys[0]}?`, where(k));
    }
    if (s && s.keys.length === 1 && s.keys[0] === k.toUpperCase()) {
      warnings.push(`${k} (${where(k)}): keys are case-sensitive and Vaultwarden ignores ${k}; did you mean ${s.keys[0]}?`);
    } else if (s) {
      warnings.push(`${k} (${where(k)}) is not a vwstream-agent or Vaultwarden setting (it is passed to Vaultwarden, which ignores it); did you mean ${orList(s.keys)}?`);
    } else if (!(k in SCHEMA) && AGENT_PREFIXES.some((p) => k.startsWith(p))) {
      warnings.push(`${k} (${where(k)}) is not a vwstream-agent setting and is passed to Vaultwarden; is it a typo?`);
    }
  }
}

/** rclone's name for a remote in the environment: RCLONE_CONFIG_<upper, - → _>_TYPE. */
const envRemote = (name: string) => name.toUpperCase().replace(/-/g, '_');

/** The [section] names of an rclone config file; null = exists but cannot be read. */
export function rcloneConfigRemotes(path: string): string[] | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? [] : null;
  }
  return [...text.matchAll(/^[ \t]*\[([^\]\r\n]+)\][ \t]*$/gm)].map((m) => m[1]!.trim());
}

/** Settings that are each valid but wrong together (errors), or likely mistakes (warnings). */
function crossChecks(cfg: Config, env: Map<string, EnvEntry>, where: (k: string) => string, rcloneConfigPath: string, rootRcloneConfig: string): void {
  const given = (k: string) => env.get(k) !== undefined && env.get(k)!.value !== '';
  // BACKUP_REMOTES: every remote must be defined somewhere rclone looks.
  const remotes = cfg.backup.remotes.filter((d) => !d.startsWith('/')).map((d) => d.slice(0, d.indexOf(':')));
  if (remotes.length > 0) {
    const defined = new Set<string>();
    if (cfg.s3) defined.add(envRemote(cfg.rcloneRemoteName));
    for (const k of env.keys()) {
      const m = /^RCLONE_CONFIG_(.+)_TYPE$/.exec(k);
      if (m) defined.add(m[1]!);
    }
    const fromFile = rcloneConfigRemotes(rcloneConfigPath);
    for (const r of remotes) {
      if (defined.has(envRemote(r)) || fromFile === null || fromFile.includes(r)) continue;
      const s3Hint = cfg.s3 ? `, or use the S3 remote ${cfg.rcloneRemoteName}:` : '';
      const inRoot = rcloneConfigPath !== rootRcloneConfig && (rcloneConfigRemotes(rootRcloneConfig) ?? []).includes(r)
        ? ` (it is in ${rootRcloneConfig}, which the agent's units cannot read: they run with ProtectHome=yes)` : '';
      throw new ConfigError('BACKUP_REMOTES', env.get('BACKUP_REMOTES')?.value, `rclone remote "${r}" is not defined${inRoot}: define it with RCLONE_CONFIG_${envRemote(r)}_TYPE=… (and its other RCLONE_CONFIG_${envRemote(r)}_* settings) in ${cfg.source} or as [${r}] in ${rcloneConfigPath}${s3Hint}`, where('BACKUP_REMOTES'));
    }
    if (fromFile === null) cfg.warnings.push(`${rcloneConfigPath} cannot be read: BACKUP_REMOTES remotes defined there were not checked`);
    if (/^\/(root|home|run\/user)(\/|$)/.test(rcloneConfigPath)) cfg.warnings.push(`RCLONE_CONFIG=${rcloneConfigPath} is under a home directory, which the agent's units cannot read (ProtectHome=yes): move it to ${DEFAULT_RCLONE_CONFIG}`);
  }
  // Litestream: a snapshot must exist within the retention window.
  const ls = cfg.litestream;
  if (ls.snapshotIntervalMs > ls.retentionMs) {
    const retention = given('LITESTREAM_RETENTION') ? `LITESTREAM_RETENTION=${env.get('LITESTREAM_RETENTION')!.value}` : `the retention of LITESTREAM_PROFILE=${ls.profile} (${formatHuman(ls.retentionMs)})`;
    throw new ConfigError('LITESTREAM_SNAPSHOT_INTERVAL', env.get('LITESTREAM_SNAPSHOT_INTERVAL')?.value ?? formatHuman(ls.snapshotIntervalMs),
      `the snapshot interval (${formatHuman(ls.snapshotIntervalMs)}) is longer than ${retention}: some of the time no snapshot would be kept to restore from; make it at most ${formatHuman(ls.retentionMs)}`,
      given('LITESTREAM_SNAPSHOT_INTERVAL') ? where('LITESTREAM_SNAPSHOT_INTERVAL') : where('LITESTREAM_RETENTION'));
  }
  if (cfg.backup.enabled && cfg.backup.password === '') {
    cfg.warnings.push(`BACKUP_ENABLED=true without BACKUP_PASSWORD: the archives hold rsa_key.pem and config.json unencrypted; set BACKUP_PASSWORD in ${cfg.source}`);
  }
  if (cfg.tailscale.authKey !== '' && !cfg.tailscale.enabled) {
    cfg.warnings.push(`TAILSCALE_AUTHKEY is set (${where('TAILSCALE_AUTHKEY')}) but TAILSCALE_ENABLED is not true: Tailscale is not used; set TAILSCALE_ENABLED=true or remove the key`);
  }
  const budget = stopGraceWarning(cfg);
  if (budget) cfg.warnings.push(budget);
  vaultwardenSourceChecks(cfg, env, where);
}

/** VAULTWARDEN_BIN (the operator's binary) or VAULTWARDEN_VERSION/VAULTWARDEN_IMAGE (installed by the agent), not both. */
function vaultwardenSourceChecks(cfg: Config, env: Map<string, EnvEntry>, where: (k: string) => string): void {
  const vw = cfg.vaultwarden;
  if (vw.binGiven && vw.version) {
    throw new ConfigError('VAULTWARDEN_VERSION', vw.version, `VAULTWARDEN_BIN=${cfg.vaultwardenBin} is set too: the agent runs the operator's binary and installs nothing; remove one of the two lines`, where('VAULTWARDEN_VERSION'));
  }
  const tag = /^(?:.*\/)?[^/:@]+:([^/@]+)(?:@|$)/.exec(vw.image)?.[1];
  const digest = vw.image.includes('@sha256:');
  if (vw.version && (digest || (tag && tag !== vw.version))) {
    throw new ConfigError('VAULTWARDEN_IMAGE', vw.image, `it names ${digest ? 'a digest' : `the tag ${tag}`} and VAULTWARDEN_VERSION=${vw.version} another pin; give the image without a tag (the version is its tag)${digest ? ', or keep the digest and remove VAULTWARDEN_VERSION' : ''}`, where('VAULTWARDEN_IMAGE'));
  }
  const given = (k: string) => env.get(k) !== undefined && env.get(k)!.value !== '';
  if (given('VAULTWARDEN_REGISTRY_PASSWORD') && !given('VAULTWARDEN_REGISTRY_USERNAME')) {
    throw new ConfigError('VAULTWARDEN_REGISTRY_USERNAME', '', 'a value is required when VAULTWARDEN_REGISTRY_PASSWORD is set', where('VAULTWARDEN_REGISTRY_PASSWORD'));
  }
  if (vw.binGiven && (given('VAULTWARDEN_IMAGE'))) {
    cfg.warnings.push(`VAULTWARDEN_IMAGE is set (${where('VAULTWARDEN_IMAGE')}) but VAULTWARDEN_BIN=${cfg.vaultwardenBin} is the operator's binary: the image is used only by \`vwstream-agent vaultwarden install\`, and what it installs runs once VAULTWARDEN_BIN is removed`);
  }
}

/** STOP_GRACE_PERIOD shorter than its steps: what each step gets instead (budget.ts). */
export function stopGraceWarning(cfg: Pick<Config, 'stopGracePeriodMs' | 'litestream' | 'syncShutdownTimeoutMs' | 'backup'>): string | undefined {
  const b = drainBudgetOf(cfg);
  const s = (ms: number) => `${Math.round(ms / 1000)}s`;
  const askedBackup = cfg.backup.enabled ? cfg.backup.shutdownTimeoutMs : 0;
  const short = b.scaled || b.backupMs < askedBackup || b.litestreamMs < cfg.litestream.shutdownTimeoutMs || b.filesMs < cfg.syncShutdownTimeoutMs;
  if (!short) return undefined;
  const got = (name: string, ms: number, asked: number) => `${name} ${s(ms)}${ms < asked ? ` of the ${s(asked)} asked` : ''}`;
  const parts = [
    `Vaultwarden stop ${s(b.vaultwardenMs)}${b.vaultwardenMs < 60_000 ? ' of the 60s it may need' : ''}`,
    got('Litestream final sync', b.litestreamMs, cfg.litestream.shutdownTimeoutMs),
    got('file upload', b.filesMs, cfg.syncShutdownTimeoutMs),
    ...(cfg.backup.enabled ? [got('backup', b.backupMs, askedBackup)] : []),
  ];
  const sum = 60_000 + cfg.litestream.shutdownTimeoutMs + cfg.syncShutdownTimeoutMs + askedBackup;
  // A running backup may take at most a third of the grace period (budget.ts).
  const needed = Math.max(sum + 10_000, 3 * askedBackup);
  return `STOP_GRACE_PERIOD=${s(cfg.stopGracePeriodMs)} is less than the steps need (${s(sum)} + 10s margin${askedBackup ? `, and a backup may take at most a third` : ''}): ${parts.join(', ')}; set STOP_GRACE_PERIOD=${Math.ceil(needed / 1000)} or lower the steps' timeouts (LITESTREAM_SHUTDOWN_TIMEOUT, SYNC_SHUTDOWN_TIMEOUT${askedBackup ? ', BACKUP_SHUTDOWN_TIMEOUT' : ''})`;
}

/** Why VAULTWARDEN_BIN cannot be started, or undefined; `access` throws like fs.accessSync. */
export function vaultwardenBinProblem(bin: string, access: (path: string, mode: number) => void = accessSync): string | undefined {
  try {
    access(bin, constants.X_OK);
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no Vaultwarden binary there (file not found)' : `the file is not executable (${code ?? 'access denied'})`;
  }
}

/** check-config's (and start's) VAULTWARDEN_BIN check: a ConfigError naming the key. */
export function checkVaultwardenBin(cfg: Pick<Config, 'vaultwardenBin' | 'source'>, access?: (path: string, mode: number) => void): void {
  const problem = vaultwardenBinProblem(cfg.vaultwardenBin, access);
  if (problem) throw new ConfigError('VAULTWARDEN_BIN', cfg.vaultwardenBin, `${problem}: install Vaultwarden at ${cfg.vaultwardenBin} or set VAULTWARDEN_BIN in ${cfg.source}`);
}

/** A secondary that starts before its primary has written the replica: the warning to log at start. */
export function replicaMissingWarning(cfg: Pick<Config, 'role' | 's3' | 'localReplicaPath'>, exists: boolean): string | undefined {
  if (cfg.role !== 'secondary' || exists) return undefined;
  return `NODE_ROLE=secondary but the replica ${replicaUrl(cfg)} does not exist yet: there is nothing to restore or follow; check that S3_BUCKET and S3_PREFIX (or LOCAL_REPLICA_PATH) match the primary's, or start the primary first`;
}

function collectSecrets(env: Map<string, EnvEntry>): string[] {
  const secretKeys = Object.values(SCHEMA).filter((d) => d.secret).map((d) => d.key);
  const out: string[] = [];
  for (const [k, e] of env) {
    const isSecret = secretKeys.includes(k) || isSecretKey(k); // case-blind: backup_password is a password too
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
export function replicaUrl(cfg: Pick<Config, 's3' | 'localReplicaPath'>): string {
  return cfg.s3 ? `s3://${cfg.s3.bucket}/${cfg.s3.prefix ? cfg.s3.prefix + '/' : ''}db` : `file://${cfg.localReplicaPath}`;
}
