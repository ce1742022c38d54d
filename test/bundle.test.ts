/**
 * The package's bundle as scripts/bundle.mjs builds it: loading it (every module of the
 * agent is imported statically, so `--version` evaluates the whole graph the daemon runs)
 * must not load undici (fetch's HTTP stack and WebAssembly parser: ~10 MiB resident an idle
 * agent never uses). An ESM import of node:http loads it through the facade's getters.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

const REPO = new URL('..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'vws-bundle-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('the bundle loads without undici, and node:http is still whole where the agent uses it', () => {
  const out = join(tmp, 'agent.mjs');
  execFileSync(process.execPath, [join(REPO, 'scripts/bundle.mjs'), join(REPO, 'agent/main.ts'), out], { stdio: 'ignore' });
  const probe = join(tmp, 'probe.mjs');
  writeFileSync(probe, "process.on('exit', () => process.stderr.write(`\\nMODULES ${JSON.stringify(process.moduleLoadList.filter((m) => /undici|http/.test(m)))}\\n`));\n");
  const version = execFileSync(process.execPath, [out, '--version'], { encoding: 'utf8' });
  assert.match(version, /^\d+\.\d+\.\d+/);
  const stderr = execFileSync('sh', ['-c', `"${process.execPath}" --import "${probe}" "${out}" --version 2>&1 >/dev/null`], { encoding: 'utf8' });
  const modules = JSON.parse(/MODULES (.*)/.exec(stderr)![1]!) as string[];
  assert.ok(modules.some((m) => m === 'NativeModule http'), `node:http is loaded (${modules.join(', ')})`);
  assert.deepEqual(modules.filter((m) => /undici/.test(m)), [], 'undici was loaded');
});
