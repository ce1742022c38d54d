import { readFileSync } from 'node:fs';
import { PATHS } from '../paths.ts';
import { writePrivateFile } from '../replication/litestream.ts';

/** What the agent remembers across restarts (in /var/lib/vwstream, never in the data folder). */
export interface DrainStep { step: string; ok: boolean; ms: number; detail: string }
export interface DrainRecord { complete: boolean; at: string; detail: string; steps: DrainStep[]; ms?: number }

export interface PersistentState {
  lastDrain?: DrainRecord;
  lastRestore?: { at: string; action: string; reason: string; setAsideTo?: string };
  acceptedLocalDigest?: string;
  lastBackup?: { at: string; ok: boolean; name: string; detail: string; bytes?: number; ms?: number };
  lastBackupSuccess?: { at: string; name: string; bytes: number; ms: number };
  /** Counters for /metrics that survive restarts. */
  counters?: { restores?: Record<string, number>; drains?: { complete: number; incomplete: number } };
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

/** Adds one to a persistent counter (restores by action, drains by outcome). */
export async function bumpCounter(kind: 'restores' | 'drains', key: string, path = PATHS.stateFile): Promise<void> {
  const counters = readState(path).counters ?? {};
  if (kind === 'restores') counters.restores = { ...counters.restores, [key]: (counters.restores?.[key] ?? 0) + 1 };
  else {
    const d = counters.drains ?? { complete: 0, incomplete: 0 };
    counters.drains = { ...d, [key]: ((d as Record<string, number>)[key] ?? 0) + 1 };
  }
  await updateState({ counters }, path);
}
