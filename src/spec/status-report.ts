import * as v from 'valibot';
import { errorCode, errorSummarySchema } from './error-summary.js';
import { BUILTIN_TYPE_NAMES, BUILTIN_TYPES } from '../runtimes/registry.js';
import { API_VERSION } from './desired-state.js';

const d = v.description;

export const PHASES = [
  'Pending',
  'Pulling',
  'Creating',
  'Starting',
  'Running',
  'Stopped',
  'Completed',
  'BackingOff',
  'CrashLoop',
  'Failed',
  'Removing',
] as const;
export type Phase = (typeof PHASES)[number];

export const ACTUAL_STATES = ['running', 'stopped', 'exited', 'created', 'paused', 'restarting', 'missing', 'unknown'] as const;
export type ActualState = (typeof ACTUAL_STATES)[number];

const isoTime = v.pipe(v.string(), v.isoTimestamp('must be an ISO 8601 timestamp'));


/** The report blocks of the built-in types, as optional entries of a workload's status. */
function reportBlocks(): Record<string, v.GenericSchema> {
  const out: Record<string, v.GenericSchema> = {};
  for (const t of BUILTIN_TYPES.all()) if (t.report) out[t.report.key] = v.pipe(v.optional(t.report.schema), d(t.report.description));
  return out;
}

export { errorSummarySchema };

const workloadStatus = v.object({
  id: v.pipe(v.string(), d('Workload id from the desired state (or from the labels of a resource being removed).')),
  type: v.pipe(v.picklist(BUILTIN_TYPE_NAMES), d('Workload type.')),
  revision: v.pipe(v.optional(v.string()), d('Revision of the spec the status describes.')),
  desiredState: v.pipe(v.picklist(['running', 'stopped', 'absent']), d('What the agent is driving towards; absent while a removed workload is torn down.')),
  actualState: v.pipe(v.picklist(ACTUAL_STATES), d('What the runtime reports.')),
  phase: v.pipe(v.picklist(PHASES), d('Where the workload is in its life cycle.')),
  message: v.pipe(v.string(), d('One line a person can read.')),
  runtimeId: v.pipe(v.optional(v.string()), d('Runtime object id (container id, compose project, libvirt domain UUID).')),
  specHash: v.pipe(v.optional(v.string()), d('Hash of the applied spec (the dev.persys.spec-hash label).')),
  error: v.pipe(v.optional(v.nullable(errorSummarySchema)), d('The current error, null or absent when there is none.')),
  retry: v.pipe(
    v.optional(
      v.object({
        attempts: v.pipe(v.number(), d('Failed attempts since the last success, revision change or retry request.')),
        nextRetryAt: v.pipe(v.optional(v.nullable(isoTime)), d('When the next attempt is due; null when none is scheduled.')),
        gaveUp: v.pipe(v.boolean(), d('True when the retry budget is spent; a new revision, retryToken or retry request restarts it.')),
      }),
    ),
    d('Retry state for transient failures.'),
  ),
  failures: v.pipe(
    v.optional(
      v.array(
        v.object({
          at: v.pipe(isoTime, d('When the failure happened.')),
          code: v.pipe(errorCode, d('Error code.')),
          message: v.pipe(v.string(), d('The exact runtime message.')),
          attempt: v.pipe(v.optional(v.number()), d('Attempt number that failed.')),
        }),
      ),
    ),
    d('Recent failures, newest last (bounded).'),
  ),
  update: v.pipe(
    v.optional(
      v.object({
        waiting: v.pipe(v.picklist(['maintenance-window', 'update-lock', 'max-parallel']), d('What the update waits for.')),
        reason: v.pipe(v.string(), d('Why, in words: "waiting for the maintenance window at 2026-12-02T02:00Z (env FOO changed)".')),
        until: v.pipe(isoTime, d('When the agent looks again (the next window start, the next lock check).')),
      }),
    ),
    d('Present while an update that would restart the running workload is held (docs/updates.md); the previous revision keeps running.'),
  ),
  // Each type's own block (`container`, `vm`, ...), from its runtime's type descriptor.
  ...reportBlocks(),
  updatedAt: v.pipe(v.optional(isoTime), d('When this entry last changed.')),
});

