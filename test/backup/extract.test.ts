import assert from 'node:assert/strict';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { after, test } from 'node:test';
import tar from 'tar-stream';
import { createEncryptStream } from '../../agent/backup/encrypt.ts';
import { extractArchive } from '../../agent/backup/extract.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-extract-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function makeArchive(name: string, entries: Record<string, string>, password?: string): Promise<string> {
  const pack = tar.pack();
  for (const [n, c] of Object.entries(entries)) pack.entry({ name: n }, c);
  pack.finalize();
  const out = join(dir, name);
  await pipeline(pack, createGzip(), ...(password ? [createEncryptStream(password)] : []) as [], createWriteStream(out));
  return out;
}

test('unpacks an encrypted tar.gz into staging', async () => {
  const f = await makeArchive('vaultwarden-20260101-000000.tar.gz.enc', { 'db.sqlite3': 'DB', 'attachments/c/a.bin': 'A', 'rsa_key.pem': 'K' }, 'pw-1234');
  const stage = join(dir, 's1');
  const entries = await extractArchive(f, stage, 'pw-1234');
  assert.deepEqual(entries.sort(), ['attachments/c/a.bin', 'db.sqlite3', 'rsa_key.pem']);
  assert.equal(readFileSync(join(stage, 'attachments/c/a.bin'), 'utf8'), 'A');
});

test('a wrong password or a missing one is a clear error', async () => {
  const f = await makeArchive('vaultwarden-20260101-000001.tar.gz.enc', { 'db.sqlite3': 'DB' }, 'right-pw');
  await assert.rejects(extractArchive(f, join(dir, 's2'), 'wrong-pw'), /cannot decrypt .*wrong BACKUP_PASSWORD/);
  await assert.rejects(extractArchive(f, join(dir, 's3'), ''), /is encrypted and BACKUP_PASSWORD is empty/);
});

test('an entry that escapes the staging folder refuses the archive', async () => {
  const f = await makeArchive('evil.tar.gz', { 'db.sqlite3': 'DB', '../../etc/evil': 'x' });
  await assert.rejects(extractArchive(f, join(dir, 's4'), ''), /escapes the data folder/);
  assert.ok(!existsSync(join(dir, 'etc/evil')));
});
