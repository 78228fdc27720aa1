import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Low, type Adapter } from 'lowdb';
import * as v from 'valibot';

import type { Logger } from '../log.js';
import { emptyStoreData, STORE_SCHEMA_VERSION, type DesiredStateEntry, type StoreData, type SyncState, type WorkloadRecord } from './types.js';

export const STATE_FILE = 'state.json';

// --- atomic file writes --------------------------------------------------------------------------

/**
 * Writes a file so that a reader (or a restart after a crash or power loss) sees either the old
 * content or the new, never a mix: temp file with the final mode, fsync, rename over, fsync the
 * directory. steno (lowdb's writer) neither sets a mode nor fsyncs, so the store has its own.
 * `mode` is applied with fchmod as well, because `open(..., mode)` is masked by the umask and
 * ignored for a file that already exists (a stray temp file left by a crash).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: { mode?: number; fsync?: boolean; tempFile?: string } = {}): Promise<void> {
  const mode = opts.mode ?? 0o600;
  const doSync = opts.fsync ?? true;
  const tmp = opts.tempFile ?? join(dirname(file), `.${basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await fsp.open(tmp, 'w', mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(data);
    if (doSync) await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (doSync) await syncDir(dirname(file));
}

/** Makes a rename durable. Some file systems refuse fsync on a directory; that is not worth failing a write over. */
async function syncDir(dir: string): Promise<void> {
  let dh: fsp.FileHandle | undefined;
  try {
    dh = await fsp.open(dir, 'r');
    await dh.sync();
  } catch {
    // EINVAL/EISDIR/EPERM on some platforms and file systems: best effort.
  } finally {
    await dh?.close().catch(() => undefined);
  }
}

// --- reading, validation, migration --------------------------------------------------------------

/**
 * Migrations of the on-disk document: `migrations[n]` takes a document at schema version `n` and
 * returns one at version `n + 1` (it must set `schemaVersion` itself). They are applied in order
 * until STORE_SCHEMA_VERSION is reached. Version 1 is the first, so the table is empty today.
 */
export type Migrations = Record<number, (data: unknown) => unknown>;
export const migrations: Migrations = {};

/** The file was written by a newer agent. Refusing to start keeps its records; see `Store.open`. */
export class StoreVersionError extends Error {
  readonly fileVersion: number;
  readonly supportedVersion: number;
  constructor(file: string, fileVersion: number, supportedVersion: number, detail?: string) {
    super(
      detail ??
        `${file} has store schema version ${fileVersion}, but this persys-agent understands up to version ${supportedVersion} ` +
          '(it was written by a newer agent). Refusing to start rather than lose or misread its records: ' +
          'upgrade the agent, or move the file aside to start from an empty store.',
    );
    this.name = 'StoreVersionError';
    this.fileVersion = fileVersion;
    this.supportedVersion = supportedVersion;
  }
}

/** The file cannot be used; the store moves it aside and starts empty. */
class CorruptStateError extends Error {
  override name = 'CorruptStateError';
}

/**
 * The top-level shape. Deeper fields (a record's phase, the desired document) are the business of
 * the code that writes them; checking the skeleton is what keeps `data.records[x].id` and friends
 * from throwing at runtime. Loose objects so a field added within a version does not read as corrupt.
 */
const recordShape = v.looseObject({ id: v.string(), type: v.string(), retry: v.looseObject({ attempts: v.number() }), failures: v.array(v.unknown()) });
const storeShape = v.looseObject({
  schemaVersion: v.number(),
  nodeId: v.nullable(v.string()),
  desired: v.nullable(v.looseObject({ document: v.looseObject({ workloads: v.array(v.unknown()) }) })),
  records: v.record(v.string(), recordShape),
  sync: v.looseObject({ lastPullAt: v.nullable(v.string()), lastSuccessAt: v.nullable(v.string()), lastError: v.nullable(v.looseObject({})) }),
  reporter: v.looseObject({ seq: v.number() }),
});

const versionOf = (raw: unknown): number | undefined => {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const sv = (raw as { schemaVersion?: unknown }).schemaVersion;
  return typeof sv === 'number' && Number.isInteger(sv) && sv >= 0 ? sv : undefined;
};

