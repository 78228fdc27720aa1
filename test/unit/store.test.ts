import assert from 'node:assert/strict';
import { promises as fsp, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';

import { silentLogger, type Logger } from '../../src/log.js';
import { SEQ_BLOCK, Store, storeErrorCode, StoreVersionError } from '../../src/store/store.js';
import { emptyStoreData, STORE_SCHEMA_VERSION, type WorkloadRecord } from '../../src/store/types.js';

const root = mkdtempSync(join(tmpdir(), 'persys-store-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const newDir = (): string => join(root, `s${n++}`);

// fsync off: these tests are about logic, not durability, and fsync on CI disks is slow.
const open = (dir: string, opts: Parameters<typeof Store.open>[2] = {}) => Store.open(dir, silentLogger(), { fsync: false, ...opts });

const modeOf = async (p: string): Promise<number> => (await fsp.stat(p)).mode & 0o777;
const readState = async (dir: string): Promise<unknown> => JSON.parse(await fsp.readFile(join(dir, 'state.json'), 'utf8'));

function record(id: string, over: Partial<WorkloadRecord> = {}): WorkloadRecord {
  const now = new Date(0).toISOString();
  return {
    id,
    type: 'container',
    revision: 'r1',
    specHash: 'abc',
    desiredState: 'running',
    phase: 'Running',
    actualState: 'running',
    message: '',
    error: null,
    retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: 'r1' },
    failures: [],
    updatedAt: now,
    phaseSince: now,
    ...over,
  };
}

const doc = (generation: number) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation, workloads: [] }) as never;

/** A state.json as version 2 writes it. */
const v2File = (over: Record<string, unknown> = {}) => ({ schemaVersion: STORE_SCHEMA_VERSION, nodeId: null, records: {}, reporter: { seqReserved: 0 }, ...over });

