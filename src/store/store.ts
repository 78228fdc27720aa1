import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as v from 'valibot';

import type { ErrorCode } from '../errors/codes.js';
import type { Logger } from '../log.js';
import { sweepStaleTempFiles, writeFileAtomic } from '../util/atomic-write.js';
import { emptyStoreData, STORE_SCHEMA_VERSION, type DesiredStateEntry, type StoreData, type SyncState, type WorkloadRecord } from './types.js';

export { writeFileAtomic } from '../util/atomic-write.js';

export const STATE_FILE = 'state.json';
export const DESIRED_FILE = 'desired.json';
/** Files of the state dir written through writeFileAtomic: their stale temp files are swept at start. */
export const STATE_DIR_FILES = [STATE_FILE, DESIRED_FILE, 'node-id', 'status.json', 'agent.lock'] as const;
/**
 * Other leftovers of ours: the landed version's temp names (`state.json.tmp`,
 * `status.json.<pid>.<hex>.tmp`) and a stale lock moved aside by a takeover that crashed.
 */
const LEGACY_TEMP = /^(state\.json\.tmp|status\.json\.\d+\.[0-9a-f]{8}\.tmp|agent\.lock\.stale-\d+-[0-9a-f]{8})$/;

/**
 * Status seqs are reserved in blocks: `state.json` holds the highest seq that may have been sent,
 * and is rewritten only when a block runs out (every ~80 minutes at a 5 s heartbeat) instead of
 * once per report. A restart continues above the reservation, so seq never goes backwards.
 */
export const SEQ_BLOCK = 1000;

/**
 * The error code of a failed store write: a full disk (or quota) is NO_SPACE, which says what to do
 * (free space); anything else is INTERNAL.
 */
export function storeErrorCode(err: unknown): ErrorCode {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' ? 'NO_SPACE' : 'INTERNAL';
}

// --- reading, validation, migration --------------------------------------------------------------

/**
 * The logical store document after migration: state.json's content plus the desired entry that
 * lives in desired.json since version 2. `migrations[n]` takes a document at schema version `n` and
 * returns one at `n + 1` (it must set `schemaVersion` itself).
 */
export type Migrations = Record<number, (data: unknown) => unknown>;

/**
 * 1 -> 2: the landed single file. `desired` moves to desired.json (Store.open writes it first),
 * `sync` is dropped (memory-only now), `reporter.seq` becomes the reservation `seqReserved`.
 */
export function migrateV1toV2(raw: unknown): unknown {
  const d = raw as { nodeId?: unknown; desired?: unknown; records?: unknown; reporter?: { seq?: unknown }; vmSecrets?: unknown };
  const seq = typeof d.reporter?.seq === 'number' ? d.reporter.seq : 0;
  return {
    schemaVersion: 2,
    nodeId: d.nodeId ?? null,
    records: d.records,
    reporter: { seqReserved: seq },
    ...(d.vmSecrets !== undefined ? { vmSecrets: d.vmSecrets } : {}),
    desired: d.desired ?? null,
  };
}

export const migrations: Migrations = { 1: migrateV1toV2 };

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
const desiredShape = v.looseObject({ document: v.looseObject({ generation: v.number(), workloads: v.array(v.unknown()) }) });
const stateShape = v.looseObject({
  schemaVersion: v.number(),
  nodeId: v.nullable(v.string()),
  records: v.record(v.string(), recordShape),
  reporter: v.looseObject({ seqReserved: v.number() }),
});
const desiredFileShape = v.looseObject({ schemaVersion: v.literal(STORE_SCHEMA_VERSION), desired: desiredShape });

const versionOf = (raw: unknown): number | undefined => {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const sv = (raw as { schemaVersion?: unknown }).schemaVersion;
  return typeof sv === 'number' && Number.isInteger(sv) && sv >= 0 ? sv : undefined;
};

