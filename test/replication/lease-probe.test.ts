import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { S3LeaseStore } from '../../agent/replication/lease.ts';

/** An S3 client that answers PUTs as a store that enforces `ifNoneMatch` and/or `ifMatch`, and records what it was sent. */
function fakeS3(rules: { ifNoneMatch: boolean; ifMatch: boolean }) {
  const objects = new Map<string, string>();
  const sent: string[] = [];
  const fail = (status: number) => Object.assign(new Error(`HTTP ${status}`), { $metadata: { httpStatusCode: status } });
  const client = {
    async send(cmd: { constructor: { name: string }; input: Record<string, string> }) {
      const { Key, IfNoneMatch, IfMatch } = cmd.input;
      const name = cmd.constructor.name;
      sent.push(`${name.replace('ObjectCommand', '')}${IfNoneMatch ? ' If-None-Match' : ''}${IfMatch ? ' If-Match' : ''}`);
      if (name === 'DeleteObjectCommand') { objects.delete(Key!); return {}; }
      if (IfNoneMatch && rules.ifNoneMatch && objects.has(Key!)) throw fail(412);
      if (IfMatch && rules.ifMatch && objects.get(Key!) !== IfMatch) throw fail(412);
      objects.set(Key!, 'etag-1');
      return { ETag: '"etag-1"' };
    },
  };
  return { client: client as unknown as S3Client, sent, objects };
}

const settings = { bucket: 'b', prefix: 'vw' } as never;

test('probe: enforced only when both If-None-Match and If-Match are refused; the probe object is removed', async () => {
  const both = fakeS3({ ifNoneMatch: true, ifMatch: true });
  const r = await new S3LeaseStore(settings, both.client).probe();
  assert.deepEqual({ enforced: r.enforced, applicable: r.applicable }, { enforced: true, applicable: true });
  assert.match(r.detail, /If-None-Match: \* answered 412, one with a wrong If-Match 412$/);
  assert.deepEqual(both.sent, ['Put If-None-Match', 'Put If-None-Match', 'Put If-Match', 'Delete']);
  assert.equal(both.objects.size, 0);

  // Honours If-None-Match but ignores If-Match: a renewal by If-Match would prove nothing.
  const half = fakeS3({ ifNoneMatch: true, ifMatch: false });
  const h = await new S3LeaseStore(settings, half.client).probe();
  assert.equal(h.enforced, false);
  assert.match(h.detail, /If-None-Match: \* is enforced \(412\) but a PUT with If-Match on an ETag .* does not have succeeded/);
  assert.equal(half.objects.size, 0);

  const none = fakeS3({ ifNoneMatch: false, ifMatch: false });
  const n = await new S3LeaseStore(settings, none.client).probe();
  assert.equal(n.enforced, false);
  assert.match(n.detail, /a second PUT with If-None-Match: \* on s3:\/\/b\/vw\/\.vwstream-probe-[0-9a-f]{16} succeeded/);
  assert.deepEqual(none.sent, ['Put If-None-Match', 'Put If-None-Match', 'Delete']);
});
