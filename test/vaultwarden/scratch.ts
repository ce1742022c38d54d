// Scratch folders for the image tests: a new empty one per call, all removed after the file's tests.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export function scratchDirs(prefix: string): () => string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return () => {
    const d = join(root, `d${++n}`);
    mkdirSync(d);
    return d;
  };
}

export const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
