import { Cron } from 'croner';
import { ConfigError } from '../errors.ts';
import { parseDuration } from './duration.ts';
import { cronToOnCalendar, nextRun } from './cron.ts';

/**
 * Every configuration key of the contract, with its default, what it allows and a
 * one-line description. This table is the single source: validation, the commented
 * default env file and the README's table are derived from it.
 */
export interface KeyDef<T> {
  key: string;
  group: string;
  /** Default as written in the env file; undefined = unset/empty. */
  default?: string;
  doc: string;
  allowed: string;
  secret?: boolean;
  parse: (raw: string) => T | undefined; // undefined = not allowed
  /** Why a value parse refused, when it can say more than "expected <allowed>". */
  explain?: (raw: string) => string;
}

type Parse<T> = { parse: (raw: string) => T | undefined; allowed: string; explain?: (raw: string) => string };

const bool: Parse<boolean> = {
  allowed: 'true or false',
  parse: (raw) => {
    const v = raw.toLowerCase();
    if (['true', 'yes', '1', 'on'].includes(v)) return true;
    if (['false', 'no', '0', 'off'].includes(v)) return false;
    return undefined;
  },
};
/** Enum values, case-insensitive (NODE_ROLE=Secondary), normalised to lower case; aliases map other spellings. */
const oneOf = <const T extends string>(values: readonly T[], aliases: Record<string, NoInfer<T>> = {}): Parse<T> => ({
  allowed: `one of ${values.join(', ')}`,
  parse: (raw) => {
    const v = raw.toLowerCase();
    return (values as readonly string[]).includes(v) ? (v as T) : aliases[v];
  },
});
const duration = (minMs = 0, maxMs = Number.MAX_SAFE_INTEGER): Parse<number> => {
  const form = 'a duration: seconds (e.g. 300) or with units (500ms, 30s, 5m, 1h)';
  const bounds = `${minMs ? `, at least ${minMs / 1000}s` : ''}${maxMs < Number.MAX_SAFE_INTEGER ? `, at most ${maxMs / 1000}s` : ''}`;
  return {
    allowed: form + bounds,
    parse: (raw) => {
      const ms = parseDuration(raw);
      return ms !== undefined && ms >= minMs && ms <= maxMs ? ms : undefined;
    },
    explain: (raw) => {
      const ms = parseDuration(raw);
      if (ms === undefined) return `expected ${form}${bounds}`;
      if (ms < minMs) return `expected at least ${minMs / 1000}s (${raw} is ${ms / 1000}s)`;
      return `expected at most ${maxMs / 1000}s (${raw} is ${ms / 1000}s)`;
    },
  };
};
const int = (min: number, max: number): Parse<number> => ({
  allowed: `a whole number from ${min} to ${max}`,
  parse: (raw) => /^\d+$/.test(raw) && +raw >= min && +raw <= max ? +raw : undefined,
});
const text: Parse<string> = { allowed: 'any text', parse: (raw) => raw };
const httpUrl: Parse<string> = {
  allowed: 'an http:// or https:// URL',
  parse: (raw) => {
    try {
      const u = new URL(raw);
      return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname ? raw.replace(/\/+$/, '') : undefined;
    } catch { return undefined; }
  },
};
const absPath: Parse<string> = {
  allowed: 'an absolute path',
  parse: (raw) => raw.startsWith('/') && !raw.split('/').includes('..') ? raw.replace(/\/+$/, '') || '/' : undefined,
};
/** A Vaultwarden release as its image tags name it: 1.32.7, 1.33.0-rc1. */
const vwVersion: Parse<string> = {
  allowed: 'a Vaultwarden version like 1.32.7 (a tag of VAULTWARDEN_IMAGE; empty = no pin)',
  parse: (raw) => /^v?\d+\.\d+\.\d+(?:[-+.][0-9A-Za-z][0-9A-Za-z.+-]*)?$/.test(raw) ? raw.replace(/^v/, '') : undefined,
};
const tagSuffix: Parse<string> = {
  allowed: 'empty, or a tag suffix starting with -, _ or . (e.g. -alpine)',
  parse: (raw) => (raw === '' || /^[-_.][A-Za-z0-9_.-]{0,63}$/.test(raw) ? raw : undefined),
};
const IMAGE_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const IMAGE_RE = new RegExp(`^(?:[A-Za-z0-9.-]+(?::\\d{1,5})?/|\\[[0-9A-Fa-f:]+\\](?::\\d{1,5})?/)?${IMAGE_COMPONENT}(?:/${IMAGE_COMPONENT})*(?::\\w[\\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$`);
/** An image reference as docker takes it: [registry[:port]/]name[:tag][@sha256:digest]. */
const imageRef: Parse<string> = {
  allowed: 'an image reference like vaultwarden/server, ghcr.io/dani-garcia/vaultwarden or registry.example:5000/vw/server@sha256:<64 hex>',
  parse: (raw) => IMAGE_RE.test(raw) ? raw : undefined,
};
const CRON_ALLOWED = 'a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. "0 3 * * *"';
/** Why a cron expression is refused: not 5 fields, not expressible as OnCalendar=, or never fires. */
function cronProblem(raw: string): string | undefined {
  const expr = raw.trim();
  if (expr.split(/\s+/).length !== 5) return `expected ${CRON_ALLOWED}`;
  // Valid for croner and expressible exactly as a systemd OnCalendar= (the timer runs it).
  try { new Cron(expr, { paused: true }); cronToOnCalendar(expr); } catch (err) {
    return err instanceof ConfigError ? err.allowed : `expected ${CRON_ALLOWED} (${(err as Error).message})`;
  }
  if (nextRun(expr) === null) return 'never fires: no date matches its day-of-month and month (e.g. 31 April, 30 February)';
  return undefined;
}
const cron: Parse<string> = {
  allowed: CRON_ALLOWED,
  parse: (raw) => cronProblem(raw) === undefined ? raw.trim() : undefined,
  explain: (raw) => cronProblem(raw) ?? `expected ${CRON_ALLOWED}`,
};
const s3Bucket: Parse<string> = {
  allowed: 'a bucket name: 3-63 characters of a-z, 0-9, dot and hyphen (empty = local directory replica)',
  parse: (raw) => /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(raw) ? raw : undefined,
};
const s3Prefix: Parse<string> = {
  allowed: 'a key prefix like "vaultwarden" or "prod/vault" (no spaces, no "..")',
  parse: (raw) => {
    const p = raw.replace(/^\/+|\/+$/g, '');
    return /^[A-Za-z0-9!_.*'()\-/]*$/.test(p) && !p.split('/').some((s) => s === '..' || s === '.') && !p.includes('//') ? p : undefined;
  },
};
const remoteName: Parse<string> = {
  allowed: 'an rclone remote name (letters, digits, _ and -)',
  parse: (raw) => /^[A-Za-z0-9_][A-Za-z0-9_-]*$/.test(raw) ? raw : undefined,
};
const remoteList: Parse<string[]> = {
  allowed: 'a comma-separated list of rclone destinations "remote:path"',
  parse: (raw) => {
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
    return items.every((s) => /^[A-Za-z0-9_][A-Za-z0-9_-]*:/.test(s) || s.startsWith('/')) ? items : undefined;
  },
};
const listenAddr: Parse<string> = {
  allowed: '"off" or host:port, e.g. 127.0.0.1:9101',
  parse: (raw) => raw === 'off' || raw === '' ? 'off' : /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(raw) && +raw.split(':').pop()! <= 65535 ? raw : undefined,
};
const port = int(1, 65535);
const tags: Parse<string[]> = {
  allowed: 'a comma-separated list of tags like tag:vault',
  parse: (raw) => {
    const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
    return items.every((s) => /^tag:[A-Za-z0-9-]+$/.test(s)) ? items : undefined;
  },
};
const hostname: Parse<string> = {
  allowed: 'a host name (letters, digits, hyphen)',
  parse: (raw) => /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(raw) ? raw : undefined,
};

function def<T>(key: string, group: string, dflt: string | undefined, doc: string, p: Parse<T>, secret = false): KeyDef<T> {
  return { key, group, default: dflt, doc, allowed: p.allowed, parse: p.parse, explain: p.explain, secret };
}

export const SCHEMA = {
  // Storage (VWS names)
  S3_PROVIDER: def('S3_PROVIDER', 'Storage', 'Other', 'rclone S3 provider (AWS, Cloudflare, Minio, Wasabi, Other, …)', { allowed: 'an rclone S3 provider name', parse: (r) => /^[A-Za-z0-9]+$/.test(r) ? r : undefined }),
  S3_BUCKET: def('S3_BUCKET', 'Storage', '', 'Bucket for the replica, file mirror and lease; empty = local directory replica', s3Bucket),
  S3_ENDPOINT: def('S3_ENDPOINT', 'Storage', '', 'S3 endpoint URL for non-AWS providers (MinIO, R2, B2, …)', httpUrl),
  S3_REGION: def('S3_REGION', 'Storage', 'us-east-1', 'S3 region', { allowed: 'a region name like us-east-1 or auto', parse: (r) => /^[a-z0-9-]+$/.test(r) ? r : undefined }),
  S3_ACCESS_KEY_ID: def('S3_ACCESS_KEY_ID', 'Storage', '', 'S3 access key id (required with S3_BUCKET)', text, true),
  S3_SECRET_ACCESS_KEY: def('S3_SECRET_ACCESS_KEY', 'Storage', '', 'S3 secret access key (required with S3_BUCKET)', text, true),
  S3_PREFIX: def('S3_PREFIX', 'Storage', 'vaultwarden', 'Key prefix in the bucket: <prefix>/db (Litestream), <prefix>/files, <prefix>/lease', s3Prefix),
  S3_ACL: def('S3_ACL', 'Storage', '', 'Canned ACL for uploaded objects (e.g. private); empty = provider default', { allowed: 'a canned ACL name', parse: (r) => /^[a-z-]+$/.test(r) ? r : undefined }),
  S3_NO_CHECK_BUCKET: def('S3_NO_CHECK_BUCKET', 'Storage', 'false', 'Do not check or create the bucket (for keys without bucket-level rights)', bool),
  RCLONE_REMOTE_NAME: def('RCLONE_REMOTE_NAME', 'Storage', 'S3', 'Name of the rclone remote derived from the S3_* settings', remoteName),
  RCLONE_FLAGS: def('RCLONE_FLAGS', 'Storage', '', 'Extra flags for every rclone call', text),
  LOCAL_REPLICA_PATH: def('LOCAL_REPLICA_PATH', 'Storage', '/var/backups/vwstream/replica', 'Directory replica used when S3_BUCKET is empty (kept by apt purge)', absPath),
  // Roles
  NODE_ROLE: def('NODE_ROLE', 'Roles', 'primary', 'primary serves and uploads; secondary restores and follows', oneOf(['primary', 'secondary'])),
  DEPLOYMENT_MODE: def('DEPLOYMENT_MODE', 'Roles', 'persistent', 'serverless = a secondary restores once and never refreshes', oneOf(['persistent', 'serverless'])),
  SECONDARY_SERVE: def('SECONDARY_SERVE', 'Roles', 'true', 'false = warm standby that does not run Vaultwarden until promoted', bool),
  PRIMARY_SYNC_INTERVAL: def('PRIMARY_SYNC_INTERVAL', 'Roles', '300', 'File mirror safety-net interval on a primary (seconds)', duration(1000)),
  SECONDARY_SYNC_INTERVAL: def('SECONDARY_SYNC_INTERVAL', 'Roles', '3600', 'Refresh interval of a secondary (seconds)', duration(1000)),
  SYNC_INCLUDE_ATTACHMENTS: def('SYNC_INCLUDE_ATTACHMENTS', 'Roles', 'true', 'Mirror attachments/', bool),
  SYNC_INCLUDE_SENDS: def('SYNC_INCLUDE_SENDS', 'Roles', 'true', 'Mirror sends/', bool),
  SYNC_INCLUDE_CONFIG: def('SYNC_INCLUDE_CONFIG', 'Roles', 'true', 'Mirror config.json', bool),
  SYNC_INCLUDE_RSA_KEY: def('SYNC_INCLUDE_RSA_KEY', 'Roles', 'true', 'Mirror rsa_key* (a restored host with another key logs every user out)', bool),
  SYNC_INCLUDE_ICON_CACHE: def('SYNC_INCLUDE_ICON_CACHE', 'Roles', 'false', 'Mirror icon_cache/', bool),
  SYNC_SHUTDOWN_TIMEOUT: def('SYNC_SHUTDOWN_TIMEOUT', 'Roles', '60', 'Bound of the final file upload at shutdown (seconds)', duration(1000)),
  // Litestream
  LITESTREAM_SYNC_INTERVAL: def('LITESTREAM_SYNC_INTERVAL', 'Litestream', '1s', 'How often WAL changes are shipped (the RPO)', duration(100, 3_600_000)),
  LITESTREAM_SNAPSHOT_INTERVAL: def('LITESTREAM_SNAPSHOT_INTERVAL', 'Litestream', undefined, 'Full snapshot interval; default from LITESTREAM_PROFILE', duration(60_000)),
  LITESTREAM_RETENTION: def('LITESTREAM_RETENTION', 'Litestream', undefined, 'How long snapshots and WAL are kept; default from LITESTREAM_PROFILE', duration(3_600_000)),
  LITESTREAM_SHUTDOWN_TIMEOUT: def('LITESTREAM_SHUTDOWN_TIMEOUT', 'Litestream', '60', 'Bound of Litestream\'s final sync at shutdown (seconds)', duration(1000)),
  LITESTREAM_FORCE_PATH_STYLE: def('LITESTREAM_FORCE_PATH_STYLE', 'Litestream', undefined, 'Path-style S3 URLs; default true when S3_ENDPOINT is set', bool),
  LITESTREAM_SKIP_VERIFY: def('LITESTREAM_SKIP_VERIFY', 'Litestream', 'false', 'Skip TLS verification of the S3 endpoint (self-signed test servers only)', bool),
  LITESTREAM_PROFILE: def('LITESTREAM_PROFILE', 'Litestream', 'standard', 'critical|standard|relaxed: snapshot 1h/6h/24h, retention 336h/168h/72h', oneOf(['critical', 'standard', 'relaxed'])),
  // Backups
  BACKUP_ENABLED: def('BACKUP_ENABLED', 'Backups', 'false', 'Scheduled archive backups', bool),
  BACKUP_CRON: def('BACKUP_CRON', 'Backups', '0 3 * * *', 'Backup schedule (5-field cron, host time zone)', cron),
  BACKUP_FORMAT: def('BACKUP_FORMAT', 'Backups', 'tar.gz', 'Archive format', oneOf(['tar.gz', 'tar'])),
  BACKUP_PASSWORD: def('BACKUP_PASSWORD', 'Backups', '', 'Encrypt archives (openssl enc -aes-256-cbc -pbkdf2 compatible); empty = unencrypted', text, true),
  BACKUP_REMOTES: def('BACKUP_REMOTES', 'Backups', '', 'Comma list of rclone destinations remote:path', remoteList),
  BACKUP_RETENTION_DAYS: def('BACKUP_RETENTION_DAYS', 'Backups', '30', 'Delete archives older than this many days …', int(0, 36500)),
  BACKUP_MIN_KEEP: def('BACKUP_MIN_KEEP', 'Backups', '3', '… but always keep this many newest', int(0, 100000)),
  BACKUP_ON_STARTUP: def('BACKUP_ON_STARTUP', 'Backups', 'false', 'Run one backup after start', bool),
  BACKUP_SHUTDOWN_TIMEOUT: def('BACKUP_SHUTDOWN_TIMEOUT', 'Backups', '90', 'Time a running backup may take to finish at shutdown (seconds)', duration(1000)),
  // Notifications
  NOTIFICATION_URL: def('NOTIFICATION_URL', 'Notifications', '', 'Pinged on success; URL + /fail on failure', httpUrl, true),
  NOTIFICATION_TIMEOUT: def('NOTIFICATION_TIMEOUT', 'Notifications', '10', 'Bound of one notification request (seconds)', duration(100, 300_000)),
  // Tailscale
  TAILSCALE_ENABLED: def('TAILSCALE_ENABLED', 'Tailscale', 'false', 'Join the tailnet and serve Vaultwarden on it', bool),
  TAILSCALE_AUTHKEY: def('TAILSCALE_AUTHKEY', 'Tailscale', '', 'Auth key (passed to tailscale through a 0600 file, never argv)', text, true),
  TAILSCALE_HOSTNAME: def('TAILSCALE_HOSTNAME', 'Tailscale', 'vaultwarden', 'Name on the tailnet', hostname),
  TAILSCALE_LOGIN_SERVER: def('TAILSCALE_LOGIN_SERVER', 'Tailscale', '', 'Control server URL (Headscale); empty = Tailscale', httpUrl),
  TAILSCALE_TAGS: def('TAILSCALE_TAGS', 'Tailscale', '', 'Comma list of tags to advertise', tags),
  TAILSCALE_SERVE_MODE: def('TAILSCALE_SERVE_MODE', 'Tailscale', 'https', 'How tailscale serve exposes Vaultwarden', oneOf(['https', 'tls-terminated-tcp'])),
  TAILSCALE_SERVE_PORT: def('TAILSCALE_SERVE_PORT', 'Tailscale', '443', 'Port on the tailnet', port),
  TAILSCALE_FUNNEL: def('TAILSCALE_FUNNEL', 'Tailscale', 'false', 'Expose to the internet through Tailscale Funnel', bool),
  // Agent
  VAULTWARDEN_BIN: def('VAULTWARDEN_BIN', 'Agent', '/usr/bin/vaultwarden', 'A Vaultwarden binary installed by the operator; unset = the version `vaultwarden install` put in /var/lib/vwstream/vaultwarden (else /usr/bin/vaultwarden)', absPath),
  VAULTWARDEN_VERSION: def('VAULTWARDEN_VERSION', 'Agent', '', 'Pin: the Vaultwarden version to run, installed from VAULTWARDEN_IMAGE at start when another one is installed', vwVersion),
  VAULTWARDEN_IMAGE: def('VAULTWARDEN_IMAGE', 'Agent', 'vaultwarden/server', 'The OCI image Vaultwarden is installed from (Docker Hub unless it names a registry)', imageRef),
  VAULTWARDEN_TAG_SUFFIX: def('VAULTWARDEN_TAG_SUFFIX', 'Agent', '-alpine', 'Appended to the version (or latest) to form the image tag: the -alpine build is one static binary that runs on any Linux host; empty for tags that are bare versions', tagSuffix),
  VAULTWARDEN_REGISTRY_USERNAME: def('VAULTWARDEN_REGISTRY_USERNAME', 'Agent', '', 'User for the image registry (empty = anonymous)', text),
  VAULTWARDEN_REGISTRY_PASSWORD: def('VAULTWARDEN_REGISTRY_PASSWORD', 'Agent', '', 'Password or token for the image registry', text, true),
  STOP_GRACE_PERIOD: def('STOP_GRACE_PERIOD', 'Agent', '300', 'Upper bound of the whole drain at stop (seconds)', duration(10_000, 3_600_000)),
  LEASE_TTL: def('LEASE_TTL', 'Agent', '60', 'Lifetime of the primary lease; a dead holder\'s lease expires after it', duration(5_000, 600_000)),
  HEALTHCHECK_MAX_SYNC_AGE: def('HEALTHCHECK_MAX_SYNC_AGE', 'Agent', '600', 'Health fails when the last DB or file sync is older (seconds)', duration(1000)),
  ASIDE_MIN_KEEP: def('ASIDE_MIN_KEEP', 'Agent', '5', 'Kept-aside data (/var/lib/vwstream/aside): always keep this many newest folders per reason …', int(1, 100000)),
  ASIDE_RETENTION_DAYS: def('ASIDE_RETENTION_DAYS', 'Agent', '7', '… and every folder younger than this many days; older ones are pruned daily (0 = never prune)', int(0, 36500)),
  VERIFY_CRON: def('VERIFY_CRON', 'Agent', '0 4 * * 0', 'Restore drill schedule (5-field cron)', cron),
  METRICS_LISTEN: def('METRICS_LISTEN', 'Agent', 'off', 'Also serve /metrics over TCP at host:port', listenAddr),
  LOG_LEVEL: def('LOG_LEVEL', 'Agent', 'info', 'Log level', oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace'], { warning: 'warn' })),
  // Vaultwarden settings the agent must understand (all others pass through unchanged)
  ROCKET_PORT: def('ROCKET_PORT', 'Vaultwarden', '8000', 'Vaultwarden HTTP port (the agent checks /alive on it)', port),
  ROCKET_ADDRESS: def('ROCKET_ADDRESS', 'Vaultwarden', '0.0.0.0', 'Vaultwarden listen address', { allowed: 'an IP address', parse: (r) => /^[0-9a-fA-F.:]+$/.test(r) ? r : undefined }),
} as const;

export type SchemaKey = keyof typeof SCHEMA;
export const ALL_KEYS: KeyDef<unknown>[] = Object.values(SCHEMA);

/** Prefixes that belong to the agent: an unknown key with one is most likely a typo. */
export const AGENT_PREFIXES = ['S3_', 'LITESTREAM_', 'BACKUP_', 'SYNC_', 'TAILSCALE_', 'NOTIFICATION_', 'PRIMARY_', 'SECONDARY_', 'LEASE_', 'HEALTHCHECK_', 'NODE_', 'DEPLOYMENT_', 'ASIDE_'];

export function checkKey<T>(def: KeyDef<T>, raw: string, where?: string): T {
  const v = def.parse(raw);
  if (v === undefined) throw new ConfigError(def.key, def.secret ? '<hidden>' : raw, def.explain?.(raw) ?? `expected ${def.allowed}`, where);
  return v;
}
