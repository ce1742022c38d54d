/** Exit codes of the CLI and daemon (sysexits.h where one fits). */
/**
 * REFUSED: the data needs an operator's decision (systemd does not restart on it).
 * UNAVAILABLE: the agent is not running (nothing answers on its socket).
 * NOPERM: the command needs root.
 */
export const EXIT = { OK: 0, FAILED: 1, USAGE: 64, REFUSED: 65, UNAVAILABLE: 69, NOPERM: 77, CONFIG: 78 } as const;

/** A configuration value that is not allowed. The message is the one line an operator sees. */
export class ConfigError extends Error {
  readonly key: string;
  readonly value: string | undefined;
  readonly allowed: string;
  /** `reason` completes "KEY=VALUE is not valid: …", e.g. "expected one of primary, secondary". */
  constructor(key: string, value: string | undefined, reason: string, where?: string) {
    const shown = value === undefined ? '(unset)' : JSON.stringify(value);
    super(`${key}=${shown} is not valid: ${reason}${where ? ` (${where})` : ''}`);
    const allowed = reason;
    this.name = 'ConfigError';
    this.key = key;
    this.value = value;
    this.allowed = allowed;
  }
}

/** A failure the operator must act on; `hint` names the command or fix. */
export class AgentError extends Error {
  readonly hint: string | undefined;
  readonly exitCode: number;
  constructor(message: string, opts: { hint?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? EXIT.FAILED;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
