import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, test } from 'node:test';
import { createDecryptStream, createEncryptStream, DecryptError, looksEncrypted } from '../../agent/backup/encrypt.ts';
import { run } from '../../agent/exec.ts';

const dir = mkdtempSync(join(tmpdir(), 'vws-enc-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const PASSWORD = 'correct horse battery staple ✓ $(echo no) "quotes"';
/** openssl reads the password from a 0600 file: never argv. */
const passFile = join(dir, 'pass');
writeFileSync(passFile, PASSWORD + '\n', { mode: 0o600 });

async function encryptFile(src: string, dst: string, password = PASSWORD): Promise<void> {
  await pipeline(createReadStream(src, { highWaterMark: 7777 }), createEncryptStream(password), createWriteStream(dst));
}
async function decryptFile(src: string, dst: string, password = PASSWORD): Promise<void> {
  await pipeline(createReadStream(src, { highWaterMark: 5 }), createDecryptStream(password), createWriteStream(dst));
}

for (const size of [0, 1, 15, 16, 17, 1_000_003]) {
  test(`Node-encrypted (${size} bytes) decrypts with openssl enc -d -aes-256-cbc -pbkdf2, byte-identical`, async () => {
    const plain = join(dir, `p${size}`);
    writeFileSync(plain, randomBytes(size));
    await encryptFile(plain, `${plain}.enc`);
    const enc = readFileSync(`${plain}.enc`);
    assert.ok(looksEncrypted(enc));
    assert.equal(enc.length, 16 + (Math.floor(size / 16) + 1) * 16);
    await run('openssl', ['enc', '-d', '-aes-256-cbc', '-pbkdf2', '-pass', `file:${passFile}`, '-in', `${plain}.enc`, '-out', `${plain}.out`]);
    assert.ok(readFileSync(`${plain}.out`).equals(readFileSync(plain)));
  });
}

test('openssl-encrypted decrypts in Node, byte-identical', async () => {
  const plain = join(dir, 'o');
  writeFileSync(plain, randomBytes(300_001));
  await run('openssl', ['enc', '-aes-256-cbc', '-pbkdf2', '-salt', '-pass', `file:${passFile}`, '-in', plain, '-out', `${plain}.enc`]);
  await decryptFile(`${plain}.enc`, `${plain}.out`);
  assert.ok(readFileSync(`${plain}.out`).equals(readFileSync(plain)));
});

test('a fixed salt gives the same ciphertext as openssl -S (which omits the header)', async () => {
  const plain = join(dir, 'fixed');
  writeFileSync(plain, 'hello backup\n');
  const salt = Buffer.from('0102030405060708', 'hex');
  const chunks: Buffer[] = [];
  await pipeline(Readable.from([readFileSync(plain)]), createEncryptStream(PASSWORD, salt), async function* (src) { for await (const c of src) chunks.push(c as Buffer); });
  await run('openssl', ['enc', '-aes-256-cbc', '-pbkdf2', '-S', '0102030405060708', '-pass', `file:${passFile}`, '-in', plain, '-out', `${plain}.enc`]);
  const ours = Buffer.concat(chunks);
  assert.ok(ours.subarray(0, 16).equals(Buffer.concat([Buffer.from('Salted__'), salt])));
  assert.ok(ours.subarray(16).equals(readFileSync(`${plain}.enc`)));
});

test('a wrong password or a plain file fails with a clear DecryptError', async () => {
  // CBC has no MAC: a wrong key ends in valid PKCS#7 padding about 1 time in 256 (the
  // archive's gunzip catches that in extract.ts). Fixed bytes and salt keep this case
  // one whose padding check fails, every run.
  const plain = join(dir, 'w');
  writeFileSync(plain, Buffer.alloc(1000, 0x5a));
  await pipeline(createReadStream(plain), createEncryptStream(PASSWORD, Buffer.from('a1b2c3d4e5f60718', 'hex')), createWriteStream(`${plain}.enc`));
  await assert.rejects(decryptFile(`${plain}.enc`, `${plain}.out`, 'wrong password'), (err: unknown) => err instanceof DecryptError && /wrong BACKUP_PASSWORD/.test(err.message));
  await assert.rejects(decryptFile(plain, `${plain}.out2`), (err: unknown) => err instanceof DecryptError && /Salted__/.test(err.message));
  await assert.rejects(decryptFile(join(dir, 'p1'), `${plain}.out3`), DecryptError);
});
