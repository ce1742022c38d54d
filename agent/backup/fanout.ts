import { Writable } from 'node:stream';

/** One receiver of the archive stream (an rclone rcat's stdin). */
export interface FanOutSink {
  name: string;
  stream: NodeJS.WritableStream;
  /** Settles when the receiver is gone (child exited; the value may say how); before end() that is a failure. */
  gone: Promise<unknown>;
}

interface SinkState { sink: FanOutSink; failed: string | null; wake: (() => void) | null }

/**
 * Copies one stream to several receivers at the pace of the slowest, without staging it:
 * a receiver that dies is dropped (named in `failures`) and the others go on; when none
 * is left the stream errors, which stops the producer.
 */
export class FanOut extends Writable {
  readonly #sinks: SinkState[];
  #ended = false;
  bytes = 0;

  constructor(sinks: FanOutSink[]) {
    super({ highWaterMark: 1 << 20 });
    this.#sinks = sinks.map((sink) => ({ sink, failed: null, wake: null }));
    for (const s of this.#sinks) {
      s.sink.gone.then(
        (how) => { if (!this.#ended) this.#fail(s, `the upload ended before the archive was complete${typeof how === 'string' && how ? ` (${how})` : ''}`); },
        (err: Error) => this.#fail(s, err.message),
      );
      s.sink.stream.on('error', (err: Error) => this.#fail(s, err.message));
    }
  }

  /** Receivers that failed, with why. */
  get failures(): { name: string; error: string }[] {
    return this.#sinks.filter((s) => s.failed !== null).map((s) => ({ name: s.sink.name, error: s.failed! }));
  }

  #fail(s: SinkState, why: string): void {
    if (s.failed !== null) return;
    s.failed = why;
    s.wake?.();
  }

  #live(): SinkState[] {
    return this.#sinks.filter((s) => s.failed === null);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const live = this.#live();
    if (live.length === 0) {
      cb(new Error(`every destination failed: ${this.failures.map((f) => `${f.name}: ${f.error}`).join('; ')}`));
      return;
    }
    Promise.all(live.map((s) => new Promise<void>((resolve) => {
      if (s.sink.stream.write(chunk)) { resolve(); return; }
      const done = (): void => { s.sink.stream.removeListener('drain', done); s.wake = null; resolve(); };
      s.wake = done;
      s.sink.stream.once('drain', done);
    }))).then(() => { this.bytes += chunk.length; cb(); }, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#ended = true;
    for (const s of this.#live()) s.sink.stream.end();
    cb();
  }
}
