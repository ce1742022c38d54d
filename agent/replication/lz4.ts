/**
 * The decoded length of LZ4 frame data (the format of Litestream 0.3's WAL segments,
 * `<offset>.wal.lz4`), without decoding it: literal and match lengths are summed.
 * With it, the replica's WAL position is the last segment's offset plus this length,
 * exactly as Litestream computes it itself.
 */
const FRAME_MAGIC = 0x184d2204;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

export class Lz4FormatError extends Error {}

export function lz4DecodedLength(buf: Uint8Array): number {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const need = (pos: number, n: number) => { if (pos + n > buf.length) throw new Lz4FormatError('truncated LZ4 frame'); };
  let pos = 0;
  let total = 0;
  while (pos < buf.length) {
    need(pos, 4);
    const magic = dv.getUint32(pos, true);
    pos += 4;
    if ((magic & SKIPPABLE_MASK) === SKIPPABLE_MAGIC) {
      need(pos, 4);
      pos += 4 + dv.getUint32(pos, true);
      continue;
    }
    if (magic !== FRAME_MAGIC) throw new Lz4FormatError(`not an LZ4 frame (magic ${magic.toString(16)})`);
    need(pos, 2);
    const flg = buf[pos]!;
    if (flg >> 6 !== 1) throw new Lz4FormatError(`unsupported LZ4 frame version ${flg >> 6}`);
    const blockChecksum = (flg & 0x10) !== 0;
    const hasContentSize = (flg & 0x08) !== 0;
    const contentChecksum = (flg & 0x04) !== 0;
    const hasDictId = (flg & 0x01) !== 0;
    pos += 2; // FLG, BD
    let declared: number | undefined;
    if (hasContentSize) {
      need(pos, 8);
      declared = Number(dv.getBigUint64(pos, true));
      pos += 8;
    }
    if (hasDictId) pos += 4;
    pos += 1; // header checksum
    let frameTotal = 0;
    for (;;) {
      need(pos, 4);
      const word = dv.getUint32(pos, true);
      pos += 4;
      if (word === 0) break; // end mark
      const size = word & 0x7fffffff;
      need(pos, size);
      if (word & 0x80000000) frameTotal += size; // stored uncompressed
      else frameTotal += blockLength(buf, pos, pos + size);
      pos += size + (blockChecksum ? 4 : 0);
    }
    if (contentChecksum) pos += 4;
    if (pos > buf.length) throw new Lz4FormatError('truncated LZ4 frame');
    total += declared ?? frameTotal;
  }
  return total;
}

/** Sums one compressed block's sequences: literals, then (except at the end) a match of length ≥ 4. */
function blockLength(buf: Uint8Array, start: number, end: number): number {
  let pos = start;
  let total = 0;
  const ext = (n: number) => {
    if (n !== 15) return n;
    for (;;) {
      if (pos >= end) throw new Lz4FormatError('truncated LZ4 block');
      const b = buf[pos++]!;
      n += b;
      if (b !== 255) return n;
    }
  };
  while (pos < end) {
    const token = buf[pos++]!;
    const lit = ext(token >> 4);
    total += lit;
    pos += lit;
    if (pos >= end) break; // the last sequence has literals only
    pos += 2; // match offset
    total += ext(token & 15) + 4;
  }
  if (pos > end) throw new Lz4FormatError('LZ4 block overruns its size');
  return total;
}
