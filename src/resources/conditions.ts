/**
 * Node conditions as the kubelet computes them (MemoryPressure, DiskPressure, PIDPressure), with its
 * hysteresis: a condition turns on as soon as one sample is over a threshold, and turns off only
 * after no sample was over any of its thresholds for the transition period
 * (evictionPressureTransitionPeriod, default 5 minutes). So a signal that hovers at the threshold
 * does not flap admissions on and off. The agent never evicts: a condition stops new admissions,
 * it never kills what runs.
 */
import type { FilesystemFacts, PidFacts } from './capacity.js';
import { formatBytes } from './units.js';

export const CONDITION_TYPES = ['MemoryPressure', 'DiskPressure', 'PIDPressure'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

export interface PressureThresholds {
  memoryAvailableBytes: number;
  nodefsAvailablePercent: number;
  nodefsInodesFreePercent: number;
  imagefsAvailablePercent: number;
  pidAvailablePercent: number;
  transitionPeriodSeconds: number;
}

export interface PressureSample {
  memoryAvailableBytes?: number | undefined;
  /** Roles: "state" (nodefs: the state dir's file system), "imagefs" (a runtime's data root: Docker's DockerRootDir, libvirt's storage dir). */
  filesystems: readonly FilesystemFacts[];
  pids?: PidFacts | undefined;
}

export interface NodeCondition {
  type: ConditionType;
  status: boolean;
  /** When status last changed (ISO). */
  lastTransitionTime: string;
  /** Why it is on (the signals over their thresholds), or why it is off / still on while clearing. */
  reason: string;
}

const pct = (part: number, whole: number): number => (whole > 0 ? (100 * part) / whole : 100);
const fmtPct = (n: number): string => `${n.toFixed(1).replace(/\.0$/, '')}%`;

/** The signals over their thresholds in one sample, per condition (empty: none). */
export function signalsOver(sample: PressureSample, t: PressureThresholds): Record<ConditionType, string[]> {
  const out: Record<ConditionType, string[]> = { MemoryPressure: [], DiskPressure: [], PIDPressure: [] };
  const mem = sample.memoryAvailableBytes;
  if (mem !== undefined && mem < t.memoryAvailableBytes) {
    out.MemoryPressure.push(`memory.available ${formatBytes(mem)} < ${formatBytes(t.memoryAvailableBytes)}`);
  }
  for (const f of sample.filesystems) {
    const fsName = f.role === 'state' ? 'nodefs' : f.role === 'imagefs' ? 'imagefs' : undefined;
    if (fsName === undefined) continue;
    const avail = pct(f.availBytes, f.sizeBytes);
    const limit = fsName === 'nodefs' ? t.nodefsAvailablePercent : t.imagefsAvailablePercent;
    if (avail < limit) out.DiskPressure.push(`${fsName}.available ${fmtPct(avail)} < ${fmtPct(limit)} (${formatBytes(f.availBytes)} of ${formatBytes(f.sizeBytes)} free on ${f.path})`);
    // tmpfs and some file systems report no inode table (files 0): nothing to run out of.
    if (fsName === 'nodefs' && f.inodes > 0) {
      const free = pct(f.inodesFree, f.inodes);
      if (free < t.nodefsInodesFreePercent) out.DiskPressure.push(`nodefs.inodesFree ${fmtPct(free)} < ${fmtPct(t.nodefsInodesFreePercent)} (${f.inodesFree} of ${f.inodes} inodes free on ${f.path})`);
    }
  }
  const p = sample.pids;
  if (p && t.pidAvailablePercent > 0 && p.max > 0) {
    const free = pct(Math.max(0, p.max - p.running), p.max);
    if (free < t.pidAvailablePercent) out.PIDPressure.push(`pid.available ${fmtPct(free)} < ${fmtPct(t.pidAvailablePercent)} (${p.running} of ${p.max} in use)`);
  }
  return out;
}

interface TrackState {
  status: boolean;
  lastTransitionMs: number;
  /** Last sample that was over a threshold. */
  lastPressureMs: number | null;
  lastSignals: string[];
  /** Whether the newest sample was over a threshold. */
  overNow: boolean;
}

/** Hysteresis over samples; the clock is given with each sample, so tests drive it. */
export class ConditionTracker {
  private readonly state = new Map<ConditionType, TrackState>();

  constructor(private readonly thresholds: PressureThresholds) {}

  /** Feeds one sample; returns the conditions whose status changed. */
  observe(sample: PressureSample, nowMs: number): ConditionType[] {
    const over = signalsOver(sample, this.thresholds);
    const periodMs = this.thresholds.transitionPeriodSeconds * 1000;
    const changed: ConditionType[] = [];
    for (const type of CONDITION_TYPES) {
      const s = this.state.get(type) ?? { status: false, lastTransitionMs: nowMs, lastPressureMs: null, lastSignals: [], overNow: false };
      const signals = over[type];
      s.overNow = signals.length > 0;
      if (signals.length > 0) {
        s.lastPressureMs = nowMs;
        s.lastSignals = signals;
        if (!s.status) {
          s.status = true;
          s.lastTransitionMs = nowMs;
          changed.push(type);
        }
      } else if (s.status && s.lastPressureMs !== null && nowMs - s.lastPressureMs >= periodMs) {
        s.status = false;
        s.lastTransitionMs = nowMs;
        changed.push(type);
      }
      this.state.set(type, s);
    }
    return changed;
  }

  conditions(nowMs: number): NodeCondition[] {
    const periodS = this.thresholds.transitionPeriodSeconds;
    return CONDITION_TYPES.map((type) => {
      const s = this.state.get(type);
      if (!s) return { type, status: false, lastTransitionTime: new Date(nowMs).toISOString(), reason: 'not sampled yet' };
      const at = new Date(s.lastTransitionMs).toISOString();
      if (!s.status) return { type, status: false, lastTransitionTime: at, reason: 'no pressure' };
      const reason = s.lastSignals.join('; ');
      if (s.overNow || s.lastPressureMs === null) return { type, status: true, lastTransitionTime: at, reason };
      const clearAt = new Date(s.lastPressureMs + periodS * 1000).toISOString();
      return { type, status: true, lastTransitionTime: at, reason: `${reason} (last seen ${new Date(s.lastPressureMs).toISOString()}; clears at ${clearAt} if it stays below the threshold)` };
    });
  }

  /** The conditions in force, with their reasons (for admission). */
  active(nowMs: number): { type: ConditionType; reason: string }[] {
    return this.conditions(nowMs)
      .filter((c) => c.status)
      .map((c) => ({ type: c.type, reason: c.reason }));
  }
}