/** Parses, migrates and checks a state file's text. Throws CorruptStateError or StoreVersionError. */
export function decodeStoreData(text: string, file: string, table: Migrations = migrations, target = STORE_SCHEMA_VERSION): StoreData {
  return decode(text, file, table, target).data;
}

function decode(text: string, file: string, table: Migrations, target: number): { data: StoreData; fromVersion: number } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CorruptStateError(`invalid JSON: ${(err as Error).message}`);
  }
  let version = versionOf(raw);
  if (version === undefined) throw new CorruptStateError('not a JSON object with an integer schemaVersion');
  const fromVersion = version;
  if (version > target) throw new StoreVersionError(file, version, target);
  while (version < target) {
    const step = table[version];
    if (!step) {
      // A hole in the table is a bug in this build, not damage to the file: do not throw the data away.
      throw new StoreVersionError(file, version, target, `${file} has store schema version ${version} and this agent has no migration from it to ${version + 1}; refusing to start.`);
    }
    try {
      raw = step(raw);
    } catch (err) {
      throw new CorruptStateError(`migration from schema version ${version} failed: ${(err as Error).message}`);
    }
    const next = versionOf(raw);
    if (next !== version + 1) throw new CorruptStateError(`migration from schema version ${version} produced version ${String(next)}, expected ${version + 1}`);
    version = next;
  }
  const checked = v.safeParse(storeShape, raw, { abortEarly: true });
  if (!checked.success) {
    const issue = checked.issues[0];
    const where = issue?.path?.map((p) => String(p.key)).join('.') ?? '(root)';
    throw new CorruptStateError(`wrong shape at ${where || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  // valibot's record() accepts an array; `records` keyed by index would break every lookup.
  if (Array.isArray((raw as { records?: unknown }).records)) throw new CorruptStateError('wrong shape at records: an array, expected an object keyed by workload id');
  for (const [key, rec] of Object.entries(checked.output.records)) {
    if (rec.id !== key) throw new CorruptStateError(`record under key ${JSON.stringify(key)} has id ${JSON.stringify(rec.id)}`);
  }
  // The shape check above covers what the runtime relies on; the rest is as the agent wrote it.
  return { data: raw as StoreData, fromVersion };
}

/** lowdb adapter: read = decode/validate/migrate, write = compact JSON via writeFileAtomic. */
class StateFileAdapter implements Adapter<StoreData> {
  /** Schema version of the file as last read, before migration (undefined: there was no file). */
  fileVersion: number | undefined;

  constructor(
    readonly file: string,
    private readonly table: Migrations,
    private readonly target: number,
    private readonly fsync: boolean,
  ) {}

  async read(): Promise<StoreData | null> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new CorruptStateError(`unreadable: ${(err as Error).message}`);
    }
    const { data, fromVersion } = decode(text, this.file, this.table, this.target);
    this.fileVersion = fromVersion;
    return data;
  }

  write(data: StoreData): Promise<void> {
    // Serialise before the first await: the bytes are the state at the moment the write started,
    // and updates made while it is in flight go to the follow-up write. No pretty-printing: it is
    // ~2x larger and slower for a file only the agent reads.
    const text = JSON.stringify(data);
    return writeFileAtomic(this.file, text, { mode: 0o600, fsync: this.fsync, tempFile: `${this.file}.tmp` });
  }
}

// --- the store ------------------------------------------------------------------------------------

export interface StoreOptions {
  /** Override the migration table (tests). */
  migrations?: Migrations;
  /** Override the version the store migrates to (tests). */
  schemaVersion?: number;
  /** fsync file and directory after each write (default true; only tests and benches turn it off). */
  fsync?: boolean;
  /** First delay before retrying a failed write (default 1000 ms; doubles up to 30 s). */
  retryDelayMs?: number;
}

const MAX_RETRY_DELAY_MS = 30_000;

/**
 * The agent's durable memory at `<stateDir>/state.json`: what was intended and what happened.
 *
 * Writes are coalesced: `update()` changes memory at once and schedules a write; at most one write
 * is in flight, and any number of updates made during it become exactly one follow-up write of the
 * latest state. `flush()` waits until everything updated so far is on disk.
 *
 * Decisions:
 * - A file from a NEWER schema version is refused (`StoreVersionError`), not moved aside: moving it
 *   aside would drop retry budgets, failure history and VM secrets a rollback of the agent binary
 *   should not cost. The operator upgrades or moves it aside deliberately.
 * - A corrupt or unreadable file is moved aside to `state.json.corrupt-<time>` and the store starts
 *   empty: the runtimes are the truth for what exists (re-adopted from their labels) and desired
 *   state is pulled afresh, so an empty store is a safe restart, whereas refusing would leave the
 *   host unmanaged until someone logs in.
 */
export class Store {
  readonly file: string;
  /** Duration of the last completed write (serialise + write + fsync + rename), in ms. */
  lastWriteMs = 0;
  /** Completed writes since open. */
  writes = 0;
  /** Told the duration (ms) of every completed write, for the write-duration histogram. */
  onWrite: ((ms: number) => void) | undefined;
  /** Failed writes since open (each is retried). */
  writeErrors = 0;

  private readonly low: Low<StoreData>;
  private readonly logger: Logger;
  private readonly baseRetryDelayMs: number;
  private dirty = false;
  private scheduled = false;
  private inFlight: Promise<void> | null = null;
  private lastError: Error | null = null;
  private retryDelayMs: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(low: Low<StoreData>, file: string, logger: Logger, retryDelayMs: number) {
    this.low = low;
    this.file = file;
    this.logger = logger;
    this.baseRetryDelayMs = retryDelayMs;
    this.retryDelayMs = retryDelayMs;
  }

  static async open(stateDir: string, logger: Logger, opts: StoreOptions = {}): Promise<Store> {
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
    // mkdir's mode does not apply to an existing directory (or through the umask); the store holds
    // VM passwords and the socket lives beside it, so tighten it every start.
    await fsp.chmod(stateDir, 0o700);
    const file = join(stateDir, STATE_FILE);
    await removeStrayTempFiles(stateDir);

    const adapter = new StateFileAdapter(file, opts.migrations ?? migrations, opts.schemaVersion ?? STORE_SCHEMA_VERSION, opts.fsync ?? true);
    const low = new Low<StoreData>(adapter, emptyStoreData());
    const store = new Store(low, file, logger, opts.retryDelayMs ?? 1000);

    let needsWrite = false;
    try {
      await low.read();
      const migratedFrom = adapter.fileVersion;
      if (migratedFrom === undefined) needsWrite = true; // no file yet: create it now, with its mode
      else if (migratedFrom !== low.data.schemaVersion) {
        needsWrite = true;
        logger.info({ file, from: migratedFrom, to: low.data.schemaVersion }, 'store migrated to a new schema version');
      }
    } catch (err) {
      if (!(err instanceof CorruptStateError)) throw err;
      const movedTo = `${file}.corrupt-${new Date().toISOString().replace(/:/g, '-')}`;
      await fsp.rename(file, movedTo);
      logger.error(
        { file, movedTo, reason: err.message },
        'state file is corrupt or unreadable; moved it aside and starting with an empty store (workloads are re-adopted from the runtimes and desired state is pulled afresh)',
      );
      low.data = emptyStoreData();
      needsWrite = true;
    }
    // An existing file may have been created by an older build or by hand with a wider mode.
    if (!needsWrite) await fsp.chmod(file, 0o600);
    else {
      store.markDirty();
      await store.flush();
    }
    return store;
  }

  /** False while the last write failed (it is being retried): for /readyz. */
  get writable(): boolean {
    return this.lastError === null;
  }

  /** The live state. Read it freely; change it only through `update()` so the change is persisted. */
  get data(): Readonly<StoreData> {
    return this.low.data;
  }

  /** Applies a change in memory now and schedules a (coalesced) write. */
  update(mutator: (d: StoreData) => void): void {
    if (this.closed) throw new Error('store is closed');
    mutator(this.low.data);
    this.markDirty();
  }

  /** Resolves once everything updated before the call is on disk; rejects if the disk write fails. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.inFlight) {
        await this.inFlight;
        // A failed write leaves `dirty` set; surface the failure rather than spin.
        if (this.lastError && this.dirty) throw this.lastError;
        continue;
      }
      if (!this.dirty) return;
      this.startWrite();
    }
  }

  /** Flushes and stops accepting updates. */
  async close(): Promise<void> {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    try {
      await this.flush();
    } finally {
      this.closed = true;
    }
  }

  getRecord(id: string): WorkloadRecord | undefined {
    return Object.hasOwn(this.low.data.records, id) ? this.low.data.records[id] : undefined;
  }

  setRecord(rec: WorkloadRecord): void {
    this.update((d) => {
      d.records[rec.id] = rec;
    });
  }

  deleteRecord(id: string): void {
    if (!Object.hasOwn(this.low.data.records, id)) return;
    this.update((d) => {
      delete d.records[id];
    });
  }

  setDesired(entry: DesiredStateEntry): void {
    this.update((d) => {
      d.desired = entry;
    });
  }

  setSync(partial: Partial<SyncState>): void {
    this.update((d) => {
      Object.assign(d.sync, partial);
    });
  }

  /**
   * Like setSync, but without scheduling a write: the values ride along with the next one. For
   * pull timestamps on an unchanged poll (a 304 every interval), which are only read live and
   * would otherwise cost a full, fsynced rewrite of the state file each poll.
   */
  noteSync(partial: Pick<Partial<SyncState>, 'lastPullAt' | 'lastSuccessAt'>): void {
    if (this.closed) throw new Error('store is closed');
    Object.assign(this.low.data.sync, partial);
  }

  /** The next status-report sequence number; persisted so `seq` keeps growing across restarts. */
  nextSeq(): number {
    let seq = 0;
    this.update((d) => {
      d.reporter.seq += 1;
      seq = d.reporter.seq;
    });
    return seq;
  }

  private markDirty(): void {
    this.dirty = true;
    if (this.inFlight || this.scheduled || this.retryTimer) return;
    this.scheduled = true;
    // setImmediate rather than a microtask: a burst of updates from one reconcile pass (which
    // awaits in between) still lands in one write.
    setImmediate(() => {
      this.scheduled = false;
      if (!this.inFlight && this.dirty) this.startWrite();
    });
  }

  private startWrite(): void {
    this.dirty = false;
    const started = performance.now();
    this.inFlight = this.low
      .write()
      .then(
        () => {
          this.lastWriteMs = performance.now() - started;
          this.writes += 1;
          this.onWrite?.(this.lastWriteMs);
          this.lastError = null;
          this.retryDelayMs = this.baseRetryDelayMs;
        },
        (err: unknown) => {
          this.writeErrors += 1;
          this.lastError = err instanceof Error ? err : new Error(String(err));
          // The state in memory is still the newest; write it again later rather than lose it.
          this.dirty = true;
          this.logger.error({ file: this.file, err: this.lastError.message, retryInMs: this.retryDelayMs }, 'store write failed; will retry');
          this.scheduleRetry();
        },
      )
      .finally(() => {
        this.inFlight = null;
        // Exactly one follow-up write for everything updated while this one was in flight.
        if (this.dirty && !this.lastError && !this.scheduled) {
          this.scheduled = true;
          setImmediate(() => {
            this.scheduled = false;
            if (!this.inFlight && this.dirty) this.startWrite();
          });
        }
      });
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, MAX_RETRY_DELAY_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.inFlight && this.dirty) this.startWrite();
    }, delay);
    // A pending retry must not keep a shutting-down process alive; close() flushes explicitly.
    this.retryTimer.unref();
  }
}

/** Temp files are only left by a crash mid-write; state.json itself is intact then (rename is atomic). */
async function removeStrayTempFiles(stateDir: string): Promise<void> {
  const entries = await fsp.readdir(stateDir);
  await Promise.all(
    entries.filter((n) => n === `${STATE_FILE}.tmp` || n.startsWith(`.${STATE_FILE}.tmp-`)).map((n) => fsp.rm(join(stateDir, n), { force: true })),
  );
}