function shapeError(issues: readonly v.BaseIssue<unknown>[]): CorruptStateError {
  const issue = issues[0];
  const where = issue?.path?.map((p) => String(p.key)).join('.') ?? '';
  return new CorruptStateError(`wrong shape at ${where || '(root)'}: ${issue?.message ?? 'invalid'}`);
}

/** Decoded state.json: the data, the version it had on disk, and the desired entry a migration carried. */
interface Decoded {
  data: StoreData;
  fromVersion: number;
  /** undefined: the file never held one (version 2 keeps it in desired.json). */
  migratedDesired: DesiredStateEntry | null | undefined;
  seqReserved: number;
}

/** Parses, migrates and checks a state file's text. Throws CorruptStateError or StoreVersionError. */
export function decodeStoreData(text: string, file: string, table: Migrations = migrations, target = STORE_SCHEMA_VERSION): StoreData {
  const d = decode(text, file, table, target);
  return d.migratedDesired ? { ...d.data, desired: d.migratedDesired } : d.data;
}

function decode(text: string, file: string, table: Migrations, target: number): Decoded {
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
  const checked = v.safeParse(stateShape, raw, { abortEarly: true });
  if (!checked.success) throw shapeError(checked.issues);
  // valibot's record() accepts an array; `records` keyed by index would break every lookup.
  if (Array.isArray((raw as { records?: unknown }).records)) throw new CorruptStateError('wrong shape at records: an array, expected an object keyed by workload id');
  for (const [key, rec] of Object.entries(checked.output.records)) {
    if (rec.id !== key) throw new CorruptStateError(`record under key ${JSON.stringify(key)} has id ${JSON.stringify(rec.id)}`);
  }
  const onDisk = raw as { nodeId: string | null; records: StoreData['records']; reporter: { seqReserved: number }; vmSecrets?: StoreData['vmSecrets']; imageRefs?: unknown; desired?: unknown };
  let migratedDesired: DesiredStateEntry | null | undefined;
  if (Object.hasOwn(onDisk, 'desired')) {
    if (onDisk.desired !== null) {
      const d = v.safeParse(desiredShape, onDisk.desired, { abortEarly: true });
      if (!d.success) throw shapeError(d.issues);
    }
    migratedDesired = onDisk.desired as DesiredStateEntry | null;
  }
  const data: StoreData = {
    ...emptyStoreData(),
    schemaVersion: target,
    nodeId: onDisk.nodeId,
    records: onDisk.records,
    reporter: { seq: onDisk.reporter.seqReserved },
    ...(onDisk.vmSecrets !== undefined ? { vmSecrets: onDisk.vmSecrets } : {}),
    ...(isImageRefs(onDisk.imageRefs) ? { imageRefs: onDisk.imageRefs } : {}),
  };
  // The shape check above covers what the runtime relies on; the rest is as the agent wrote it.
  return { data, fromVersion, migratedDesired, seqReserved: onDisk.reporter.seqReserved };
}

/** imageRefs as the agent writes them; anything else is dropped (GC then knows less, and removes less). */
function isImageRefs(x: unknown): x is NonNullable<StoreData['imageRefs']> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  return Object.values(x).every((e) => typeof e === 'object' && e !== null && typeof (e as { firstReferencedAt?: unknown }).firstReferencedAt === 'string' && typeof (e as { type?: unknown }).type === 'string');
}

function decodeDesired(text: string): DesiredStateEntry {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CorruptStateError(`invalid JSON: ${(err as Error).message}`);
  }
  const version = versionOf(raw);
  if (version !== undefined && version > STORE_SCHEMA_VERSION) throw new StoreVersionError(DESIRED_FILE, version, STORE_SCHEMA_VERSION);
  const checked = v.safeParse(desiredFileShape, raw, { abortEarly: true });
  if (!checked.success) throw shapeError(checked.issues);
  return (raw as { desired: DesiredStateEntry }).desired;
}

