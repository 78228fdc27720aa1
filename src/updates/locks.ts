import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanGate } from '../reconcile/planner.js';
import { retryResetKey } from '../reconcile/records.js';
import type { WorkloadBase } from '../runtimes/runtime.js';
import { isUnder } from '../spec/desired-state.js';
import { updatePolicyOf } from '../spec/maintenance.js';
import { held, isRestartingUpdate } from './restart.js';
import type { UpdateState } from './state.js';

/*
 * Update locks (docs/updates.md): while <stateDir>/locks/<workloadId>.lock exists, or the lock file
 * the workload names inside one of its mounts (update.lockFile, balena's convention), a restarting
 * update waits. update.lockTimeoutSeconds bounds the wait; update.onLockTimeout says what then.
 */

/** How often a held update looks at its lock again. */
export const LOCK_RECHECK_MS = 5_000;

export interface LockFile {
  path: string;
  /** Host locks only: a pid in the file is checked (a lock file inside a container names a pid of the container's namespace). */
  checkPid: boolean;
}

/** Where a workload's lock files are on the host. */
export function lockFilesOf(w: WorkloadBase, o: { stateDir: string; volumeDir: (name: string) => string | undefined }): LockFile[] {
  const out: LockFile[] = [{ path: join(o.stateDir, 'locks', `${w.id}.lock`), checkPid: true }];
  const file = updatePolicyOf(w).lockFile;
  if (file === undefined || w.type !== 'container') return out;
  const mounts = (w.spec as { volumes?: { type: string; source?: string; target: string }[] }).volumes ?? [];
  // The deepest mount that holds the file is the one the container sees it in.
  const m = mounts.filter((x) => (x.type === 'bind' || x.type === 'volume') && isUnder(file, x.target)).sort((a, b) => b.target.length - a.target.length)[0];
  if (!m?.source) return out;
  const rest = file.slice(m.target.replace(/\/$/, '').length + 1);
  const root = m.type === 'bind' ? m.source : o.volumeDir(m.source);
  if (root !== undefined) out.push({ path: join(root, rest), checkPid: false });
  return out;
}

export type LockProbe = { held: false } | { held: true; since: Date } | { held: false; stale: { pid: number } };

/** Whether a lock file holds; a host lock naming a pid that is gone is stale. */
export function probeLock(f: LockFile): LockProbe {
  let mtime: Date;
  try {
    const st = statSync(f.path);
    if (!st.isFile()) return { held: false };
    mtime = st.mtime;
  } catch {
    return { held: false };
  }
  if (f.checkPid) {
    let text = '';
    try {
      text = readFileSync(f.path, 'utf8').slice(0, 256);
    } catch {
      // Unreadable but there: it holds.
    }
    const m = /^\s*(?:pid\s*[=:]\s*)?(\d{1,10})\b/i.exec(text);
    const pid = m ? Number(m[1]) : Number.NaN;
    if (Number.isSafeInteger(pid) && pid > 0 && !processExists(pid)) return { held: false, stale: { pid } };
  }
  return { held: true, since: mtime };
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, it is only not ours to signal.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface LocksGateOptions {
  stateDir: string;
  /** The host directory of a named volume (Docker: <dataRoot>/volumes/<name>/_data), when known. */
  volumeDir: (name: string) => string | undefined;
  state: UpdateState;
  warn: (fields: Record<string, unknown>, msg: string) => void;
}

export function locksGate(o: LocksGateOptions): PlanGate {
  return {
    name: 'update-lock',
    check(step, record, now) {
      if (!isRestartingUpdate(step, record)) {
        if (step.kind !== 'wait' || !step.hold) o.state.clearLockWait(step.workloadId);
        return step;
      }
      let holding: { path: string; since: Date } | undefined;
      for (const f of lockFilesOf(step.workload, o)) {
        const p = probeLock(f);
        if ('stale' in p) {
          warnOnce(o, f.path, p.stale.pid);
          continue;
        }
        if (p.held) {
          holding = { path: f.path, since: p.since };
          break;
        }
      }
      if (!holding) {
        o.state.clearLockWait(step.workloadId);
        return step;
      }
      const u = updatePolicyOf(step.workload);
      const since = o.state.lockWaitSince(step.workloadId, retryResetKey(step.workload, step.specHash), now);
      const recheck = now.getTime() + LOCK_RECHECK_MS;
      if (u.lockTimeoutSeconds !== undefined) {
        const deadline = since.getTime() + u.lockTimeoutSeconds * 1000;
        if (deadline <= now.getTime()) {
          const what = `update lock ${holding.path} still held after update.lockTimeoutSeconds=${u.lockTimeoutSeconds} (waiting since ${since.toISOString()})`;
          if ((u.onLockTimeout ?? 'proceed') === 'proceed') {
            o.warn({ workloadId: step.workloadId, lock: holding.path }, `${what}; updating anyway (onLockTimeout: proceed)`);
            return { ...step, reason: `${step.reason}; ${what}, updating anyway` };
          }
          const { kind: _k, reason: _r, ...rest } = step;
          return { ...rest, kind: 'deny', code: 'UPDATE_LOCKED', violations: [what], reason: `UPDATE_LOCKED: ${what}` };
        }
        return held(step, { waiting: 'update-lock', until: new Date(Math.min(recheck, deadline)).toISOString(), why: `waiting for update lock ${holding.path} (waiting since ${since.toISOString()}, at most ${u.lockTimeoutSeconds} s)` });
      }
      return held(step, { waiting: 'update-lock', until: new Date(recheck).toISOString(), why: `waiting for update lock ${holding.path} (waiting since ${since.toISOString()})` });
    },
  };
}

const warned = new Set<string>();
function warnOnce(o: LocksGateOptions, path: string, pid: number): void {
  const k = `${path}\u0000${pid}`;
  if (warned.has(k)) return;
  if (warned.size > 1000) warned.clear();
  warned.add(k);
  o.warn({ lock: path, pid }, `ignoring stale update lock ${path}: process ${pid} is gone`);
}
