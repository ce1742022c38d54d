import { readFileSync } from 'node:fs';
import { PATHS } from '../paths.ts';
import { writePrivateFile } from '../replication/litestream.ts';

/** What the agent remembers across restarts (in /var/lib/vwstream, never in the data folder). */
export interface DrainStep { step: string; ok: boolean; ms: number; detail: string }
export interface DrainRecord { complete: boolean; at: string; detail: string; steps: DrainStep[] }

export interface PersistentState {
  lastDrain?: DrainRecord;
  lastRestore?: { at: string; action: string; reason: string; setAsideTo?: string };
  acceptedLocalDigest?: string;
  lastBackup?: { at: string; ok: boolean; name: string; detail: string };
  /** Secondary: digest of the copy it installed last (local changes are detected against it). */
  secondaryDigest?: string;
  lastDbSync?: string;
  /** The last restore drill (`vwstream-agent verify`): its one-line verdict. */
  lastVerify?: { at: string; ok: boolean; summary: string; ms: number };
}

export function readState(path = PATHS.stateFile): PersistentState {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as PersistentState;
  } catch {
    return {};
  }
}

export async function updateState(patch: Partial<PersistentState>, path = PATHS.stateFile): Promise<PersistentState> {
  const next = { ...readState(path), ...patch };
  await writePrivateFile(path, JSON.stringify(next, null, 2) + '\n');
  return next;
}
