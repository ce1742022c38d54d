import assert from 'node:assert/strict';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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
let n = 0;

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
  await assert.rejects(extractArchive(f, join(dir, 's4'), ''), /is not a clean relative path \(it could escape the data folder\); refusing this archive/);
  assert.ok(!existsSync(join(dir, 'etc/evil')));
});

test('links and odd names in an archive: links are not unpacked, unclean names refuse the archive', async () => {
  const pack = tar.pack();
  pack.entry({ name: 'db.sqlite3' }, 'DB');
  pack.entry({ name: 'attachments/', type: 'directory' });
  pack.entry({ name: 'attachments/link', type: 'symlink', linkname: '/etc/shadow' });
  pack.entry({ name: 'attachments/hard', type: 'link', linkname: 'db.sqlite3' });
  pack.entry({ name: 'attachments/c/a' }, 'A');
  pack.finalize();
  const f = join(dir, 'links.tar');
  await pipeline(pack, createWriteStream(f));
  const stage = join(dir, 's5');
  assert.deepEqual((await extractArchive(f, stage, '')).sort(), ['attachments/c/a', 'db.sqlite3']);
  assert.deepEqual(readdirSync(join(stage, 'attachments')), ['c']);
  for (const bad of ['attachments//x', 'attachments\\..\\x', 'a/./b']) {
    const p = tar.pack();
    p.entry({ name: 'db.sqlite3' }, 'DB');
    p.entry({ name: bad }, 'X');
    p.finalize();
    const g = join(dir, `bad-${n++}.tar`);
    await pipeline(p, createWriteStream(g));
    await assert.rejects(extractArchive(g, join(dir, `s-bad-${n}`), ''), /is not a clean relative path/, bad);
  }
});
