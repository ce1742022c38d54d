import { request } from 'node:http';
import { AgentError, EXIT } from '../errors.ts';
import { PATHS } from '../paths.ts';

/**
 * A request to the daemon. Reads (GET) go to agent.sock (root and group vwstream);
 * anything that changes the agent (promote, sync, …) to the root-only control.sock.
 * Throws AgentError with an operator-readable reason.
 */
export function apiRequest<T>(method: string, path: string, opts: { socket?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: T }> {
  const changes = method !== 'GET' && method !== 'HEAD';
  const socketPath = opts.socket ?? (changes ? PATHS.controlSocket : PATHS.socket);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, timeout: opts.timeoutMs ?? 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const type = String(res.headers['content-type'] ?? '');
        try {
          resolve({ status: res.statusCode ?? 0, body: (type.includes('json') ? JSON.parse(text) : text) as T });
        } catch (err) {
          reject(new AgentError(`the agent answered ${path} with invalid JSON`, { cause: err }));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new AgentError(`the agent is not running (nothing answers at ${socketPath})`, { hint: 'systemctl status vwstream-agent; journalctl -u vwstream-agent', exitCode: EXIT.UNAVAILABLE }));
      } else if (err.code === 'EACCES' && changes) {
        reject(new AgentError(`'${path.split('?')[0]!.replace(/^\//, '')}' changes the agent's state: only root may do that (permission denied on ${socketPath})`, { hint: 'run it as root (sudo); members of group vwstream may read: status, health, metrics', exitCode: EXIT.NOPERM }));
      } else if (err.code === 'EACCES') {
        reject(new AgentError(`permission denied on ${socketPath}`, { hint: 'run as root or as a member of group vwstream', exitCode: EXIT.NOPERM }));
      } else reject(new AgentError(`cannot talk to the agent at ${socketPath}: ${err.message}`));
    });
    req.end();
  });
}
