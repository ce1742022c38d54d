import { loadConfig, type Config } from '../config/config.ts';
import { AgentError, ConfigError, EXIT, errorMessage } from '../errors.ts';
import { setLogLevel, setSecrets } from '../log.ts';
import { PATHS } from '../paths.ts';

export interface GlobalArgs { config: string; json: boolean }

/** Loads config for a command; a ConfigError becomes one line and exit 78. */
export function configFor(args: { config?: string }): Config {
  const cfg = loadConfig(args.config ?? PATHS.configFile);
  setSecrets(cfg.secrets);
  setLogLevel(cfg.logLevel);
  return cfg;
}

/** Runs a command body and maps errors to the contract's exit codes with one readable line. */
export async function runCommand(body: () => Promise<number | void>): Promise<never> {
  let code: number;
  try {
    code = (await body()) ?? EXIT.OK;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vwstream-agent: config error: ${err.message}\n`);
      code = EXIT.CONFIG;
    } else if (err instanceof AgentError) {
      process.stderr.write(`vwstream-agent: ${err.message}\n${err.hint ? `  → ${err.hint}\n` : ''}`);
      code = err.exitCode;
    } else {
      process.stderr.write(`vwstream-agent: ${errorMessage(err)}\n`);
      code = EXIT.FAILED;
    }
  }
  process.exit(code);
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
