import * as v from 'valibot';
import { ERROR_CODES, type ErrorCode } from '../errors/codes.js';
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
const errorCode = v.picklist(Object.keys(ERROR_CODES) as ErrorCode[]);

export const errorSummarySchema = v.object({
  code: v.pipe(errorCode, d('Error code from the closed set.')),
  message: v.pipe(v.string(), d('The exact runtime message.')),
  userMessage: v.pipe(v.string(), d('What it means for a person.')),
  transient: v.pipe(v.boolean(), d('Retried with backoff when true.')),
  details: v.optional(v.record(v.string(), v.union([v.string(), v.number(), v.boolean()]))),
});

const workloadStatus = v.object({
  id: v.string(),
  type: v.picklist(['container', 'compose', 'vm']),
  revision: v.optional(v.string()),
  desiredState: v.picklist(['running', 'stopped', 'absent']),
  actualState: v.pipe(v.picklist(ACTUAL_STATES), d('What the runtime reports.')),
  phase: v.pipe(v.picklist(PHASES), d('Where the workload is in its life cycle.')),
  message: v.pipe(v.string(), d('One line a person can read.')),
  runtimeId: v.optional(v.string()),
  specHash: v.optional(v.string()),
  error: v.optional(v.nullable(errorSummarySchema)),
  retry: v.optional(
    v.object({
      attempts: v.number(),
      nextRetryAt: v.optional(v.nullable(isoTime)),
      gaveUp: v.boolean(),
    }),
  ),
  failures: v.optional(v.array(v.object({ at: isoTime, code: errorCode, message: v.string(), attempt: v.optional(v.number()) }))),
  container: v.optional(
    v.object({
      exitCode: v.optional(v.nullable(v.number())),
      oomKilled: v.optional(v.boolean()),
      restartCount: v.optional(v.number()),
      startedAt: v.optional(v.nullable(v.string())),
      finishedAt: v.optional(v.nullable(v.string())),
      logTail: v.optional(v.array(v.string())),
    }),
  ),
  vm: v.optional(
    v.object({
      interfaces: v.array(v.object({ mac: v.string(), ips: v.array(v.string()), source: v.picklist(['agent', 'lease', 'arp']) })),
      login: v.optional(
        v.object({
          username: v.string(),
          ssh: v.optional(v.string()),
          sshKeyFingerprints: v.optional(v.array(v.string())),
          console: v.optional(v.string()),
          password: v.optional(v.string()),
        }),
      ),
    }),
  ),
  updatedAt: v.optional(isoTime),
});

export const statusReport = v.pipe(
  v.object({
    apiVersion: v.literal(API_VERSION),
    kind: v.literal('StatusReport'),
    nodeId: v.string(),
    seq: v.pipe(v.number(), v.integer(), d('Grows with every report this node sends.')),
    agentVersion: v.string(),
    observedGeneration: v.pipe(v.nullable(v.number()), d('Generation of the desired state in force, null before the first.')),
    sentAt: isoTime,
    node: v.object({
      hostname: v.string(),
      labels: v.record(v.string(), v.string()),
      capacity: v.optional(v.record(v.string(), v.number())),
      allocatable: v.optional(v.record(v.string(), v.number())),
      usage: v.optional(v.record(v.string(), v.number())),
      runtimes: v.pipe(v.record(v.string(), v.string()), d('"up" or "down: <reason>" per runtime.')),
    }),
    sync: v.object({
      lastPullAt: v.nullable(isoTime),
      lastSuccessAt: v.optional(v.nullable(isoTime)),
      lastError: v.nullable(v.object({ code: errorCode, message: v.string(), at: isoTime })),
    }),
    workloads: v.array(workloadStatus),
  }),
  d('The full status snapshot a node pushes.'),
);

export type StatusReport = v.InferOutput<typeof statusReport>;
export type WorkloadStatus = v.InferOutput<typeof workloadStatus>;
