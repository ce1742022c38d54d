import { apiRequest } from '../api/client.ts';
import type { Config } from '../config/config.ts';
import { prepareRuntime, type Runtime } from '../replication/runtime.ts';
import { AgentError } from '../errors.ts';

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
  if (process.getuid?.() !== 0) throw new AgentError('this command needs root (it reads the replica credentials and writes the data folder)');
  return prepareRuntime(cfg);
}
