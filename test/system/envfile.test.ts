/**
 * The env-file rules against the real systemd 252 of Debian 12: a file written by
 * formatEnvValue (as /run/vwstream/vaultwarden.env is) and a hand-written corpus are loaded
 * with EnvironmentFile= into a transient unit, which writes its environment (env -0); every
 * value must be byte for byte what parseEnvFile reads. The lines where the agent decides
 * against systemd's reading (they get a warning) are checked to really differ.
 * One booted host, no package needed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { formatEnvValue, parseEnvFile } from '../../agent/config/envfile.ts';
import { bootHost, type Host } from './harness.ts';
import { CORPUS_FILE, SYSTEMD_DIVERGENT, VALUES } from '../config/envfile-corpus.ts';

let host: Host | undefined;
after(async () => { await host?.destroy().catch(() => undefined); });

/** The environment systemd gives a unit with EnvironmentFile=`text`, or null when the unit did not run. */
async function systemdReads(h: Host, name: string, text: string): Promise<Map<string, string> | null> {
  const envPath = `/var/tmp/${name}.env`;
  const outPath = `/var/tmp/${name}.out`;
  await h.writeFile(envPath, text, 0o600);
  const r = await h.exec(['systemd-run', '--wait', '--quiet', `--unit=envfile-${name}`, '-p', `EnvironmentFile=${envPath}`, '-p', `StandardOutput=truncate:${outPath}`, '/usr/bin/env', '-0'], { check: false });
  if (r.exitCode !== 0) return null;
  const out = await h.readFile(outPath);
  const env = new Map<string, string>();
  for (const entry of out.split('\0')) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

test("systemd's EnvironmentFile= reads formatEnvValue's file and the corpus exactly as parseEnvFile does", async () => {
  host = await bootHost('ef-sys');
  const version = (await host.exec(['systemctl', '--version'])).stdout.split('\n')[0]!;
  assert.match(version, /^systemd 252\b/);

  const formatted = Object.entries(VALUES).map(([k, v]) => `${k}=${formatEnvValue(v)}`).join('\n') + '\n';
  const got = await systemdReads(host, 'formatted', formatted);
  assert.ok(got, 'the unit with the formatted file ran');
  const mine = parseEnvFile(formatted);
  for (const [k, v] of Object.entries(VALUES)) {
    assert.equal(got.get(k), v, `${k}: systemd read ${JSON.stringify(got.get(k))}`);
    assert.equal(mine.get(k)!.value, v, k);
  }

  const corpus = await systemdReads(host, 'corpus', CORPUS_FILE);
  assert.ok(corpus, 'the unit with the corpus ran');
  const parsed = parseEnvFile(CORPUS_FILE);
  assert.ok(parsed.size >= 20);
  for (const [k, e] of parsed) assert.equal(corpus.get(k), e.value, `${k}: systemd read ${JSON.stringify(corpus.get(k))}, parseEnvFile ${JSON.stringify(e.value)}`);

  // Where the agent reads a line otherwise (and warns), systemd really reads what we say.
  for (const [i, c] of SYSTEMD_DIVERGENT.entries()) {
    const env = await systemdReads(host, `div${i}`, c.text);
    assert.ok(env, `${c.name}: the unit ran`);
    assert.equal(env.get(c.key), c.systemd, `${c.name}: systemd read ${JSON.stringify(env.get(c.key))}`);
    const agent = parseEnvFile(c.text);
    assert.equal(agent.get(c.key)?.value, c.agent, c.name);
    assert.ok(agent.warnings.length > 0, `${c.name}: no warning`);
  }
});
