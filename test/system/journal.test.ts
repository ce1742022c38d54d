/**
 * Issue 15: the journal as an operator reads it. The .deb installed by apt on fresh Debian
 * 12 hosts, then the config, then a restart; the real journald, litestream, fauxqs S3 and
 * the Vaultwarden stand-in.
 *
 * 1. A serving primary: the serving transition is found by `journalctl -u vwstream-agent
 *    VWSTREAM_STATE=serving`; info lines are PRIORITY 6, the world-readable config warning
 *    4; `-p warning` holds no info line; every JSON line of the agent carries its priority,
 *    and they came over the native protocol (fields), not stdout. A backup run by its unit
 *    (the CLI, as the timer runs it) that fails on a dead destination is listed by
 *    `journalctl -p err -u vwstream-backup`: its last line before exit keeps its unit.
 * 2. A refused start (local vault and replica both hold data and differ: exit 65) is
 *    listed by `journalctl -p err -u vwstream-agent`, with VWSTREAM_STATE=refused; the same
 *    start's info lines are not.
 * 3. A config error (exit 78, written to stderr) is at `-p err` too, a secret value hidden.
 * 4. No configured secret (S3 secret key, BACKUP_PASSWORD, an rclone remote's secret, a bad
 *    NOTIFICATION_URL) appears anywhere in `journalctl -b -o export` of either host, in any
 *    field.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startS3, type S3Server } from './harness.ts';
import { agentHost, startAgentQuick, unitProp, waitDbSynced, waitServing, type AgentHost } from './common.ts';

const AGENT = 'vwstream-agent.service';
const BACKUP = 'vwstream-backup.service';
const S3_SECRET = 'jrn-s3-secret-b81d3e0f';
const PASSWORD = 'jrn-backup-pass-4f2a9c7e';
const DEAD_SECRET = 'jrn-dead-remote-secret-93ac';
const NOTIFY_SECRET = 'jrn-notify-token-5b7e';
const SECRETS = [S3_SECRET, PASSWORD, DEAD_SECRET, NOTIFY_SECRET];

interface Entry { [k: string]: unknown; MESSAGE?: string; PRIORITY?: string }
interface Line { entry: Entry; json: Record<string, unknown> | undefined }

/** `journalctl -o json ARGS` on the host: each entry, with its MESSAGE parsed when it is a JSON line. */
async function entries(h: AgentHost, args: string[]): Promise<Line[]> {
  const out = await h.host.journal(['-o', 'json', ...args]);
  return out.split('\n').filter(Boolean).map((l) => {
    const entry = JSON.parse(l) as Entry;
    let json: Record<string, unknown> | undefined;
    if (typeof entry.MESSAGE === 'string' && entry.MESSAGE.startsWith('{')) {
      try { json = JSON.parse(entry.MESSAGE) as Record<string, unknown>; } catch { json = undefined; }
    }
    return { entry, json };
  });
}

const PRIO: Record<string, string> = { fatal: '2', error: '3', warn: '4', info: '6', debug: '7', trace: '7' };

function env(s3: S3Server, prefix: string): Record<string, string> {
  return {
    S3_BUCKET: 'vault-journal', S3_ENDPOINT: s3.endpoint, S3_ACCESS_KEY_ID: 'journal-key', S3_SECRET_ACCESS_KEY: S3_SECRET,
    S3_REGION: 'us-east-1', S3_PREFIX: prefix, LEASE_TTL: '10',
    BACKUP_ENABLED: 'true', BACKUP_CRON: '30 2 * * *', BACKUP_PASSWORD: PASSWORD,
    BACKUP_REMOTES: 'LOCALBK:/var/backups/vw,DEAD:bucket/x', RCLONE_CONFIG_LOCALBK_TYPE: 'local',
    RCLONE_CONFIG_DEAD_TYPE: 's3', RCLONE_CONFIG_DEAD_PROVIDER: 'Other', RCLONE_CONFIG_DEAD_ENDPOINT: 'http://127.0.0.1:9',
    RCLONE_CONFIG_DEAD_ACCESS_KEY_ID: 'dead-key', RCLONE_CONFIG_DEAD_SECRET_ACCESS_KEY: DEAD_SECRET,
  };
}

/** The config as an operator may leave it: world-readable (0644), which the agent warns about. */
async function writeConfig(h: AgentHost, vars: Record<string, string>, mode = 0o600): Promise<void> {
  // WEB_VAULT_ENABLED=false: the stand-in is installed without a web vault (see writeEnv).
  const all = { ROCKET_ADDRESS: '127.0.0.1', ROCKET_PORT: String(h.port), WEB_VAULT_ENABLED: 'false', ...vars };
  await h.host.writeFile('/etc/vwstream/vwstream.env', Object.entries(all).map(([k, v]) => `${k}=${v}`).join('\n') + '\n', mode);
}

