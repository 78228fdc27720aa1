/*
 * A third runtime that exists only in this folder: the "bundle" workload type (a pod plus named
 * volumes) on an in-memory engine. It brings everything a real runtime brings (schema, canonical
 * form under two hash versions, change wording, report block, composite observation, its own rule
 * for duplicates, runtime state) and is plugged in by injection: BUILTIN_TYPES.with(bundleType).
 */
import * as v from 'valibot';

import { describeSpecChanges, hashCanonical } from '../../../src/runtimes/canonical-json.js';
import type {
  ApplyContext,
  CreatedWorkload,
  ObservedWorkload,
  RemoveReason,
  Runtime,
  RuntimeEvent,
  RuntimeHealth,
  RuntimeState,
  TypeDescriptor,
  WorkloadBase,
} from '../../../src/runtimes/runtime.js';
import { workloadSchema } from '../../../src/spec/common.js';

export const bundleSpec = v.strictObject({
  image: v.pipe(v.string(), v.minLength(1, 'image must not be empty')),
  size: v.optional(v.pipe(v.number(), v.integer('size must be an integer'), v.minValue(1, 'size must be at least 1'))),
  volumes: v.optional(v.array(v.pipe(v.string(), v.regex(/^[a-z]+$/, 'volume names are lower-case letters')))),
  privileged: v.optional(v.boolean()),
});
export const bundleWorkload = workloadSchema('bundle', bundleSpec, { type: 'A pod with volumes (test runtime).', spec: 'The bundle.' });
export type BundleWorkload = v.InferOutput<typeof bundleWorkload>;

/** v1 kept `size: 1` (the default) in the form; v2 folds it away and sorts the volumes. */
function canonical(w: BundleWorkload, version: number): object | undefined {
  const s = w.spec;
  if (version === 1) return { image: s.image, size: s.size ?? 1, volumes: s.volumes ?? [] };
  if (version === 2) {
    const out: Record<string, unknown> = { image: s.image };
    if (s.size !== undefined && s.size !== 1) out.size = s.size;
    if (s.volumes?.length) out.volumes = [...s.volumes].sort();
    return out;
  }
  return undefined;
}

/** Parts one bundle owns on the engine. */
interface Pod {
  id: string;
  workloadId: string;
  revision: string | undefined;
  specHash: string;
  hashVersion: number;
  state: 'created' | 'running' | 'exited';
  volumes: string[];
  createdAt: string;
}

export const bundleType: TypeDescriptor<BundleWorkload> = {
  type: 'bundle',
  about: 'a pod with volumes (test runtime)',
  schema: bundleWorkload,
  hashVersion: 2,
  canonical,
  describeChanges: (a, b) => describeSpecChanges(a, b, { maps: new Set(), secretPrefixes: [] }),
  stopTimeoutSeconds: () => 3,
  staysDown: () => undefined,
  policy: (w) => (w.spec.privileged === true ? ['spec.privileged: privileged bundles are denied on this host'] : []),
  // The runtime's own rule: the bundle whose parts are most complete is the workload, then the oldest.
  primary(objects) {
    const score = (o: ObservedWorkload) => o.parts?.length ?? 0;
    return [...objects].sort((a, b) => score(b) - score(a) || (a.createdAt ?? '').localeCompare(b.createdAt ?? ''))[0] as ObservedWorkload;
  },
  report: {
    key: 'bundle',
    description: 'Bundle facts (bundle workloads).',
    schema: v.object({ pods: v.number(), volumes: v.array(v.string()), tokenSet: v.boolean() }),
    build(f) {
      const live = f.live as { pods: number; volumes: string[] } | undefined;
      if (!live) return undefined;
      return { ...live, tokenSet: typeof f.runtimeState?.data.token === 'string' };
    },
  },
  capabilities: { exitEvidence: false, engineRestarts: false },
};

/** The hash the fake engine labels with, computed as a runtime would (under the given version). */
export function bundleHash(w: BundleWorkload, version: number): string {
  return hashCanonical('bundle', canonical(w, version));
}

export class BundleRuntime implements Runtime {
  readonly name = 'bundler';
  readonly types = [bundleType];
  readonly pods = new Map<string, Pod>();
  readonly calls: string[] = [];
  private seq = 0;

  async health(): Promise<RuntimeHealth> {
    return { up: true, reason: 'in memory' };
  }

  /** One observation per pod, composite: the pod and each of its volumes. */
  async observe(): Promise<ObservedWorkload[]> {
    return [...this.pods.values()].map((p) => this.toObserved(p));
  }

  private toObserved(p: Pod): ObservedWorkload {
    return {
      workloadId: p.workloadId,
      type: 'bundle',
      runtime: this.name,
      runtimeId: p.id,
      name: `bundle-${p.id}`,
      revision: p.revision,
      specHash: p.specHash,
      hashVersion: p.hashVersion,
      state: p.state,
      createdAt: p.createdAt,
      parts: [{ kind: 'pod', id: p.id }, ...p.volumes.map((vol) => ({ kind: 'volume', id: `${p.id}/${vol}` }))],
    };
  }

  /** Puts an object on the engine as another (older) agent would have made it. */
  plant(p: Omit<Pod, 'id' | 'createdAt'> & { createdAt?: string }): ObservedWorkload {
    const pod: Pod = { ...p, id: `pod-${++this.seq}`, createdAt: p.createdAt ?? new Date(Date.UTC(2025, 0, this.seq)).toISOString() };
    this.pods.set(pod.id, pod);
    return this.toObserved(pod);
  }

  async prepare(w: WorkloadBase): Promise<void> {
    this.calls.push(`prepare ${w.id}`);
  }

  async create(workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload> {
    const w = workload as BundleWorkload;
    this.calls.push(`create ${w.id}`);
    const o = this.plant({ workloadId: w.id, revision: w.revision, specHash: ctx.specHash, hashVersion: ctx.hashVersion ?? bundleType.hashVersion, state: 'created', volumes: w.spec.volumes ?? [] });
    // The runtime's own durable state: kept by the agent in the record, handed back next time.
    const token = typeof ctx.runtimeState?.data.token === 'string' ? ctx.runtimeState.data.token : `tok-${w.id}-${this.seq}`;
    return { ...o, runtimeState: { version: 1, data: { token } } };
  }

  async start(o: ObservedWorkload): Promise<void> {
    this.calls.push(`start ${o.workloadId}`);
    const p = this.pods.get(o.runtimeId);
    if (p) p.state = 'running';
  }

  async stop(o: ObservedWorkload, _signal: AbortSignal, timeoutSeconds?: number): Promise<void> {
    this.calls.push(`stop ${o.workloadId} ${timeoutSeconds ?? '-'}`);
    const p = this.pods.get(o.runtimeId);
    if (p) p.state = 'exited';
  }

  async remove(o: ObservedWorkload, _signal: AbortSignal, why: RemoveReason): Promise<void> {
    this.calls.push(`remove ${o.workloadId} ${o.runtimeId} ${why}`);
    this.pods.delete(o.runtimeId);
  }

  async inspect(o: ObservedWorkload): Promise<ObservedWorkload | undefined> {
    const p = this.pods.get(o.runtimeId);
    return p ? this.toObserved(p) : undefined;
  }

  live(workloadId: string, _state: RuntimeState | undefined): unknown {
    const mine = [...this.pods.values()].filter((p) => p.workloadId === workloadId);
    if (mine.length === 0) return undefined;
    return { pods: mine.length, volumes: mine.flatMap((p) => p.volumes).sort() };
  }

  async events(_signal: AbortSignal, _onEvent: (e: RuntimeEvent) => void): Promise<void> {}
}
