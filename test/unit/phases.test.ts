import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { allowedTransitions, canTransition, checkTransition, PhaseTransitionError, SETTLED_PHASES, TRANSITIONAL_PHASES } from '../../src/reconcile/phases.js';
import { newRecord, withFailure, withInterrupted, withPhase, withRetryRequested, withSuccess } from '../../src/reconcile/records.js';
import { WorkloadError } from '../../src/errors/index.js';
import { PHASES, type Phase } from '../../src/spec/status-report.js';
import type { Workload } from '../../src/spec/desired-state.js';

const NOW = new Date('2025-06-01T12:00:00Z');
const w = { id: 'web', type: 'container', spec: { image: 'x:1' } } as Workload;
const at = (phase: Phase) => ({ ...newRecord(w, NOW), phase });

/** Real paths the executor and the loop take, each move of which must be allowed. */
const PATHS: Phase[][] = [
  ['Pending', 'Pulling', 'Creating', 'Starting', 'Running'],
  ['Pending', 'Pulling', 'Creating', 'Stopped'],
  ['Running', 'Pulling', 'Removing', 'Pulling', 'Creating', 'Starting', 'Running'], // recreate
  ['Running', 'CrashLoop', 'Running', 'Completed', 'Starting', 'Running', 'Stopped'],
  ['Pending', 'Pulling', 'BackingOff', 'Pulling', 'Creating', 'Starting', 'Failed', 'Pending', 'Pulling'],
  ['Starting', 'CrashLoop', 'Failed', 'Removing', 'Failed'], // terminal failure: resources removed, record stays
  ['Creating', 'Pending', 'Starting', 'Running'], // interrupted by a restart, then the created container is started
  ['Creating', 'Starting', 'Running'], // stuck in Creating, recovered by stop + start
  ['Stopped', 'Removing'],
  ['BackingOff', 'Creating', 'Starting', 'Running'],
];

/** Moves the machine must refuse: they skip or reverse a step of an apply. */
const REFUSED: [Phase, Phase][] = [
  ['Pulling', 'Running'],
  ['Pulling', 'Starting'],
  ['Pulling', 'Stopped'],
  ['Creating', 'Running'],
  ['Creating', 'Pulling'],
  ['Creating', 'CrashLoop'],
  ['Starting', 'Pulling'],
  ['Starting', 'Creating'],
  ['Running', 'Creating'],
  ['Stopped', 'Creating'],
  ['Completed', 'Creating'],
  ['Failed', 'Creating'],
  ['CrashLoop', 'Creating'],
  ['Removing', 'Running'],
  ['Removing', 'Starting'],
  ['Removing', 'Creating'],
  ['Removing', 'Stopped'],
  ['Removing', 'Completed'],
];

describe('phase machine', () => {
  it('knows every phase, and every phase may stay, fail, back off, reset or be removed', () => {
    const table = allowedTransitions();
    assert.deepEqual([...table.keys()].sort(), [...PHASES].sort());
    for (const p of PHASES) {
      for (const to of [p, 'Failed', 'BackingOff', 'Pending', 'Removing'] as Phase[]) assert.ok(canTransition(p, to), `${p} -> ${to}`);
    }
  });

  it('transitional and settled phases are disjoint', () => {
    for (const p of TRANSITIONAL_PHASES) assert.ok(!SETTLED_PHASES.has(p));
    assert.deepEqual([...TRANSITIONAL_PHASES].sort(), ['Creating', 'Pulling', 'Removing', 'Starting']);
  });

  for (const path of PATHS) {
    it(`allows ${path.join(' -> ')}`, () => {
      let r = at(path[0]!);
      for (const p of path.slice(1)) r = withPhase(r, p, '', NOW);
      assert.equal(r.phase, path.at(-1));
    });
  }

  for (const [from, to] of REFUSED) {
    it(`refuses ${from} -> ${to}`, () => {
      assert.equal(canTransition(from, to), false);
      assert.throws(() => withPhase(at(from), to, '', NOW), (err: unknown) => {
        assert.ok(err instanceof PhaseTransitionError);
        assert.ok(err instanceof WorkloadError);
        assert.equal(err.code, 'INTERNAL');
        assert.equal(err.from, from);
        assert.equal(err.to, to);
        assert.match(err.message, new RegExp(`${from} -> ${to}`));
        return true;
      });
      assert.throws(() => checkTransition('x', from, to), PhaseTransitionError);
    });
  }

  it('a failure is allowed from every phase (withFailure never throws)', () => {
    const budget = { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 10_000, multiplier: 2 };
    for (const p of PHASES) {
      const r = withFailure(at(p), new WorkloadError('PORT_CONFLICT', 'port is already allocated'), budget, NOW, () => 0.5);
      assert.equal(r.phase, 'BackingOff');
      const t = withFailure(at(p), new WorkloadError('MOUNT_FAILED', 'bind source path does not exist'), budget, NOW);
      assert.equal(t.phase, 'Failed');
    }
  });

  it('withSuccess into a settled phase is refused straight from Pulling or Creating', () => {
    assert.throws(() => withSuccess(at('Pulling'), 'Running', '', NOW), PhaseTransitionError);
    assert.equal(withSuccess(at('Starting'), 'Running', '', NOW).phase, 'Running');
  });

  it('an interrupted record (transitional phase at start) goes back to Pending; others stay', () => {
    for (const p of PHASES) {
      const r = withInterrupted(at(p), NOW);
      if (TRANSITIONAL_PHASES.has(p)) {
        assert.equal(r.phase, 'Pending');
        assert.match(r.message, new RegExp(`interrupted while ${p}`));
      } else assert.equal(r.phase, p);
    }
  });

  it('a retry request moves Failed and BackingOff to Pending and leaves settled phases alone', () => {
    assert.equal(withRetryRequested(at('Failed'), NOW).phase, 'Pending');
    assert.equal(withRetryRequested(at('BackingOff'), NOW).phase, 'Pending');
    assert.equal(withRetryRequested(at('Running'), NOW).phase, 'Running');
    assert.equal(withRetryRequested(at('Completed'), NOW).phase, 'Completed');
  });

  it('phaseSince moves only when the phase changes', () => {
    const r = { ...at('Running'), phaseSince: '2025-01-01T00:00:00.000Z' };
    assert.equal(withPhase(r, 'Running', 'x', NOW).phaseSince, '2025-01-01T00:00:00.000Z');
    assert.equal(withPhase(r, 'CrashLoop', 'x', NOW).phaseSince, NOW.toISOString());
  });
});
