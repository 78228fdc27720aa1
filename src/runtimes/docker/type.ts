import { policyViolations } from '../../policy/container-policy.js';
import { describeSpecChanges, type ChangeWording } from '../canonical-json.js';
import { newestMatching } from '../observed.js';
import type { TypeDescriptor } from '../runtime.js';
import { canonicalContainerSpec } from './canonical.js';
import { containerReportBlock } from './report.js';
import { containerWorkload, type ContainerWorkload } from './spec.js';

const WORDING: ChangeWording = {
  maps: new Set(['env', 'labels', 'logging.options']),
  secretPrefixes: ['env', 'labels', 'logging.options'],
};

/** The `container` workload type, owned by the docker runtime. */
export const containerType: TypeDescriptor<ContainerWorkload> = {
  type: 'container',
  about: 'a single Docker container',
  schema: containerWorkload,
  // 1: the form of src/runtimes/docker/canonical.ts (docs/hash-versions.md).
  hashVersion: 1,
  canonical: (w, version) => (version === 1 ? canonicalContainerSpec(w.spec) : undefined),
  describeChanges: (a, b) => describeSpecChanges(a, b, WORDING),
  stopTimeoutSeconds: (w) => w.spec.stopTimeoutSeconds,
  /**
   * A container that ran and exited stays down when its own restart policy says so: "no" never
   * restarts, and "on-failure" does not restart a clean exit. Starting it again would turn a
   * one-shot job into a loop.
   */
  staysDown(w, exit) {
    if (!exit.hasRun) return undefined;
    const policy = w.spec.restartPolicy ?? 'unless-stopped';
    if (policy === 'no') return 'restartPolicy no';
    if (policy === 'on-failure' && exit.code === 0) return 'restartPolicy on-failure does not restart a clean exit';
    return undefined;
  },
  policy: (w, policy) => policyViolations(w, policy),
  primary: newestMatching,
  report: containerReportBlock,
  capabilities: { exitEvidence: true, engineRestarts: true },
  // The one image the container runs: GC keeps it while the workload is desired (docs/gc.md).
  images: (w) => [w.spec.image],
  // Named-volume mounts: the storage gate holds the container until a declared volume is Ready.
  volumeRefs: (w) => (w.spec.volumes ?? []).flatMap((m) => (m.type === 'volume' ? [m.source] : [])),
  /** What `resources` limits: the container can use no more, so admission counts exactly that. */
  requests(w) {
    const r = w.spec.resources;
    if (!r || (r.cpus === undefined && r.memoryBytes === undefined)) return undefined;
    return { ...(r.cpus !== undefined ? { cpus: r.cpus } : {}), ...(r.memoryBytes !== undefined ? { memoryBytes: r.memoryBytes } : {}) };
  },
};
