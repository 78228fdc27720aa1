import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { pidAlive, syncDir, tempFileFor } from '../util/atomic-write.js';

export const LOCK_FILE = 'agent.lock';

/** What the lock file holds: enough to tell a live holder from a dead one whose pid was reused. */
interface LockOwner {
  pid: number;
  /** Process start time (Linux: clock ticks since boot, /proc/<pid>/stat field 22); null elsewhere. */
  startTime: string | null;
  acquiredAt: string;
}

/** Another agent holds the state dir. `persys-agent run` exits 2 with this message. */
export class StateDirLockedError extends Error {
  constructor(
    readonly lockFile: string,
    readonly holderPid: number,
  ) {
    super(`another persys-agent (pid ${holderPid}) is running with this state dir: it holds ${lockFile}; stop it first, or use another stateDir`);
    this.name = 'StateDirLockedError';
  }
}

/** A process's start time, which changes when its pid is reused. null when it cannot be read (not Linux, gone). */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function parseOwner(text: string): LockOwner | null {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    return typeof o.pid === 'number' && Number.isInteger(o.pid) ? { pid: o.pid, startTime: o.startTime ?? null, acquiredAt: o.acquiredAt ?? '' } : null;
  } catch {
    return null;
  }
}

/** The holder is gone: its pid does not exist, or exists with another start time (reused). */
function isStale(owner: LockOwner | null): boolean {
  if (owner === null) return true; // unreadable: never written by a live agent (the file appears complete, by link())
  if (!pidAlive(owner.pid)) return true;
  if (owner.startTime === null) return false;
  const now = processStartTime(owner.pid);
  return now !== null && now !== owner.startTime;
}

export interface StateDirLock {
  readonly file: string;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

/**
 * Takes the state dir for this process: `<stateDir>/agent.lock`, created with link(2) from a fully
 * written temp file, so it appears atomically and complete (a crash never leaves an empty lock) and
 * exactly one of two racing agents wins. A lock whose holder is dead (or whose pid was reused, told
 * by the process start time) is stale and taken over; a live holder makes this throw
 * StateDirLockedError naming its pid. Taken before anything in the dir is read or written.
 * `plan` and `status` never take it: they only read.
 */
export async function acquireStateDirLock(stateDir: string): Promise<StateDirLock> {
  await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = join(stateDir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, startTime: processStartTime(process.pid), acquiredAt: new Date().toISOString() };
  const text = `${JSON.stringify(me)}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const tmp = tempFileFor(file);
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(tmp, 'wx', 0o600);
      await fh.writeFile(text);
      await fh.sync();
    } catch (err) {
      // A full disk (ENOSPC) must not leave a partial temp file behind for the next start to sweep.
      await fh?.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      // Name the file: a bare "ENOSPC: no space left on device, write" at start does not say where.
      const e = err as NodeJS.ErrnoException;
      throw Object.assign(new Error(`cannot write the state dir lock ${file}: ${e.message}`, { cause: err }), { code: e.code });
    }
    await fh.close();
    try {
      await fsp.link(tmp, file);
      await fsp.rm(tmp, { force: true });
      await syncDir(stateDir);
      return lockHandle(file, text);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let current: string;
    try {
      current = await fsp.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
      throw err;
    }
    const owner = parseOwner(current);
    if (owner?.pid === process.pid && owner.startTime === me.startTime) return lockHandle(file, current);
    if (!isStale(owner)) throw new StateDirLockedError(file, owner?.pid ?? -1);
    // Stale: move it to a name of our own, then make sure what we moved is the stale one we judged
    // (a racing agent may have taken over in between); if not, put it back and look again.
    const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await fsp.rename(file, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const moved = await fsp.readFile(aside, 'utf8').catch(() => '');
    if (moved !== current) await fsp.link(aside, file).catch(() => undefined);
    await fsp.rm(aside, { force: true });
  }
  const owner = parseOwner(await fsp.readFile(file, 'utf8').catch(() => ''));
  throw new StateDirLockedError(file, owner?.pid ?? -1);
}

function lockHandle(file: string, text: string): StateDirLock {
  let released = false;
  return {
    file,
    release: async () => {
      if (released) return;
      released = true;
      // Only our own lock: never remove one a successor took after a stale judgement.
      const now = await fsp.readFile(file, 'utf8').catch(() => null);
      if (now === text) await fsp.rm(file, { force: true });
    },
  };
}
