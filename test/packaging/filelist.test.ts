/**
 * Issue 8: one package, two formats. The .deb and the .rpm (VWS_DEB, VWS_RPM; `make
 * lint-packages` sets both) hold the same files with the same modes, owners and bytes, the
 * same conffile, the same version, and the .rpm's scriptlets are the .deb's maintainer
 * scripts. The only differences are deliberate: systemd's directories are /usr/lib/systemd
 * on rpm distributions, and lintian's overrides exist only in the .deb.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { execa } from 'execa';

const DEB = process.env.VWS_DEB;
const RPM = process.env.VWS_RPM;
const skip = !DEB || !RPM ? 'needs VWS_DEB and VWS_RPM (run make lint-packages)' : false;
const REPO = new URL('../..', import.meta.url).pathname;

interface Entry { mode: string; owner: string }

/** The .deb's files (not directories: dpkg shares those) with the .rpm's paths. */
async function debFiles(deb: string): Promise<Map<string, Entry>> {
  const { stdout } = await execa('dpkg-deb', ['-c', deb]);
  const out = new Map<string, Entry>();
  for (const line of stdout.split('\n')) {
    const [perms, owner, , , , p] = line.trim().split(/\s+/);
    if (!perms || !p || perms.startsWith('d')) continue;
    const file = p.replace(/^\./, '');
    if (file.startsWith('/usr/share/lintian/')) continue;
    out.set(file.replace(/^\/lib\/systemd\//, '/usr/lib/systemd/'), { mode: perms, owner: owner! });
  }
  return out;
}

async function rpmQuery(fmt: string, ...extra: string[]): Promise<string> {
  return (await execa('rpm', ['-qp', '--nosignature', ...extra, '--qf', fmt, RPM!])).stdout;
}

test('the .rpm holds the .deb\'s files with the same modes and owners', { skip }, async () => {
  const deb = await debFiles(DEB!);
  const rpm = new Map<string, Entry>();
  const dirs: string[] = [];
  for (const line of (await rpmQuery('[%{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME} %{FILENAMES}\n]')).split('\n')) {
    const [perms, owner, file] = line.split(' ');
    if (perms!.startsWith('d')) dirs.push(file!);
    else rpm.set(file!, { mode: perms!, owner: owner! });
  }
  assert.deepEqual([...rpm.keys()].sort(), [...deb.keys()].sort());
  for (const [file, e] of deb) assert.deepEqual(rpm.get(file), e, file);
  assert.ok(deb.size >= 15, `only ${deb.size} files`);
  // The rpm owns only the directories that are this package's alone.
  assert.deepEqual(dirs.sort(), ['/etc/vwstream', '/usr/lib/systemd/system/tailscaled.service.d', '/usr/lib/vwstream-agent',
    '/usr/lib/vwstream-agent/bin', '/usr/share/doc/vwstream-agent']);
});

test('same bytes in both: units, binaries, the agent, the default config', { skip }, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vws-deb-'));
  try {
    await execa('dpkg-deb', ['-x', DEB!, tmp]);
    const digests = (await rpmQuery('[%{FILEDIGESTS} %{FILENAMES}\n]')).split('\n').filter((l) => /^[0-9a-f]{64} /.test(l));
    assert.equal((await rpmQuery('%{FILEDIGESTALGO}')).trim(), '8', 'rpm file digests are sha256');
    let compared = 0;
    for (const line of digests) {
      const [sha, file] = line.split(' ');
      const debPath = path.join(tmp, file!.replace(/^\/usr\/lib\/systemd\//, '/lib/systemd/'));
      const got = crypto.createHash('sha256').update(fs.readFileSync(debPath)).digest('hex');
      assert.equal(got, sha, `${file} differs between the .deb and the .rpm`);
      compared++;
    }
    assert.ok(compared >= 15);
    // Units are the repository's own files.
    for (const unit of fs.readdirSync(path.join(REPO, 'units')).filter((f) => f.endsWith('.service') || f.endsWith('.timer'))) {
      assert.equal(fs.readFileSync(path.join(tmp, 'lib/systemd/system', unit), 'utf8'), fs.readFileSync(path.join(REPO, 'units', unit), 'utf8'), unit);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('same version, conffile and maintainer scripts', { skip }, async () => {
  const debVersion = (await execa('dpkg-deb', ['-f', DEB!, 'Version'])).stdout.trim();
  assert.equal((await rpmQuery('%{VERSION}')).trim(), debVersion);
  const conffiles = (await execa('sh', ['-c', `dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./conffiles`, 'sh', DEB!])).stdout.trim().split('\n');
  assert.deepEqual(conffiles, ['/etc/vwstream/vwstream.env']);
  assert.deepEqual((await execa('rpm', ['-qpc', '--nosignature', RPM!])).stdout.trim().split('\n'), conffiles);
  // %config(noreplace): an administrator's edits survive upgrades, as with dpkg.
  const flags = (await rpmQuery('[%{FILEFLAGS:fflags} %{FILENAMES}\n]')).split('\n').find((l) => l.endsWith(' /etc/vwstream/vwstream.env'));
  assert.match(flags ?? '', /^cn /);
  const scripts = (await execa('rpm', ['-qp', '--nosignature', '--scripts', RPM!])).stdout;
  for (const name of ['postinst', 'prerm', 'postrm']) {
    const body = fs.readFileSync(path.join(REPO, 'packaging/debian', name), 'utf8').split('\n').slice(1).join('\n').trim();
    assert.ok(scripts.includes(body), `the .rpm's scriptlets do not carry ${name}`);
  }
  assert.match(scripts, /postinstall scriptlet[^\n]*\nif \[ "\$1" -gt 1 \]; then set -- configure rpm-upgrade; else set -- configure ""; fi/);
  assert.match(scripts, /preuninstall scriptlet[^\n]*\nif \[ "\$1" -eq 0 \]; then set -- remove; else set -- upgrade; fi/);
});
