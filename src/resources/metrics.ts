/**
 * Node resource metrics: capacity, allocatable, committed and usage per resource, and the node
 * conditions, read at scrape time from what the ResourceMonitor sampled last (a scrape reads no file).
 */
import { Gauge, type Registry } from 'prom-client';
import type { ResourceFigures } from './admission.js';
import { CONDITION_TYPES, type NodeCondition } from './conditions.js';

export interface ResourceMetricsSource {
  figures(): { capacity?: ResourceFigures; allocatable?: ResourceFigures; committed?: ResourceFigures; usage?: ResourceFigures };
  conditions(): readonly NodeCondition[];
}

const UNITS = [
  ['cpus', 'cpus', 'CPUs'],
  ['memoryBytes', 'memory_bytes', 'memory, bytes'],
  ['diskBytes', 'disk_bytes', 'disk of the state dir\'s file system, bytes'],
] as const;

const WHAT = {
  capacity: 'Node capacity (cgroup limit or /proc; statfs)',
  allocatable: 'Node allocatable (capacity - resources.reserved)',
  committed: 'Sum of the requests of the workloads the agent runs',
  usage: 'Node usage now',
} as const;

export function registerResourceMetrics(registry: Registry, source: ResourceMetricsSource): void {
  const registers = [registry];
  for (const figure of ['capacity', 'allocatable', 'committed', 'usage'] as const) {
    for (const [key, suffix, words] of UNITS) {
      new Gauge({
        name: `persys_node_${figure}_${suffix}`,
        help: `${WHAT[figure]}: ${words}.`,
        registers,
        collect() {
          const v = source.figures()[figure]?.[key];
          if (v === undefined) this.reset();
          else this.set(v);
        },
      });
    }
  }
  new Gauge({
    name: 'persys_node_condition',
    help: 'Node conditions: 1 while the node is under MemoryPressure, DiskPressure or PIDPressure (no new workloads are admitted), else 0.',
    labelNames: ['condition'],
    registers,
    collect() {
      this.reset();
      const by = new Map(source.conditions().map((c) => [c.type, c.status] as const));
      for (const type of CONDITION_TYPES) this.set({ condition: type }, by.get(type) === true ? 1 : 0);
    },
  });
}
