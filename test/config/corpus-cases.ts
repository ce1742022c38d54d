/**
 * The bad-config corpus: env files that must stop the agent with exit 78 (EX_CONFIG),
 * one line naming the key, before anything is touched. One row per kind of mistake:
 * every enum, intervals, URLs, cron, ports, paths, env-file syntax, and settings that
 * conflict. test/config/corpus.test.ts runs each through the real CLI;
 * test/system/badconfig.test.ts starts the installed service with a selection.
 */
export interface BadConfig {
  name: string;
  /** The env file (without the host's own ROCKET_* lines). */
  env: string;
  /** The key the error names. */
  key: string;
  /** More of the message, when it matters. */
  says?: RegExp;
  /** A value that must not be printed (a secret). */
  hidden?: string;
}

const S3 = 'S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=AKIACORPUS\nS3_SECRET_ACCESS_KEY=corpus-s3-secret-123\n';

export const CORPUS: BadConfig[] = [
  // enums
  { name: 'role', env: 'NODE_ROLE=leader\n', key: 'NODE_ROLE', says: /expected one of primary, secondary/ },
  { name: 'deployment mode', env: 'DEPLOYMENT_MODE=cloud\n', key: 'DEPLOYMENT_MODE', says: /expected one of persistent, serverless/ },
  { name: 'litestream profile', env: 'LITESTREAM_PROFILE=paranoid\n', key: 'LITESTREAM_PROFILE', says: /critical, standard, relaxed/ },
  { name: 'backup format', env: 'BACKUP_FORMAT=zip\n', key: 'BACKUP_FORMAT', says: /tar\.gz, tar/ },
  { name: 'tailscale serve mode', env: 'TAILSCALE_SERVE_MODE=http\n', key: 'TAILSCALE_SERVE_MODE', says: /https, tls-terminated-tcp/ },
  { name: 'log level', env: 'LOG_LEVEL=verbose\n', key: 'LOG_LEVEL' },
  { name: 'boolean', env: 'SECONDARY_SERVE=perhaps\n', key: 'SECONDARY_SERVE', says: /true or false/ },
  // intervals
  { name: 'interval in words', env: 'PRIMARY_SYNC_INTERVAL=5 minutes\n', key: 'PRIMARY_SYNC_INTERVAL', says: /expected a duration/ },
  { name: 'interval zero', env: 'SECONDARY_SYNC_INTERVAL=0\n', key: 'SECONDARY_SYNC_INTERVAL', says: /at least 1s/ },
  { name: 'RPO above its bound', env: 'LITESTREAM_SYNC_INTERVAL=2h\n', key: 'LITESTREAM_SYNC_INTERVAL', says: /at most 3600s/ },
  { name: 'grace period too short to drain', env: 'STOP_GRACE_PERIOD=5\n', key: 'STOP_GRACE_PERIOD', says: /at least 10s/ },
  { name: 'lease ttl', env: 'LEASE_TTL=1\n', key: 'LEASE_TTL' },
  { name: 'negative days', env: 'BACKUP_RETENTION_DAYS=-1\n', key: 'BACKUP_RETENTION_DAYS', says: /whole number/ },
  // URLs
  { name: 'endpoint without scheme', env: `${S3}S3_ENDPOINT=minio:9000\n`, key: 'S3_ENDPOINT', says: /http:\/\/ or https:\/\/ URL/ },
  { name: 'Headscale URL', env: 'TAILSCALE_LOGIN_SERVER=headscale.local\n', key: 'TAILSCALE_LOGIN_SERVER' },
  { name: 'notification URL (a secret: not printed)', env: 'NOTIFICATION_URL=mailto:ops-corpus-token@example.com\n', key: 'NOTIFICATION_URL', hidden: 'ops-corpus-token' },
  // cron
  { name: 'cron minute 61', env: 'BACKUP_CRON=61 * * * *\n', key: 'BACKUP_CRON', says: /5-field cron/ },
  { name: 'cron with four fields', env: 'BACKUP_CRON=0 3 * *\n', key: 'BACKUP_CRON' },
  { name: 'cron shorthand', env: 'VERIFY_CRON=@weekly\n', key: 'VERIFY_CRON' },
  // ports
  { name: 'port 0', env: 'ROCKET_PORT=0\n', key: 'ROCKET_PORT', says: /from 1 to 65535/ },
  { name: 'port above 65535', env: 'TAILSCALE_SERVE_PORT=70000\n', key: 'TAILSCALE_SERVE_PORT' },
  { name: 'metrics without host', env: 'METRICS_LISTEN=9101\n', key: 'METRICS_LISTEN', says: /host:port/ },
  // paths
  { name: 'relative replica path', env: 'LOCAL_REPLICA_PATH=replica\n', key: 'LOCAL_REPLICA_PATH', says: /absolute path/ },
  { name: 'path with ..', env: 'LOCAL_REPLICA_PATH=/var/lib/../tmp/replica\n', key: 'LOCAL_REPLICA_PATH' },
  { name: 'binary by name', env: 'VAULTWARDEN_BIN=vaultwarden\n', key: 'VAULTWARDEN_BIN' },
  { name: 'data folder moved', env: 'DATA_FOLDER=/srv/vault\n', key: 'DATA_FOLDER', says: /fixed to \/var\/lib\/vaultwarden/ },
  // S3 names
  { name: 'bucket name', env: 'S3_BUCKET=My_Bucket\nS3_ACCESS_KEY_ID=a\nS3_SECRET_ACCESS_KEY=b\n', key: 'S3_BUCKET' },
  { name: 'prefix escaping', env: `${S3}S3_PREFIX=prod/../other\n`, key: 'S3_PREFIX' },
  // conflicting settings
  { name: 'bucket without a secret', env: 'S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=AKIACORPUS\n', key: 'S3_SECRET_ACCESS_KEY', says: /required when S3_BUCKET is set/ },
  { name: 'backups without a destination', env: 'BACKUP_ENABLED=true\n', key: 'BACKUP_REMOTES', says: /at least one rclone destination/ },
  { name: 'funnel on a port Funnel does not offer', env: 'TAILSCALE_ENABLED=true\nTAILSCALE_FUNNEL=true\nTAILSCALE_SERVE_PORT=8080\n', key: 'TAILSCALE_SERVE_PORT', says: /443, 8443 or 10000/ },
  { name: 'another database', env: 'DATABASE_URL=postgresql://vw:pw@db/vw\n', key: 'DATABASE_URL' },
  { name: 'WAL off', env: 'ENABLE_DB_WAL=false\n', key: 'ENABLE_DB_WAL', says: /Litestream replicates the WAL/ },
  { name: 'journal mode changed', env: 'DATABASE_CONN_INIT=PRAGMA journal_mode=DELETE;\n', key: 'DATABASE_CONN_INIT' },
  { name: 'backup remote not defined', env: 'BACKUP_REMOTES=offsite:vault\n', key: 'BACKUP_REMOTES', says: /rclone remote "offsite" is not defined/ },
  { name: 'snapshot interval beyond the retention', env: 'LITESTREAM_RETENTION=3h\n', key: 'LITESTREAM_SNAPSHOT_INTERVAL', says: /longer than LITESTREAM_RETENTION=3h/ },
  { name: 'cron that never fires', env: 'BACKUP_CRON="0 0 31 4 *"\n', key: 'BACKUP_CRON', says: /never fires/ },
  { name: 'cron nth weekday', env: 'VERIFY_CRON="0 3 * * 1#2"\n', key: 'VERIFY_CRON', says: /"1#2" cannot be expressed exactly by a systemd timer/ },
  // key names
  { name: 'agent key in lower case', env: 's3_bucket=my-vault\n', key: 's3_bucket', says: /keys are case-sensitive; did you mean S3_BUCKET\?/ },
  { name: 'secret key in another case', env: 'S3_Secret_Access_Key=corpus-case-secret\n', key: 'S3_Secret_Access_Key', says: /did you mean S3_SECRET_ACCESS_KEY\?/, hidden: 'corpus-case-secret' },
  // env-file syntax, without printing the secret
  { name: 'unterminated quote in a secret', env: 'S3_BUCKET=vault-bucket\nS3_ACCESS_KEY_ID=AKIACORPUS\nS3_SECRET_ACCESS_KEY="corpus-unterminated-secret\n', key: 'S3_SECRET_ACCESS_KEY', says: /unterminated double quote/, hidden: 'corpus-unterminated-secret' },
  { name: 'a secret without =', env: 'BACKUP_PASSWORD corpus-password-no-equals\n', key: 'line 1', says: /BACKUP_PASSWORD …/, hidden: 'corpus-password-no-equals' },
];