export const statusReport = v.pipe(
  v.object({
    apiVersion: v.pipe(v.literal(API_VERSION), d('Document format version.')),
    kind: v.pipe(v.literal('StatusReport'), d('Document kind.')),
    nodeId: v.pipe(v.string(), d('The reporting node.')),
    seq: v.pipe(v.number(), v.integer(), d('Grows with every report this node sends.')),
    agentVersion: v.pipe(v.string(), d('Version of the agent that sent the report.')),
    observedGeneration: v.pipe(v.nullable(v.number()), d('Generation of the desired state in force, null before the first.')),
    sentAt: v.pipe(isoTime, d('When the report was sent.')),
    node: v.pipe(
      v.object({
        hostname: v.pipe(v.string(), d('Host name.')),
        labels: v.pipe(v.record(v.string(), v.string()), d('Node labels (from the desired state).')),
        capacity: v.pipe(v.optional(v.record(v.string(), v.number())), d('Total resources, e.g. cpus, memoryBytes, diskBytes.')),
        allocatable: v.pipe(v.optional(v.record(v.string(), v.number())), d('Capacity minus what is reserved for the host.')),
        usage: v.pipe(v.optional(v.record(v.string(), v.number())), d('Resources in use now.')),
        committed: v.pipe(v.optional(v.record(v.string(), v.number())), d('Sum of the requests of the workloads the agent runs (what admission counts against allocatable).')),
        conditions: v.pipe(
          v.optional(
            v.array(
              v.object({
                type: v.pipe(v.picklist(['MemoryPressure', 'DiskPressure', 'PIDPressure']), d('Condition type.')),
                status: v.pipe(v.boolean(), d('True while the node is under this pressure: no new workloads are admitted.')),
                lastTransitionTime: v.pipe(isoTime, d('When status last changed.')),
                reason: v.pipe(v.string(), d('The signals over their thresholds, or why it is off.')),
              }),
            ),
          ),
          d('Node conditions (kubelet thresholds, with a transition period so they do not flap).'),
        ),
        runtimes: v.pipe(v.record(v.string(), v.string()), d('"up" or "down: <reason>" per runtime.')),
      }),
      d('Facts about the host.'),
    ),
    sync: v.pipe(
      v.object({
        lastPullAt: v.pipe(v.nullable(isoTime), d('Last pull attempt; null before the first.')),
        lastSuccessAt: v.pipe(v.optional(v.nullable(isoTime)), d('Last pull that returned a valid document or 304.')),
        lastError: v.pipe(
          v.nullable(
            v.object({
              code: v.pipe(errorCode, d('Error code.')),
              message: v.pipe(v.string(), d('What went wrong.')),
              at: v.pipe(isoTime, d('When it happened.')),
            }),
          ),
          d('The last pull error; null after a success.'),
        ),
        desiredExpiresAt: v.pipe(v.optional(v.nullable(isoTime)), d("The applied document's expiresAt; null when it has none.")),
        desiredExpired: v.pipe(v.optional(v.boolean()), d('True when the applied document has expired: its workloads keep running, but the host is frozen on it until a fresh one arrives.')),
        signedBy: v.pipe(v.optional(v.array(v.string())), d('Ids of the trusted keys whose signatures verified on the applied document (empty when unsigned).')),
      }),
      d('Desired-state pulls.'),
    ),
    workloads: v.pipe(v.array(workloadStatus), d('One entry per workload the agent knows about.')),
    gc: v.pipe(
      v.optional(
        v.object({
          lastRunAt: v.pipe(isoTime, d('When the last garbage-collection pass ran.')),
          removed: v.pipe(
            v.array(
              v.object({
                kind: v.pipe(v.picklist(['orphan', 'zombie', 'failed-record', 'image', 'vm-disk', 'vm-image-cache', 'vm-seed', 'vm-console-log']), d('What was removed.')),
                id: v.pipe(v.string(), d('Container id, record id, image reference or file path.')),
                name: v.pipe(v.optional(v.string()), d('Engine name (container name, image id).')),
                workloadId: v.pipe(v.optional(v.string()), d('The workload it belonged to, when known.')),
                reason: v.pipe(v.string(), d('Why it was removed.')),
                bytes: v.pipe(v.optional(v.number()), d('Bytes freed, when known.')),
              }),
            ),
            d('What the last pass removed (at most 50 entries; counts by kind are in persys_gc_removed_total).'),
          ),
          freedBytes: v.pipe(v.number(), d('Bytes the last pass freed (images: their size when their last reference went; files: their size).')),
        }),
      ),
      d('The garbage collector (docs/gc.md); absent before its first pass.'),
    ),
    storage: v.pipe(
      v.optional(
        v.object({
          pools: v.pipe(v.array(
            v.object({
              name: v.pipe(v.string(), d('Pool name.')),
              type: v.pipe(v.string(), d('dir, loop or libvirt.')),
              enforcement: v.pipe(v.picklist(['accounted', 'hard']), d('accounted: checked at admission only (dir); hard: each volume is an image of its size (loop, libvirt).')),
              capacityBytes: v.pipe(v.number(), d('The pool quota.')),
              allocatedBytes: v.pipe(v.number(), d('Sum of the sizes of its volumes, retained ones included.')),
              usedBytes: v.pipe(v.number(), d('Bytes its volumes occupy on the host (allocated blocks).')),
              available: v.pipe(v.number(), d('capacityBytes - allocatedBytes: the largest volume it still admits.')),
              error: v.pipe(v.optional(v.string()), d('Why the pool is refused or could not be set up.')),
            }),
          ), d('Declared pools with their accounting.')),
          volumes: v.pipe(v.array(
            v.object({
              name: v.pipe(v.string(), d('Volume name.')),
              pool: v.pipe(v.string(), d('Its pool.')),
              sizeBytes: v.pipe(v.number(), d('Its size.')),
              usedBytes: v.pipe(v.number(), d('Bytes it occupies on the host.')),
              attachedTo: v.pipe(v.array(v.string()), d('Desired workloads that mount it.')),
              phase: v.pipe(v.string(), d('Creating, Ready, Growing, Retained, Deleting, Failed or Refused.')),
              reclaimPolicy: v.pipe(v.string(), d('retain or delete.')),
              error: v.pipe(v.nullable(v.string()), d('Why it is refused or what failed, with the code.')),
            }),
          ), d('Volumes the agent keeps (retained ones too) and declared volumes it refused.')),
        }),
      ),
      d('Storage pools and volumes (docs/storage.md).'),
    ),
  }),
  d('The full status snapshot a node pushes.'),
);

export type StatusReport = Omit<v.InferOutput<typeof statusReport>, 'workloads'> & { workloads: WorkloadStatus[] };
/** A workload's entry; type blocks (`container`, `vm`, ...) are keyed by their descriptor's report key. */
export type WorkloadStatus = Omit<v.InferOutput<typeof workloadStatus>, 'type'> & { type: string; [block: string]: unknown };
