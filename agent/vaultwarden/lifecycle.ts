/**
 * What the primary does around Vaultwarden's start: before a version other than the one
 * that last ran on this database starts (and migrates it), the snapshot (upgrade.ts);
 * once it answers, the record of what runs and the row marker a rollback compares with.
 * And what `status` shows of it.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { humanBytes } from '../aside.ts';
import { log } from '../log.ts';
import type { VaultwardenState } from '../state-file.ts';
import type { PreparedVaultwarden } from './start.ts';
import { MARKER_FILE, hasVaultwardenData, rowDigests, takeUpgradeSnapshot, writeMarker } from './upgrade.ts';
import type { VersionStore } from './versions.ts';

export interface LifecycleDeps {
  /** What the unit runs (from prepareVaultwarden). */
  prepared: PreparedVaultwarden;
  /** `--version` of the binary, run as the service user: its version or undefined. */
  probe(bin: string): Promise<string | undefined>;
  dbPath: string;
  asideRoot: string;
  readState(): VaultwardenState;
  updateState(change: (v: VaultwardenState) => VaultwardenState): Promise<unknown>;
  now(): Date;
}

export class VaultwardenLifecycle {
  private readonly deps: LifecycleDeps;
  /** The version about to start / running (from its --version). */
  version: string | undefined;
  private pendingMarker: string | null = null;

  constructor(deps: LifecycleDeps) {
    this.deps = deps;
  }

  /** Before Vaultwarden's unit starts on the live database: snapshot when the version changes. Throws when it cannot. */
  async beforeStart(): Promise<void> {
    const { prepared, dbPath } = this.deps;
    this.version = await this.deps.probe(prepared.bin).catch((err: unknown) => {
      log.warn({ bin: prepared.bin, err: String(err) }, `could not read the version of ${prepared.bin}; no snapshot is taken before it starts`);
      return undefined;
    });
    const to = this.version;
    if (!to) return;
    const last = this.deps.readState().lastRan?.version ?? null;
    if (last === to) return;
    if (!hasVaultwardenData(dbPath)) {
      log.info({ version: to }, `Vaultwarden ${to} starts on a new database: no snapshot needed`);
      return;
    }
    log.info({ from: last, to }, `Vaultwarden ${last ?? '(version that last ran not known on this host)'} → ${to}: taking a snapshot before it migrates the database`);
    const snap = await takeUpgradeSnapshot(dbPath, last, to, this.deps.asideRoot, this.deps.now());
    await this.deps.updateState((v) => ({ ...v, upgrade: { from: last, to, at: snap.at, snapshot: snap.dir, bytes: snap.bytes, ms: snap.ms } }));
    this.pendingMarker = snap.dir;
    log.info({ from: last, to, snapshot: snap.dir, bytes: snap.bytes, ms: snap.ms, counts: snap.counts }, `snapshot before the upgrade to ${to}: ${snap.dir} (${humanBytes(snap.bytes)}, integrity ok, ${snap.ms} ms); vwstream-agent vaultwarden rollback goes back to it`);
  }

  /** Once Vaultwarden answers: it ran on this database; after an upgrade, the row marker. */
  async started(): Promise<void> {
    const to = this.version;
    if (!to) return;
    await this.deps.updateState((v) => ({ ...v, lastRan: { version: to, at: this.deps.now().toISOString(), bin: this.deps.prepared.bin } }));
    const dir = this.pendingMarker;
    this.pendingMarker = null;
    if (!dir || !existsSync(dir)) return;
    const t = Date.now();
    const marker = join(dir, MARKER_FILE);
    await writeMarker(marker, rowDigests(this.deps.dbPath));
    await this.deps.updateState((v) => (v.upgrade?.snapshot === dir ? { ...v, upgrade: { ...v.upgrade, marker } } : v));
    log.info({ marker, ms: Date.now() - t }, `Vaultwarden ${to} answers after its migrations; rows marked for the rollback check (${Date.now() - t} ms)`);
  }
}

export interface VaultwardenReport {
  source: PreparedVaultwarden['source'];
  bin: string;
  /** What the agent last started here (its --version). */
  running: string | null;
  installed: { version: string; image: string; digest: string; installedAt: string } | null;
  previous: { version: string; image: string; digest: string } | null;
  pin: string | null;
  image: string;
  rollbackPoint: { from: string | null; to: string; at: string; snapshot: string; bytes: number; marked: boolean } | null;
  held: string | null;
  problem: string | null;
  lastRollback: VaultwardenState['lastRollback'] | null;
}

export function vaultwardenReport(prepared: PreparedVaultwarden, store: VersionStore, st: VaultwardenState, cfg: { version: string | undefined; image: string }): VaultwardenReport {
  const cur = prepared.installed ?? (prepared.source === 'installed' ? store.current() : undefined);
  const prev = store.previous();
  const up = st.upgrade && existsSync(st.upgrade.snapshot) ? st.upgrade : undefined;
  return {
    source: prepared.source,
    bin: prepared.bin,
    running: st.lastRan?.version ?? null,
    installed: cur ? { version: cur.version, image: cur.image, digest: cur.digest, installedAt: cur.installedAt } : null,
    previous: prev && prev.version !== cur?.version ? { version: prev.version, image: prev.image, digest: prev.digest } : null,
    pin: cfg.version ?? null,
    image: cfg.image,
    rollbackPoint: up ? { from: up.from, to: up.to, at: up.at, snapshot: up.snapshot, bytes: up.bytes, marked: Boolean(up.marker) } : null,
    held: prepared.held ?? null,
    problem: prepared.problem ?? null,
    lastRollback: st.lastRollback ?? null,
  };
}

/** The status lines for it. */
export function formatVaultwardenReport(v: VaultwardenReport): string[] {
  const lines: string[] = [];
  const src = v.source === 'installed' && v.installed ? `from ${v.installed.image} (${v.installed.digest})` : v.source === 'operator' ? `${v.bin} (VAULTWARDEN_BIN, the operator's)` : `${v.bin} (not installed by the agent)`;
  lines.push(`  version        ${v.running ? `Vaultwarden ${v.running}` : 'not started yet'}${v.installed && v.installed.version !== v.running ? ` (installed: ${v.installed.version}, runs at the next start)` : ''} ${src}${v.pin ? `; pinned VAULTWARDEN_VERSION=${v.pin}` : ''}`);
  if (v.previous) lines.push(`  previous       Vaultwarden ${v.previous.version} from ${v.previous.image} (kept for rollback)`);
  if (v.rollbackPoint) lines.push(`  rollback point ${v.rollbackPoint.from ?? '(unknown)'} → ${v.rollbackPoint.to} at ${v.rollbackPoint.at}: ${v.rollbackPoint.snapshot} (${humanBytes(v.rollbackPoint.bytes)}; vwstream-agent vaultwarden rollback)`);
  if (v.held) lines.push(`  HELD           ${v.problem}`);
  else if (v.problem) lines.push(`  PROBLEM        ${v.problem}`);
  return lines;
}
