import { chmod, chown, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { log } from '../log.ts';

export type Route = (req: IncomingMessage) => Promise<{ status: number; body: unknown; contentType?: string }>;

/** Methods that only read: served on the group's socket. Everything else changes state. */
export function isReadMethod(method: string | undefined): boolean {
  return method === 'GET' || method === 'HEAD';
}

export interface ApiServers { read: Server; control: Server; close(): void }

/**
 * The local API on two unix sockets; the CLI is their client. No TCP listener here.
 *
 * - `readPath` (agent.sock, 0660 root:group): GET requests only (status, health,
 *   metrics) for root and members of the monitoring group; any other method is refused
 *   with 403 and never reaches a route.
 * - `controlPath` (control.sock, 0600 root:root): every route, state-changing ones
 *   (promote, sync) included. connect() on a unix socket needs write permission on its
 *   file, so the kernel itself keeps everyone but root out: no peer-credential check in
 *   user space (Node has no SO_PEERCRED API) that could be got wrong.
 */
export async function startApiServers(paths: { readPath: string; controlPath: string }, routes: Record<string, Route>, group?: number): Promise<ApiServers> {
  const control = await listenPrivate(paths.controlPath, createServer((req, res) => void handle(routes, req, res, null)), 0o600);
  const read = await listenPrivate(paths.readPath, createServer((req, res) => void handle(routes, req, res, paths.controlPath)), 0o660, group);
  return { read, control, close: () => { read.close(); control.close(); } };
}

/**
 * Listens on `socketPath`, then gives it `mode` and its group. Between bind() and chmod
 * the socket has the unit's umask (UMask=0022: 0755), which lets nobody but root connect
 * (connect() needs write permission), so there is no window in which it is wider.
 */
async function listenPrivate(socketPath: string, server: Server, mode: number, group?: number): Promise<Server> {
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chown(socketPath, 0, group ?? 0).catch((err: NodeJS.ErrnoException) => {
    // Not root (unit tests): the socket keeps its creator as owner.
    if (err.code !== 'EPERM') throw err;
  });
  await chmod(socketPath, mode);
  const st = await stat(socketPath);
  if ((st.mode & 0o777) !== mode) throw new Error(`${socketPath} has mode ${(st.mode & 0o777).toString(8)}, not ${mode.toString(8)}`);
  return server;
}

/** `readOnlyVia`: this is the group's socket; state-changing requests belong on that (root-only) socket. */
async function handle(routes: Record<string, Route>, req: IncomingMessage, res: ServerResponse, readOnlyVia: string | null): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://agent').pathname;
  const route = routes[`${req.method} ${path}`];
  try {
    if (readOnlyVia !== null && !isReadMethod(req.method)) {
      log.warn({ method: req.method, path }, `refused ${req.method} ${path} on the read-only socket: only root may change the agent's state (on ${readOnlyVia})`);
      return send(res, 403, { error: `${req.method} ${path} changes the agent's state: only root may do that (on ${readOnlyVia}); this socket serves reads (status, health, metrics)` });
    }
    if (!route) return send(res, 404, { error: `no route ${req.method} ${path}` });
    const r = await route(req);
    send(res, r.status, r.body, r.contentType);
  } catch (err) {
    log.error({ err: (err as Error).message, path }, 'api request failed');
    send(res, 500, { error: (err as Error).message });
  }
}

function send(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