async function readText(file: string): Promise<string | null> {
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CorruptStateError(`unreadable: ${(err as Error).message}`);
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
 * The agent's durable memory in `<stateDir>`: what was intended (`desired.json`) and what happened
 * (`state.json`: records, retry budgets, failure history, the seq reservation, VM secrets).
 *
 * - `desired.json` is written once per new desired state, by `setDesired`, which resolves only once
 *   the document is on disk and only then makes it the live desired state: nothing can be applied
 *   from a document a crash would forget (the "rollback below the running generation" defect).
 * - `state.json` writes are coalesced: `update()` changes memory at once and schedules a write; at
 *   most one write is in flight, and any number of updates made during it become exactly one
 *   follow-up write. A write whose bytes equal the last written ones is skipped. `flush()` waits
 *   until everything updated so far is on disk.
 * - Pull timestamps and the last pull error are memory-only; seqs are reserved in blocks.
 *
 * Decisions:
 * - A file from a NEWER schema version is refused (`StoreVersionError`), not moved aside: moving it
 *   aside would drop retry budgets, failure history and VM secrets a rollback of the agent binary
 *   should not cost. The operator upgrades or moves it aside deliberately.
 * - A corrupt or unreadable file is moved aside to `<name>.corrupt-<time>` and that part starts
 *   empty: the runtimes are the truth for what exists (re-adopted from their labels) and desired
 *   state is pulled afresh, so an empty store is a safe restart, whereas refusing would leave the
 *   host unmanaged until someone logs in. Only real damage gets there: every write is atomic, so a
 *   crash or power cut leaves the old file or the new one.
 */
export class Store {
  readonly file: string;
  readonly desiredFile: string;
  /** Duration of the last completed write (serialise + write + fsync + rename), in ms. */
  lastWriteMs = 0;
  /** Completed writes since open (state.json and desired.json). */
  writes = 0;
  /** Told the duration (ms) of every completed write, for the write-duration histogram. */
  onWrite: ((ms: number) => void) | undefined;
  /** Failed writes since open (each is retried). */
  writeErrors = 0;

  private readonly d: StoreData;
  private readonly logger: Logger;
  private readonly fsync: boolean;
  private readonly baseRetryDelayMs: number;
  /** Highest seq that state.json allows to have been sent (see SEQ_BLOCK). */
  private seqReserved: number;
  /** Hash of the bytes of the last successful state.json write: an equal write is skipped. */
  private lastWrittenHash: string | null = null;
  private dirty = false;
  private scheduled = false;
  private inFlight: Promise<void> | null = null;
  private desiredChain: Promise<unknown> = Promise.resolve();
  private lastError: Error | null = null;
  /** The last desired.json write failed (its generation is not applied); cleared by the next that succeeds. */
  private desiredError: Error | null = null;
  private retryDelayMs: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(stateDir: string, data: StoreData, seqReserved: number, logger: Logger, opts: StoreOptions) {
    this.file = join(stateDir, STATE_FILE);
    this.desiredFile = join(stateDir, DESIRED_FILE);
    this.d = data;
    this.seqReserved = seqReserved;
    this.logger = logger;
    this.fsync = opts.fsync ?? true;
    this.baseRetryDelayMs = opts.retryDelayMs ?? 1000;
    this.retryDelayMs = this.baseRetryDelayMs;
  }

  static async open(stateDir: string, logger: Logger, opts: StoreOptions = {}): Promise<Store> {
    await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
    // mkdir's mode does not apply to an existing directory (or through the umask); the store holds
    // VM passwords and the socket lives beside it, so tighten it every start.
    await fsp.chmod(stateDir, 0o700);
    const removed = await sweepStaleTempFiles(stateDir, STATE_DIR_FILES, LEGACY_TEMP);
    if (removed.length > 0) logger.info({ stateDir, removed }, 'removed temp files left by an interrupted write');
    const file = join(stateDir, STATE_FILE);
    const desiredFile = join(stateDir, DESIRED_FILE);
    const target = opts.schemaVersion ?? STORE_SCHEMA_VERSION;

    let data = emptyStoreData();
    let seqReserved = 0;
    let migratedDesired: DesiredStateEntry | null | undefined;
    let needsWrite = false;
    try {
      const text = await readText(file);
      if (text === null) needsWrite = true; // no file yet: create it now, with its mode
      else {
        const dec = decode(text, file, opts.migrations ?? migrations, target);
        data = dec.data;
        seqReserved = dec.seqReserved;
        migratedDesired = dec.migratedDesired;
        if (dec.fromVersion !== target) {
          needsWrite = true;
          logger.info({ file, from: dec.fromVersion, to: target }, 'store migrated to a new schema version');
        }
      }
    } catch (err) {
      if (!(err instanceof CorruptStateError)) throw err;
      await moveAside(file, err, logger);
      needsWrite = true;
    }

    let desiredOnDisk: DesiredStateEntry | null = null;
    try {
      const text = await readText(desiredFile);
      if (text !== null) desiredOnDisk = decodeDesired(text);
    } catch (err) {
      if (!(err instanceof CorruptStateError)) throw err;
      await moveAside(desiredFile, err, logger);
    }
    // desired.json wins: it is written before anything newer is applied. A v1 file's desired is
    // used (and written out first) only when there is no desired.json yet: a crash mid-migration
    // leaves desired.json written and state.json still at version 1, and the next start redoes it.
    data.desired = desiredOnDisk ?? migratedDesired ?? null;

    const store = new Store(stateDir, data, seqReserved, logger, opts);
    if (!desiredOnDisk && migratedDesired) await store.writeDesired(migratedDesired);
    // An existing file may have been created by an older build or by hand with a wider mode.
    if (!needsWrite) await fsp.chmod(file, 0o600);
    else {
      store.markDirty();
      await store.flush();
    }
    return store;
  }

  /**
   * False while the last write of state.json or of desired.json failed (state.json is retried with
   * backoff, desired.json at the next pull): for /readyz and persys_store_writable.
   */
  get writable(): boolean {
    return this.lastError === null && this.desiredError === null;
  }

  /** Why the store is not writable, file by file (e.g. `desired.json: ENOSPC: no space left on device, write`); null while it is. */
  get writeError(): string | null {
    const parts: string[] = [];
    if (this.lastError) parts.push(`${STATE_FILE}: ${this.lastError.message}`);
    if (this.desiredError) parts.push(`${DESIRED_FILE}: ${this.desiredError.message}`);
    return parts.length > 0 ? parts.join('; ') : null;
  }

  /** The live state. Read it freely; change it only through `update()` and the setters so the change is persisted. */
  get data(): Readonly<StoreData> {
    return this.d;
  }

  /** Applies a change in memory now and schedules a (coalesced) write of state.json. */
  update(mutator: (d: StoreData) => void): void {
    if (this.closed) throw new Error('store is closed');
    mutator(this.d);
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
      await this.desiredChain;
      await this.flush();
    } finally {
      this.closed = true;
    }
  }

  getRecord(id: string): WorkloadRecord | undefined {
    return Object.hasOwn(this.d.records, id) ? this.d.records[id] : undefined;
  }

  setRecord(rec: WorkloadRecord): void {
    this.update((d) => {
      d.records[rec.id] = rec;
    });
  }

  deleteRecord(id: string): void {
    if (!Object.hasOwn(this.d.records, id)) return;
    this.update((d) => {
      delete d.records[id];
    });
  }

  /**
   * Makes `entry` the desired state: writes desired.json (atomic, fsynced) and only then swaps it
   * in memory, so the reconcile loop never sees a desired state that is not durable. Rejects, with
   * memory unchanged, when the write fails; the caller reports it and the next pull retries.
   */
  setDesired(entry: DesiredStateEntry): Promise<void> {
    if (this.closed) return Promise.reject(new Error('store is closed'));
    const run = this.desiredChain.then(async () => {
      await this.writeDesired(entry);
      this.d.desired = entry;
    });
    this.desiredChain = run.catch(() => undefined);
    return run;
  }

  /** Pull timestamps and the last pull error: memory only since schema 2 (re-learned at the first pull). */
  setSync(partial: Partial<SyncState>): void {
    if (this.closed) throw new Error('store is closed');
    Object.assign(this.d.sync, partial);
  }

  /** Kept for callers of the landed API: the same as setSync now. */
  noteSync(partial: Pick<Partial<SyncState>, 'lastPullAt' | 'lastSuccessAt'>): void {
    this.setSync(partial);
  }

  /**
   * Records `seq` as used and resolves once a reservation covering it is on disk, so the report
   * carrying it may be sent: a restart then starts above it. Writes only when the reserved block
   * runs out. Rejects when that write fails (the report must not go out then).
   */
  async reserveSeq(seq: number): Promise<void> {
    if (this.closed) throw new Error('store is closed');
    this.d.reporter.seq = Math.max(this.d.reporter.seq, seq);
    if (seq <= this.seqReserved) return;
    this.seqReserved = seq - 1 + SEQ_BLOCK;
    this.markDirty();
    await this.flush();
  }

  /**
   * The durability order before a status report goes out (the reporter's saveSeq, called once the
   * report is built): its seq is covered by a stored reservation (a failure rejects: the report is
   * not sent), and every record change made before the report was built (retry schedules, failure
   * history) is on disk. A failing records write does not hold the report back: the central side
   * then still hears from the node, and the write is retried with backoff.
   */
  async beforeReport(seq: number): Promise<void> {
    await this.reserveSeq(seq);
    await this.flush().catch(() => undefined);
  }

  private async writeDesired(entry: DesiredStateEntry): Promise<void> {
    const started = performance.now();
    try {
      await writeFileAtomic(this.desiredFile, JSON.stringify({ schemaVersion: STORE_SCHEMA_VERSION, desired: entry }), { mode: 0o600, fsync: this.fsync });
    } catch (err) {
      this.writeErrors += 1;
      this.desiredError = err instanceof Error ? err : new Error(String(err));
      this.logger.error({ file: this.desiredFile, err: err instanceof Error ? err.message : String(err) }, 'desired state could not be stored; it is not applied');
      throw err;
    }
    this.desiredError = null;
    this.noteWrite(performance.now() - started);
  }

  private noteWrite(ms: number): void {
    this.lastWriteMs = ms;
    this.writes += 1;
    this.onWrite?.(ms);
  }

  /** state.json's bytes: everything a restart needs, nothing that changes while nothing happens. */
  private serialise(): string {
    const d = this.d;
    // No pretty-printing: it is ~2x larger and slower for a file only the agent reads.
    return JSON.stringify({
      schemaVersion: STORE_SCHEMA_VERSION,
      nodeId: d.nodeId,
      records: d.records,
      reporter: { seqReserved: this.seqReserved },
      ...(d.vmSecrets !== undefined ? { vmSecrets: d.vmSecrets } : {}),
      ...(d.imageRefs !== undefined ? { imageRefs: d.imageRefs } : {}),
    });
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
    // Serialise before the first await: the bytes are the state at the moment the write started,
    // and updates made while it is in flight go to the follow-up write.
    const text = this.serialise();
    const hash = createHash('sha256').update(text).digest('hex');
    const write = hash === this.lastWrittenHash && this.lastError === null ? Promise.resolve(false) : writeFileAtomic(this.file, text, { mode: 0o600, fsync: this.fsync }).then(() => true);
    this.inFlight = write
      .then(
        (wrote) => {
          if (wrote) this.noteWrite(performance.now() - started);
          this.lastWrittenHash = hash;
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

async function moveAside(file: string, err: Error, logger: Logger): Promise<void> {
  const movedTo = `${file}.corrupt-${new Date().toISOString().replace(/:/g, '-')}`;
  await fsp.rename(file, movedTo);
  logger.error(
    { file, movedTo, reason: err.message },
    'state file is corrupt or unreadable; moved it aside and starting that part empty (workloads are re-adopted from the runtimes and desired state is pulled afresh)',
  );
}
