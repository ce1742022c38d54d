/** Shared by the benchmark scripts. */
export const MiB = 1024 * 1024;

/** A numeric setting from the environment (BENCH_*), with a default and a lower bound. */
export function envNum(name: string, def: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name}=${raw}: expected a number >= ${min}`);
  return n;
}
