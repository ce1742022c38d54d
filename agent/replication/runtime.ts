import { accessSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { constants } from 'node:fs';
import { chmod, chown, lchown, lstat, mkdir, mkdtemp, open, opendir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';
import { formatEnvValue, parseEnvFile } from '../config/envfile.ts';
import type { Config } from '../config/config.ts';
import { AgentError } from '../errors.ts';
import { log } from '../log.ts';
import { PATHS, SERVICE_USER, LITESTREAM_USER, API_GROUP } from '../paths.ts';
import { fsyncDir, mkdirDurable, moveDurable, writePrivateFile } from '../fs.ts';
import { renderLitestreamConfig, metaDir } from './litestream.ts';
import { keptVaultwardenEnv, vaultwardenEnvOf, type VaultwardenChoice } from '../vaultwarden/choose.ts';

export interface Ids { uid: number; gid: number }

/** uid/gid of a system user from /etc/passwd (the package's postinst creates it). */
export function lookupUser(name: string, passwd = '/etc/passwd'): Ids {
  for (const line of readFileSync(passwd, 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new AgentError(`system user ${name} does not exist`, { hint: 'reinstall the package: apt install --reinstall vwstream-agent' });
}

export function lookupGroup(name: string, group = '/etc/group'): number | undefined {
  for (const line of readFileSync(group, 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return Number(f[2]);
  }
  return undefined;
}

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface Runtime {
  /** Vaultwarden's user: owns the data folder and every file in it. */
  ids: Ids;
  /** Litestream's own user (group: Vaultwarden's): owns litestream.yml and the directory replica. */
  litestreamIds: Ids;
  apiGroup: number | undefined;
  dbPath: string;
  litestreamConfig: string;
  metricsAddr: string;
  /** The generated litestream.yml differs from the one a running Litestream may have loaded. */
  litestreamConfigChanged: boolean;
  /** The litestream binary (default: the bundled one; tests point elsewhere). */
  litestreamBin?: string;
}

/**
 * The data folder is Vaultwarden's (owner) and Litestream's (group, write: it keeps
 * .db.sqlite3-litestream/ there and takes the WAL's checkpoints). 0770, no SGID: both
 * units run with group vaultwarden, so what either creates has that group.
 */
export const DATA_FOLDER_MODE = 0o770;
/** The database file: SQLite gives its -wal and -shm the same mode and owner. */
export const DB_FILE_MODE = 0o660;

/** chown/chmod only when they differ: the sandboxed oneshots see these paths read-only. */
async function ensureOwnerMode(path: string, owner: Ids, mode: number): Promise<void> {
  const st = await lstat(path);
  if (!st.isDirectory()) throw new AgentError(`${path} is not a directory`, { hint: `move it away; the agent recreates ${path}` });
  if (st.uid !== owner.uid || st.gid !== owner.gid) await chown(path, owner.uid, owner.gid);
  if ((st.mode & 0o7777) !== mode) await chmod(path, mode);
}

/**
 * Makes the database files group-writable for Litestream (a database restored or created
 * with mode 0600 would lock it out). Never follows a link: the data folder belongs to the
 * network-facing Vaultwarden process; a link or special file there is left alone.
 */
export async function shareDbFiles(dbPath: string, ids: Ids): Promise<void> {
  for (const f of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) {
    let fh;
    try {
      fh = await open(f, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP') continue;
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) continue;
      if (st.uid !== ids.uid || st.gid !== ids.gid) await fh.chown(ids.uid, ids.gid);
      if ((st.mode & 0o777) !== DB_FILE_MODE) await fh.chmod(DB_FILE_MODE);
    } finally {
      await fh.close();
    }
  }
}

/**
 * A new vault: creates db.sqlite3 empty, owned by Vaultwarden's user, mode 0660, before
 * Litestream and Vaultwarden start. SQLite creates a database file 0644 less the umask
 * (0640 for Vaultwarden), which would leave Litestream's user a read-only connection;
 * an empty file is an empty database to both, and SQLite gives the -wal and -shm the
 * database's mode. Returns true when it created the file.
 */
export async function createDbFile(dbPath: string, ids: Ids): Promise<boolean> {
  let fh;
  try {
    fh = await open(dbPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, DB_FILE_MODE);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await fh.chown(ids.uid, ids.gid);
    await fh.chmod(DB_FILE_MODE);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return true;
}

/**
 * Hands a directory tree to `owner` (the move of Litestream to its own user: a replica or
 * .db.sqlite3-litestream/ written by an older release as vaultwarden). The top is opened
 * with O_NOFOLLOW and made root's, mode 0700, first: from then on only root can change
 * what is inside (and an interrupted walk is redone, the top not being `owner`'s yet);
 * the walk goes through that open descriptor (/proc/self/fd/N), so a rename or link
 * planted in the data folder meanwhile leads nowhere; the top becomes `owner`'s last.
 * Links are re-owned themselves (lchown), never followed. Returns true when the tree
 * was handed over.
 */
export async function adoptTree(path: string, owner: Ids): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return false;
    throw err;
  }
  try {
    const st = await fh.stat();
    if (st.uid === owner.uid) return false;
    // root's while the walk runs: an interrupted hand-over is redone at the next start.
    await fh.chown(0, 0);
    await fh.chmod(0o700);
    const walk = async (dir: string): Promise<void> => {
      for await (const e of await opendir(dir)) {
        const p = `${dir}/${e.name}`;
        await lchown(p, owner.uid, owner.gid);
        if (e.isDirectory()) await walk(p);
      }
    };
    await walk(`/proc/self/fd/${fh.fd}`);
    await fh.chown(owner.uid, owner.gid);
    return true;
  } finally {
    await fh.close();
  }
}

/**
 * Writes the per-host files under /run/vwstream (mode 0600): litestream.yml (S3
 * credentials: owned by Litestream's own user, never readable by Vaultwarden's) and
 * vaultwarden.env (read by systemd as root). Rewrites and re-owns only what differs.
 */
export async function prepareRuntime(cfg: Config, vaultwarden?: VaultwardenChoice): Promise<Runtime> {
  const ids = lookupUser(SERVICE_USER);
  const ls = lookupUser(LITESTREAM_USER);
  const litestreamIds = { uid: ls.uid, gid: ls.gid };
  if (!existsSync(PATHS.runDir)) await mkdir(PATHS.runDir, { recursive: true, mode: 0o755 });
  if (!existsSync(PATHS.dataFolder)) await mkdir(PATHS.dataFolder, { recursive: true, mode: DATA_FOLDER_MODE });
  await ensureOwnerMode(PATHS.dataFolder, ids, DATA_FOLDER_MODE);
  await shareDbFiles(PATHS.dbFile, ids);
  // Litestream's state beside the database and the directory replica are its own user's
  // (an older release ran Litestream as vaultwarden: handed over once, here).
  const litestreamGroupIds = { uid: litestreamIds.uid, gid: ids.gid };
  if (await adoptTree(metaDir(PATHS.dbFile), litestreamGroupIds)) log.info({ path: metaDir(PATHS.dbFile), user: LITESTREAM_USER }, `handed ${metaDir(PATHS.dbFile)} to ${LITESTREAM_USER}`);
  if (!cfg.s3) {
    if (!existsSync(cfg.localReplicaPath)) await mkdir(cfg.localReplicaPath, { recursive: true, mode: 0o700 });
    if (await adoptTree(cfg.localReplicaPath, litestreamIds)) log.info({ path: cfg.localReplicaPath, user: LITESTREAM_USER }, `handed the directory replica ${cfg.localReplicaPath} to ${LITESTREAM_USER}`);
    await ensureOwnerMode(cfg.localReplicaPath, litestreamIds, 0o700);
  }
  // Keep the metrics port of a previous run: a Litestream still running (agent restart) keeps serving there.
  let previous = '';
  try { previous = readFileSync(PATHS.litestreamConfig, 'utf8'); } catch { /* first start since boot */ }
  const prevAddr = /^addr: "(127\.0\.0\.1:\d+)"$/m.exec(previous)?.[1];
  const metricsAddr = prevAddr ?? `127.0.0.1:${await freeLoopbackPort()}`;
  const lsConfig = renderLitestreamConfig(cfg, { dbPath: PATHS.dbFile, metricsAddr });
  // Group root, not vaultwarden: Litestream's user has Vaultwarden's group as its own.
  const lsOwner = { uid: litestreamIds.uid, gid: 0 };
  if (lsConfig !== previous || !ownedBy(PATHS.litestreamConfig, lsOwner)) await writePrivateFile(PATHS.litestreamConfig, lsConfig, lsOwner);
  // The agent's start passes the Vaultwarden it chose; any other command keeps the one it chose.
  const prevEnv = await readFile(PATHS.vaultwardenEnv, 'utf8').catch(() => undefined);
  const vwEnv = vaultwarden ? vaultwardenEnvOf(cfg, undefined, vaultwarden) : keptVaultwardenEnv(cfg, prevEnv === undefined ? undefined : parseEnvFile(prevEnv));
  const env = '# Generated by vwstream-agent; do not edit.\n' + Object.entries(vwEnv).map(([k, v]) => `${k}=${formatEnvValue(v)}`).join('\n') + '\n';
  if (env !== prevEnv) await writePrivateFile(PATHS.vaultwardenEnv, env);
  return { ids, litestreamIds, apiGroup: lookupGroup(API_GROUP), dbPath: PATHS.dbFile, litestreamConfig: PATHS.litestreamConfig, metricsAddr, litestreamConfigChanged: lsConfig !== previous };
}

/** A Runtime whose litestream.yml lives in a private temporary directory (see prepareReadOnlyRuntime). */
export interface ReadOnlyRuntime extends Runtime {
  /** The private directory (0700) holding litestream.yml (0600). */
  dir: string;
  /** Removes the directory; idempotent. Also done at process exit. */
  dispose(): Promise<void>;
}

/**
 * For commands that only read the replica (generations, snapshots, restore --to): the
 * litestream.yml they need, rendered from `cfg`, in a private temporary directory (0700,
 * the file 0600) instead of /run/vwstream. Nothing under /run/vwstream, the data folder
 * or the directory replica is created, rewritten, chowned or chmodded, so a running
 * agent and its Litestream see no change, and the listing follows the configuration the
 * command was given (not the one the agent last started with). The directory is on the
 * /run tmpfs when it is writable (the file holds the S3 credentials: they never reach a
 * disk), else under the system's temporary directory; dispose() removes it, and so does
 * the process's exit.
 */
export async function prepareReadOnlyRuntime(cfg: Config, opts: { tmpRoot?: string; passwd?: string; group?: string; liveConfig?: string } = {}): Promise<ReadOnlyRuntime> {
  const ids = lookupUser(SERVICE_USER, opts.passwd);
  const ls = lookupUser(LITESTREAM_USER, opts.passwd);
  const root = opts.tmpRoot ?? (writable('/run') ? '/run' : tmpdir());
  // mkdtemp: a new directory with a random name, mode 0700, created by us (never an existing one).
  const dir = await mkdtemp(join(root, 'vwstream-cli-'));
  const cleanup = () => { try { rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ } };
  process.once('exit', cleanup);
  try {
    await chmod(dir, 0o700);
    // The agent's metrics port when it has one (Litestream's listing commands do not listen).
    let current = '';
    try { current = readFileSync(opts.liveConfig ?? PATHS.litestreamConfig, 'utf8'); } catch { /* agent never started in this boot */ }
    const metricsAddr = /^addr: "(127\.0\.0\.1:\d+)"$/m.exec(current)?.[1] ?? `127.0.0.1:${await freeLoopbackPort()}`;
    const litestreamConfig = join(dir, 'litestream.yml');
    await writePrivateFile(litestreamConfig, renderLitestreamConfig(cfg, { dbPath: PATHS.dbFile, metricsAddr }));
    return {
      ids, litestreamIds: { uid: ls.uid, gid: ls.gid }, apiGroup: lookupGroup(API_GROUP, opts.group), dbPath: PATHS.dbFile, litestreamConfig, metricsAddr,
      litestreamConfigChanged: false, dir,
      dispose: async () => { process.removeListener('exit', cleanup); await rm(dir, { recursive: true, force: true }); },
    };
  } catch (err) {
    process.removeListener('exit', cleanup);
    cleanup();
    throw err;
  }
}

function writable(dir: string): boolean {
  try { accessSync(dir, constants.W_OK); return true; } catch { return false; }
}

function ownedBy(path: string, owner: Ids): boolean {
  try {
    const st = statSync(path);
    return st.uid === owner.uid && st.gid === owner.gid && (st.mode & 0o777) === 0o600;
  } catch {
    return false;
  }
}

/** The files that make up one SQLite database: never move the file without its WAL. */
export function dbFileSet(dbPath: string): string[] {
  return [dbPath, `${dbPath}-wal`, `${dbPath}-shm`, metaDir(dbPath)];
}

/** The name of a new folder of kept-aside data (created by whoever first puts something there). */
export function asideFolder(why: string, asideRoot: string = PATHS.asideDir): string {
  return `${asideRoot}/${new Date().toISOString().replace(/[:.]/g, '-')}-${why}`;
}

/**
 * Moves a database (with its WAL, SHM and Litestream metadata) into a timestamped folder
 * under /var/lib/vwstream/aside (or into `into`, a folder chosen beforehand and recorded
 * by a restore operation). Never deletes. Every move is durable, so after a crash the
 * files are either still live or in the folder, and moveBack() undoes any part of it.
 */
export async function setAside(dbPath: string, why: string, asideRoot: string = PATHS.asideDir, into?: string): Promise<string> {
  const dir = into ?? asideFolder(why, asideRoot);
  await mkdirDurable(dir);
  for (const f of dbFileSet(dbPath)) {
    if (existsSync(f)) await moveDurable(f, `${dir}/${f.slice(f.lastIndexOf('/') + 1)}`);
  }
  return dir;
}

/** Undoes setAside: puts the database files kept in `dir` back at `dbPath` (those not there already). */
export async function moveBack(dir: string, dbPath: string): Promise<string[]> {
  const moved: string[] = [];
  for (const f of dbFileSet(dbPath)) {
    const kept = `${dir}/${f.slice(f.lastIndexOf('/') + 1)}`;
    if (existsSync(kept) && !existsSync(f)) {
      await moveDurable(kept, f);
      moved.push(f);
    }
  }
  return moved;
}

/**
 * Removes a temporary database copy and the -wal/-shm/-journal files SQLite left beside
 * it (a read-only check of a WAL-mode copy creates them).
 */
export async function removeDbCopy(path: string, keepMain = false): Promise<void> {
  for (const f of keepMain ? [`${path}-wal`, `${path}-shm`, `${path}-journal`] : [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    await rm(f, { force: true });
  }
}

/**
 * Puts a restored file in place as the live database, owned by the service user, mode
 * 0660 (group vaultwarden: Litestream's user must open it read-write): the old WAL, SHM
 * and Litestream metadata are removed (they belong to the replaced file), the copy is
 * fsynced, renamed (or copied across filesystems) and the directory synced.
 */
export async function installRestored(tmpPath: string, dbPath: string, ids: Ids): Promise<void> {
  for (const f of dbFileSet(dbPath).slice(1)) await rm(f, { recursive: true, force: true });
  await chown(tmpPath, ids.uid, ids.gid);
  await chmod(tmpPath, DB_FILE_MODE);
  await moveDurable(tmpPath, dbPath);
  // A copy across filesystems is a new file: give it the same owner and mode.
  await chown(dbPath, ids.uid, ids.gid);
  await chmod(dbPath, DB_FILE_MODE);
  await removeDbCopy(tmpPath, true); // the copy's empty sidecars from its check
  await fsyncDir(dirname(dbPath));
}
