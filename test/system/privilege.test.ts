/**
 * Issue 13, items 8 and 9, on Debian 12 hosts with the .deb installed by apt first (the
 * agent starts with the embedded default), then the S3 settings, then a restart:
 * - Litestream runs as its own user vwstream-litestream (group vaultwarden); nothing that
 *   runs as vaultwarden can read the S3 secret: `runuser -u vaultwarden -- grep -r`
 *   over /etc, /run, /var/lib and every /proc/<pid>/environ finds nothing, no command
 *   line holds it, while the same grep as root finds the two files that must hold it;
 * - replication still works: the rows written reach a fresh host;
 * - the file mirror's safety-net timer fires: with PRIMARY_SYNC_INTERVAL=10 it has a
 *   next elapse, and vwstream-sync.service runs at least twice in 25 s (sandboxed, each
 *   run successful).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startS3, type Host } from './harness.ts';
import { agentHost, s3Env, startAgent, statusJson, unitProp, userUuids, waitDbSynced, type AgentHost } from './common.ts';

const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });

const SECRET = 'pa-priv-SECRET-5f4e3d2c1b0a';

async function cursor(host: Host): Promise<string> {
  return (await host.exec(['journalctl', '--show-cursor', '-n', '0', '-q'], { check: false })).stdout.trim().replace(/^-- cursor: /, '');
}

test('S3 secret out of reach of the vaultwarden user, replication works, the sync timer fires', async () => {
  const s3 = await startS3();
  try {
    await s3.createBucket('vault-priv');
    const env = { ...s3Env(s3, 'vault-priv', 'priv/vw'), S3_SECRET_ACCESS_KEY: SECRET, PRIMARY_SYNC_INTERVAL: '10' };
    const a = await agentHost('priv-a', env);
    hosts.push(a);
    const cur = await cursor(a.host);
    await startAgent(a.host);
    const startedAt = Date.now();
    assert.equal((await statusJson(a.host)).state, 'serving');

    // Item 9: the timer has a next elapse right after the start.
    const next = await unitProp(a.host, 'vwstream-sync.timer', 'NextElapseUSecMonotonic');
    assert.match(next, /^\d/, `NextElapseUSecMonotonic of vwstream-sync.timer: ${JSON.stringify(next)}`);
    assert.equal(await unitProp(a.host, 'vwstream-sync.timer', 'ActiveState'), 'active');
    assert.equal(await unitProp(a.host, 'vwstream-sync.timer', 'SubState'), 'waiting');

    const uuids = await a.vw.addUsers(40);
    const attSha = await a.vw.addAttachment('priv.bin', 24_000);
    await waitDbSynced(a.host, Date.now());

    // Who runs what, and who owns what.
    const lsUid = (await a.host.exec(['id', '-u', 'vwstream-litestream'])).stdout.trim();
    const vwUid = (await a.host.exec(['id', '-u', 'vaultwarden'])).stdout.trim();
    assert.notEqual(lsUid, vwUid);
    assert.match((await a.host.exec(['id', '-nG', 'vwstream-litestream'])).stdout, /\bvaultwarden\b/);
    assert.doesNotMatch((await a.host.exec(['id', '-nG', 'vaultwarden'])).stdout, /vwstream-litestream/);
    const lsPid = await unitProp(a.host, 'vwstream-litestream.service', 'MainPID');
    const status = await a.host.readFile(`/proc/${lsPid}/status`);
    assert.equal(/^Uid:\s+(\d+)/m.exec(status)?.[1], lsUid, 'Litestream runs as vwstream-litestream');
    assert.equal(/^Gid:\s+(\d+)/m.exec(status)?.[1], (await a.host.exec(['getent', 'group', 'vaultwarden'])).stdout.split(':')[2]);
    const stat = async (p: string) => (await a.host.exec(['stat', '-c', '%a %U:%G', p])).stdout.trim();
    assert.equal(await stat('/run/vwstream/litestream.yml'), '600 vwstream-litestream:root');
    assert.equal(await stat('/var/lib/vaultwarden'), '770 vaultwarden:vaultwarden');
    assert.equal(await stat('/var/lib/vaultwarden/db.sqlite3'), '660 vaultwarden:vaultwarden');
    assert.equal(await stat('/var/lib/vaultwarden/db.sqlite3-wal'), '660 vaultwarden:vaultwarden');
    assert.match(await stat('/var/lib/vaultwarden/.db.sqlite3-litestream'), /^700 vwstream-litestream:vaultwarden$/);

    // Item 8: as vaultwarden, nothing holds the secret; as root the same search finds it.
    const search = `grep -rlsF -e '${SECRET}' /etc /run /var/lib /proc/[0-9]*/environ`;
    const asRoot = await a.host.sh(search, { check: false, timeoutMs: 120_000 });
    const rootFound = asRoot.stdout.split('\n').filter(Boolean);
    for (const p of ['/etc/vwstream/vwstream.env', '/run/vwstream/litestream.yml']) assert.ok(rootFound.includes(p), `root's search finds ${p}: ${rootFound.join(' ')}`);
    const asVw = await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'sh', '-c', search], { check: false, timeoutMs: 120_000 });
    assert.equal(asVw.stdout.trim(), '', `the vaultwarden user reads the S3 secret in: ${asVw.stdout}`);
    // 1: nothing found; 2: nothing found, some files unreadable (most of them, by design).
    assert.ok(asVw.exitCode === 1 || asVw.exitCode === 2, `grep as vaultwarden: exit ${asVw.exitCode} ${asVw.stderr}`);
    // Positive control for /proc: a process of vaultwarden's own with a marker in its
    // environment is found by the same search as vaultwarden.
    const MARK = 'pa-priv-CONTROL-mark-77';
    await a.host.sh(`setsid -f runuser -u vaultwarden -- env PA_MARK=${MARK} sleep 300 </dev/null >/dev/null 2>&1`);
    const control = await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'sh', '-c', search.replace(SECRET, MARK)], { check: false, timeoutMs: 120_000 });
    assert.ok(control.stdout.split('\n').some((l) => /^\/proc\/\d+\/environ$/.test(l)), `the same search as vaultwarden finds what it may read:\n${control.stdout}`);
    const litestreamEnv = await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'cat', `/proc/${lsPid}/environ`], { check: false });
    assert.notEqual(litestreamEnv.exitCode, 0, 'Litestream\'s environment is not readable by vaultwarden');
    const cmdlines = await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'sh', '-c', `for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f"; echo; done`]);
    assert.match(cmdlines.stdout, /litestream replicate -config \/run\/vwstream\/litestream.yml/);
    assert.ok(!cmdlines.stdout.includes(SECRET), 'a command line holds the secret');
    const direct = await a.host.exec(['runuser', '-u', 'vaultwarden', '--', 'cat', '/run/vwstream/litestream.yml'], { check: false });
    assert.match(direct.stderr, /Permission denied/);

    // Item 9: runs of vwstream-sync.service within 25 s of the start, each successful.
    const waitMs = 25_000 - (Date.now() - startedAt);
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
    const syncLog = (await a.host.exec(['journalctl', '-o', 'cat', `--after-cursor=${cur}`, '-u', 'vwstream-sync.service'], { check: false })).stdout;
    const countedMs = Date.now() - startedAt;
    const runs = syncLog.split('\n').filter((l) => /^Finished vwstream-sync\.service/.test(l)).length;
    const failed = syncLog.split('\n').filter((l) => /Failed|failed/.test(l));
    assert.ok(runs >= 2, `vwstream-sync.service finished ${runs} times in ${Date.now() - startedAt} ms:\n${syncLog}`);
    assert.deepEqual(failed, [], 'a sync run failed');
    assert.match(syncLog, /^files: \d+ uploaded/m, 'the sandboxed sync reached the agent and printed its report');

    // Replication still works: a fresh host on the same prefix gets every row and the file.
    await a.host.exec(['systemctl', 'stop', 'vwstream-agent.service'], { timeoutMs: 180_000 });
    const b = await agentHost('priv-b', env);
    hosts.push(b);
    await startAgent(b.host);
    const s = await statusJson(b.host);
    assert.equal(s.restore.action, 'restore');
    const present = await userUuids(b.host);
    assert.deepEqual(uuids.filter((u) => !present.has(u)), [], 'rows missing on the fresh host');
    const files = (await b.host.sh('find /var/lib/vaultwarden/attachments -type f -exec sha256sum {} +')).stdout;
    assert.ok(files.includes(attSha), `attachment on the fresh host:\n${files}`);
    assert.equal(await b.vw.integrity(), 'ok');
    const more = await b.vw.addUsers(5);
    await waitDbSynced(b.host, Date.now());
    // The restored database is shared with Litestream's group as well.
    assert.equal((await b.host.exec(['stat', '-c', '%a %U:%G', '/var/lib/vaultwarden/db.sqlite3'])).stdout.trim(), '660 vaultwarden:vaultwarden');
    console.log(`# measured: vwstream-sync.service ran ${runs} times in ${Math.round(countedMs / 1000)} s (next elapse ${next}); root's search finds ${rootFound.length} files holding the secret (${rootFound.join(', ')}), vaultwarden's finds 0; ${present.size} rows on the fresh host (${uuids.length} written), ${more.length} more replicated from it`);
  } finally {
    await s3.stop();
  }
});
