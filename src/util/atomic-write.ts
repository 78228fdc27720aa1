import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * The one way the agent writes a file (store, desired document, status file, node id, lock):
 * temp file in the same directory with the final mode, fsync, rename over, fsync the directory.
 * A reader, or a restart after a crash or power loss, sees the old content or the new, never a mix.
 *
 * Temp files are named `.<name>.tmp-<pid>-<hex>` so the startup sweep (`sweepStaleTempFiles`) can
 * tell ours from anything else in the directory and a live process's from a dead one's.
 * `mode` is applied with fchmod as well: `open(..., mode)` is masked by the umask.
 */
export interface AtomicWriteOptions {
  /** Default 0600: everything the agent writes may name hosts, IPs or secrets. */
  mode?: number;
  /** fsync file and directory (default true; only tests and benches turn it off). */
  fsync?: boolean;
}

const TEMP_RE = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}$/;

export const tempFileFor = (file: string): string => join(dirname(file), `.${basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);

export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const mode = opts.mode ?? 0o600;
  const doSync = opts.fsync ?? true;
  const tmp = tempFileFor(file);
  // 'wx': a name collision (pid reuse + same random) must fail, never write into someone's file.
  const fh = await fsp.open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(data);
    if (doSync) await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (doSync) await syncDir(dirname(file));
}

/** Makes a rename durable. Some file systems refuse fsync on a directory; that is not worth failing a write over. */
export async function syncDir(dir: string): Promise<void> {
  let dh: fsp.FileHandle | undefined;
  try {
    dh = await fsp.open(dir, 'r');
    await dh.sync();
  } catch {
    // EINVAL/EISDIR/EPERM on some platforms and file systems: best effort.
  } finally {
    await dh?.close().catch(() => undefined);
  }
}

/** True when a process with this pid exists (EPERM: it exists but is not ours to signal). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes temp files this helper left in `dir` for one of `names` (e.g. `state.json`) when their
 * writer is gone: a crash mid-write. Anything else in the directory, and the temp files of a live
 * writer, are left alone. Also removes the temp names of the landed version (`state.json.tmp`),
 * matched by `legacy`. Call it at start, under the state-dir lock. Returns the names removed.
 */
export async function sweepStaleTempFiles(dir: string, names: readonly string[], legacy?: RegExp): Promise<string[]> {
  let entries: string[];
  try {
    entries = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const own = new Set(names);
  const stale = entries.filter((n) => {
    if (legacy?.test(n)) return true;
    const m = TEMP_RE.exec(n);
    if (!m || !own.has(m[1] as string)) return false;
    const pid = Number(m[2]);
    // Our own pid: a previous incarnation (pid reuse in a container); the sweep runs before our first write.
    return pid === process.pid || !pidAlive(pid);
  });
  await Promise.all(stale.map((n) => fsp.rm(join(dir, n), { force: true })));
  return stale;
}
