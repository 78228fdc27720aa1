import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { PlanGate } from '../reconcile/planner.js';
import type { Step, UpdateHold } from '../reconcile/steps.js';
import { updatePolicyOf, type MaintenanceWindow } from '../spec/maintenance.js';
import { locksGate } from './locks.js';
import { maxParallelGate } from './max-parallel.js';
import type { UpdateState } from './state.js';
import { windowsGate } from './windows.js';

export interface UpdateGatesOptions {
  config: Pick<Config, 'maintenance' | 'update'>;
  /** The desired document (its maintenance.windows replace the config's). */
  desired: { maintenance?: { windows: readonly MaintenanceWindow[] } } | null | undefined;
  stateDir: string;
  volumeDir: (name: string) => string | undefined;
  state: UpdateState;
  warn: (fields: Record<string, unknown>, msg: string) => void;
}

/** The node's windows: the document's when it declares maintenance, else the config's. */
export const windowsOf = (o: Pick<UpdateGatesOptions, 'config' | 'desired'>): readonly MaintenanceWindow[] => o.desired?.maintenance?.windows ?? o.config.maintenance.windows;

/** The update gates of one pass, in order: window, then locks, then maxParallel (which counts only what the others let through). */
export function updateGates(o: UpdateGatesOptions): PlanGate[] {
  return [
    windowsGate({ windows: windowsOf(o), forceTokenOf: (id) => o.state.forceTokenOf(id) }),
    locksGate({ stateDir: o.stateDir, volumeDir: o.volumeDir, state: o.state, warn: o.warn }),
    maxParallelGate(o.config.update.maxParallel),
  ];
}

/**
 * Where a named volume of a container workload is on the host: Docker mounts every local volume
 * (storage-pool ones too) at <dataRoot>/volumes/<name>/_data while a container uses it.
 */
export const namedVolumeDir =
  (dataRootOf: (runtime: string) => string | undefined) =>
  (name: string): string | undefined => {
    const root = dataRootOf('docker');
    return root ? join(root, 'volumes', name, '_data') : undefined;
  };

/** The updates a plan holds, by workload id, for the status report. */
export function heldUpdates(steps: readonly Step[]): Map<string, UpdateHold> {
  const out = new Map<string, UpdateHold>();
  for (const s of steps) if (s.kind === 'wait' && s.hold) out.set(s.workloadId, s.hold);
  return out;
}

/**
 * After a pass: the forceToken of each workload created or updated successfully is the one in force
 * (a later, different token forces the next update), state of workloads gone is dropped, the file saved.
 */
export function afterPass(state: UpdateState, results: readonly { ok: boolean; step: Step }[], desiredIds: ReadonlySet<string> | null): void {
  for (const r of results) {
    if (!r.ok || (r.step.kind !== 'create' && r.step.kind !== 'recreate')) continue;
    state.applied(r.step.workloadId, updatePolicyOf(r.step.workload).forceToken);
  }
  if (desiredIds) state.keepOnly(desiredIds);
  state.save();
}
