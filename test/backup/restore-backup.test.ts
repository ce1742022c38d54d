import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chownSync, createWriteStream, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { after, test } from 'node:test';
import tar from 'tar-stream';
import { leftUnchanged, restoreFromBackup } from '../../agent/backup/restore-backup.ts';
import { buildConfig } from '../../agent/config/config.ts';
import { parseEnvFile } from '../../agent/config/envfile.ts';
import type { Runtime } from '../../agent/replication/runtime.ts';
import { AgentError } from '../../agent/errors.ts';

const base = mkdtempSync(join(tmpdir(), 'vws-restore-backup-'));
after(() => rmSync(base, { recursive: true, force: true }));
const svc = { uid: 4242, gid: 4242 };
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
let n = 0;

function dbBytes(users: number): Buffer {
  const p = join(base, `db-${n++}.sqlite3`);
  const db = new DatabaseSync(p);
  db.exec('CREATE TABLE users (uuid TEXT)');
  for (let i = 0; i < users; i++) db.prepare('INSERT INTO users VALUES (?)').run(`u${i}`);
  db.close();
  return readFileSync(p);
}

async function archive(entries: { name: string; body?: string | Buffer; type?: 'symlink' | 'file'; linkname?: string }[]): Promise<string> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname! });
    else pack.entry({ name: e.name }, e.body ?? '');
  }
  pack.finalize();
  const out = join(base, `a-${n++}.tar.gz`);
  await pipeline(pack, createGzip(), createWriteStream(out));
  return out;
}

/** A host-like layout: data folder owned by the service user, state dir, a root-only secret. */
function host() {
  const h = join(base, `h${n++}`);
  const p = { dataFolder: join(h, 'vaultwarden'), stateDir: join(h, 'vwstream'), asideDir: join(h, 'vwstream/aside'), stateFile: join(h, 'vwstream/state.json') };
  mkdirSync(p.dataFolder, { recursive: true });
  mkdirSync(p.stateDir, { recursive: true });
  chownSync(p.dataFolder, svc.uid, svc.gid);
  const secret = join(h, 'shadow');
  writeFileSync(secret, 'root:$y$secret-hash:', { mode: 0o600 });
  const rootDir = join(h, 'root-owned');
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(join(rootDir, 'keep'), 'root file');
  const cfg = buildConfig(parseEnvFile('', 'test.env'), 'test.env', { dataFolder: p.dataFolder });
  const rt = { ids: svc, dbPath: join(p.dataFolder, 'db.sqlite3') } as Runtime;
  return { p, secret, rootDir, cfg, rt };
}

function snapshot(dir: string) {
  const st = lstatSync(dir);
  return { uid: st.uid, gid: st.gid, mode: st.mode, list: readdirSync(dir).sort().map((f) => [f, sha(readFileSync(join(dir, f)))]) };
}

