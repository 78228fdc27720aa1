/**
 * /readyz: is this agent doing its job? One check per component, each with a reason a person can act
 * on. Pure: the agent passes in what it knows (cached health, the store's state, the last pull), so
 * a readiness probe never waits on an engine or the network.
 */
import type { HealthEntry } from './workload-stats.js';

export interface ReadinessCheck {
  ok: boolean;
  reason: string;
}

export interface ReadinessInput {
  now: number;
  store: { writable: boolean; lastError?: string | null };
  /** Runtimes this agent runs (enabled in config and built in), with their newest known health. */
  runtimes: { name: string; health: HealthEntry | undefined; required?: boolean }[];
  /** Runtimes known to the agent but switched off or not built in, with why. */
  absentRuntimes: { name: string; reason: string }[];
  lastPullSuccessAt: string | null;
  lastPullError: { code: string; message: string } | null;
  pollIntervalSeconds: number;
  longPollSeconds: number;
  /** Node conditions (src/resources): any that is on makes `resources` not ready, since nothing new is admitted. */
  conditions?: readonly { type: string; status: boolean; reason: string }[];
}

/** A pull is fresh while it is younger than this: three poll intervals, plus a long-poll hold. */
export function pullMaxAgeMs(pollIntervalSeconds: number, longPollSeconds: number): number {
  return (3 * pollIntervalSeconds + longPollSeconds) * 1000;
}

export function computeReadiness(input: ReadinessInput): Record<string, ReadinessCheck> {
  const checks: Record<string, ReadinessCheck> = {
    store: input.store.writable
      ? { ok: true, reason: 'writable' }
      : { ok: false, reason: `last write failed${input.store.lastError ? `: ${input.store.lastError}` : ''}; retrying` },
  };
  for (const { name, health, required = true } of input.runtimes) {
    const check = health ? { ok: health.up, reason: health.up ? 'up' : `down: ${health.reason}` } : { ok: false, reason: 'not checked yet' };
    // An optional runtime that nothing needs (libvirt on a container-only host) does not make the node unready.
    checks[name] = !check.ok && !required ? { ok: true, reason: `${check.reason} (not required: no desired workload needs it)` } : check;
  }
  for (const { name, reason } of input.absentRuntimes) checks[name] ??= { ok: true, reason };

  const maxAgeMs = pullMaxAgeMs(input.pollIntervalSeconds, input.longPollSeconds);
  const last = input.lastPullSuccessAt;
  const t = last === null ? Number.NaN : Date.parse(last);
  if (!Number.isFinite(t)) {
    checks.source = { ok: false, reason: `no successful pull yet${input.lastPullError ? ` (${input.lastPullError.code}: ${input.lastPullError.message})` : ''}` };
  } else {
    const age = input.now - t;
    const ok = age <= maxAgeMs;
    checks.source = {
      ok,
      reason: ok
        ? `last successful pull ${Math.round(age / 1000)} s ago`
        : `last successful pull ${Math.round(age / 1000)} s ago, older than ${Math.round(maxAgeMs / 1000)} s${input.lastPullError ? ` (${input.lastPullError.code}: ${input.lastPullError.message})` : ''}`,
    };
  }
  if (input.conditions) {
    const on = input.conditions.filter((c) => c.status);
    checks.resources = on.length === 0
      ? { ok: true, reason: 'no MemoryPressure, DiskPressure or PIDPressure' }
      : { ok: false, reason: `${on.map((c) => `${c.type}: ${c.reason}`).join('; ')}; new workloads are not admitted (running ones keep running)` };
  }
  return checks;
}
