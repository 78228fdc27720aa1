import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { plan, type PlanGate } from '../../src/reconcile/planner.js';
import type { DesiredStep } from '../../src/reconcile/steps.js';
import type { DesiredStateDocument, Workload } from '../../src/spec/desired-state.js';

const NOW = new Date('2025-06-01T12:00:00.000Z');
const UP = { container: true, compose: true, vm: true };
const cw = (id: string): Workload => ({ id, type: 'container', revision: 'r1', spec: { image: 'nginx:1.27' } });
const doc = (workloads: Workload[]): DesiredStateDocument => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads });

describe('plan gates', () => {
  it('are called in desired-state order and may turn a create into a deny or a wait', () => {
    const seen: string[] = [];
    const denyB: PlanGate = {
      name: 'deny-b',
      check(step: DesiredStep): DesiredStep {
        seen.push(step.workloadId);
        if (step.workloadId !== 'b') return step;
        return { ...step, kind: 'deny', code: 'INSUFFICIENT_RESOURCES', violations: ['needs more'], reason: 'INSUFFICIENT_RESOURCES: needs more' };
      },
    };
    const holdA: PlanGate = {
      name: 'hold-a',
      check(step: DesiredStep): DesiredStep {
        if (step.workloadId !== 'a' || step.kind !== 'create') return step;
        return { ...step, kind: 'wait', until: '2025-06-01T13:00:00.000Z', reason: 'held' };
      },
    };
    const p = plan({ desired: doc([cw('c'), cw('a'), cw('b')]), records: {}, observed: [], runtimeUp: UP, now: NOW, gates: [denyB, holdA] });
    assert.deepEqual(seen, ['c', 'a', 'b']);
    const kinds = Object.fromEntries(p.steps.map((s) => [s.workloadId, s.kind]));
    assert.deepEqual(kinds, { a: 'wait', b: 'deny', c: 'create' });
  });

  it('see no step after a policy deny', () => {
    const seen: string[] = [];
    const g: PlanGate = { name: 'x', check: (s) => (seen.push(s.workloadId), s) };
    const w: Workload = { id: 'p', type: 'container', spec: { image: 'nginx:1.27', security: { privileged: true } } };
    const p = plan({ desired: doc([w]), records: {}, observed: [], runtimeUp: UP, now: NOW, gates: [g] });
    assert.equal(p.steps[0]?.kind, 'deny');
    assert.deepEqual(seen, []);
  });
});
