import { groupOf } from './scope.ts';

export interface LocalFile { size: number; mtimeMs: number }
/**
 * What the mirror knows of one file: the local size and mtime it last saw, the content's
 * sha256, and the remote object's etag when this vault wrote (or fetched) that object.
 * `conflict`: the remote object under this key is not this vault's; the local content
 * was kept under this other key instead, and the remote one is never overwritten.
 */
export interface ManifestEntry { size: number; mtimeMs: number; sha256: string; etag?: string; conflict?: string }
export type Manifest = Map<string, ManifestEntry>;

export interface SyncPlan {
  /** New or changed by size/mtime: read, hash, and upload if the hash differs. */
  check: string[];
  /** Uploaded before, gone locally now: delete remotely. */
  remove: string[];
  /** Kept under a conflict name, gone locally now: forget (the remote object was never ours). */
  forget: string[];
  /** Deletions held back because a whole group vanished locally (no mass delete). */
  heldBack: { group: string; files: number }[];
  unchanged: number;
}

/**
 * Compares a local scan (stat only, no contents) with the manifest of what was uploaded.
 * A file whose size and mtime match the manifest is not read at all. Deletions propagate
 * only for files the manifest knows (they existed locally and were uploaded), and never
 * when a whole group (attachments/, sends/, …) is empty locally while the manifest holds
 * files there: an empty or unmounted folder must not wipe the remote.
 */
export function planSync(local: Map<string, LocalFile>, manifest: Manifest): SyncPlan {
  const check: string[] = [];
  let unchanged = 0;
  for (const [rel, f] of local) {
    const m = manifest.get(rel);
    if (m && m.size === f.size && m.mtimeMs === f.mtimeMs) unchanged++;
    else check.push(rel);
  }
  const localGroups = new Set([...local.keys()].map(groupOf));
  const gone = new Map<string, string[]>();
  for (const rel of manifest.keys()) {
    if (local.has(rel)) continue;
    const g = groupOf(rel);
    const list = gone.get(g);
    if (list) list.push(rel);
    else gone.set(g, [rel]);
  }
  const remove: string[] = [];
  const forget: string[] = [];
  const heldBack: SyncPlan['heldBack'] = [];
  for (const [g, files] of gone) {
    const conflicts = files.filter((rel) => manifest.get(rel)?.conflict);
    forget.push(...conflicts);
    const owned = files.filter((rel) => !manifest.get(rel)?.conflict);
    if (owned.length === 0) continue;
    if (!localGroups.has(g)) heldBack.push({ group: g, files: owned.length });
    else remove.push(...owned);
  }
  return { check: check.sort(), remove: remove.sort(), forget: forget.sort(), heldBack, unchanged };
}
