import { accessSync, constants } from 'node:fs';
import { loadConfig, type Config } from '../config/config.ts';
import { AgentError, ConfigError, EXIT, errorMessage } from '../errors.ts';
import { setLogLevel, setSecrets } from '../log.ts';
import { PATHS } from '../paths.ts';

export interface GlobalArgs { config: string; json: boolean }

/** Loads config for a command; a ConfigError becomes one line and exit 78. */
export function configFor(args: { config?: string }): Config {
  const path = args.config ?? PATHS.configFile;
  try {
    accessSync(path, constants.R_OK);
  } catch (err) {
    // Mode 0600 root: a user's command cannot read it; that is a missing privilege, not a bad config.
    if ((err as NodeJS.ErrnoException).code === 'EACCES') {
      throw new AgentError(`${path} can be read only by root (it holds secrets)`, { hint: 'run the command with sudo', exitCode: EXIT.NOPERM });
    }
  }
  const cfg = loadConfig(path);
  setSecrets(cfg.secrets);
  setLogLevel(cfg.logLevel);
  return cfg;
}

let jsonOutput = false;

/**
 * `--json` was asked for: errors then go to stdout as one JSON object instead of a line
 * on stderr. main.ts sets it before any command runs; usage errors (which yargs reports
 * before that) read the argument list themselves (wantsJson).
 */
export function setJsonOutput(on: boolean): void {
  jsonOutput = on;
}

/** Whether an argument list asks for JSON (`--json`, `--json=true`), before yargs parses it. */
export function wantsJson(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--json' || a === '--json=true') return true;
    if (a === '--no-json' || a === '--json=false') return false;
  }
  return false;
}

/** The shape of an error with --json: what the message says, split for a program. */
export interface JsonError {
  error: { message: string; key: string | null; value: string | null; allowed: string | null; hint: string | null; exitCode: number };
}

export function jsonError(err: unknown, exitCode: number): JsonError {
  if (err instanceof ConfigError) {
    return { error: { message: `config error: ${err.message}`, key: err.key, value: err.value ?? null, allowed: err.allowed.replace(/^expected /, ""), hint: null, exitCode } };
  }
  const hint = err instanceof AgentError ? err.hint ?? null : null;
  return { error: { message: errorMessage(err), key: null, value: null, allowed: null, hint, exitCode } };
}

/** Exit code of an error: 78 config, the AgentError's own, else 1. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof ConfigError) return EXIT.CONFIG;
  if (err instanceof AgentError) return err.exitCode;
  return EXIT.FAILED;
}

/** Reports an error the way the CLI does: one JSON object on stdout with --json, else lines on stderr. */
export function reportError(err: unknown, json = jsonOutput): number {
  const code = exitCodeOf(err);
  if (json) {
    process.stdout.write(JSON.stringify(jsonError(err, code), null, 2) + '\n');
  } else if (err instanceof ConfigError) {
    process.stderr.write(`vwstream-agent: config error: ${err.message}\n`);
  } else if (err instanceof AgentError) {
    process.stderr.write(`vwstream-agent: ${err.message}\n${err.hint ? `  → ${err.hint}\n` : ''}`);
  } else {
    process.stderr.write(`vwstream-agent: ${errorMessage(err)}\n`);
  }
  return code;
}

/** Runs a command body and maps errors to the exit codes with one readable line (or JSON object). */
export async function runCommand(body: () => Promise<number | void>): Promise<never> {
  let code: number;
  try {
    code = (await body()) ?? EXIT.OK;
  } catch (err) {
    code = reportError(err);
  }
  process.exit(code);
}

/** Throws the "needs root" error (exit 77) unless running as root. */
export function requireRoot(what: string, why: string): void {
  if (process.getuid?.() !== 0) throw new AgentError(`vwstream-agent ${what} needs root (${why})`, { hint: `sudo vwstream-agent ${what}`, exitCode: EXIT.NOPERM });
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function ago(iso: string | null): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const rel = s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
  return `${iso.replace(/\.\d+Z$/, 'Z')} (${rel})`;
}
