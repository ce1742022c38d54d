import { chmod, chown, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { log } from '../log.ts';

export type Route = (req: IncomingMessage) => Promise<{ status: number; body: unknown; contentType?: string }>;

/**
 * The local API on a unix socket (mode 0660, group vwstream): the CLI is its client.
 * No TCP listener here.
 */
export async function startApiServer(socketPath: string, routes: Record<string, Route>, group?: number): Promise<Server> {
  await rm(socketPath, { force: true });
  const server = createServer((req, res) => void handle(routes, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o660);
  if (group !== undefined) await chown(socketPath, 0, group).catch(() => undefined);
  return server;
}

async function handle(routes: Record<string, Route>, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://agent').pathname;
  const route = routes[`${req.method} ${path}`];
  try {
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
