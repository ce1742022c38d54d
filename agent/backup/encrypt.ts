import { createCipheriv, createDecipheriv, pbkdf2Sync, randomBytes, type Cipher, type Decipher } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Streaming AES-256-CBC, byte-compatible with OpenSSL 3's
 * `openssl enc -aes-256-cbc -pbkdf2` (PBKDF2-HMAC-SHA256, 10000 iterations, 8-byte
 * random salt, key and IV from the same PBKDF2 output, PKCS#7 padding, output
 * "Salted__" + salt + ciphertext). Decrypt by hand with
 * `openssl enc -d -aes-256-cbc -pbkdf2 -in FILE -out FILE.tar.gz` (password prompted).
 */
const MAGIC = Buffer.from('Salted__', 'latin1');
export const PBKDF2_ITERATIONS = 10_000;

function derive(password: string, salt: Buffer): { key: Buffer; iv: Buffer } {
  if (password === '') throw new Error('encryption password is empty');
  const out = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, PBKDF2_ITERATIONS, 48, 'sha256');
  return { key: out.subarray(0, 32), iv: out.subarray(32, 48) };
}

/** A Transform that encrypts what passes through. */
export function createEncryptStream(password: string, salt: Buffer = randomBytes(8)): Transform {
  if (salt.length !== 8) throw new Error('salt must be 8 bytes');
  const { key, iv } = derive(password, salt);
  const cipher: Cipher = createCipheriv('aes-256-cbc', key, iv);
  let headerSent = false;
  const header = (t: Transform) => {
    if (!headerSent) { t.push(Buffer.concat([MAGIC, salt])); headerSent = true; }
  };
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      header(this);
      const out = cipher.update(chunk);
      cb(null, out.length ? out : undefined);
    },
    flush(cb: TransformCallback) {
      header(this);
      try { cb(null, cipher.final()); } catch (err) { cb(err as Error); }
    },
  });
}

export class DecryptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecryptError';
  }
}

/** A Transform that decrypts an `openssl enc -aes-256-cbc -pbkdf2` stream. */
export function createDecryptStream(password: string): Transform {
  let head: Buffer = Buffer.alloc(0);
  let decipher: Decipher | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      if (!decipher) {
        head = Buffer.concat([head, chunk]);
        if (head.length < 16) return cb();
        if (!head.subarray(0, 8).equals(MAGIC)) return cb(new DecryptError('not an encrypted archive (no "Salted__" header): is it encrypted with openssl enc -pbkdf2?'));
        try {
          const { key, iv } = derive(password, head.subarray(8, 16));
          decipher = createDecipheriv('aes-256-cbc', key, iv);
        } catch (err) {
          return cb(err as Error);
        }
        chunk = head.subarray(16);
        head = Buffer.alloc(0);
      }
      const out = decipher.update(chunk);
      cb(null, out.length ? out : undefined);
    },
    flush(cb: TransformCallback) {
      if (!decipher) return cb(new DecryptError('encrypted archive is truncated (shorter than its header)'));
      try {
        cb(null, decipher.final());
      } catch {
        cb(new DecryptError('decryption failed: wrong BACKUP_PASSWORD or a corrupt/truncated archive'));
      }
    },
  });
}

/** True when the first bytes are OpenSSL's salted header. */
export function looksEncrypted(firstBytes: Buffer): boolean {
  return firstBytes.length >= 8 && firstBytes.subarray(0, 8).equals(MAGIC);
}
