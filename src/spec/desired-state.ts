import * as v from 'valibot';
import { nonEmptyString, positiveInt, retryPolicy, safeName, workloadId } from './common.js';
import { containerSpec } from './container.js';
import { composeSpec } from './compose.js';
import { vmSpec } from './vm.js';

const d = v.description;

export const API_VERSION = 'persys.dev/v1';

const revision = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9._-]{1,64}$/, 'revision must be 1-64 characters of A-Z a-z 0-9 . _ -'),
  d('Publisher-chosen revision; a change forces a recreate even when the spec is equal.'),
);

const desiredStateValue = v.pipe(
  v.optional(v.picklist(['running', 'stopped'], 'desiredState must be running or stopped')),
  d('running (default) or stopped. stopped keeps the workload, stopped.'),
);

const common = {
  id: v.pipe(workloadId, d('Unique workload id on this node.')),
  revision: v.optional(revision),
  desiredState: desiredStateValue,
  retry: v.pipe(v.optional(retryPolicy), d('Retry policy for transient failures.')),
  retryToken: v.pipe(
    v.optional(v.pipe(v.string(), v.maxLength(128, 'retryToken is longer than 128'))),
    d('Changing it restarts the retry budget of a failed workload.'),
  ),
};

export const containerWorkload = v.strictObject({
  ...common,
  type: v.pipe(v.literal('container'), d('A single Docker container.')),
  spec: containerSpec,
});
export const composeWorkload = v.strictObject({
  ...common,
  type: v.pipe(v.literal('compose'), d('A compose app (native engine on the Docker API).')),
  spec: composeSpec,
});
export const vmWorkload = v.strictObject({
  ...common,
  type: v.pipe(v.literal('vm'), d('A libvirt virtual machine.')),
  spec: vmSpec,
});

export const workload = v.variant('type', [containerWorkload, composeWorkload, vmWorkload], 'type must be container, compose or vm');

export const volumeDecl = v.strictObject({
  name: v.pipe(safeName('volume name'), d('Volume name.')),
  pool: v.pipe(v.optional(safeName('pool name')), d('Storage pool; default the engine\'s default.')),
  sizeBytes: v.pipe(v.optional(positiveInt('sizeBytes')), d('Quota in bytes.')),
  reclaimPolicy: v.pipe(v.optional(v.picklist(['retain', 'delete'], 'reclaimPolicy must be retain or delete')), d('On removal; default retain.')),
});

export const storagePoolDecl = v.strictObject({
  name: v.pipe(safeName('pool name'), d('Pool name.')),
  type: v.pipe(v.picklist(['dir'], 'type must be dir'), d('Pool type.')),
  path: v.pipe(
    v.string(),
    v.startsWith('/', 'path must be absolute'),
    v.check((p) => !p.split('/').includes('..'), "path must not contain '..'"),
    d('Directory on the host.'),
  ),
  capacityBytes: v.pipe(v.optional(positiveInt('capacityBytes')), d('Quota for the pool.')),
});

export const desiredStateDocument = v.pipe(
  v.strictObject({
    apiVersion: v.pipe(v.literal(API_VERSION, `apiVersion must be "${API_VERSION}"`), d('Document format version.')),
    kind: v.pipe(v.literal('DesiredState', 'kind must be "DesiredState"'), d('Document kind.')),
    nodeId: v.pipe(nonEmptyString('nodeId', 253), d('The node this document is for; must match the agent\'s node id.')),
    generation: v.pipe(
      v.number(),
      v.integer('generation must be an integer'),
      v.minValue(0, 'generation must not be negative'),
      v.maxValue(Number.MAX_SAFE_INTEGER, 'generation is too large'),
      d('Only grows; a lower generation than the stored one is rejected.'),
    ),
    labels: v.pipe(v.optional(v.record(v.string(), v.string())), d('Node labels reported back.')),
    workloads: v.pipe(v.array(workload), v.maxLength(10000, 'workloads has more than 10000 entries'), d('Every workload this node should run.')),
    volumes: v.pipe(v.optional(v.array(volumeDecl)), d('Named volumes.')),
    storagePools: v.pipe(v.optional(v.array(storagePoolDecl)), d('Storage pools.')),
  }),
  v.check((doc) => new Set(doc.workloads.map((w) => w.id)).size === doc.workloads.length, 'workload ids must be unique'),
  d('The desired state of one node, served by the central side.'),
);

export type DesiredStateDocument = v.InferOutput<typeof desiredStateDocument>;
export type Workload = v.InferOutput<typeof workload>;
export type ContainerWorkload = v.InferOutput<typeof containerWorkload>;
export type ComposeWorkload = v.InferOutput<typeof composeWorkload>;
export type VmWorkload = v.InferOutput<typeof vmWorkload>;
export type WorkloadType = Workload['type'];
export const WORKLOAD_TYPES: readonly WorkloadType[] = ['container', 'compose', 'vm'];