describe('journal: priorities, fields, no secrets', { concurrency: false }, () => {
  let s3: S3Server;
  let a: AgentHost;
  let b: AgentHost;

  before(async () => {
    s3 = await startS3();
    await s3.createBucket('vault-journal');
    [a, b] = await Promise.all([agentHost('vws-jr-a', {}), agentHost('vws-jr-b', {})]);
  });
  after(async () => {
    await a?.host.destroy().catch(() => undefined);
    await b?.host.destroy().catch(() => undefined);
    await s3?.stop().catch(() => undefined);
  });

  test('serving: VWSTREAM_STATE=serving finds the transition; info is 6, a warning 4; a failed backup of the timer\'s unit is at -p err', async () => {
    await writeConfig(a, env(s3, 'vw'), 0o644);
    const since = Math.floor(Date.now() / 1000);
    await startAgentQuick(a.host);
    await waitServing(a.host);
    const t = Date.now();
    await a.vw.addUsers(3);
    await waitDbSynced(a.host, t);

    // (b) The serving transition, by its field.
    const serving = await entries(a, ['-u', AGENT, '--since', `@${since}`, 'VWSTREAM_STATE=serving']);
    assert.ok(serving.length >= 1, 'the serving transition is found by VWSTREAM_STATE=serving');
    for (const { entry, json } of serving) {
      assert.equal(json?.state, 'serving', entry.MESSAGE);
      assert.match(String(json?.msg), /^serving: /);
      assert.equal(entry.PRIORITY, '6');
      assert.equal(entry.VWSTREAM_LEVEL, 'info');
      assert.equal(entry.VWSTREAM_FROM, json?.from);
      assert.equal(entry.SYSLOG_IDENTIFIER, 'vwstream-agent');
      assert.equal(entry._SYSTEMD_UNIT, AGENT);
      assert.equal(entry._TRANSPORT, 'journal', 'sent over the native protocol');
    }

    // (c) PRIORITY per level, over every JSON line of this start.
    const all = await entries(a, ['-u', AGENT, '--since', `@${since}`]);
    const json = all.filter((l) => l.json && l.entry._SYSTEMD_UNIT === AGENT);
    assert.ok(json.length >= 10, `only ${json.length} agent lines`);
    for (const { entry, json: j } of json) assert.equal(entry.PRIORITY, PRIO[String(j!.level)], entry.MESSAGE);
    const warning = json.find((l) => /world-readable/.test(String(l.json!.msg)));
    assert.ok(warning, 'the world-readable config is warned about');
    assert.equal(warning.entry.PRIORITY, '4');
    assert.equal(warning.json!.level, 'warn');
    const native = json.filter((l) => l.entry._TRANSPORT === 'journal').length;
    const stdout = json.filter((l) => l.entry._TRANSPORT === 'stdout');
    console.log(`# agent JSON lines: ${json.length}, over the native protocol ${native}, over stdout (fallback) ${stdout.length}`);
    assert.ok(native >= json.length - 2, `fallbacks to stdout: ${stdout.map((l) => l.entry.MESSAGE).join('\n')}`);
    assert.ok(json.every((l) => l.entry._TRANSPORT === 'stdout' || typeof l.entry.VWSTREAM_LEVEL === 'string'));

    // -p warning: only warnings and worse; the warning is there, no info line.
    const warnings = await entries(a, ['-u', AGENT, '--since', `@${since}`, '-p', 'warning']);
    assert.ok(warnings.some((l) => l.entry.MESSAGE === warning.entry.MESSAGE));
    assert.ok(warnings.every((l) => Number(l.entry.PRIORITY) <= 4), 'nothing below warning');
    assert.ok(!warnings.some((l) => l.json?.state === 'serving'));

    // The backup as its timer runs it (the CLI in vwstream-backup.service): the dead
    // destination fails it; its error, logged just before the process exits, is listed under
    // its unit at -p err.
    const bsince = Math.floor(Date.now() / 1000);
    const run = await a.host.exec(['systemctl', 'start', BACKUP], { check: false, timeoutMs: 300_000 });
    assert.notEqual(run.exitCode, 0, 'the backup fails on the dead destination');
    const errs = await entries(a, ['-u', BACKUP, '--since', `@${bsince}`, '-p', 'err']);
    const failed = errs.filter((l) => l.json && /backup failed/.test(String(l.json.msg)));
    assert.ok(failed.length >= 1, `no "backup failed" at -p err -u ${BACKUP}:\n${errs.map((l) => l.entry.MESSAGE).join('\n')}`);
    for (const l of failed) {
      assert.equal(l.entry.PRIORITY, '3');
      assert.equal(l.entry._SYSTEMD_UNIT, BACKUP);
    }
    const backupAll = await entries(a, ['-u', BACKUP, '--since', `@${bsince}`]);
    const infos = backupAll.filter((l) => l.json?.level === 'info');
    assert.ok(infos.length >= 1, 'the backup logged info lines');
    assert.ok(infos.every((l) => l.entry.PRIORITY === '6'));
    assert.ok(!errs.some((l) => l.json?.level === 'info'), 'no info line at -p err');
    const last = backupAll.filter((l) => l.json).at(-1)!;
    assert.equal(last.entry._SYSTEMD_UNIT, BACKUP, 'the last line before exit keeps its unit');
    console.log(`# backup unit: ${backupAll.filter((l) => l.json).length} JSON lines, ${failed.length} at -p err; last: ${String(last.json!.msg).slice(0, 120)}`);
  });

  test('a refused start (both vaults hold data and differ, exit 65) is at -p err with VWSTREAM_STATE=refused; its info lines are not', async () => {
    // B: a vault of its own, replicated to its own prefix.
    await writeConfig(b, env(s3, 'other'));
    await startAgentQuick(b.host);
    await waitServing(b.host);
    const t = Date.now();
    await b.vw.addUsers(2);
    await waitDbSynced(b.host, t);
    // A stops (its drain releases the lease); B is pointed at A's prefix and restarted.
    await a.host.exec(['systemctl', 'stop', AGENT], { timeoutMs: 400_000 });
    await writeConfig(b, env(s3, 'vw'));
    const since = Math.floor(Date.now() / 1000);
    const r = await b.host.exec(['systemctl', 'restart', AGENT], { check: false, timeoutMs: 300_000 });
    assert.notEqual(r.exitCode, 0, 'the start is refused');
    assert.equal(await unitProp(b.host, AGENT, 'ExecMainStatus'), '65');

    const errs = await entries(b, ['-u', AGENT, '--since', `@${since}`, '-p', 'err']);
    const refused = errs.filter((l) => l.json?.state === 'refused');
    // Refused at the restore decision, then again at the end of the drain that follows.
    assert.ok(refused.length >= 1, `refused lines at -p err:\n${errs.map((l) => l.entry.MESSAGE).join('\n')}`);
    assert.equal(refused[0]!.json!.from, 'restoring');
    assert.equal(refused[0]!.entry.VWSTREAM_FROM, 'restoring');
    assert.match(String(refused[0]!.json!.msg), /^refused: .*both hold data and differ; refusing to start/);
    assert.equal(refused[0]!.entry.PRIORITY, '3');
    assert.equal(refused[0]!.entry.VWSTREAM_STATE, 'refused');
    assert.equal(typeof refused[0]!.entry.VWSTREAM_HINT, 'string', 'the hint is a field too');
    assert.ok(errs.every((l) => Number(l.entry.PRIORITY) <= 3));

    const byField = await entries(b, ['-u', AGENT, '--since', `@${since}`, 'VWSTREAM_STATE=refused']);
    assert.deepEqual(byField.map((l) => l.entry.MESSAGE), refused.map((l) => l.entry.MESSAGE));

    // The same start's info lines exist, at 6, and none of them is at -p err.
    const all = await entries(b, ['-u', AGENT, '--since', `@${since}`]);
    const infos = all.filter((l) => l.json?.level === 'info');
    assert.ok(infos.length >= 2, `info lines of the refused start: ${infos.length}`);
    assert.ok(infos.every((l) => l.entry.PRIORITY === '6'));
    const errMessages = new Set(errs.map((l) => l.entry.MESSAGE));
    assert.ok(infos.every((l) => !errMessages.has(l.entry.MESSAGE)));
    console.log(`# refused start: ${all.filter((l) => l.json).length} JSON lines, ${errs.length} at -p err; said: ${String(refused[0]!.json!.msg).slice(0, 160)}`);
  });

  test('a config error (exit 78, on stderr) is at -p err, its secret value hidden', async () => {
    await writeConfig(a, { ...env(s3, 'vw'), NOTIFICATION_URL: `ftp://${NOTIFY_SECRET}@127.0.0.1/x` });
    const since = Math.floor(Date.now() / 1000);
    const r = await a.host.exec(['systemctl', 'restart', AGENT], { check: false, timeoutMs: 120_000 });
    assert.notEqual(r.exitCode, 0);
    assert.equal(await unitProp(a.host, AGENT, 'ExecMainStatus'), '78');
    const errs = await entries(a, ['-u', AGENT, '--since', `@${since}`, '-p', 'err']);
    const line = errs.find((l) => l.entry._SYSTEMD_UNIT === AGENT && /^vwstream-agent: config error: NOTIFICATION_URL="<hidden>" is not valid/.test(String(l.entry.MESSAGE)));
    assert.ok(line, `no config error at -p err:\n${errs.map((l) => l.entry.MESSAGE).join('\n')}`);
    assert.equal(line.entry.PRIORITY, '3');
    assert.equal(line.entry._TRANSPORT, 'stdout', 'stderr shares the unit\'s journal stream');
  });

  test('no configured secret in any field of the boot\'s journal (journalctl -b -o export), on either host', async () => {
    for (const h of [a, b]) {
      const exp = await h.host.journal(['-b', '-o', 'export']);
      assert.ok(exp.includes('VWSTREAM_STATE=serving'), `${h.host.name}: the export holds the agent's fields`);
      assert.ok(exp.includes(`_SYSTEMD_UNIT=${AGENT}`));
      for (const s of SECRETS) assert.ok(!exp.includes(s), `${h.host.name}: ${s} in the journal`);
      console.log(`# ${h.host.name}: journal export ${exp.length} bytes, no secret`);
    }
  });
});
