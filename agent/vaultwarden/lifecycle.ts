/**
 * What the primary does around Vaultwarden's start: before a version other than the one
 * that last ran on this database starts (and migrates it), the snapshot (upgrade.ts);
 * once it answers, the record of what runs and the row marker a rollback compares with.
 * And what `status` shows of it.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { humanBytes } from '../aside.ts';
import { AgentError, EXIT, errorMessage } from '../errors.ts';
import { log } from '../log.ts';
import type { VaultwardenState } from '../state-file.ts';
import type { PreparedVaultwarden } from './start.ts';
import { MARKER_FILE, SNAPSHOT_FILE, byteCopySafe, fingerprintOf, hasVaultwardenData, migrationList, migrationsFingerprint, pinRows, takeUpgradeSnapshot, writeMarker } from './upgrade.ts';
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
  /** What is about to start / runs: its version, or `sha256:<12 hex>` of a binary that does not say it. */
  version: string | undefined;
  private pendingMarker: string | null = null;
  /** The marker's rows, fixed when Vaultwarden answered; hashed and written by `writeDeferredMarker`. */
  private deferred: (() => Promise<void>) | null = null;

  constructor(deps: LifecycleDeps) {
    this.deps = deps;
  }

  /**
   * The binary's version: an installed one's (checked at its install), else --version as
   * the service user, else a digest of the file: never "unknown".
   */
  private async identify(bin: string): Promise<string> {
    const known = this.deps.prepared.installed;
    if (known && known.bin === bin) return known.version;
    const v = await this.deps.probe(bin).catch((err: unknown) => {
      log.warn({ bin, err: errorMessage(err) }, `could not read the version of ${bin} (${errorMessage(err)}); it is told apart by its digest`);
      return undefined;
    });
    if (v) return v;
    try {
      return `sha256:${createHash('sha256').update(readFileSync(bin)).digest('hex').slice(0, 12)}`;
    } catch (err) {
      throw new AgentError(`cannot read ${bin}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Before Vaultwarden's unit starts on the live database (also before a restart of the
   * unit): when what starts is not what last ran on this database, a snapshot first.
   * Throws (the start is refused) when it cannot be taken, or for an older version on a
   * database a newer one migrated.
   */
  async beforeStart(): Promise<void> {
    const { prepared, dbPath } = this.deps;
    const to = await this.identifyOnce(prepared.bin);
    this.version = to;
    const st = this.deps.readState();
    const last = st.lastRan;
    const at = this.deps.now().toISOString();
    const record = (before: string[] | null) => this.deps.updateState((v) => ({ ...v, lastRan: { version: to, at, bin: prepared.bin, migrations: null, before } }));
    if (!hasVaultwardenData(dbPath)) {
      if (last?.version !== to) log.info({ version: to }, `Vaultwarden ${to} starts on a new database: no snapshot needed`);
      await record(null);
      return;
    }
    // What last ran here ran on this database only if its migrations are this database's
    // as it left them once it answered, or — when it never answered — what it started on
    // plus what it may have applied (a restore, a promotion or a rollback replaced the
    // database otherwise).
    const list = migrationList(dbPath);
    const fp = fingerprintOf(list);
    const startedOn = last?.migrations == null && Array.isArray(last?.before) && list !== null && last!.before.every((m) => list.includes(m));
    const sameDb = last !== undefined && fp !== null && (last.migrations === fp || startedOn || (last.migrations === undefined && last.before === undefined));
    const from = sameDb ? last!.version : null;
    // A newer version answered on a database with these very migrations (here, before a
    // rollback or a restore to a point in time brought it back).
    const newest = fp !== null ? st.ranOn?.[fp] : undefined;
    const older = from && compareVersions(to, from) < 0 ? from : newest && compareVersions(to, newest) < 0 ? newest : undefined;
    if (older) {
      throw new AgentError(`Vaultwarden ${to} is older than ${older}, which ran on this database and migrated it: an older version on a newer schema can damage the vault`, {
        hint: `go back with vwstream-agent vaultwarden rollback (the snapshot taken before the upgrade), or run ${older} again (VAULTWARDEN_VERSION=${older} or vwstream-agent vaultwarden install --version ${older})`,
        exitCode: EXIT.CONFIG,
      });
    }
    if (from === to) return;
    if (from === null && newest === to) { await record(list); return; } // this version answered on these very migrations already
    const up = st.upgrade;
    if (this.earlySnapshot && up?.snapshot === this.earlySnapshot && up.to === to && up.from === from && existsSync(join(up.snapshot, SNAPSHOT_FILE))) {
      log.debug({ snapshot: up.snapshot }, 'the snapshot before this upgrade was taken right after the restore');
    } else if (up && up.to === to && up.from === from && existsSync(join(up.snapshot, SNAPSHOT_FILE))) {
      log.info({ snapshot: up.snapshot }, `Vaultwarden ${to}: the snapshot before this upgrade exists already (${up.snapshot}); not taken again`);
    } else {
      await this.snapshot(from, to, false);
    }
    // Recorded before it starts: a start that migrates and dies before answering does not
    // take a second "before" snapshot of the migrated database.
    await record(list);
  }

  /** The snapshot of the database before `to` migrates it, recorded as the rollback point. */
  private async snapshot(from: string | null, to: string, byteCopy: boolean): Promise<string> {
    const { dbPath } = this.deps;
    log.info({ from, to }, `Vaultwarden ${from ?? '(version that last ran on this database not known here)'} → ${to}: taking a snapshot before it migrates the database${byteCopy ? ' (a copy of the database just restored)' : ''}`);
    const snap = await takeUpgradeSnapshot(dbPath, from, to, this.deps.asideRoot, this.deps.now(), { byteCopy });
    await this.deps.updateState((v) => ({ ...v, upgrade: { from, to, at: snap.at, snapshot: snap.dir, bytes: snap.bytes, ms: snap.ms } }));
    this.pendingMarker = snap.dir;
    log.info({ from, to, snapshot: snap.dir, bytes: snap.bytes, ms: snap.ms, counts: snap.counts }, `snapshot before the upgrade to ${to}: ${snap.dir} (${humanBytes(snap.bytes)}, integrity ok, ${snap.ms} ms); vwstream-agent vaultwarden rollback goes back to it`);
    return snap.dir;
  }

  /** The snapshot taken by afterRestore() in this process (beforeStart does not take a second one). */
  private earlySnapshot: string | null = null;

  /**
   * Right after a restore replaced the database with a copy that passed integrity_check,
   * while nothing has it open (before Litestream starts; the caller guarantees it): when
   * the Vaultwarden about to start would need the snapshot before an upgrade, it is taken
   * now, as a byte copy of that file (a reflink where the file system has them), beside
   * the files still downloading, instead of as a VACUUM INTO later on Vaultwarden's
   * critical path. Only the case beforeStart would decide the same way on this very
   * database: nothing known to have run on it (a restore leaves no record of what ran
   * on the replaced database). Anything else, and any failure, is left to beforeStart.
   */
  async afterRestore(): Promise<void> {
    const { prepared, dbPath } = this.deps;
    try {
      const to = await this.identifyOnce(prepared.bin);
      if (!hasVaultwardenData(dbPath) || !byteCopySafe(dbPath)) return;
      const st = this.deps.readState();
      const list = migrationList(dbPath);
      const fp = fingerprintOf(list);
      const last = st.lastRan;
      const startedOn = last?.migrations == null && Array.isArray(last?.before) && list !== null && last!.before.every((m) => list.includes(m));
      const sameDb = last !== undefined && fp !== null && (last.migrations === fp || startedOn || (last.migrations === undefined && last.before === undefined));
      if (sameDb || fp === null || st.ranOn?.[fp] !== undefined) return; // beforeStart's other cases
      const up = st.upgrade;
      if (up && up.to === to && up.from === null && existsSync(join(up.snapshot, SNAPSHOT_FILE))) return; // taken already: beforeStart says so
      this.earlySnapshot = await this.snapshot(null, to, true);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, `the snapshot right after the restore was not taken (${errorMessage(err)}); it is taken before Vaultwarden starts`);
    }
  }

  /** identify() once per binary as it is on disk (same inode, size, mtime, ctime): a probe started early serves the start. */
  private identified: { bin: string; key: string; version: Promise<string> } | null = null;

  private identifyOnce(bin: string): Promise<string> {
    let key = '';
    try {
      const s = statSync(bin);
      key = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    } catch { /* identify says why */ }
    const hit = this.identified;
    if (hit && key && hit.bin === bin && hit.key === key) return hit.version;
    const version = this.identify(bin);
    this.identified = key ? { bin, key, version } : null;
    version.catch(() => { if (this.identified?.version === version) this.identified = null; });
    return version;
  }

  /**
   * Once Vaultwarden answers: the migrations it left (this database's fingerprint); after an
   * upgrade, the row marker. `deferMarker`: the marker's rows are fixed now (a read
   * transaction pinned at this moment, as before) but hashed and written only by
   * writeDeferredMarker(), so the start's READY does not wait for a read of every row.
   * What the rollback check compares with is the same either way: the rows as they were
   * when the new version first answered.
   */
  async started(opts: { deferMarker?: boolean } = {}): Promise<void> {
    const to = this.version;
    if (!to) return;
    const fp = hasVaultwardenData(this.deps.dbPath) ? migrationsFingerprint(this.deps.dbPath) : null;
    await this.deps.updateState((v) => {
      if (v.lastRan?.version !== to) return v;
      const ranOn = { ...v.ranOn };
      if (fp !== null && !/^sha256:/.test(to) && (!ranOn[fp] || compareVersions(to, ranOn[fp]!) > 0)) ranOn[fp] = to;
      const keys = Object.keys(ranOn);
      for (const k of keys.slice(0, Math.max(0, keys.length - 100))) delete ranOn[k]; // the newest 100 fingerprints
      return { ...v, lastRan: { ...v.lastRan, migrations: fp }, ranOn };
    });
    const dir = this.pendingMarker;
    this.pendingMarker = null;
    if (!dir || !existsSync(dir)) return;
    const t = Date.now();
    const rows = pinRows(this.deps.dbPath);
    const write = async () => {
      try {
        const marker = join(dir, MARKER_FILE);
        await writeMarker(marker, rows.digests());
        await this.deps.updateState((v) => (v.upgrade?.snapshot === dir ? { ...v, upgrade: { ...v.upgrade, marker } } : v));
        log.info({ marker, ms: Date.now() - t }, `Vaultwarden ${to} answers after its migrations; rows marked for the rollback check (${Date.now() - t} ms)`);
      } finally {
        rows.close();
      }
    };
    this.deferred?.().catch(() => undefined); // an older one never written: superseded
    if (opts.deferMarker) this.deferred = write;
    else { this.deferred = null; await write(); }
  }

  /** The row marker started() fixed with deferMarker, hashed and written now (nothing when none waits). */
  async writeDeferredMarker(): Promise<void> {
    const write = this.deferred;
    this.deferred = null;
    await write?.();
  }
}

/** -1, 0, 1 for two x.y.z versions (a suffix compares as text after the numbers); 0 when either is not a version. */
export function compareVersions(a: string, b: string): number {
  const pa = /^(\d+)\.(\d+)\.(\d+)(.*)$/.exec(a);
  const pb = /^(\d+)\.(\d+)\.(\d+)(.*)$/.exec(b);
  if (!pa || !pb) return 0;
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return Math.sign(d);
  }
  // 1.33.0-rc1 < 1.33.0
  if (pa[4] === pb[4]) return 0;
  if (!pa[4]) return 1;
  if (!pb[4]) return -1;
  return pa[4]! < pb[4]! ? -1 : 1;
}

export interface VaultwardenReport {
  role: 'primary' | 'secondary';
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

export function vaultwardenReport(prepared: PreparedVaultwarden, store: VersionStore, st: VaultwardenState, cfg: { version: string | undefined; image: string }, role: 'primary' | 'secondary' = 'primary'): VaultwardenReport {
  const cur = prepared.installed ?? (prepared.source === 'installed' ? store.current() : undefined);
  const prev = store.previous();
  const up = st.upgrade && existsSync(st.upgrade.snapshot) ? st.upgrade : undefined;
  return {
    role,
    source: prepared.source,
    bin: prepared.bin,
    running: role === 'secondary' ? prepared.installed?.version ?? null : st.lastRan?.version ?? null,
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
  // A secondary records no run (its copy is not the database of record): the installed version is what it serves.
  const running = v.running ?? (v.role === 'secondary' ? v.installed?.version : undefined);
  lines.push(`  version        ${running ? `Vaultwarden ${running}` : 'not started yet'}${v.installed && running && v.installed.version !== running ? ` (installed: ${v.installed.version}, runs at the next start)` : ''} ${src}${v.pin ? `; pinned VAULTWARDEN_VERSION=${v.pin}` : ''}`);
  if (v.previous) lines.push(`  previous       Vaultwarden ${v.previous.version} from ${v.previous.image} (kept for rollback)`);
  if (v.rollbackPoint) lines.push(`  rollback point ${v.rollbackPoint.from ?? '(unknown)'} → ${v.rollbackPoint.to} at ${v.rollbackPoint.at}: ${v.rollbackPoint.snapshot} (${humanBytes(v.rollbackPoint.bytes)}; vwstream-agent vaultwarden rollback)`);
  if (v.lastRollback) lines.push(`  last rollback  ${v.lastRollback.from} → ${v.lastRollback.to} at ${v.lastRollback.at}${v.lastRollback.forced ? ' (--force)' : ''}; the newer database is kept at ${v.lastRollback.newerKeptAt}`);
  if (v.held) lines.push(`  HELD           ${v.problem}`);
  else if (v.problem) lines.push(`  PROBLEM        ${v.problem}`);
  return lines;
}
