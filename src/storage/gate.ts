/**
 * The storage gate: a PlanGate that keeps a workload off the engine until every document volume it
 * mounts exists and is Ready. A volume the storage plan refused (quota, policy, shrink) refuses the
 * workload with the same code and message; one still being created (or grown) holds it in a short
 * `wait`. A mount of a name the document does not declare is a plain Docker named volume, not ours.
 */
import type { PlanGate } from '../reconcile/planner.js';
import type { DenyStep, DesiredStep } from '../reconcile/steps.js';
import type { TypeRegistry } from '../runtimes/registry.js';
import type { StoragePlan } from './plan.js';
import type { StorageState } from './types.js';

/** How soon a workload held for its volume is looked at again. */
export const VOLUME_WAIT_MS = 2000;

const GATED = new Set<DesiredStep['kind']>(['create', 'recreate', 'start', 'repair']);

export function storageGate(types: TypeRegistry, declared: ReadonlySet<string>, plan: Pick<StoragePlan, 'denied'>, state: StorageState): PlanGate {
  return {
    name: 'storage',
    check(step, _record, now) {
      if (!GATED.has(step.kind)) return step;
      const refs = types.get(step.workload.type)?.volumeRefs?.(step.workload) ?? [];
      const ours = [...new Set(refs)].filter((r) => declared.has(r));
      if (ours.length === 0) return step;
      const denied = ours.flatMap((r) => {
        const d = plan.denied.get(r);
        return d ? [{ name: r, ...d }] : [];
      });
      if (denied.length > 0) {
        const { kind: _k, reason: _r, ...rest } = step;
        const code = denied[0]?.code ?? 'INVALID_SPEC';
        const violations = denied.map((d) => d.message);
        // A quota refusal clears when the pool gains room: the gate looks again every pass.
        const base: DenyStep = { ...rest, kind: 'deny', code, violations, reason: `${code}: ${violations.join('; ')}` };
        return code === 'STORAGE_QUOTA_EXCEEDED' ? { ...base, untilHostChanges: true } : base;
      }
      const notReady = ours.filter((r) => !Object.hasOwn(state.volumes, r) || state.volumes[r]?.phase !== 'Ready');
      if (notReady.length === 0) return step;
      const { kind: _k, reason: _r, ...rest } = step;
      const phases = notReady.map((r) => `${r} (${Object.hasOwn(state.volumes, r) ? state.volumes[r]?.phase : 'not created yet'})`).join(', ');
      return { ...rest, kind: 'wait', until: new Date(now.getTime() + VOLUME_WAIT_MS).toISOString(), reason: `waiting for volume ${phases} before ${step.kind}` };
    },
  };
}
