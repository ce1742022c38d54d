import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { FanOut } from '../../agent/backup/fanout.ts';

function chunks(n: number, size: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => Buffer.alloc(size, i % 251));
}
const sha = (bufs: Buffer[]) => createHash('sha256').update(Buffer.concat(bufs)).digest('hex');

/** A receiver that takes `delayMs` per chunk (backpressure) and records what it got. */
function slowSink(delayMs: number, highWaterMark = 1024) {
  const got: Buffer[] = [];
  let resolveGone!: () => void;
  const gone = new Promise<void>((r) => { resolveGone = r; });
  const stream = new Writable({
    highWaterMark,
    write(chunk: Buffer, _e, cb) { got.push(chunk); setTimeout(cb, delayMs); },
    final(cb) { cb(); setImmediate(resolveGone); },
  });
  return { got, gone, stream };
}

test('every receiver gets the same bytes, at the pace of the slowest', async () => {
  const data = chunks(40, 4096);
  const fast = slowSink(0);
  const slow = slowSink(2);
  const fan = new FanOut([{ name: 'fast', stream: fast.stream, gone: fast.gone }, { name: 'slow', stream: slow.stream, gone: slow.gone }]);
  await pipeline(Readable.from(data), fan);
  await Promise.all([fast.gone, slow.gone]);
  assert.equal(fan.bytes, 40 * 4096);
  assert.equal(sha(fast.got), sha(data));
  assert.equal(sha(slow.got), sha(data));
  assert.deepEqual(fan.failures, []);
});

test('a receiver that dies is dropped and named; the others still get everything', async () => {
  const data = chunks(30, 4096);
  const ok = slowSink(1);
  const dying = new PassThrough({ highWaterMark: 1 }); // never read: blocks at once
  let kill!: () => void;
  const dyingGone = new Promise<void>((r) => { kill = r; });
  setTimeout(kill, 20); // "the child exited" while the writer waits for drain
  const fan = new FanOut([{ name: 'ok', stream: ok.stream, gone: ok.gone }, { name: 'dead:', stream: dying, gone: dyingGone }]);
  await pipeline(Readable.from(data), fan);
  await ok.gone;
  assert.equal(sha(ok.got), sha(data));
  assert.deepEqual(fan.failures, [{ name: 'dead:', error: 'the upload ended before the archive was complete' }]);
});

test('when every receiver is gone the stream errors (the producer stops) naming them', async () => {
  const dying = new PassThrough({ highWaterMark: 1 });
  const fan = new FanOut([{ name: 'S3:bucket', stream: dying, gone: Promise.reject(new Error('rclone exited 1: connection refused')) }]);
  await assert.rejects(pipeline(Readable.from(chunks(100, 4096)), fan), /every destination failed: S3:bucket: rclone exited 1: connection refused/);
});
