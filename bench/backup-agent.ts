/**
 * Child process of bench/backup.ts: one runBackup() of this agent, measured from outside
 * (wall time, peak RSS) by the parent. Prints `BENCH_REPORT <json>` as its last line.
 *
 *   node bench/backup-agent.ts <env file> <db path> <data folder> <tmp dir>
 */
import { readFileSync } from 'node:fs';
import { runBackup } from '../agent/backup/run.ts';
import { buildConfig } from '../agent/config/config.ts';
import { parseEnvFile } from '../agent/config/envfile.ts';

const [envFile, dbPath, dataFolder, tmpDir] = process.argv.slice(2);
if (!envFile || !dbPath || !dataFolder || !tmpDir) {
  process.stderr.write('usage: backup-agent.ts <env file> <db path> <data folder> <tmp dir>\n');
  process.exit(2);
}
const cfg = buildConfig(parseEnvFile(readFileSync(envFile, 'utf8'), envFile), 'bench');
const report = await runBackup(cfg, { dbPath, dataFolder, tmpDir });
process.stdout.write(`\nBENCH_REPORT ${JSON.stringify({ ...report, nodeMaxRssKiB: process.resourceUsage().maxRSS })}\n`);
process.exitCode = report.ok ? 0 : 1;
