/**
 * The Ceph RGW harness (TESTING.md §2b) and the lease store against a real S3 that enforces
 * preconditions, without hosts: the server's quirks pinned (If-None-Match twice → 412; a
 * quoted If-Match ETag → 412, unquoted → 200; a losing racer may get 500), the probe
 * (enforced on RGW, not on fauxqs), a race of keepers (exactly one holder) and a take-over of
 * an expired lease by If-Match.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { LeaseKeeper } from '../../agent/replication/lease-keeper.ts';
import { S3LeaseStore, newLease, type Identity } from '../../agent/replication/lease.ts';
import type { S3Settings } from '../../agent/config/config.ts';
import { s3ClientFor, startRgw, startS3, type S3Server } from './harness.ts';

const clientFor = s3ClientFor;
const settings = (bucket: string, prefix: string) => ({ bucket, prefix }) as S3Settings;
const status = (e: unknown) => (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
async function putStatus(c: S3Client, input: ConstructorParameters<typeof PutObjectCommand>[0]): Promise<number> {
  try {
    const r = await c.send(new PutObjectCommand(input));
    return r.$metadata.httpStatusCode ?? 0;
  } catch (e) {
    return status(e) ?? -1;
  }
}
const id = (n: string): Identity => ({ holder: 'vault', instance: `i-${n}`, machineId: 'm-shared', bootId: 'b-shared', token: `t-${n}` });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('Ceph RGW', () => {
  let rgw: S3Server;
  let c: S3Client;
  const B = 'rgw-self';
  before(async () => {
    const t0 = Date.now();
    rgw = await startRgw();
    console.log(`# measured: Ceph RGW (mon + memstore OSD + radosgw) answered S3 ${Date.now() - t0} ms after start`);
    c = clientFor(rgw);
    await rgw.createBucket(B);
    await rgw.createBucket(B); // idempotent
  });
  after(async () => { c?.destroy(); await rgw?.stop(); });

  test('checks signatures, enforces If-None-Match and If-Match (unquoted ETag only), pause hangs', async () => {
    assert.equal((await fetch(`${rgw.endpoint}/${B}/x`)).status, 403, 'an unsigned request was served');
    const key = 'quirks/k';
    assert.equal(await putStatus(c, { Bucket: B, Key: key, Body: 'one', IfNoneMatch: '*' }), 200);
    assert.equal(await putStatus(c, { Bucket: B, Key: key, Body: 'two', IfNoneMatch: '*' }), 412);
    const etag = (await c.send(new HeadObjectCommand({ Bucket: B, Key: key }))).ETag!;
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    assert.equal(await putStatus(c, { Bucket: B, Key: key, Body: 'three', IfMatch: etag }), 412, 'the quoted ETag (as S3 returns it) was accepted');
    assert.equal(await putStatus(c, { Bucket: B, Key: key, Body: 'three', IfMatch: etag.slice(1, -1) }), 200);
    assert.equal(await putStatus(c, { Bucket: B, Key: key, Body: 'four', IfMatch: etag.slice(1, -1) }), 412, 'a stale ETag was accepted');
    assert.equal(await putStatus(c, { Bucket: B, Key: 'quirks/missing', Body: 'x', IfMatch: etag.slice(1, -1) }), 412, 'If-Match on a missing key (AWS: 404)');
    assert.equal(await (await c.send(new GetObjectCommand({ Bucket: B, Key: key }))).Body!.transformToString(), 'three');

    rgw.pause();
    try {
      await assert.rejects(c.send(new HeadObjectCommand({ Bucket: B, Key: key }), { abortSignal: AbortSignal.timeout(1000) }), /abort/i);
    } finally { rgw.resume(); }
    assert.equal((await c.send(new HeadObjectCommand({ Bucket: B, Key: key }), { abortSignal: AbortSignal.timeout(10_000) })).ETag?.length, 34);
  });

  test('16 concurrent creators with If-None-Match: * → exactly one 200, the rest 412 (or 500)', async () => {
    const codes = await Promise.all(Array.from({ length: 16 }, (_, i) => putStatus(c, { Bucket: B, Key: 'race/k', Body: `w${i}`, IfNoneMatch: '*' })));
    const count = (n: number) => codes.filter((x) => x === n).length;
    console.log(`# measured: 16 racing conditional creators on RGW: ${count(200)}×200, ${count(412)}×412, ${count(500)}×500, other ${JSON.stringify(codes.filter((x) => ![200, 412, 500].includes(x)))}`);
    assert.equal(count(200), 1, `codes ${JSON.stringify(codes)}`);
    assert.equal(count(200) + count(412) + count(500), 16, `codes ${JSON.stringify(codes)}`);
  });

  test('S3LeaseStore.probe: enforced on RGW, the probe object is removed', async () => {
    const store = new S3LeaseStore(settings(B, 'probe/vw'), c);
    const r = await store.probe(AbortSignal.timeout(10_000));
    assert.deepEqual({ enforced: r.enforced, applicable: r.applicable }, { enforced: true, applicable: true }, r.detail);
    assert.match(r.detail, /412/);
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const left = await c.send(new ListObjectsV2Command({ Bucket: B, Prefix: 'probe/' }));
    assert.deepEqual((left.Contents ?? []).map((o) => o.Key), [], 'the probe object was left behind');
  });

  test('keepers on RGW: 8 racing clones → exactly one holder; renewals by If-Match succeed; a 412 is lost at once; an expired lease is taken over', async () => {
    const store = new S3LeaseStore(settings(B, 'keepers/vw'), c);
    const lost: string[] = [];
    const keepers = Array.from({ length: 8 }, (_, i) => new LeaseKeeper({ store, me: id(String(i)), ttlMs: 3_000, settleMs: 200, onLost: (r) => lost.push(`${i}: ${r}`) }));
    const ds = await Promise.all(keepers.map((k) => k.tryAcquire()));
    const winners = keepers.filter((k) => k.held);
    assert.equal(winners.length, 1, `decisions ${JSON.stringify(ds)}`);
    assert.equal(ds.filter((d) => d.action === 'acquire').length, 1);
    for (const k of keepers) assert.equal(k.conditional?.enforced, true, k.conditional?.message);
    const a = winners[0]!;
    const onStore = (await store.read())!;
    assert.equal(onStore.lease.token, a.me.token);
    assert.match(onStore.etag!, /^"/, 'S3 returns the ETag quoted: the store must unquote it for If-Match');

    // Renewals with If-Match (unquoted) succeed: the expiry moves, the ETag changes.
    for (let i = 0; i < 3; i++) {
      const before = (await store.read())!;
      await sleep(20);
      await a.renew();
      const now = (await store.read())!;
      assert.equal(now.lease.token, a.me.token);
      assert.ok(now.lease.expiresAt > before.lease.expiresAt, `renewal ${i} did not move the expiry`);
      assert.notEqual(now.etag, before.etag);
    }
    assert.equal(lost.length, 0, JSON.stringify(lost));
    assert.equal(a.suspended, null);

    // A renewal is one request: the If-Match PUT on the ETag RGW answered our last PUT with.
    const ops: string[] = [];
    const realRead = store.read.bind(store);
    const realWrite = store.write.bind(store);
    store.read = (signal) => { ops.push('GET'); return realRead(signal); };
    store.write = (lease, expect, signal) => { ops.push(`PUT ${expect.etag ? 'If-Match' : expect.etag === null ? 'If-None-Match' : 'unconditional'}`); return realWrite(lease, expect, signal); };
    const beforeOne = Date.parse(a.seen!.expiresAt);
    await a.renew();
    assert.deepEqual(ops, ['PUT If-Match']);
    assert.ok(Date.parse((await realRead())!.lease.expiresAt) > beforeOne);
    store.read = realRead;
    store.write = realWrite;

    // Someone replaces the lease between two renewals: the If-Match write gets 412, one read shows the thief: lost at once.
    await store.write(newLease(id('thief'), Date.now(), 3_000), {});
    await a.renew();
    assert.equal(lost.length, 1, JSON.stringify(lost));
    assert.match(lost[0]!, /lease taken by vault \(instance i-thief\).*our renewal: lease changed under us \((412|409)\)/);

    // The thief's lease expires (plus the margin): a clone takes it over with If-Match, the thief's late renewal is lost.
    const thief = new LeaseKeeper({ store, me: id('thief'), ttlMs: 3_000, settleMs: 200, onLost: (r) => lost.push(`thief: ${r}`) });
    await thief.probe();
    const cur = (await store.read())!;
    const expired = Date.parse(cur.lease.expiresAt) + a.marginMs + 50 - Date.now();
    const w = await keepers[1]!.tryAcquire();
    assert.equal(w.action, 'wait');
    await sleep(Math.max(0, expired));
    const t0 = Date.now();
    const d = await keepers[1]!.tryAcquire();
    console.log(`# measured: take-over of an expired lease on RGW (read + If-Match PUT) ${Date.now() - t0} ms`);
    assert.equal(d.action, 'acquire', JSON.stringify(d));
    assert.equal((await store.read())!.lease.token, 't-1');
    thief.seen = cur.lease;
    await thief.renew();
    assert.match(lost.at(-1)!, /^thief: lease taken by vault \(instance i-1\)/);

    // The lease object deleted under its holder: the If-Match PUT fails (RGW: 412 or 404), the read finds nothing: lost.
    const goneStore = new S3LeaseStore(settings(B, 'keepers/gone'), c);
    const gone: string[] = [];
    const g = new LeaseKeeper({ store: goneStore, me: id('g'), ttlMs: 3_000, settleMs: 200, onLost: (r) => gone.push(r) });
    assert.equal((await g.tryAcquire()).action, 'acquire');
    await g.renew();
    assert.deepEqual(gone, []);
    await goneStore.remove();
    await g.renew();
    assert.equal(gone.length, 1, JSON.stringify(gone));
    assert.match(gone[0]!, /^lease taken by nobody \(lease object disappeared\) \(our renewal: lease changed under us \((412|404)/);
    assert.equal(await goneStore.read(), null, 'the lost holder wrote the lease again');
  });
});

test('S3LeaseStore.probe on fauxqs: not enforced (it ignores preconditions)', async () => {
  const s3 = await startS3();
  const c = clientFor(s3);
  try {
    await c.send(new CreateBucketCommand({ Bucket: 'probe-fq' }));
    const store = new S3LeaseStore(settings('probe-fq', 'vw'), c);
    const r = await store.probe(AbortSignal.timeout(10_000));
    assert.deepEqual({ enforced: r.enforced, applicable: r.applicable }, { enforced: false, applicable: true }, r.detail);
    const k = new LeaseKeeper({ store, me: id('f'), ttlMs: 10_000, onLost: () => undefined });
    const st = await k.probe();
    assert.match(st!.message, /conditional writes not enforced: read-back only; two primaries can overlap for up to 7 s/);
  } finally {
    c.destroy();
    await s3.stop();
  }
});
