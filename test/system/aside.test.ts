/**
 * Kept-aside data (issue 13 item 7) on real hosts: the .deb installed by apt (postinst
 * starts the agent with the embedded default), then the config written, then a restart.
 *
 * 1. Folders planted under /var/lib/vwstream/aside with several reasons and times, plus
 *    foreign entries (a file, a folder with another name, a folder of another owner, a
 *    symbolic link with an aside-like name) and links inside a folder that goes:
 *    `aside --json` lists them with their sizes, `aside prune --dry-run` removes nothing,
 *    `aside prune` removes exactly the folders the rule selects and nothing a link points
 *    to, status shows the remaining total, health has the aside_size check, and the next
 *    start prunes by itself and logs each removal once.
 * 2. A secondary: a write that lands while a refresh stops Vaultwarden (after the refresh
 *    compared the local copy) is kept aside, never lost, and the prune that follows keeps
 *    the newest copy of every reason; the serving secondary is not restarted by the
 *    watchdog (100 s).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { startS3, type Host, type S3Server } from './harness.ts';
import { agentHost, agentMessages, s3Env, startAgentQuick as startAgent, statusJson, userUuids, waitDbSynced, waitFor, waitServing, writeEnv, type AgentHost } from './common.ts';

const ASIDE = '/var/lib/vwstream/aside';
const DAY = 86_400_000;
const hosts: AgentHost[] = [];
after(async () => { for (const h of hosts) await h.host.destroy().catch(() => undefined); });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The folder name setAside writes. */
const asideName = (at: Date, reason: string) => `${at.toISOString().replace(/[:.]/g, '-')}-${reason}`;

/** Plants an aside folder as setAside leaves one: a database of `bytes` bytes and a replaced attachment (10 bytes). */
function plantScript(name: string, bytes: number, owner = 'root'): string {
  const d = `${ASIDE}/${name}`;
  return `mkdir -p -m 0700 '${d}/files/attachments' && head -c ${bytes} /dev/urandom > '${d}/db.sqlite3' && printf 0123456789 > '${d}/files/attachments/a.bin' && chown -R ${owner}: '${d}'`;
}

async function asideJson(host: Host): Promise<{ count: number; bytes: number; entries: { name: string; reason: string; time: string; bytes: number; prune: boolean }[]; foreign: { name: string; kind: string }[] }> {
  return JSON.parse((await host.exec(['vwstream-agent', 'aside', '--json'])).stdout);
}

async function ls(host: Host): Promise<string[]> {
  return (await host.sh(`ls -A ${ASIDE}`)).stdout.split('\n').filter(Boolean).sort();
}

