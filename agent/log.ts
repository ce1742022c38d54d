import pino, { type Logger } from 'pino';

let secrets: string[] = [];

/** Values that must never be written anywhere; scrub() replaces them. */
export function setSecrets(values: string[]): void {
  secrets = [...new Set(values.filter((v) => v.length >= 4))].sort((a, b) => b.length - a.length);
}

export function scrub(text: string): string {
  let out = text;
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join('***');
  return out;
}

/**
 * Structured JSON lines on stdout; under systemd, journald stores them with the unit.
 * Synchronous writes: a line logged just before exit is never lost.
 */
export const log: Logger = pino(
  {
    base: undefined,
    level: 'info',
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    hooks: {
      logMethod(args, method) {
        const scrubbed = args.map((a) => (typeof a === 'string' ? scrub(a) : a)) as Parameters<typeof method>;
        method.apply(this, scrubbed);
      },
    },
  },
  pino.destination({ fd: 1, sync: true }),
);

export function setLogLevel(level: string): void {
  log.level = level;
}