/** A logger whose ERROR lines the test can read. */
function capturingLogger(): { logger: Logger; lines: { level: number; msg: string; reason?: string; movedTo?: string }[] } {
  const lines: { level: number; msg: string; reason?: string; movedTo?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

describe('Store', () => {
  it('round-trips through the files: records in state.json, the desired document in desired.json', async () => {
    const dir = newDir();
    const s = await open(dir);
    assert.deepEqual(s.data, emptyStoreData());
    s.setRecord(record('web'));
    await s.setDesired({ document: doc(3), etag: '"e1"', receivedAt: 'now', source: 'file://x' });
    s.setSync({ lastPullAt: 't1' });
    await s.reserveSeq(1);
    await s.reserveSeq(2);
    await s.close();
    assert.throws(() => s.setRecord(record('x')), /closed/);

    const again = await open(dir);
    assert.deepEqual(again.getRecord('web'), record('web'));
    assert.equal(again.data.desired?.document.generation, 3);
    assert.equal(again.data.desired?.etag, '"e1"');
    assert.equal(again.data.sync.lastPullAt, null, 'pull timestamps are memory-only');
    assert.ok(again.data.reporter.seq >= 2, 'a restart continues at or above the last seq used');
    assert.equal(again.data.schemaVersion, STORE_SCHEMA_VERSION);
    again.deleteRecord('web');
    again.deleteRecord('never-existed');
    assert.equal(again.getRecord('web'), undefined);
    assert.equal(again.getRecord('toString'), undefined);
    await again.close();
    const disk = (await readState(dir)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(disk).sort(), ['nodeId', 'records', 'reporter', 'schemaVersion']);
    assert.deepEqual(disk.records, {});
    const desired = JSON.parse(await fsp.readFile(join(dir, 'desired.json'), 'utf8')) as { schemaVersion: number; desired: { etag: string } };
    assert.equal(desired.schemaVersion, STORE_SCHEMA_VERSION);
    assert.equal(desired.desired.etag, '"e1"');
  });

  it('a record change never rewrites desired.json, and an unchanged state is not rewritten', async () => {
    const dir = newDir();
    const s = await open(dir);
    await s.setDesired({ document: doc(1), etag: null, receivedAt: 'now', source: 'x' });
    const before = await fsp.stat(join(dir, 'desired.json'));
    const w = s.writes;
    for (let i = 0; i < 5; i++) {
      s.setRecord(record('web', { message: `m${i}` }));
      await s.flush();
    }
    assert.equal(s.writes - w, 5);
    const after = await fsp.stat(join(dir, 'desired.json'));
    assert.equal(after.ino, before.ino, 'desired.json was not replaced');
    assert.ok(!(await fsp.readFile(join(dir, 'state.json'), 'utf8')).includes('DesiredState'));
    // The same bytes again: no write at all.
    const w2 = s.writes;
    s.setRecord(record('web', { message: 'm4' }));
    await s.flush();
    assert.equal(s.writes, w2);
    await s.close();
  });

  it('setDesired resolves only once desired.json holds it; a failed store leaves the desired state in force unchanged', async () => {
    const dir = newDir();
    const s = await open(dir);
    await s.setDesired({ document: doc(1), etag: '"g1"', receivedAt: 'now', source: 'x' });
    // Make the rename target a non-empty directory so the write fails (what a full disk does to it).
    await fsp.rm(join(dir, 'desired.json'));
    await fsp.mkdir(join(dir, 'desired.json', 'x'), { recursive: true });
    await assert.rejects(s.setDesired({ document: doc(2), etag: '"g2"', receivedAt: 'now', source: 'x' }));
    assert.equal(s.data.desired?.document.generation, 1, 'generation 2 is not live');
    assert.equal(s.data.desired?.etag, '"g1"');
    // /readyz: not writable, and it says which file and why, until a desired write succeeds.
    assert.equal(s.writable, false);
    assert.match(s.writeError ?? '', /^desired\.json: .*desired\.json/);
    await fsp.rm(join(dir, 'desired.json'), { recursive: true });
    await s.setDesired({ document: doc(2), etag: '"g2"', receivedAt: 'now', source: 'x' });
    assert.equal(s.data.desired?.document.generation, 2);
    assert.equal(s.writable, true);
    assert.equal(s.writeError, null);
    await s.close();
    assert.deepEqual((await fsp.readdir(dir)).sort(), ['desired.json', 'state.json'], 'no temp file left by the failed write');
  });

  it('a store write that failed for lack of space is NO_SPACE; anything else INTERNAL', () => {
    const errno = (code: string) => Object.assign(new Error(`${code}: x`), { code });
    assert.equal(storeErrorCode(errno('ENOSPC')), 'NO_SPACE');
    assert.equal(storeErrorCode(errno('EDQUOT')), 'NO_SPACE');
    assert.equal(storeErrorCode(errno('EIO')), 'INTERNAL');
    assert.equal(storeErrorCode(new Error('plain')), 'INTERNAL');
    assert.equal(storeErrorCode(undefined), 'INTERNAL');
  });

  it('seqs are reserved in blocks: one write per block, and a restart never reuses a seq', async () => {
    const dir = newDir();
    const s = await open(dir);
    const w = s.writes;
    for (let seq = 1; seq <= 2 * SEQ_BLOCK; seq++) await s.reserveSeq(seq);
    assert.equal(s.writes - w, 2, 'two blocks, two writes');
    // A crash: no close, no flush beyond what reserveSeq awaited.
    const again = await open(dir);
    assert.ok(again.data.reporter.seq >= 2 * SEQ_BLOCK, `restart at ${again.data.reporter.seq}`);
    await again.close();
    await s.close();
  });

  it('writes compact JSON', async () => {
    const dir = newDir();
    const s = await open(dir);
    s.setRecord(record('a'));
    await s.flush();
    const text = await fsp.readFile(join(dir, 'state.json'), 'utf8');
    assert.ok(!text.includes('\n'));
    await s.close();
  });

  it('creates the dir 0700 and the file 0600, tightening existing ones, and keeps 0600 after writes', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { mode: 0o755 });
    await fsp.chmod(dir, 0o755);
    const s1 = await open(dir);
    assert.equal(await modeOf(dir), 0o700);
    assert.equal(await modeOf(join(dir, 'state.json')), 0o600);
    await s1.close();

    await fsp.chmod(join(dir, 'state.json'), 0o644);
    await fsp.chmod(dir, 0o755);
    const old = process.umask(0o000); // the mode must not depend on the umask
    try {
      const s2 = await Store.open(dir, silentLogger()); // with fsync, as in production
      assert.equal(await modeOf(dir), 0o700);
      assert.equal(await modeOf(join(dir, 'state.json')), 0o600);
      for (let i = 0; i < 3; i++) {
        s2.setRecord(record(`r${i}`));
        await s2.flush();
        assert.equal(await modeOf(join(dir, 'state.json')), 0o600);
      }
      await s2.close();
    } finally {
      process.umask(old);
    }
    const leftovers = (await fsp.readdir(dir)).filter((f) => f !== 'state.json');
    assert.deepEqual(leftovers, []);
  });

  it('coalesces: 100 synchronous updates make one write with the last state', async () => {
    const s = await open(newDir());
    const before = s.writes;
    for (let i = 0; i < 100; i++) s.setRecord(record('web', { message: `m${i}` }));
    await s.flush();
    assert.equal(s.writes - before, 1);
    assert.equal(((await readState(s.file.slice(0, -'/state.json'.length))) as { records: Record<string, WorkloadRecord> }).records.web?.message, 'm99');
    await s.close();
  });

  it('coalesces: 100 updates spread over time never overlap writes and end with the last state', async () => {
    const dir = newDir();
    const s = await Store.open(dir, silentLogger()); // fsync on, so writes take real time
    const before = s.writes;
    for (let i = 0; i < 100; i++) {
      s.update((d) => {
        d.records[`w${i % 10}`] = record(`w${i % 10}`, { message: `m${i}` });
      });
      if (i % 3 === 0) await tick();
    }
    await s.flush();
    const writes = s.writes - before;
    assert.ok(writes >= 1 && writes < 50, `writes=${writes}`);
    const disk = (await readState(dir)) as { records: Record<string, WorkloadRecord> };
    assert.equal(disk.records.w9?.message, 'm99');
    assert.ok(s.lastWriteMs > 0);
    await s.close();
  });

  it('updates made during a write become exactly one follow-up write', async () => {
    const dir = newDir();
    const s = await open(dir);
    const before = s.writes;
    s.setRecord(record('a'));
    // Let the first write start, then pile updates on while it is in flight.
    await tick();
    for (let i = 0; i < 20; i++) s.setRecord(record('b', { message: `m${i}` }));
    await s.flush();
    assert.equal(s.writes - before, 2);
    const disk = (await readState(dir)) as { records: Record<string, WorkloadRecord> };
    assert.equal(disk.records.b?.message, 'm19');
    await s.close();
  });

  it('pull timestamps and errors are memory-only: no write, and not on disk', async () => {
    const dir = newDir();
    const s = await open(dir);
    await s.flush();
    const w = s.writes;
    s.noteSync({ lastPullAt: 'p1', lastSuccessAt: 'p1' });
    s.setSync({ lastError: { code: 'INTERNAL', message: 'x', at: 'p1' } });
    assert.equal(s.data.sync.lastSuccessAt, 'p1');
    await s.flush();
    assert.equal(s.writes, w, 'no write for sync state');
    s.setRecord(record('web'));
    await s.flush();
    assert.ok(!(await fsp.readFile(join(dir, 'state.json'), 'utf8')).includes('p1'));
    await s.close();
  });

  it('flush waits for pending writes and is a no-op when clean', async () => {
    const dir = newDir();
    const s = await open(dir);
    const w = s.writes;
    await s.flush();
    assert.equal(s.writes, w);
    s.setRecord(record('a', { message: 'x' }));
    await s.flush(); // no ticks in between: flush itself must get it written
    assert.equal(((await readState(dir)) as { records: Record<string, WorkloadRecord> }).records.a?.message, 'x');
    // Two concurrent flushes both resolve after the data is on disk.
    s.setRecord(record('a', { message: 'y' }));
    await Promise.all([s.flush(), s.flush()]);
    assert.equal(((await readState(dir)) as { records: Record<string, WorkloadRecord> }).records.a?.message, 'y');
    await s.close();
  });

  it('a failed write is reported by flush and retried later', async () => {
    const dir = newDir();
    const s = await open(dir, { retryDelayMs: 20 });
    // Make the rename target a non-empty directory so the write fails.
    await fsp.rm(join(dir, 'state.json'));
    await fsp.mkdir(join(dir, 'state.json', 'x'), { recursive: true });
    s.setRecord(record('a'));
    await assert.rejects(s.flush());
    assert.equal(s.writeErrors >= 1, true);
    assert.equal(s.writable, false);
    assert.match(s.writeError ?? '', /^state\.json: /);
    await fsp.rm(join(dir, 'state.json'), { recursive: true });
    await s.flush();
    assert.equal(s.writable, true);
    assert.equal(s.writeError, null);
    assert.ok(((await readState(dir)) as { records: object }).records);
    await s.close();
  });

  it('moves a corrupt file aside, logs at ERROR and starts empty', async () => {
    const cases: [string, string][] = [
      ['bad JSON', '{"schemaVersion": 1, "records": {'],
      ['not an object', '[1,2,3]'],
      ['no version', '{"records":{}}'],
      ['wrong shape', JSON.stringify(v2File({ records: { a: { id: 'a' } } }))],
      ['id mismatch', JSON.stringify(v2File({ records: { a: record('b') } }))],
      ['records not an object', JSON.stringify(v2File({ records: [] }))],
      ['no seq reservation', JSON.stringify(v2File({ reporter: { seq: 3 } }))],
    ];
    for (const [name, content] of cases) {
      const dir = newDir();
      await fsp.mkdir(dir, { recursive: true });
      await fsp.writeFile(join(dir, 'state.json'), content);
      const { logger, lines } = capturingLogger();
      const s = await Store.open(dir, logger, { fsync: false });
      assert.deepEqual(s.data, emptyStoreData(), name);
      const files = await fsp.readdir(dir);
      const aside = files.filter((f) => f.startsWith('state.json.corrupt-'));
      assert.equal(aside.length, 1, `${name}: ${files.join(',')}`);
      assert.match(aside[0] ?? '', /^state\.json\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$/);
      assert.equal(await fsp.readFile(join(dir, aside[0] ?? ''), 'utf8'), content, 'the bad file is kept verbatim');
      const err = lines.find((l) => l.level === 50);
      assert.ok(err, `${name}: no ERROR logged`);
      assert.ok(err.reason && err.reason.length > 0);
      assert.equal(err.movedTo, join(dir, aside[0] ?? ''));
      // The fresh store works and persists.
      s.setRecord(record('fresh'));
      await s.close();
      const again = await open(dir);
      assert.ok(again.getRecord('fresh'), name);
      await again.close();
    }
  });

  it('refuses a file from a newer schema version and leaves it in place', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { recursive: true });
    const content = JSON.stringify(v2File({ schemaVersion: STORE_SCHEMA_VERSION + 1, somethingNew: true }));
    await fsp.writeFile(join(dir, 'state.json'), content);
    await assert.rejects(open(dir), (err: unknown) => {
      assert.ok(err instanceof StoreVersionError);
      assert.equal(err.fileVersion, STORE_SCHEMA_VERSION + 1);
      assert.match(err.message, /newer/);
      return true;
    });
    assert.equal(await fsp.readFile(join(dir, 'state.json'), 'utf8'), content);
    assert.deepEqual(await fsp.readdir(dir), ['state.json']);
  });

  it('applies migrations in order and persists the result', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { recursive: true });
    // A version-0 document in an older layout: records as an array, no reporter.
    await fsp.writeFile(join(dir, 'state.json'), JSON.stringify({ schemaVersion: 0, nodeId: 'n1', records: [record('web')] }));
    const applied: number[] = [];
    const migrations = {
      0: (d: unknown) => {
        applied.push(0);
        const old = d as { nodeId: string; records: WorkloadRecord[] };
        return { schemaVersion: 1, nodeId: old.nodeId, records: Object.fromEntries(old.records.map((r) => [r.id, r])) };
      },
      1: (d: unknown) => {
        applied.push(1);
        return { ...(d as object), schemaVersion: 2, reporter: { seqReserved: 41 } };
      },
    };
    const s = await open(dir, { migrations, schemaVersion: 2 });
    assert.deepEqual(applied, [0, 1]);
    assert.equal(s.data.schemaVersion, 2);
    assert.equal(s.data.nodeId, 'n1');
    assert.deepEqual(s.getRecord('web'), record('web'));
    assert.equal(s.data.reporter.seq, 41);
    await s.close();
    assert.equal(((await readState(dir)) as { schemaVersion: number }).schemaVersion, 2);
    // Already current: no migration runs again.
    applied.length = 0;
    const again = await open(dir, { migrations, schemaVersion: 2 });
    assert.deepEqual(applied, []);
    await again.close();
  });

  it('a missing migration refuses to start; a failing one counts as corruption', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(join(dir, 'state.json'), JSON.stringify({ schemaVersion: 0 }));
    await assert.rejects(open(dir, { migrations: {} }), StoreVersionError);
    const s = await open(dir, {
      migrations: {
        0: () => {
          throw new Error('boom');
        },
      },
    });
    assert.deepEqual(s.data, emptyStoreData());
    assert.ok((await fsp.readdir(dir)).some((f) => f.startsWith('state.json.corrupt-')));
    await s.close();
  });

  it('a crash mid-write (stray temp file) never makes state.json unreadable', async () => {
    const dir = newDir();
    const s = await open(dir);
    s.setRecord(record('kept'));
    await s.close();
    // What a crash between "write temp" and "rename" leaves: a half-written temp file with a wide mode.
    await fsp.writeFile(join(dir, 'state.json.tmp'), '{"schemaVersion":1,"records":{"half', { mode: 0o644 });
    await fsp.writeFile(join(dir, 'status.json.4242.0a1b2c3d.tmp'), '{"kind":"St');
    // Ours, by a writer that is gone (pid 2^22 + 1 cannot exist on Linux): swept.
    await fsp.writeFile(join(dir, '.state.json.tmp-4194305-abcd0123'), '{"sch');
    await fsp.writeFile(join(dir, '.desired.json.tmp-4194305-abcd0123'), '{"sch');
    // Ours, by a live writer (this test process's parent): kept. Not ours at all: kept.
    await fsp.writeFile(join(dir, `.state.json.tmp-${process.ppid}-abcd0123`), '{"sch');
    await fsp.writeFile(join(dir, 'notes.tmp'), 'mine');
    const again = await open(dir);
    assert.ok(again.getRecord('kept'));
    assert.deepEqual((await fsp.readdir(dir)).sort(), [`.state.json.tmp-${process.ppid}-abcd0123`, 'notes.tmp', 'state.json']);
    await fsp.rm(join(dir, `.state.json.tmp-${process.ppid}-abcd0123`));
    await fsp.rm(join(dir, 'notes.tmp'));
    again.setRecord(record('next'));
    await again.flush();
    assert.equal(await modeOf(join(dir, 'state.json')), 0o600);
    await again.close();
    // And state.json is valid JSON at every point: read it while writes are in flight.
    const s3 = await Store.open(dir, silentLogger());
    for (let i = 0; i < 30; i++) {
      s3.setRecord(record(`r${i}`, { message: 'x'.repeat(1000) }));
      const text = await fsp.readFile(join(dir, 'state.json'), 'utf8');
      assert.doesNotThrow(() => JSON.parse(text));
      await tick();
    }
    await s3.close();
  });
});

