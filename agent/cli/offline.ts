import { apiRequest } from '../api/client.ts';
import type { Config } from '../config/config.ts';
import { prepareReadOnlyRuntime, prepareRuntime, type ReadOnlyRuntime, type Runtime } from '../replication/runtime.ts';
import { AgentError, EXIT } from '../errors.ts';

/** True when the daemon answers on its socket. */
export async function daemonRunning(): Promise<boolean> {
  try {
    await apiRequest('GET', '/status', { timeoutMs: 3000 });
    return true;
  } catch {
    return false;
  }
}

/** Commands that change the live database need the daemon stopped (it owns the units). */
export async function requireStopped(what: string): Promise<void> {
  if (await daemonRunning()) {
    throw new AgentError(`the agent is running; ${what} needs it stopped`, { hint: 'systemctl stop vwstream-agent (it drains first), then run this again' });
  }
}

export async function runtimeFor(cfg: Config): Promise<Runtime> {
  if (process.getuid?.() !== 0) throw new AgentError('this command needs root (it reads the replica credentials and writes the data folder)', { hint: 'run it with sudo', exitCode: EXIT.NOPERM });
  return prepareRuntime(cfg);
}

/**
 * For the commands that only read the replica (generations, snapshots, restore --to):
 * their litestream.yml in a private temporary directory, nothing under /run/vwstream
 * touched. Removed by the caller's dispose(), at exit, and on SIGINT/SIGTERM/SIGHUP.
 */
export async function readOnlyRuntimeFor(cfg: Config): Promise<ReadOnlyRuntime> {
  if (process.getuid?.() !== 0) throw new AgentError('this command needs root (it reads the replica credentials)', { hint: 'run it with sudo', exitCode: EXIT.NOPERM });
  const rt = await prepareReadOnlyRuntime(cfg);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(sig, () => { void rt.dispose().finally(() => process.exit(code)); });
  }
  return rt;
}

/** Runs `fn` with a read-only runtime and removes its directory afterwards, whatever happens. */
export async function withReadOnlyRuntime<T>(cfg: Config, fn: (rt: ReadOnlyRuntime) => Promise<T>): Promise<T> {
  const rt = await readOnlyRuntimeFor(cfg);
  try {
    return await fn(rt);
  } finally {
    await rt.dispose();
  }
}
