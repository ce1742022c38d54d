import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { execa } from 'execa';
import { Lz4FormatError, lz4DecodedLength } from '../../agent/replication/lz4.ts';

// The real lz4 tool (Debian's lz4) writes the frames; every flag combination it offers.
// stripFinalNewline off: execa drops a last 0x0a even from a buffer, and a frame ends in
// its random-looking content checksum (1 frame in 256 lost its last byte and read as truncated).
const compress = async (data: Buffer, flags: string[]) => Buffer.from((await execa('lz4', ['-c', '-q', ...flags], { input: data, encoding: 'buffer', stripFinalNewline: false })).stdout);

const inputs: [string, Buffer][] = [
  ['empty', Buffer.alloc(0)],
  ['one byte', Buffer.from('x')],
  ['WAL-like: zero pages with a few random bytes', Buffer.concat(Array.from({ length: 300 }, (_, i) => Buffer.concat([randomBytes(24), Buffer.alloc(4096 - 24, i % 7)])))],
  ['random (stored uncompressed)', randomBytes(200_000)],
  ['long runs (extended lengths)', Buffer.alloc(5_000_000, 0x61)],
];

test('decoded length equals the input length for every frame the lz4 tool writes', async () => {
  for (const flags of [[], ['-BD'], ['-BX'], ['--content-size'], ['--no-frame-crc'], ['-B4'], ['-9', '-BD', '-BX']]) {
    for (const [name, data] of inputs) {
      const frame = await compress(data, flags);
      assert.equal(lz4DecodedLength(frame), data.length, `${name} with ${flags.join(' ') || 'defaults'}`);
    }
  }
  // A frame whose last byte is 0x0a (its content checksum) comes through whole.
  const data = Buffer.concat([Buffer.from('0422', 'hex'), Buffer.from('317')]);
  const frame = await compress(data, []);
  assert.equal(frame.at(-1), 0x0a, 'this input\'s frame ends in 0x0a');
  assert.equal(lz4DecodedLength(frame), data.length);
  // Two frames back to back count together.
  const two = Buffer.concat([await compress(Buffer.alloc(1000, 1), []), await compress(Buffer.alloc(333, 2), [])]);
  assert.equal(lz4DecodedLength(two), 1333);
});

test('not a frame, or cut short: an error, never a guess', async () => {
  assert.throws(() => lz4DecodedLength(Buffer.from('SQLite format 3\0')), Lz4FormatError);
  const frame = await compress(Buffer.alloc(100_000, 3), []);
  assert.throws(() => lz4DecodedLength(frame.subarray(0, frame.length - 6)), /truncated/);
});
