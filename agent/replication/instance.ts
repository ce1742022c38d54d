import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileDurableSync } from '../fs.ts';

/**
 * This agent's instance id: random, created at the first start of a boot in the runtime
 * directory (/run/vwstream, a tmpfs), and kept there until the next boot. A restart of
 * the agent within the same boot finds it again; a clone of this host (same
 * /etc/machine-id, same hostname) and a container on the same kernel (same boot id) have
 * their own /run, so they make their own. It is the lease's identity; machine id, boot id
 * and hostname are information only.
 */
export interface InstanceRecord { id: string; bootId: string; createdAt: string }

const ID_RE = /^[0-9a-f]{32}$/;

/**
 * Reads the instance id from `file`, or creates it when missing, unreadable, or written
 * in another boot (a /run that is not a tmpfs survives a reboot: the id must not).
 */
export function instanceId(file: string, bootId: string, now = new Date()): { record: InstanceRecord; created: boolean } {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as Partial<InstanceRecord>;
    if (typeof r.id === 'string' && ID_RE.test(r.id) && r.bootId === bootId && typeof r.createdAt === 'string') {
      return { record: { id: r.id, bootId, createdAt: r.createdAt }, created: false };
    }
  } catch {
    // missing or garbled: a new one below
  }
  const record: InstanceRecord = { id: randomBytes(16).toString('hex'), bootId, createdAt: now.toISOString() };
  mkdirSync(dirname(file), { recursive: true });
  writeFileDurableSync(file, JSON.stringify(record) + '\n', { mode: 0o600 });
  return { record, created: true };
}