test('restore --backup writes real files owned by the service user; a link where a file goes is moved aside, never written through', async () => {
  const { p, secret, cfg, rt } = host();
  const A = Buffer.alloc(3000, 9);
  const file = await archive([
    { name: 'db.sqlite3', body: dbBytes(3) },
    { name: 'attachments/c1/a.bin', body: A },
    { name: 'sends/s1/f', body: 'SEND' },
    { name: 'rsa_key.pem', body: 'BACKUP KEY' },
    { name: 'attachments/evil', type: 'symlink', linkname: secret },
    { name: 'db.sqlite3-wal', body: 'would corrupt the database' },
    { name: 'tmp/x', body: 'not a vault file' },
  ]);
  writeFileSync(rt.dbPath, dbBytes(1));
  mkdirSync(join(p.dataFolder, 'attachments/c1'), { recursive: true });
  writeFileSync(join(p.dataFolder, 'attachments/c1/a.bin'), 'OLD');
  symlinkSync(secret, join(p.dataFolder, 'rsa_key.pem'));
  const r = await restoreFromBackup(cfg, rt, file, () => undefined, p);
  assert.equal(r.users, 3);
  assert.equal(r.files, 3);
  assert.deepEqual(r.ignored.sort(), ['db.sqlite3-wal', 'tmp/x']);
  for (const [rel, body] of [['attachments/c1/a.bin', A], ['sends/s1/f', 'SEND'], ['rsa_key.pem', 'BACKUP KEY']] as const) {
    const st = lstatSync(join(p.dataFolder, rel));
    assert.deepEqual([st.isFile(), st.uid, st.gid, st.mode & 0o777], [true, svc.uid, svc.gid, 0o600], rel);
    assert.equal(sha(readFileSync(join(p.dataFolder, rel))), sha(body), rel);
  }
  for (const d of ['sends', 'sends/s1']) assert.equal(lstatSync(join(p.dataFolder, d)).uid, svc.uid, d);
  assert.equal(readFileSync(secret, 'utf8'), 'root:$y$secret-hash:');
  assert.deepEqual([statSync(secret).uid, statSync(secret).mode & 0o777], [0, 0o600]);
  assert.ok(!existsSync(join(p.dataFolder, 'attachments/evil')));
  assert.ok(!existsSync(join(p.dataFolder, 'db.sqlite3-wal')));
  assert.ok(!existsSync(join(p.dataFolder, 'tmp')));
  // The replaced file and the planted link are kept aside (the link as a link).
  assert.equal(readFileSync(join(r.setAsideTo!, 'files/attachments/c1/a.bin'), 'utf8'), 'OLD');
  assert.equal(readlinkSync(join(r.setAsideTo!, 'files/rsa_key.pem')), secret);
  assert.deepEqual(readdirSync(p.dataFolder).sort(), ['attachments', 'db.sqlite3', 'rsa_key.pem', 'sends']);
});

for (const plant of ['attachments -> a root-owned folder', 'attachments/c1 -> a root-owned folder', 'sends owned by another uid', 'attachments is a file'] as const) {
  test(`restore --backup refuses before anything changes when ${plant}`, async () => {
    const { p, rootDir, cfg, rt } = host();
    const file = await archive([{ name: 'db.sqlite3', body: dbBytes(3) }, { name: 'attachments/c1/a.bin', body: 'A' }, { name: 'sends/s1/f', body: 'S' }]);
    writeFileSync(rt.dbPath, dbBytes(1));
    const liveBefore = sha(readFileSync(rt.dbPath));
    let refused: string;
    if (plant === 'attachments -> a root-owned folder') {
      symlinkSync(rootDir, join(p.dataFolder, 'attachments'));
      refused = `${p.dataFolder}/attachments: is a symbolic link`;
    } else if (plant === 'attachments/c1 -> a root-owned folder') {
      mkdirSync(join(p.dataFolder, 'attachments'));
      symlinkSync(rootDir, join(p.dataFolder, 'attachments/c1'));
      refused = `${p.dataFolder}/attachments/c1: is a symbolic link`;
    } else if (plant === 'sends owned by another uid') {
      mkdirSync(join(p.dataFolder, 'sends'));
      chownSync(join(p.dataFolder, 'sends'), 1234, 1234);
      refused = `${p.dataFolder}/sends: is owned by uid 1234, expected 4242 or 0`;
    } else {
      writeFileSync(join(p.dataFolder, 'attachments'), 'file');
      refused = `${p.dataFolder}/attachments: is not a directory (a file)`;
    }
    const before = snapshot(rootDir);
    await assert.rejects(restoreFromBackup(cfg, rt, file, () => undefined, p), (e: unknown) => {
      assert.ok(e instanceof AgentError);
      assert.equal(e.message, `restore refused: ${refused}; refusing to follow or write through it; nothing was changed`);
      assert.match(e.hint!, /bind mount, not a symlink/);
      assert.equal(leftUnchanged(e), true);
      return true;
    });
    assert.deepEqual(snapshot(rootDir), before);
    assert.equal(sha(readFileSync(rt.dbPath)), liveBefore);
    assert.ok(!existsSync(p.asideDir));
    assert.ok(!existsSync(join(p.dataFolder, 'sends/s1')));
    assert.ok(!existsSync(join(p.dataFolder, 'attachments/c1/a.bin')));
  });
}
