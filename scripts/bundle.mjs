#!/usr/bin/env node
// Bundles the agent (agent/main.ts and everything it imports, npm deps included) into one
// ESM file for the package: build/pkg/usr/lib/vwstream-agent/agent.mjs.
// Usage: node scripts/bundle.mjs [ENTRY] [OUTFILE]   (defaults below)
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const entry = resolve(process.argv[2] ?? `${root}/agent/main.ts`);
const outfile = resolve(process.argv[3] ?? `${root}/build/pkg/usr/lib/vwstream-agent/agent.mjs`);
const version = process.env.VWS_VERSION || JSON.parse(readFileSync(`${root}/package.json`, 'utf8')).version;

// CommonJS dependencies (dbus-next, yargs' helpers, pino, …) expect require/__filename/
// __dirname; an ESM bundle has none, so the banner provides them. The helper imports use
// private names so they cannot clash with the bundled code's own top-level names.
const banner = [
  "import { createRequire as __vwsCreateRequire } from 'node:module';",
  "import { fileURLToPath as __vwsFileURLToPath } from 'node:url';",
  "import { dirname as __vwsDirname } from 'node:path';",
  'const require = __vwsCreateRequire(import.meta.url);',
  'const __filename = __vwsFileURLToPath(import.meta.url);',
  'const __dirname = __vwsDirname(__filename);',
].join('\n');

// yargs' ESM build pulls cliui's ESM entry, whose fallback wrap() cuts words in half
// ("1 fai\nled"); its CommonJS build wraps at word boundaries (wrap-ansi).
const cliuiCjs = {
  name: 'cliui-cjs',
  setup(b) {
    b.onResolve({ filter: /^cliui$/ }, () => ({ path: `${root}/node_modules/cliui/build/index.cjs` }));
  },
};

// An ESM import of node:http builds its ESM facade, which reads every export, and one of
// them (WebSocket) is a lazy getter that loads undici: fetch's HTTP stack and its WebAssembly
// parser, ~10 MiB resident for nothing the agent uses. So the bundle takes node:http through
// require() (the banner's createRequire), naming only what it imports.
const HTTP_NAMES = ['Agent', 'ClientRequest', 'IncomingMessage', 'METHODS', 'OutgoingMessage', 'STATUS_CODES', 'Server', 'ServerResponse',
  'createServer', 'get', 'globalAgent', 'maxHeaderSize', 'request', 'setMaxIdleHTTPParsers', 'validateHeaderName', 'validateHeaderValue'];
const httpByRequire = {
  name: 'node-http-by-require',
  setup(b) {
    b.onResolve({ filter: /^(node:)?http$/ }, (args) => (args.kind === 'import-statement' || args.kind === 'dynamic-import' ? { path: 'node:http', namespace: 'vws-http' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'vws-http' }, () => ({
      contents: `const m = require('node:http');\nexport default m;\nexport const { ${HTTP_NAMES.join(', ')} } = m;\n`,
      loader: 'js',
    }));
  },
};

const result = await build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  sourcemap: false,
  // Whitespace and syntax minified: comments go (a single non-ASCII character in one makes
  // V8 hold the whole source as a two-byte string, 2 bytes per character, for the
  // process's life), and the source V8 keeps for lazy compilation is a third smaller.
  // Identifiers stay (stack traces keep their names).
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  banner: { js: banner },
  // agent/version.ts reads it (the unbundled source tree reports 0.0.0-dev).
  define: { __VWS_VERSION__: JSON.stringify(version) },
  // Optional native add-ons dbus-next tries inside try/catch (absent: it falls back to
  // net sockets); pino's transport worker files are never used (no transports).
  external: ['usocket', 'x11'],
  logLevel: 'warning',
  metafile: true,
  plugins: [cliuiCjs, httpByRequire],
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`bundled ${entry.replace(`${root}/`, '')} -> ${outfile.replace(`${root}/`, '')} (${(bytes / 1048576).toFixed(1)} MiB)`);
