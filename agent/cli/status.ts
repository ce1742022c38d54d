import { apiRequest } from '../api/client.ts';
import type { HealthReport, StatusReport } from '../api/types.ts';
import { humanBytes } from '../aside.ts';
import { EXIT } from '../errors.ts';
import { ago, printJson, runCommand } from './common.ts';
import { formatVaultwardenReport, type VaultwardenReport } from '../vaultwarden/lifecycle.ts';

export function formatStatus(s: StatusReport): string {
  const lines = [
    `vwstream-agent ${s.version} — ${s.role}, ${s.state}: ${s.detail}`,
    `  since          ${s.since}`,
    `  replica        ${s.replica}`,
    `  last DB sync   ${ago(s.lastDbSync)}`,
    `  last file sync ${ago(s.lastFileSync)} → ${s.files.remote}${s.files.lastReport ? ` (last pass: ${s.files.lastReport.uploaded} uploaded, ${s.files.lastReport.unchanged} unchanged, ${s.files.lastReport.conflicts ? `${s.files.lastReport.conflicts} kept under a conflict name, ` : ''}${s.files.lastReport.errors} errors)` : ''}${s.files.unreadable?.length ? `\n  CANNOT READ ${s.files.unreadable.join(', ')}: no remote copy is deleted until it reads again` : ''}`,
    `  vaultwarden    ${s.vaultwarden.url} ${s.vaultwarden.alive ? '(alive)' : '(not answering)'}`,
    ...(s.vaultwarden.source ? formatVaultwardenReport(s.vaultwarden as VaultwardenReport) : []),
    `  litestream     profile ${s.litestream.profile}, sync ${s.litestream.syncInterval}, snapshots ${s.litestream.snapshotInterval}, retention ${s.litestream.retention}${s.litestream.overrides?.length ? ` (${s.litestream.overrides.join(', ')} set explicitly)` : ''}`,
  ];
  if (s.tailscale?.enabled) lines.push(`  tailscale      ${s.tailscale.up ? `${s.tailscale.address} ${s.tailscale.url ?? ''} (${s.tailscale.serve})` : `NOT UP: ${s.tailscale.error ?? s.tailscale.backendState ?? 'starting'}`}`);
  const r = s.litestream.restorable;
  if (r) lines.push(`  restorable     ${r.oldest ? `from ${r.oldest.replace(/\.\d+Z$/, 'Z')} to ${(r.newest ?? '?').replace(/\.\d+Z$/, 'Z')} (${r.generations} generations)` : 'nothing yet'}${r.error ? `; replica not readable: ${r.error}` : ''}`);
  if (s.verify) lines.push(`  restore drill  ${s.verify.cron}, next ${s.verify.nextRun ?? 'never'}; ${s.verify.last ? `last ${s.verify.last.at.replace(/\.\d+Z$/, 'Z')}: ${s.verify.last.summary}` : 'never run (vwstream-agent verify)'}`);
  if (s.lease) lines.push(`  lease          ${s.lease.suspended ? `NOT RENEWED (${s.lease.suspended})` : s.lease.ours ? `held by this host (instance ${s.lease.self.slice(0, 8)})` : `held by ${s.lease.holder} (instance ${s.lease.instance?.slice(0, 8) ?? 'unknown'})`} until ${s.lease.expiresAt} (${s.lease.url})`);
  if (s.replicationSuspended) lines.push(`  REPLICATION SUSPENDED: ${s.replicationSuspended}; Vaultwarden serves from local data`);
  if (s.role === 'secondary') lines.push(`  last refresh   ${ago(s.lastRefresh)}; swaps ${s.refreshes.swapped}, unchanged ${s.refreshes.skipped}${s.lastRefreshDowntimeMs !== null ? `, last swap downtime ${s.lastRefreshDowntimeMs} ms` : ''}${s.refreshes.localChangesKept ? `, local changes kept aside ${s.refreshes.localChangesKept}×` : ''}`);
  if (s.roleOverride) lines.push(`  role override  ${s.roleOverride} (written by promote; delete it and restart to follow NODE_ROLE again)`);
  lines.push(`  backups        ${s.backup.enabled ? `${s.backup.cron}, next ${s.backup.nextRun ?? 'never'}` : 'disabled'}${s.backup.last ? `; last ${s.backup.last.ok ? 'ok' : 'FAILED'} ${s.backup.last.at} ${s.backup.last.name}${s.backup.last.ok ? '' : `: ${s.backup.last.detail}`}` : ''}`);
  if (s.aside) lines.push(`  kept aside     ${s.aside.error ? `cannot read ${s.aside.dir}: ${s.aside.error}` : `${s.aside.count} folders, ${humanBytes(s.aside.bytes)} under ${s.aside.dir}${s.aside.foreign.length ? ` (+${s.aside.foreign.length} not the agent's, left alone)` : ''}; keeps the ${s.aside.rule.minKeep} newest per reason${s.aside.rule.retentionDays ? ` and all younger than ${s.aside.rule.retentionDays} days` : ' and everything (ASIDE_RETENTION_DAYS=0)'} (vwstream-agent aside)`}`);
  if (s.walBytes !== null) lines.push(`  wal / db       ${s.walBytes} / ${s.dbBytes} bytes`);
  if (s.lastDrain) lines.push(`  last drain     ${s.lastDrain.complete ? '' : 'INCOMPLETE: '}${s.lastDrain.detail} (${s.lastDrain.at})`);
  if (s.restore) lines.push(`  at start       ${s.restore.action}: ${s.restore.reason} (${s.restore.ms} ms)`);
  lines.push('  units');
  for (const [u, st] of Object.entries(s.units)) {
    const ev = s.unitEvents[u];
    lines.push(`    ${u.padEnd(30)} ${st.activeState}/${st.subState}${st.result && st.result !== 'success' ? ` (${st.result})` : ''}${s.unitRestarts[u] ? `; restarted ${s.unitRestarts[u]}× by the agent, last ${ev?.at}: ${ev?.what}` : ''}`);
  }
  for (const w of s.warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n');
}

export function statusCommand(args: { json: boolean }): Promise<never> {
  return runCommand(async () => {
    const r = await apiRequest<StatusReport>('GET', '/status');
    if (args.json) printJson(r.body);
    else process.stdout.write(formatStatus(r.body) + '\n');
    return EXIT.OK;
  });
}

export function healthCommand(args: { json: boolean }): Promise<never> {
  return runCommand(async () => {
    const r = await apiRequest<HealthReport>('GET', '/health');
    if (args.json) printJson(r.body);
    else {
      process.stdout.write(`${r.body.ok ? 'healthy' : 'UNHEALTHY'}\n`);
      for (const c of r.body.checks) process.stdout.write(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(14)} ${c.detail}\n`);
    }
    return r.body.ok ? EXIT.OK : EXIT.FAILED;
  });
}