describe('Store migration from the landed layout (schema 1 -> 2)', () => {
  const fixture = join(import.meta.dirname, '..', 'fixtures', 'store-v1', 'state.json');

  it('reads a state.json written by the landed version (f8aeb9a), splits it, and keeps everything a restart needs', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { recursive: true });
    const original = await fsp.readFile(fixture, 'utf8');
    const v1 = JSON.parse(original) as { schemaVersion: number; desired: { document: { generation: number } }; records: Record<string, WorkloadRecord>; reporter: { seq: number }; vmSecrets: object };
    assert.equal(v1.schemaVersion, 1, 'the fixture is a landed-version file');
    await fsp.writeFile(join(dir, 'state.json'), original, { mode: 0o644 });
    const { logger, lines } = capturingLogger();
    const s = await Store.open(dir, logger, { fsync: false });
    assert.ok(lines.some((l) => l.msg === 'store migrated to a new schema version'));
    assert.ok(!lines.some((l) => l.level >= 50), 'no ERROR: nothing moved aside');
    assert.equal(s.data.schemaVersion, 2);
    assert.equal(s.data.nodeId, 'edge-7');
    assert.deepEqual(s.data.desired, v1.desired as never);
    assert.deepEqual(s.data.records, v1.records);
    assert.equal(s.getRecord('vm1')?.retry.gaveUp, true);
    assert.equal(s.getRecord('web')?.failures.length, 1);
    assert.deepEqual(s.data.vmSecrets, v1.vmSecrets);
    assert.equal(s.data.reporter.seq, 118);
    await s.reserveSeq(119);
    await s.close();
    const files = (await fsp.readdir(dir)).sort();
    assert.deepEqual(files, ['desired.json', 'state.json'], 'nothing moved aside, no temp left');
    const disk = (await readState(dir)) as { schemaVersion: number; desired?: unknown; sync?: unknown };
    assert.equal(disk.schemaVersion, 2);
    assert.equal(disk.desired, undefined);
    assert.equal(disk.sync, undefined);
    assert.equal(await modeOf(join(dir, 'state.json')), 0o600);
    assert.equal(await modeOf(join(dir, 'desired.json')), 0o600);
    // And the migrated store opens again as itself.
    const again = await open(dir);
    assert.equal(again.data.desired?.document.generation, 7);
    assert.ok(again.data.reporter.seq >= 119);
    assert.equal(again.data.vmSecrets?.vm1?.password, 'pw-123');
    await again.close();
  });

  it('a crash between writing desired.json and state.json redoes the migration and loses nothing', async () => {
    const dir = newDir();
    await fsp.mkdir(dir, { recursive: true });
    await fsp.copyFile(fixture, join(dir, 'state.json'));
    const v1 = JSON.parse(await fsp.readFile(fixture, 'utf8')) as { desired: unknown };
    // desired.json as the interrupted migration left it; state.json still version 1.
    await fsp.writeFile(join(dir, 'desired.json'), JSON.stringify({ schemaVersion: 2, desired: v1.desired }));
    const s = await open(dir);
    assert.equal(s.data.desired?.document.generation, 7);
    assert.equal(s.data.reporter.seq, 118);
    await s.close();
  });

  it('a corrupt desired.json is moved aside without touching the records', async () => {
    const dir = newDir();
    const s = await open(dir);
    s.setRecord(record('web'));
    await s.setDesired({ document: doc(4), etag: null, receivedAt: 'now', source: 'x' });
    await s.close();
    await fsp.writeFile(join(dir, 'desired.json'), '{"schemaVersion":2,"desi');
    const again = await open(dir);
    assert.equal(again.data.desired, null);
    assert.ok(again.getRecord('web'));
    assert.ok((await fsp.readdir(dir)).some((f) => f.startsWith('desired.json.corrupt-')));
    await again.close();
  });
});
