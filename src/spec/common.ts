import * as v from 'valibot';
import { updatePolicy } from './maintenance.js';

/**
 * Strings that end up in engine object names or file paths. A strict pattern here is the
 * first line of defence against path traversal and name injection in every runtime.
 */
export const SAFE_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;

export const safeName = (what: string) =>
  v.pipe(
    v.string(),
    v.regex(
      SAFE_NAME_PATTERN,
      `${what} must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting and ending with a letter or digit`,
    ),
    v.check((s) => !s.includes('..'), `${what} must not contain '..'`),
    v.description(`${what}: 1-63 characters of a-z, 0-9, '.', '_', '-'; starts and ends with a letter or digit.`),
  );

export const workloadId = safeName('workload id');

export const positiveInt = (what: string) =>
  v.pipe(v.number(), v.integer(`${what} must be an integer`), v.minValue(1, `${what} must be at least 1`));

export const nonNegativeInt = (what: string) =>
  v.pipe(v.number(), v.integer(`${what} must be an integer`), v.minValue(0, `${what} must not be negative`));

export const port = (what: string) =>
  v.pipe(
    v.number(),
    v.integer(`${what} must be an integer`),
    v.minValue(1, `${what} must be between 1 and 65535`),
    v.maxValue(65535, `${what} must be between 1 and 65535`),
  );

export const nonEmptyString = (what: string, max = 4096) =>
  v.pipe(v.string(), v.minLength(1, `${what} must not be empty`), v.maxLength(max, `${what} is longer than ${max}`));

/** Label keys as Docker and Kubernetes accept them; our own prefix is reserved. */
export const labelKey = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$/, 'label key has characters outside A-Z a-z 0-9 . _ / -'),
  v.check((k) => !k.startsWith('dev.persys.'), "label keys under 'dev.persys.' are reserved for the agent"),
);

export const envName = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'environment variable name must start with a letter or _ and hold no = or spaces'),
  v.maxLength(256, 'environment variable name is longer than 256'),
);

export const duration = (what: string) =>
  v.pipe(v.number(), v.minValue(0, `${what} must not be negative`), v.maxValue(86400 * 7, `${what} is over a week`));

export const retryPolicy = v.pipe(
  v.strictObject({
    maxAttempts: v.pipe(
      v.optional(positiveInt('retry.maxAttempts')),
      v.description('Attempts before the workload is Failed with gaveUp=true (transient errors only).'),
    ),
    initialDelaySeconds: v.pipe(v.optional(duration('retry.initialDelaySeconds')), v.description('First backoff delay.')),
    maxDelaySeconds: v.pipe(v.optional(duration('retry.maxDelaySeconds')), v.description('Backoff cap.')),
    multiplier: v.pipe(
      v.optional(v.pipe(v.number(), v.minValue(1, 'retry.multiplier must be at least 1'), v.maxValue(10, 'retry.multiplier must be at most 10'))),
      v.description('Growth factor between attempts (exponential backoff with full jitter).'),
    ),
  }),
  v.description('Retry policy for transient failures; missing keys take the config defaults.'),
);
export type RetryPolicy = v.InferOutput<typeof retryPolicy>;

const d = v.description;

const revision = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9._-]{1,64}$/, 'revision must be 1-64 characters of A-Z a-z 0-9 . _ -'),
  d('Publisher-chosen revision; a change forces a recreate even when the spec is equal.'),
);

const desiredStateValue = v.pipe(
  v.optional(v.picklist(['running', 'stopped'], 'desiredState must be running or stopped')),
  d('running (default) or stopped. stopped keeps the workload, stopped.'),
);

/** The fields every workload has, whatever its type. */
export const workloadFields = {
  id: v.pipe(workloadId, d('Unique workload id on this node.')),
  revision: v.optional(revision),
  desiredState: desiredStateValue,
  retry: v.pipe(v.optional(retryPolicy), d('Retry policy for transient failures.')),
  retryToken: v.pipe(
    v.optional(v.pipe(v.string(), v.maxLength(128, 'retryToken is longer than 128'))),
    d('Changing it restarts the retry budget of a failed workload.'),
  ),
  update: v.pipe(v.optional(updatePolicy), d('Maintenance window and update locks for updates that restart the workload (docs/updates.md).')),
};

/** A workload schema of one type: the common fields, the type literal and that type's spec schema. */
export function workloadSchema<T extends string, S extends v.GenericSchema>(type: T, spec: S, about: { type: string; spec: string }) {
  return v.strictObject({
    ...workloadFields,
    type: v.pipe(v.literal(type), d(about.type)),
    spec: v.pipe(spec, d(about.spec)),
  });
}
