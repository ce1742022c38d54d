import { execa, type Options } from 'execa';
import { log, scrub } from './log.ts';

/**
 * The one place that spawns processes. Children get an explicit environment (never the
 * agent's own): inherited variables like AWS_CA_BUNDLE or NODE_EXTRA_CA_CERTS change
 * rclone's and litestream's behaviour. Secrets go through env or files, never argv.
 */
export const BASE_ENV: Record<string, string> = {
  PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
  LANG: 'C.UTF-8',
  HOME: '/root',
};

export interface RunOptions {
  env?: Record<string, string>;
  timeoutMs?: number;
  input?: string;
  cwd?: string;
  /** Run as this user (the agent is root). */
  uid?: number;
  gid?: number;
  /** Throw on non-zero exit (default true). */
  reject?: boolean;
  /** Called with each line the child writes to stdout or stderr, as it comes (progress). */
  onLine?: (line: string) => void;
}

export interface RunResult { stdout: string; stderr: string; exitCode: number; timedOut: boolean }

/** What every child gets: the explicit env, a hard timeout (SIGTERM, SIGKILL 5 s later), no throwing. */
function baseOptions(opts: Pick<RunOptions, 'env' | 'timeoutMs' | 'cwd' | 'uid' | 'gid'>) {
  return {
    env: { ...BASE_ENV, ...opts.env },
    extendEnv: false,
    timeout: opts.timeoutMs ?? 120_000,
    killSignal: 'SIGTERM' as const,
    forceKillAfterDelay: 5_000,
    reject: false,
    stripFinalNewline: true,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  };
}

function toResult(r: { stdout?: unknown; stderr?: unknown; exitCode?: number; timedOut?: boolean }): RunResult {
  return {
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    exitCode: r.exitCode ?? (r.timedOut ? 124 : 1),
    timedOut: Boolean(r.timedOut),
  };
}

export async function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const options: Options = {
    ...baseOptions(opts),
    ...(opts.input !== undefined ? { input: opts.input } : { stdin: 'ignore' as const }),
  };
  const started = Date.now();
  const child = execa(file, args, options);
  if (opts.onLine) {
    const onLine = opts.onLine;
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream?.on('data', (chunk: Buffer) => {
        const lines = (rest + chunk.toString('utf8')).split('\n');
        rest = lines.pop() ?? '';
        for (const l of lines) onLine(l);
      });
    }
  }
  const result = toResult(await child);
  log.debug({ cmd: file, args: args.map(scrub), exitCode: result.exitCode, ms: Date.now() - started }, 'ran');
  if (opts.reject !== false && (result.exitCode !== 0 || result.timedOut)) {
    const why = result.timedOut ? `timed out after ${opts.timeoutMs ?? 120_000} ms` : `exited ${result.exitCode}`;
    const detail = scrub((result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | '));
    throw new ExecError(`${file.split('/').pop()} ${args[0] ?? ''} ${why}${detail ? `: ${detail}` : ''}`, result);
  }
  return result;
}

export class ExecError extends Error {
  readonly result: RunResult;
  constructor(message: string, result: RunResult) {
    super(message);
    this.name = 'ExecError';
    this.result = result;
  }
}

export interface PipedChild {
  /** Bytes for the child's stdin; end() it to send EOF. */
  stdin: NodeJS.WritableStream & { destroyed: boolean };
  /** Resolves when the child has exited (never rejects). */
  result: Promise<RunResult>;
  /** Stops the child without letting it finish (SIGTERM, SIGKILL after 5 s). */
  kill(): void;
}

/**
 * A child that reads a stream on stdin (`rclone rcat`): same explicit environment and
 * timeout rules as run(); the result says how it ended instead of throwing.
 */
export function spawnPiped(file: string, args: string[], opts: Omit<RunOptions, 'input' | 'reject'> = {}): PipedChild {
  const started = Date.now();
  const child = execa(file, args, { ...baseOptions(opts), stdin: 'pipe' });
  const result = child.then((r) => {
    const out = toResult(r);
    log.debug({ cmd: file, args: args.map(scrub), exitCode: out.exitCode, ms: Date.now() - started }, 'ran (piped)');
    return out;
  });
  // A child that exits early makes writes fail with EPIPE: the caller learns it from
  // `result`, so the stream error itself must not crash the process.
  child.stdin!.on('error', () => undefined);
  return { stdin: child.stdin!, result, kill: () => { child.kill('SIGTERM'); } };
}
