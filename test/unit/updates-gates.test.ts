import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import * as v from 'valibot';

import { configSchema } from '../../src/config/schema.js';
import { plan, type PlanGate } from '../../src/reconcile/planner.js';
import type { Step } from '../../src/reconcile/steps.js';
import type { ObservedWorkload } from '../../src/runtimes/runtime.js';
import type { DesiredStateDocument, Workload } from '../../src/spec/desired-state.js';
import type { MaintenanceWindow } from '../../src/spec/maintenance.js';
import { updateGates } from '../../src/updates/gates.js';
import { lockFilesOf, probeLock } from '../../src/updates/locks.js';
import { maxParallelGate } from '../../src/updates/max-parallel.js';
import { UpdateState } from '../../src/updates/state.js';
import { shortIso, windowState, windowsGate } from '../../src/updates/windows.js';

const UP = { container: true, compose: true, vm: true };
const tmp = mkdtempSync(join(tmpdir(), 'persys-updates-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => {
  const d = join(tmp, `s${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

const cw = (id: string, update?: Record<string, unknown>, spec: Record<string, unknown> = {}): Workload =>
  ({ id, type: 'container', ...(update ? { update } : {}), spec: { image: 'nginx:1.28', ...spec } }) as Workload;
const obs = (id: string, state: ObservedWorkload['state'] = 'running'): ObservedWorkload => ({ workloadId: id, type: 'container', runtime: 'docker', runtimeId: `c-${id}`, name: `persys-${id}`, revision: undefined, specHash: 'sha256:old', state });
const doc = (workloads: Workload[], windows?: MaintenanceWindow[]): DesiredStateDocument =>
  ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads, ...(windows ? { maintenance: { windows } } : {}) }) as DesiredStateDocument;
const kinds = (steps: Step[]) => Object.fromEntries(steps.map((s) => [s.workloadId, s.kind]));
const byId = (steps: Step[], id: string) => steps.find((s) => s.workloadId === id);

/** Bind mounts are denied by the default host policy; the lock-file cases need them. */
const HOST_PATHS = v.parse(configSchema, { policy: { allowHostPaths: true } }).policy;
const NIGHTLY: MaintenanceWindow = { cron: '0 2 * * *', durationMinutes: 120 };

describe('maintenance windows (fake clock)', () => {
  const at = (iso: string, w: MaintenanceWindow[]) => windowState(w, new Date(iso));
  it('UTC: open from the start for durationMinutes, closed outside, next start given', () => {
    assert.deepEqual(at('2026-12-02T01:59:59Z', [NIGHTLY]), { open: false, nextStart: new Date('2026-12-02T02:00:00Z') });
    assert.equal(at('2026-12-02T02:00:00Z', [NIGHTLY]).open, true);
    assert.deepEqual(at('2026-12-02T03:59:59Z', [NIGHTLY]), { open: true, closesAt: new Date('2026-12-02T04:00:00Z') });
    assert.deepEqual(at('2026-12-02T04:00:00Z', [NIGHTLY]), { open: false, nextStart: new Date('2026-12-03T02:00:00Z') });
    assert.equal(shortIso(new Date('2026-12-02T02:00:00Z')), '2026-12-02T02:00Z');
  });

  it('the earliest next start and the latest close of several windows', () => {
    const w = [NIGHTLY, { cron: '30 1 * * *', durationMinutes: 45 }];
    assert.deepEqual(at('2026-12-02T01:00:00Z', w).nextStart, new Date('2026-12-02T01:30:00Z'));
    assert.deepEqual(at('2026-12-02T02:05:00Z', w), { open: true, closesAt: new Date('2026-12-02T04:00:00Z') });
  });

  // Each row: zone, a clock the day before a DST change, and the next two window starts (UTC) of "30 2 * * *".
  const rows: [string, string, string, string, string][] = [
    // 02:30 does not exist on 2026-03-29 in Berlin: croner opens at the first valid time after the gap, 03:00 CEST.
    ['Europe/Berlin spring forward', 'Europe/Berlin', '2026-03-28T12:00:00Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z'],
    // 02:30 happens twice on 2026-10-25: the window opens at the first (CEST), the next day at 02:30 CET.
    ['Europe/Berlin fall back', 'Europe/Berlin', '2026-10-24T12:00:00Z', '2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z'],
    ['America/New_York spring forward', 'America/New_York', '2026-03-07T12:00:00Z', '2026-03-08T07:00:00.000Z', '2026-03-09T06:30:00.000Z'],
    ['America/New_York fall back', 'America/New_York', '2026-10-31T12:00:00Z', '2026-11-01T07:30:00.000Z', '2026-11-02T07:30:00.000Z'],
    ['UTC has no DST', 'UTC', '2026-03-28T12:00:00Z', '2026-03-29T02:30:00.000Z', '2026-03-30T02:30:00.000Z'],
  ];
  for (const [name, tz, clock, first, second] of rows) {
    it(`${name}: wall-clock starts across the change`, () => {
      const w = [{ cron: '30 2 * * *', durationMinutes: 60, timezone: tz }];
      const s1 = windowState(w, new Date(clock));
      assert.equal(s1.nextStart?.toISOString(), first);
      // Open for the hour from there, closed after.
      const start = s1.nextStart ?? new Date(0);
      assert.equal(windowState(w, start).open, true);
      assert.equal(windowState(w, new Date(start.getTime() + 59 * 60_000)).open, true);
      const s2 = windowState(w, new Date(start.getTime() + 60 * 60_000));
      assert.equal(s2.open, false);
      assert.equal(s2.nextStart?.toISOString(), second);
    });
  }
});

describe('the windows gate in the planner', () => {
  const state = () => new UpdateState(freshDir(), true);
  const gates = (windows: MaintenanceWindow[], st = state()): PlanGate[] => [windowsGate({ windows, forceTokenOf: (id) => st.forceTokenOf(id) })];
  const CLOSED = new Date('2026-12-01T12:00:00Z');
  const OPEN = new Date('2026-12-02T02:30:00Z');

  it('outside a window a restarting update waits with the reason and the next start; create, stop, remove are never held', () => {
    const desired = doc([cw('upd'), cw('new'), cw('exited')], [NIGHTLY]);
    const observed = [obs('upd'), obs('gone'), obs('exited', 'exited')];
    const records = { gone: { id: 'gone' } } as unknown as Parameters<typeof plan>[0]['records'];
    const p = plan({ desired, records, observed, runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY]) });
    const upd = byId(p.steps, 'upd');
    assert.equal(upd?.kind, 'wait');
    assert.match(upd?.reason ?? '', /^waiting for the maintenance window at 2026-12-02T02:00Z \(/);
    assert.equal(upd?.kind === 'wait' ? upd.until : '', '2026-12-02T02:00:00.000Z');
    assert.deepEqual(upd?.kind === 'wait' ? upd.hold?.waiting : '', 'maintenance-window');
    assert.equal(byId(p.steps, 'new')?.kind, 'create');
    assert.equal(byId(p.steps, 'gone')?.kind, 'remove');
    // A recreate of a workload that is not running interrupts nothing.
    assert.equal(byId(p.steps, 'exited')?.kind, 'recreate');
  });

  it('a stop is never held (same spec, desired stopped)', () => {
    const w = { ...cw('s'), desiredState: 'stopped' } as Workload;
    const o = { ...obs('s'), specHash: undefined };
    const hash = (plan({ desired: doc([w]), records: {}, observed: [], runtimeUp: UP, now: CLOSED }).steps[0] as { specHash: string }).specHash;
    const p = plan({ desired: doc([w], [NIGHTLY]), records: {}, observed: [{ ...o, specHash: hash }], runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY]) });
    assert.equal(p.steps[0]?.kind, 'stop');
  });

  it('inside a window the update goes ahead', () => {
    const p = plan({ desired: doc([cw('upd')], [NIGHTLY]), records: {}, observed: [obs('upd')], runtimeUp: UP, now: OPEN, gates: gates([NIGHTLY]) });
    assert.equal(p.steps[0]?.kind, 'recreate');
  });

  it('window "any" opts out; no windows on the node means any by default, but an explicit "maintenance" waits and says why', () => {
    assert.deepEqual(kinds(plan({ desired: doc([cw('a', { window: 'any' })], [NIGHTLY]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY]) }).steps), { a: 'recreate' });
    assert.deepEqual(kinds(plan({ desired: doc([cw('a')]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([]) }).steps), { a: 'recreate' });
    const p = plan({ desired: doc([cw('a', { window: 'maintenance' })]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([]) });
    assert.equal(p.steps[0]?.kind, 'wait');
    assert.match(p.steps[0]?.reason ?? '', /the node has none/);
  });

  it('a forceToken other than the last applied one opens the window; the applied one does not', () => {
    const dir = freshDir();
    const st = new UpdateState(dir);
    const w = cw('a', { forceToken: 't1' });
    assert.equal(plan({ desired: doc([w], [NIGHTLY]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY], st) }).steps[0]?.kind, 'recreate');
    st.applied('a', 't1');
    st.save();
    const again = new UpdateState(dir);
    assert.equal(plan({ desired: doc([w], [NIGHTLY]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY], again) }).steps[0]?.kind, 'wait');
    assert.equal(plan({ desired: doc([cw('a', { forceToken: 't2' })], [NIGHTLY]), records: {}, observed: [obs('a')], runtimeUp: UP, now: CLOSED, gates: gates([NIGHTLY], again) }).steps[0]?.kind, 'recreate');
  });
});

describe('update locks', () => {
  const warnings: string[] = [];
  const warn = (_f: Record<string, unknown>, msg: string) => void warnings.push(msg);
  const NOW = new Date('2026-12-01T12:00:00Z');
  const run = (dir: string, w: Workload[], now = NOW, st = new UpdateState(dir), volumeDir = (_: string): string | undefined => undefined) =>
    plan({ desired: doc(w), records: {}, observed: w.map((x) => obs(x.id)), runtimeUp: UP, now, policy: HOST_PATHS, gates: updateGates({ config: { maintenance: { windows: [] }, update: { maxParallel: 0 } }, desired: null, stateDir: dir, volumeDir, state: st, warn }) });
  const lock = (dir: string, id: string, content = '') => {
    mkdirSync(join(dir, 'locks'), { recursive: true });
    writeFileSync(join(dir, 'locks', `${id}.lock`), content);
  };

  it('<stateDir>/locks/<id>.lock holds a restarting update, not a create; removing it lets the update go', () => {
    const dir = freshDir();
    lock(dir, 'a');
    lock(dir, 'fresh');
    const p = plan({ desired: doc([cw('a'), cw('fresh')]), records: {}, observed: [obs('a')], runtimeUp: UP, now: NOW, gates: updateGates({ config: { maintenance: { windows: [] }, update: { maxParallel: 0 } }, desired: null, stateDir: dir, volumeDir: () => undefined, state: new UpdateState(dir), warn }) });
    const a = byId(p.steps, 'a');
    assert.equal(a?.kind, 'wait');
    assert.match(a?.reason ?? '', new RegExp(`^waiting for update lock ${join(dir, 'locks', 'a.lock')} `));
    assert.equal(a?.kind === 'wait' ? a.hold?.waiting : '', 'update-lock');
    assert.equal(byId(p.steps, 'fresh')?.kind, 'create');
    rmSync(join(dir, 'locks', 'a.lock'));
    assert.equal(run(dir, [cw('a')]).steps[0]?.kind, 'recreate');
  });

  it('a lock naming a pid that is gone is ignored with a WARN; a live pid holds', () => {
    const dir = freshDir();
    lock(dir, 'a', '999999999\n');
    warnings.length = 0;
    assert.equal(run(dir, [cw('a')]).steps[0]?.kind, 'recreate');
    assert.ok(warnings.some((m) => /stale update lock .* process 999999999 is gone/.test(m)), warnings.join('\n'));
    lock(dir, 'a', `pid=${process.pid}\n`);
    assert.equal(run(dir, [cw('a')]).steps[0]?.kind, 'wait');
  });

  it('lockTimeoutSeconds bounds the wait, then proceed or fail as the workload says; the start survives a restart', () => {
    const dir = freshDir();
    lock(dir, 'p');
    lock(dir, 'f');
    const ws = [cw('p', { lockTimeoutSeconds: 60 }), cw('f', { lockTimeoutSeconds: 60, onLockTimeout: 'fail' })];
    const st = new UpdateState(dir);
    const first = run(dir, ws, NOW, st);
    assert.deepEqual(kinds(first.steps), { p: 'wait', f: 'wait' });
    // Looks again within 5 s; never later than the deadline.
    assert.equal((byId(first.steps, 'p') as { until: string }).until, '2026-12-01T12:00:05.000Z');
    st.save();
    const later = new Date(NOW.getTime() + 61_000);
    const after = run(dir, ws, later, new UpdateState(dir));
    assert.equal(byId(after.steps, 'p')?.kind, 'recreate');
    assert.match(byId(after.steps, 'p')?.reason ?? '', /updating anyway/);
    const f = byId(after.steps, 'f');
    assert.equal(f?.kind, 'deny');
    assert.equal(f?.kind === 'deny' ? f.code : '', 'UPDATE_LOCKED');
  });

  it('update.lockFile is found under the bind source or the named volume directory; a pid there is not checked', () => {
    const dir = freshDir();
    const bind = cw('b', { lockFile: '/tmp/balena/updates.lock' }, { volumes: [{ type: 'bind', source: join(dir, 'srv'), target: '/tmp/balena' }] });
    const vol = cw('v', { lockFile: '/data/sub/updates.lock' }, { volumes: [{ type: 'volume', source: 'data', target: '/data' }] });
    const volumeDir = (name: string) => join(dir, 'docker', 'volumes', name, '_data');
    assert.deepEqual(lockFilesOf(bind, { stateDir: dir, volumeDir }).map((f) => f.path), [join(dir, 'locks', 'b.lock'), join(dir, 'srv', 'updates.lock')]);
    assert.deepEqual(lockFilesOf(vol, { stateDir: dir, volumeDir })[1], { path: join(dir, 'docker', 'volumes', 'data', '_data', 'sub', 'updates.lock'), checkPid: false });
    mkdirSync(join(dir, 'srv'), { recursive: true });
    writeFileSync(join(dir, 'srv', 'updates.lock'), '999999999');
    assert.equal(probeLock({ path: join(dir, 'srv', 'updates.lock'), checkPid: false }).held, true);
    assert.equal(run(dir, [bind], NOW, new UpdateState(dir), volumeDir).steps[0]?.kind, 'wait');
    assert.equal(run(dir, [vol], NOW, new UpdateState(dir), volumeDir).steps[0]?.kind, 'recreate');
  });
});

describe('update.maxParallel', () => {
  const NOW = new Date('2026-12-01T12:00:00Z');
  it('restarts at most N running workloads per pass, in document order; creates and stops do not count', () => {
    const ws = ['w5', 'w1', 'w4', 'w2', 'w3'].map((id) => cw(id));
    const p = plan({ desired: doc([cw('new'), ...ws]), records: {}, observed: ws.map((w) => obs(w.id)), runtimeUp: UP, now: NOW, gates: [maxParallelGate(2)] });
    assert.deepEqual(kinds(p.steps), { new: 'create', w5: 'recreate', w1: 'recreate', w4: 'wait', w2: 'wait', w3: 'wait' });
    const w4 = byId(p.steps, 'w4');
    assert.match(w4?.reason ?? '', /^waiting for a restart slot: update\.maxParallel=2/);
    assert.equal(w4?.kind === 'wait' ? w4.until : '', NOW.toISOString());
  });

  it('0 means no limit', () => {
    const ws = ['a', 'b', 'c'].map((id) => cw(id));
    assert.deepEqual(kinds(plan({ desired: doc(ws), records: {}, observed: ws.map((w) => obs(w.id)), runtimeUp: UP, now: NOW, gates: [maxParallelGate(0)] }).steps), { a: 'recreate', b: 'recreate', c: 'recreate' });
  });

  it('counts only what the window and the locks let through', () => {
    const dir = freshDir();
    mkdirSync(join(dir, 'locks'));
    writeFileSync(join(dir, 'locks', 'a.lock'), '');
    const ws = ['a', 'b', 'c'].map((id) => cw(id));
    const p = plan({ desired: doc(ws), records: {}, observed: ws.map((w) => obs(w.id)), runtimeUp: UP, now: NOW, gates: updateGates({ config: { maintenance: { windows: [] }, update: { maxParallel: 1 } }, desired: null, stateDir: dir, volumeDir: () => undefined, state: new UpdateState(dir), warn: () => undefined }) });
    assert.deepEqual(kinds(p.steps), { a: 'wait', b: 'recreate', c: 'wait' });
    assert.equal((byId(p.steps, 'c') as { hold?: { waiting: string } }).hold?.waiting, 'max-parallel');
  });
});

describe('held updates in the status report', () => {
  it('carries an update block per held workload, valid against the report schema', async () => {
    const { buildStatusReport } = await import('../../src/status/build-report.js');
    const { statusReport } = await import('../../src/spec/status-report.js');
    const { emptyStoreData } = await import('../../src/store/types.js');
    const { newRecord } = await import('../../src/reconcile/records.js');
    const { heldUpdates } = await import('../../src/updates/gates.js');
    const now = new Date('2026-12-01T12:00:00Z');
    const p = plan({ desired: doc([cw('a'), cw('b', { window: 'any' })], [NIGHTLY]), records: {}, observed: [obs('a'), obs('b')], runtimeUp: UP, now, gates: [windowsGate({ windows: [NIGHTLY], forceTokenOf: () => undefined })] });
    const data = emptyStoreData();
    data.records.a = newRecord(cw('a'), now);
    data.records.b = newRecord(cw('b'), now);
    const r = buildStatusReport({ nodeId: 'n1', seq: 1, agentVersion: 't', hostname: 'h', data, runtimes: {}, now, updates: heldUpdates(p.steps) });
    const a = r.workloads.find((w) => w.id === 'a');
    assert.equal(a?.update?.waiting, 'maintenance-window');
    assert.match(a?.update?.reason ?? '', /^waiting for the maintenance window at 2026-12-02T02:00Z/);
    assert.equal(r.workloads.find((w) => w.id === 'b')?.update, undefined);
    assert.ok(v.safeParse(statusReport, r).success);
  });
});
