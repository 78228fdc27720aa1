import type { Config } from '../config/schema.js';
import type { PlanGate } from '../reconcile/planner.js';
import type { MaintenanceWindow } from '../spec/maintenance.js';
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
