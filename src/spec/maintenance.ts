import { Cron } from 'croner';
import * as v from 'valibot';

/*
 * Maintenance windows and per-workload update settings (docs/updates.md). Shared by the desired-state
 * document (maintenance.windows, workloads[].update) and the agent config (maintenance.windows), so
 * a bad cron or time zone is refused with the same words and its path wherever it is written.
 */

const d = v.description;

/** Why a cron pattern is refused (croner's own message), or undefined when croner takes it. */
export function cronProblem(pattern: string): string | undefined {
  try {
    // No callback: croner only parses, nothing is scheduled.
    new Cron(pattern, { timezone: 'UTC' });
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Whether the IANA time zone name is one this Node (its ICU data) knows. */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const maintenanceWindow = v.strictObject({
  cron: v.pipe(
    v.string('cron must be a string'),
    v.minLength(1, 'cron must not be empty'),
    v.maxLength(256, 'cron is longer than 256'),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const problem = cronProblem(dataset.value);
      if (problem !== undefined) addIssue({ message: `cron "${dataset.value}" is not a valid cron pattern: ${problem}` });
    }),
    d('When a window opens: a cron pattern (5 fields, or 6 with seconds first), read in `timezone`. "0 2 * * *" opens at 02:00 every day.'),
  ),
  durationMinutes: v.pipe(
    v.number('durationMinutes must be a number'),
    v.integer('durationMinutes must be an integer'),
    v.minValue(1, 'durationMinutes must be at least 1'),
    v.maxValue(7 * 24 * 60, 'durationMinutes must be at most 10080 (a week)'),
    d('How long a window stays open after each start.'),
  ),
  timezone: v.pipe(
    v.optional(
      v.pipe(
        v.string('timezone must be a string'),
        v.check((tz) => isTimeZone(tz), 'timezone is not a time zone this host knows (an IANA name such as Europe/Berlin, or UTC)'),
      ),
    ),
    d('IANA time zone the cron pattern is read in (default UTC). Across a DST change a window opens at the wall-clock time of the zone.'),
  ),
});
export type MaintenanceWindow = v.InferOutput<typeof maintenanceWindow>;

export const maintenanceWindows = v.pipe(v.array(maintenanceWindow), v.maxLength(64, 'windows has more than 64 entries'));

const lockFilePath = v.pipe(
  v.string('update.lockFile must be a string'),
  v.startsWith('/', 'update.lockFile must be an absolute path inside the container'),
  v.maxLength(4096, 'update.lockFile is longer than 4096'),
  v.check((p) => !p.split('/').includes('..'), "update.lockFile must not contain '..'"),
  v.check((p) => !p.includes('\0'), 'update.lockFile must not contain NUL'),
);

export const updatePolicy = v.pipe(
  v.strictObject({
    window: v.pipe(
      v.optional(v.picklist(['any', 'maintenance'], 'update.window must be any or maintenance')),
      d('maintenance: an update that restarts the running workload waits for a maintenance window; any: applied at once. Default maintenance when the node has windows, else any.'),
    ),
    forceToken: v.pipe(
      v.optional(v.pipe(v.string('update.forceToken must be a string'), v.maxLength(128, 'update.forceToken is longer than 128'))),
      d('A value other than the one in force when the workload was last updated opens the window for this workload now (like retryToken).'),
    ),
    lockTimeoutSeconds: v.pipe(
      v.optional(v.pipe(v.number('update.lockTimeoutSeconds must be a number'), v.minValue(0, 'update.lockTimeoutSeconds must not be negative'), v.maxValue(86400 * 30, 'update.lockTimeoutSeconds is over 30 days'))),
      d('How long an update waits for an update lock (default: as long as the lock exists). Then onLockTimeout decides.'),
    ),
    onLockTimeout: v.pipe(
      v.optional(v.picklist(['proceed', 'fail'], 'update.onLockTimeout must be proceed or fail')),
      d('After lockTimeoutSeconds: proceed (default) applies the update despite the lock; fail refuses it (UPDATE_LOCKED) and the previous revision keeps running.'),
    ),
    lockFile: v.pipe(
      v.optional(lockFilePath),
      d("Container workloads: an update lock inside a mount of the workload (balena's convention, e.g. /tmp/balena/updates.lock); while the file exists a restarting update waits. Must lie under a bind or volume mount's target."),
    ),
  }),
  d('How updates that restart this workload are applied: maintenance window, update locks (docs/updates.md). Not part of the spec hash: changing it never restarts the workload.'),
);
export type UpdatePolicy = v.InferOutput<typeof updatePolicy>;

/** A workload's update settings; absent or malformed (never the case after validation) reads as none. */
export function updatePolicyOf(w: object): UpdatePolicy {
  const u = (w as { update?: unknown }).update;
  return u !== undefined && v.is(updatePolicy, u) ? u : {};
}
