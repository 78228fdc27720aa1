import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/*
 * What the update gates remember across agent restarts, in <stateDir>/updates.json: the forceToken in
 * force at each workload's last successful create or update, and since when an update has waited for
 * a lock (for update.lockTimeoutSeconds). Small, rewritten whole (write + rename) when it changes.
 */

export const UPDATES_FILE = 'updates.json';

interface Data {
  version: 1;
  /** Workload id -> the forceToken of its last successful create or update ('' for none). */
  forceTokens: Record<string, string>;
  /** Workload id -> the update (retry reset key) that waits for a lock, and since when. */
  lockWaits: Record<string, { key: string; since: string }>;
}

const empty = (): Data => ({ version: 1, forceTokens: {}, lockWaits: {} });

export class UpdateState {
  private data: Data;
  private dirty = false;

  /** readOnly: `persys-agent plan` reads the file and never writes it. */
  constructor(
    private readonly stateDir: string,
    private readonly readOnly = false,
  ) {
    this.data = UpdateState.read(stateDir);
  }

  private static read(stateDir: string): Data {
    try {
      const raw = JSON.parse(readFileSync(join(stateDir, UPDATES_FILE), 'utf8')) as Partial<Data>;
      if (raw.version !== 1) return empty();
      return { version: 1, forceTokens: { ...(raw.forceTokens ?? {}) }, lockWaits: { ...(raw.lockWaits ?? {}) } };
    } catch {
      // Absent or unreadable: no token was consumed and no lock wait started; the worst case is one early force.
      return empty();
    }
  }

  /** The forceToken of the last successful create or update; undefined when the agent never recorded one. */
  forceTokenOf(id: string): string | undefined {
    return Object.hasOwn(this.data.forceTokens, id) ? this.data.forceTokens[id] : undefined;
  }

  applied(id: string, forceToken: string | undefined): void {
    const t = forceToken ?? '';
    if (this.forceTokenOf(id) !== t) {
      this.data.forceTokens[id] = t;
      this.dirty = true;
    }
    this.clearLockWait(id);
  }

  /** Since when this update (key) has waited for a lock; starts the count at `now` the first time. */
  lockWaitSince(id: string, key: string, now: Date): Date {
    const w = Object.hasOwn(this.data.lockWaits, id) ? this.data.lockWaits[id] : undefined;
    if (w && w.key === key && Number.isFinite(Date.parse(w.since))) return new Date(w.since);
    this.data.lockWaits[id] = { key, since: now.toISOString() };
    this.dirty = true;
    return now;
  }

  clearLockWait(id: string): void {
    if (!Object.hasOwn(this.data.lockWaits, id)) return;
    delete this.data.lockWaits[id];
    this.dirty = true;
  }

  /** Drops what is kept for workloads no longer desired. */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const m of [this.data.forceTokens, this.data.lockWaits]) {
      for (const id of Object.keys(m)) {
        if (ids.has(id)) continue;
        delete m[id];
        this.dirty = true;
      }
    }
  }

  /** Writes the file when something changed (a write that fails is retried at the next save). */
  save(): void {
    if (!this.dirty || this.readOnly) return;
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const file = join(this.stateDir, UPDATES_FILE);
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(this.data), { mode: 0o600 });
    renameSync(tmp, file);
    this.dirty = false;
  }
}