describe('kept-aside data', () => {
  test('aside lists planted folders with sizes, prune removes exactly what the rule selects, status shows the total, a start prunes by itself', async () => {
    const h = await agentHost('vws-as-p', {});
    hosts.push(h);
    const { host } = h;
    // The operator's path: installed (postinst started it with the embedded default), then configured, then restarted.
    await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(h.port), ASIDE_MIN_KEEP: '2', ASIDE_RETENTION_DAYS: '7' });
    await startAgent(host);
    const s0 = await statusJson(host);
    assert.equal(s0.state, 'serving');
    assert.deepEqual(s0.aside.rule, { minKeep: 2, retentionDays: 7 });

    const now = Date.now();
    const at = (days: number) => new Date(now - days * DAY);
    const slc = [1 / 24, 2, 10, 20, 40].map((d) => asideName(at(d), 'secondary-local-changes'));
    const planted: [string, number][] = [
      ...slc.map((n, i): [string, number] => [n, 1000 * (i + 1)]),
      [asideName(at(30), 'before-restore'), 7000], [asideName(at(60), 'before-restore'), 8000],
      [asideName(at(90), 'corrupt'), 9000],
      [asideName(at(3), 'untouched'), 1100], [asideName(at(5), 'untouched'), 1200], [asideName(at(6), 'untouched'), 1300],
      [`${at(50).getTime()}-before-backup-restore`, 2100], [asideName(at(45), 'before-backup-restore'), 2200], [asideName(at(100), 'before-backup-restore'), 2300],
    ];
    const expectRemoved = [asideName(at(100), 'before-backup-restore'), slc[4]!, slc[3]!, slc[2]!]; // oldest first
    const linkLike = asideName(at(400), 'secondary-local-changes');
    const otherOwner = asideName(at(500), 'before-restore');
    const rsaBefore = (await host.exec(['sha256sum', '/var/lib/vaultwarden/rsa_key.pem'])).stdout;
    await host.sh([
      `mkdir -p -m 0700 ${ASIDE}`,
      ...planted.map(([n, b]) => plantScript(n, b)),
      // Links inside a folder that goes: to the live RSA key and to the live data folder.
      `ln -s /var/lib/vaultwarden/rsa_key.pem '${ASIDE}/${slc[4]}/rsa_key.pem'`,
      `ln -s /var/lib/vaultwarden '${ASIDE}/${slc[4]}/files/data'`,
      // Foreign entries.
      `echo 'operator notes' > ${ASIDE}/notes.txt`,
      `mkdir ${ASIDE}/old-backups && head -c 5000 /dev/urandom > ${ASIDE}/old-backups/x`,
      `ln -s /var/lib/vaultwarden '${ASIDE}/${linkLike}'`,
      plantScript(otherOwner, 4000, 'vaultwarden'),
    ].join(' && '));
    const agentNames = planted.map(([n]) => n);
    const sizeOf = new Map(planted.map(([n, b]) => [n, b + 10]));

    // aside --json: every folder of the agent with its size, what the rule does with it, the foreign ones.
    const l = await asideJson(host);
    assert.deepEqual(l.entries.map((e) => e.name).sort(), [...agentNames].sort());
    for (const e of l.entries) assert.equal(e.bytes, sizeOf.get(e.name), `size of ${e.name}`);
    assert.equal(l.count, planted.length);
    assert.equal(l.bytes, [...sizeOf.values()].reduce((a, b) => a + b, 0));
    assert.deepEqual(l.entries.filter((e) => e.prune).map((e) => e.name).sort(), [...expectRemoved].sort());
    assert.equal(l.entries.find((e) => e.name === slc[0])!.reason, 'secondary-local-changes');
    assert.equal(l.entries.find((e) => e.name === `${at(50).getTime()}-before-backup-restore`)!.time, at(50).toISOString());
    assert.deepEqual(Object.fromEntries(l.foreign.map((f) => [f.name, f.kind])), { 'notes.txt': 'file', 'old-backups': 'directory', [linkLike]: 'symlink', [otherOwner]: 'directory' });
    const text = (await host.exec(['vwstream-agent', 'aside'])).stdout;
    assert.match(text, new RegExp(`^kept aside under ${ASIDE}: ${planted.length} folders, `));
    assert.match(text, /left alone \(not the agent's\): \/var\/lib\/vwstream\/aside\/notes\.txt/);
    console.log(`# vwstream-agent aside:\n${text.trimEnd().split('\n').map((x) => `#   ${x}`).join('\n')}`);

    // prune needs root; a dry run removes nothing.
    const asUser = await host.exec(['runuser', '-u', 'vaultwarden', '--', 'vwstream-agent', 'aside', 'prune'], { check: false });
    assert.equal(asUser.exitCode, 77, `prune as vaultwarden: ${asUser.stdout}${asUser.stderr}`);
    assert.match(asUser.stderr, /aside prune needs root/);
    const before = await ls(host);
    const dry = JSON.parse((await host.exec(['vwstream-agent', 'aside', 'prune', '--dry-run', '--json'])).stdout) as { dryRun: boolean; removed: { name: string }[] };
    assert.equal(dry.dryRun, true);
    assert.deepEqual(dry.removed.map((r) => r.name), expectRemoved);
    assert.deepEqual(await ls(host), before, 'a dry run removed something');

    // prune: exactly those, printed with reason, time and size.
    const pr = await host.exec(['vwstream-agent', 'aside', 'prune']);
    const removedLines = pr.stdout.split('\n').filter((x) => x.startsWith('removed /'));
    assert.deepEqual(removedLines.map((x) => x.split(' ')[1]), expectRemoved.map((n) => `${ASIDE}/${n}`));
    assert.match(removedLines[0]!, /^removed \S+ \(before-backup-restore, \S+Z, 2\.3 KiB\): older than 7 days and not one of the 2 newest before-backup-restore$/);
    assert.match(pr.stdout, /^removed 4 folders \(/m);
    const after1 = await ls(host);
    assert.deepEqual(after1, before.filter((n) => !expectRemoved.includes(n)));
    // Nothing a link pointed to was touched; the foreign entries are all there.
    assert.equal((await host.exec(['sha256sum', '/var/lib/vaultwarden/rsa_key.pem'])).stdout, rsaBefore);
    assert.equal((await host.exec(['test', '-f', '/var/lib/vaultwarden/db.sqlite3'], { check: false })).exitCode, 0);
    assert.equal((await host.exec(['test', '-L', `${ASIDE}/${linkLike}`], { check: false })).exitCode, 0);
    for (const f of ['notes.txt', 'old-backups/x', `${otherOwner}/db.sqlite3`]) assert.equal((await host.exec(['test', '-e', `${ASIDE}/${f}`], { check: false })).exitCode, 0, f);

    // status: the remaining total; health: the aside_size check passes.
    const remaining = agentNames.filter((n) => !expectRemoved.includes(n));
    const remainingBytes = remaining.reduce((s, n) => s + sizeOf.get(n)!, 0);
    const st = await statusJson(host);
    assert.equal(st.aside.count, remaining.length);
    assert.equal(st.aside.bytes, remainingBytes);
    assert.equal(st.aside.foreign.length, 4);
    const hj = JSON.parse((await host.exec(['vwstream-agent', 'health', '--json'], { check: false })).stdout) as { checks: { name: string; ok: boolean; detail: string }[] };
    const check = hj.checks.find((c) => c.name === 'aside_size');
    assert.ok(check?.ok, `aside_size: ${JSON.stringify(check)}`);
    assert.match(check.detail, new RegExp(`^${remaining.length} folders, `));
    const statusText = (await host.exec(['vwstream-agent', 'status'])).stdout;
    assert.match(statusText, new RegExp(`kept aside +${remaining.length} folders, .* under ${ASIDE} \\(\\+4 not the agent's, left alone\\); keeps the 2 newest per reason and all younger than 7 days`));

    // A start prunes by itself: two more old copies of a reason that already has its 2 newest.
    const late = [asideName(at(30), 'secondary-local-changes'), asideName(at(31), 'secondary-local-changes')];
    await host.sh(late.map((n) => plantScript(n, 3333)).join(' && '));
    await startAgent(host);
    await waitFor('the start prune removed both', 30_000, async () => ((await ls(host)).some((n) => late.includes(n)) ? undefined : true), host, 500);
    assert.deepEqual(await ls(host), after1);
    const msgs = await agentMessages(host);
    for (const n of late) {
      const lines = msgs.filter((m) => m.startsWith(`aside: removed ${n} `));
      assert.equal(lines.length, 1, `one journal line for ${n}: ${JSON.stringify(lines)}`);
      assert.match(lines[0]!, /^aside: removed \S+ \(secondary-local-changes, set aside \S+Z, 3\.3 KiB\): older than 7 days/);
    }
    assert.equal(msgs.filter((m) => m.startsWith(`aside: ${ASIDE}/notes.txt left alone`)).length, 1, 'a foreign entry is reported once per run');
    console.log(`# start prune journal: ${msgs.filter((m) => m.startsWith('aside: ')).join(' | ')}`);

    // A bad value stops it with exit 78 naming key and value.
    await writeEnv(host, { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(h.port), ASIDE_MIN_KEEP: '0' });
    const bad = await host.exec(['vwstream-agent', 'aside'], { check: false });
    assert.equal(bad.exitCode, 78);
    assert.match(bad.stderr, /ASIDE_MIN_KEEP="0" is not valid: expected a whole number from 1 to 100000/);
    const cc = await host.exec(['vwstream-agent', 'check-config'], { check: false });
    assert.equal(cc.exitCode, 78);
    assert.deepEqual(await ls(host), after1, 'a config error touched the aside folder');
  });

  test('secondary: a write landing while the refresh stops Vaultwarden is kept aside, not lost; the prune after it keeps the newest of each reason', async () => {
    const s3: S3Server = await startS3();
    try {
      await s3.createBucket('vault-aside');
      const env = s3Env(s3, 'vault-aside', 'as/vw');
      const [a, b] = await Promise.all([
        agentHost('vws-as-a', env),
        agentHost('vws-as-b', { ...env, NODE_ROLE: 'secondary', SECONDARY_SYNC_INTERVAL: '5', ASIDE_MIN_KEEP: '1', ASIDE_RETENTION_DAYS: '7' }),
      ]);
      hosts.push(a, b);
      await startAgent(a.host);
      const first = await a.vw.addUsers(20);
      await waitDbSynced(a.host, Date.now());
      await startAgent(b.host);
      const bServingAt = Date.now();
      await waitServing(b.host, 60_000);
      await waitFor('the secondary serves 20 users', 30_000, async () => ((await b.vw.counts().catch(() => undefined))?.users === 20 ? true : undefined), b.host, 500);

      // Old copies to prune: one of a reason with a newer copy coming, one that is the only of its reason.
      const oldSlc = asideName(new Date(Date.now() - 40 * DAY), 'secondary-local-changes');
      const oldBr = asideName(new Date(Date.now() - 40 * DAY), 'before-restore');
      await b.host.sh(`mkdir -p -m 0700 ${ASIDE} && ${plantScript(oldSlc, 1000)} && ${plantScript(oldBr, 1000)}`);
      const listed = await asideJson(b.host);
      assert.ok(listed.entries.some((e) => e.name === oldSlc) && listed.entries.some((e) => e.name === oldBr));

      // A write exactly in the window: when the refresh stops Vaultwarden (after it compared
      // the local copy with the installed one), the unit's ExecStop writes a row through
      // Vaultwarden's HTTP port before systemd sends SIGTERM: a login at that moment.
      await b.host.writeFile('/etc/systemd/system/vwstream-vaultwarden.service.d/zz-test-late-write.conf',
        `[Service]\nExecStop=-/usr/bin/curl -sS -X POST http://127.0.0.1:${b.port}/__standin/users?n=1\n`);
      await b.host.exec(['systemctl', 'daemon-reload']);
      const swapsBefore = (await statusJson(b.host)).refreshes.swapped as number;
      const [newer] = await a.vw.addUsers(1);
      await waitDbSynced(a.host, Date.now());

      const { value: keptMsg } = await waitFor('"local changes on the secondary kept at" in the journal', 60_000, async () => (await agentMessages(b.host)).find((m) => m.startsWith('local changes on the secondary kept at ')), b.host, 500);
      assert.match(keptMsg, /written while the refresh stopped Vaultwarden/);
      const kept = /kept at (\S+)/.exec(keptMsg)![1]!;
      const vwLog = (await b.host.journal(['-u', 'vwstream-vaultwarden.service', '-o', 'cat'])).split('\n').find((x) => x.startsWith('{"inserted":1'));
      assert.ok(vwLog, 'the ExecStop write did not run');
      const lateUuid = (JSON.parse(vwLog) as { uuids: string[] }).uuids[0]!;

      await waitFor('the secondary serves the primary\'s newest row', 30_000, async () => ((await userUuids(b.host)).has(newer!) ? true : undefined), b.host, 500);
      const live = await userUuids(b.host);
      assert.equal(live.has(lateUuid), false, 'the live copy is the replica\'s');
      for (const u of first) assert.ok(live.has(u));
      // Never lost: the row is in the copy kept aside (a real SQLite query on it).
      const inKept = await b.host.exec(['sqlite3', '-readonly', `${kept}/db.sqlite3`, `SELECT count(*) FROM users WHERE uuid='${lateUuid}';`]);
      assert.equal(inKept.stdout.trim(), '1', `row ${lateUuid} not in ${kept}/db.sqlite3`);
      const st = await statusJson(b.host);
      assert.ok(st.refreshes.swapped > swapsBefore);
      assert.ok(st.refreshes.localChangesKept >= 1);

      // The prune after setting aside: the old copy of that reason went, the only copy of the other stayed.
      const { value: msgs } = await waitFor('the prune after the set-aside', 30_000, async () => {
        const m = await agentMessages(b.host);
        return m.some((x) => x.startsWith(`aside: removed ${oldSlc} `)) ? m : undefined;
      }, b.host, 500);
      const names = await ls(b.host);
      assert.equal(names.includes(oldSlc), false);
      assert.ok(names.includes(oldBr), 'the only before-restore copy was removed');
      assert.ok(names.includes(kept.slice(ASIDE.length + 1)), 'the newest secondary-local-changes copy was removed');
      const st2 = await statusJson(b.host);
      assert.equal(st2.aside.count, names.length);
      console.log(`# secondary journal: ${keptMsg} | ${msgs.find((x) => x.startsWith(`aside: removed ${oldSlc} `))}`);
      console.log(`# secondary aside after: ${names.join(', ')} (${st2.aside.bytes} bytes)`);

      // A serving secondary keeps the systemd watchdog (WatchdogSec=30s) fed: still the same
      // agent process 100 s after READY (the watchdog gives up after 60 s without a loop + 30 s).
      const pid = st2.pid as number;
      await sleep(Math.max(0, bServingAt + 100_000 - Date.now()));
      const st3 = await statusJson(b.host);
      assert.equal(st3.pid, pid, 'the agent was restarted while serving as a secondary');
      assert.equal(st3.state, 'serving');
      assert.equal((await b.host.exec(['systemctl', 'show', '-P', 'NRestarts', 'vwstream-agent.service'])).stdout.trim(), '0');
      assert.equal((await agentMessages(b.host)).filter((m) => m.includes('withholding the watchdog ping')).length, 0);
    } finally {
      await s3.stop();
    }
  });
});
