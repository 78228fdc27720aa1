/**
 * Files of VMs: everything libvirt is handed lives under one storage directory, whatever the spec says.
 *
 *   <root>/images/sha256-<hex>.<qcow2|raw>  base images, cached by digest (downloaded or copied in)
 *   <root>/boot/sha256-<hex>                kernels and initrds for direct boot, copied in by digest
 *   <root>/vms/<domain>/disk-<name>.qcow2   the VM's disks (new, or copy-on-write overlays on a base)
 *   <root>/vms/<domain>/seed.iso            the cloud-init NoCloud seed
 *
 * Host paths a spec names (boot.kernel, boot.initrd, disks[].image.path) must resolve (symlinks
 * followed) under libvirt.allowedPathPrefixes, and are copied in rather than handed to libvirt: libvirt
 * relabels the files a domain uses, and a publisher must not be able to make it touch, or a guest read,
 * anything else on the host. Base images are checked with `qemu-img info -f <format>`: one that points
 * at a backing or external data file is refused for the same reason.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, lstat, mkdir, readdir, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';

import { WorkloadError } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import { runTool, ToolError } from './exec.js';

export type ImageFormat = 'qcow2' | 'raw';

export type ImageSource = { path: string; sha256?: string | undefined; format?: ImageFormat | undefined } | { url: string; sha256: string; format?: ImageFormat | undefined };

export interface CachedImage {
  path: string;
  format: ImageFormat;
  /** "sha256:<hex>" */
  digest: string;
}

export interface VmStorageOptions {
  root: string;
  allowedPathPrefixes: readonly string[];
  qemuImg: string;
  timeoutMs: number;
  downloadTimeoutMs: number;
  logger: Logger;
  /** undici dispatcher for image downloads (tests pass one that trusts their CA). */
  dispatcher?: Dispatcher;
  /**
   * Directories above `root` that belong to the agent (its state dir, 0700) and may be opened for
   * traversal (o+x, no listing) so QEMU, running as libvirt-qemu, can reach the disks below them.
   * Only done when the agent runs as root, i.e. when QEMU runs as another user.
   */
  ownedAncestors?: readonly string[];
}

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Joins fixed, validated name parts under `root`; anything that could leave it throws. */
export function confine(root: string, ...parts: string[]): string {
  for (const p of parts) {
    if (!PART.test(p) || p.includes('..')) throw new WorkloadError('INVALID_SPEC', `'${p}' cannot be used as a file name under the storage directory`);
  }
  const base = resolve(root);
  const full = resolve(base, ...parts);
  if (full !== base && !full.startsWith(base + sep)) throw new WorkloadError('INVALID_SPEC', `path escapes the storage directory: ${full}`);
  return full;
}

/** Whether `path` is `prefix` or inside it (both absolute and normalised). */
export function isUnder(path: string, prefix: string): boolean {
  const p = resolve(prefix);
  return path === p || path.startsWith(p.endsWith(sep) ? p : p + sep);
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'string' ? (err as { code: string }).code : undefined;
}

function fsError(err: unknown, operation: string): WorkloadError {
  if (err instanceof WorkloadError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (errnoOf(err) === 'ENOSPC') return new WorkloadError('NO_SPACE', message, { cause: err, details: { operation } });
  if (err instanceof Error && err.name === 'AbortError') return new WorkloadError('TIMEOUT', message, { cause: err, details: { operation } });
  return new WorkloadError('INTERNAL', message, { cause: err, details: { operation } });
}

function hexOf(digest: string): string {
  return digest.replace(/^sha256:/, '');
}

function hashingStream(hash: ReturnType<typeof createHash>, onBytes: (n: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
}

export class VmStorage {
  readonly root: string;
  private readonly inflight = new Map<string, Promise<CachedImage>>();
  private readonly bootInflight = new Map<string, Promise<string>>();
  /** realpath|size|mtime|ino -> digest, so a local file is hashed once per agent run. */
  private readonly localDigests = new Map<string, string>();
  private initialized: Promise<void> | undefined;

  constructor(private readonly opts: VmStorageOptions) {
    if (!isAbsolute(opts.root)) throw new Error(`libvirt storage directory must be absolute: ${opts.root}`);
    this.root = resolve(opts.root);
  }

  /**
   * Creates the directory tree. Directories are 0711: QEMU (libvirt-qemu) must reach the files by
   * name, nobody needs to list them. Files hold their own modes (disks and seeds 0600, relabelled by
   * libvirt while the domain runs; base images and boot files 0644, read-only to guests).
   */
  init(): Promise<void> {
    this.initialized ??= (async () => {
      for (const d of [this.root, join(this.root, 'images'), join(this.root, 'boot'), join(this.root, 'vms')]) {
        await mkdir(d, { recursive: true, mode: 0o711 });
        await chmod(d, 0o711);
      }
      if (process.getuid?.() === 0) await this.openAncestors();
    })().catch((err: unknown) => {
      this.initialized = undefined;
      throw fsError(err, 'storage init');
    });
    return this.initialized;
  }

  /**
   * Puts back what QEMU needs to reach existing VM files: the tree's directories 0711 and the path to
   * `root` traversable. Not memoized, unlike init(): it runs at start-up and before every VM start,
   * because the state dir's mode may have been reset while the agent was down (systemd's
   * StateDirectory= sets 0700 on every service start, a restore from backup, an operator's chmod).
   */
  async restoreAccess(): Promise<void> {
    if (!(await stat(this.root).catch(() => undefined))) return;
    try {
      const dirs = [this.root, join(this.root, 'images'), join(this.root, 'boot'), join(this.root, 'vms')];
      const vms = await readdir(join(this.root, 'vms'), { withFileTypes: true }).catch(() => []);
      for (const e of vms) if (e.isDirectory()) dirs.push(join(this.root, 'vms', e.name));
      for (const d of dirs) {
        const st = await stat(d).catch(() => undefined);
        if (st && (st.mode & 0o7777) !== 0o711) await chmod(d, 0o711);
      }
      if (process.getuid?.() === 0) await this.openAncestors();
    } catch (err) {
      throw fsError(err, 'storage access');
    }
  }

  /** Makes the path to `root` traversable for QEMU's user: owned ancestors get o+x, others are reported. */
  private async openAncestors(): Promise<void> {
    const owned = new Set((this.opts.ownedAncestors ?? []).map((p) => resolve(p)));
    for (let d = dirname(this.root); ; d = dirname(d)) {
      const st = await stat(d).catch(() => undefined);
      if (st && (st.mode & 0o001) === 0) {
        if (owned.has(d)) {
          await chmod(d, (st.mode & 0o7777) | 0o001);
          this.opts.logger.info({ dir: d, mode: `0${((st.mode & 0o7777) | 0o001).toString(8)}` }, 'made the state directory traversable (not listable) so QEMU can reach VM disks');
        } else {
          this.opts.logger.warn(
            { dir: d, storageDir: this.root },
            'QEMU (libvirt-qemu) cannot traverse this directory above libvirt.storageDir: VMs will fail to start; give it o+x or choose another libvirt.storageDir',
          );
        }
      }
      if (d === dirname(d)) break;
    }
  }

  vmDir(domain: string): string {
    return confine(this.root, 'vms', domain);
  }

  diskPath(domain: string, diskName: string): string {
    return confine(this.root, 'vms', domain, `disk-${diskName}.qcow2`);
  }

  seedPath(domain: string): string {
    return confine(this.root, 'vms', domain, 'seed.iso');
  }

  /** The real path of a host file a spec names, if it lies under an allowed prefix; POLICY_DENIED otherwise. */
  async allowedHostFile(path: string, field: string): Promise<string> {
    if (!isAbsolute(path) || path.split('/').includes('..')) throw new WorkloadError('INVALID_SPEC', `${field} must be an absolute path without '..'`);
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      throw new WorkloadError('INVALID_SPEC', `${field} ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { field } });
    }
    const prefixes = await Promise.all(this.opts.allowedPathPrefixes.map((p) => realpath(p).catch(() => resolve(p))));
    if (!prefixes.some((p) => isUnder(real, p))) {
      throw new WorkloadError('POLICY_DENIED', `${field} ${path} (${real}) is not under libvirt.allowedPathPrefixes (${this.opts.allowedPathPrefixes.join(', ') || 'none'})`, {
        details: { field },
      });
    }
    const st = await stat(real);
    if (!st.isFile()) throw new WorkloadError('INVALID_SPEC', `${field} ${path} is not a regular file`, { details: { field } });
    return real;
  }

  private async digestOfLocal(real: string, signal?: AbortSignal): Promise<string> {
    const st = await stat(real);
    const key = `${real}|${st.size}|${st.mtimeMs}|${st.ino}`;
    const known = this.localDigests.get(key);
    if (known) return known;
    const hash = createHash('sha256');
    await pipeline(createReadStream(real), hashingStream(hash, () => undefined), discard(), { signal });
    const digest = `sha256:${hash.digest('hex')}`;
    this.localDigests.set(key, digest);
    return digest;
  }

  /** Copies `src` to `dest` atomically (temp file + rename) with `mode`, returning the sha256 of what was copied. */
  private async copyIn(src: string, dest: string, mode: number, signal?: AbortSignal): Promise<string> {
    const tmp = `${dest}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const hash = createHash('sha256');
    try {
      await pipeline(createReadStream(src), hashingStream(hash, () => undefined), createWriteStream(tmp, { mode }), { signal });
      await chmod(tmp, mode);
      await rename(tmp, dest);
      return `sha256:${hash.digest('hex')}`;
    } catch (err) {
      await rm(tmp, { force: true });
      throw fsError(err, 'copy');
    }
  }

  /** A kernel or initrd from the host, copied into <root>/boot by digest; returns the copy's path. */
  async ensureBootFile(path: string, field: string, signal?: AbortSignal): Promise<string> {
    await this.init();
    const real = await this.allowedHostFile(path, field);
    const digest = await this.digestOfLocal(real, signal).catch((err: unknown) => {
      throw fsError(err, field);
    });
    const dest = confine(this.root, 'boot', `sha256-${hexOf(digest)}`);
    let p = this.bootInflight.get(dest);
    if (!p) {
      p = (async () => {
        if (await exists(dest)) return dest;
        const got = await this.copyIn(real, `${dest}`, 0o644, signal);
        if (got !== digest) {
          await rm(dest, { force: true });
          throw new WorkloadError('INVALID_SPEC', `${field} ${path} changed while it was copied; try again`);
        }
        return dest;
      })().finally(() => this.bootInflight.delete(dest));
      this.bootInflight.set(dest, p);
    }
    return p;
  }

  /** A base image in the cache, by digest: copied from an allowed host path or downloaded over https, then checked. */
  async ensureImage(src: ImageSource, field: string, signal?: AbortSignal): Promise<CachedImage> {
    await this.init();
    const format: ImageFormat = src.format ?? 'qcow2';
    if ('url' in src) {
      const digest = `sha256:${src.sha256}`;
      return this.once(digest, format, () => this.download(src.url, digest, format, field, signal));
    }
    const real = await this.allowedHostFile(src.path, field);
    if (src.sha256 !== undefined) {
      const digest = `sha256:${src.sha256}`;
      const cached = this.cachedPath(digest, format);
      if (await exists(cached)) return { path: cached, format, digest };
    }
    const digest = await this.digestOfLocal(real, signal).catch((err: unknown) => {
      throw fsError(err, field);
    });
    if (src.sha256 !== undefined && hexOf(digest) !== src.sha256) {
      throw new WorkloadError('INVALID_SPEC', `${field} ${src.path} has sha256 ${hexOf(digest)}, the spec expects ${src.sha256}`, { details: { field } });
    }
    return this.once(digest, format, async () => {
      const dest = this.cachedPath(digest, format);
      const staged = `${dest}.staged-${randomBytes(4).toString('hex')}`;
      const got = await this.copyIn(real, staged, 0o644, signal);
      try {
        if (got !== digest) throw new WorkloadError('INVALID_SPEC', `${field} ${src.path} changed while it was copied; try again`);
        await this.checkImage(staged, format, field, signal);
        await rename(staged, dest);
      } finally {
        await rm(staged, { force: true });
      }
      this.opts.logger.info({ image: src.path, digest, format }, 'base image copied into the cache');
      return { path: dest, format, digest };
    });
  }

  private cachedPath(digest: string, format: ImageFormat): string {
    return confine(this.root, 'images', `sha256-${hexOf(digest)}.${format}`);
  }

  /** Deduplicates concurrent fills of one cache entry; a cache hit costs one stat. */
  private once(digest: string, format: ImageFormat, fill: () => Promise<CachedImage>): Promise<CachedImage> {
    const path = this.cachedPath(digest, format);
    const key = path;
    let p = this.inflight.get(key);
    if (!p) {
      p = (async () => ((await exists(path)) ? { path, format, digest } : fill()))().finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async download(url: string, digest: string, format: ImageFormat, field: string, signal?: AbortSignal): Promise<CachedImage> {
    const dest = this.cachedPath(digest, format);
    const tmp = `${dest}.download-${process.pid}-${randomBytes(4).toString('hex')}`;
    const started = Date.now();
    const deadline = AbortSignal.timeout(this.opts.downloadTimeoutMs);
    const s = signal ? AbortSignal.any([signal, deadline]) : deadline;
    const hash = createHash('sha256');
    let bytes = 0;
    this.opts.logger.info({ url: redactUrl(url), digest }, 'downloading base image');
    try {
      // Loaded here, not at start: only an image download by URL needs it.
      const { fetch } = await import('undici');
      let res: Awaited<ReturnType<typeof fetch>>;
      try {
        res = await fetch(url, { signal: s, redirect: 'follow', ...(this.opts.dispatcher ? { dispatcher: this.opts.dispatcher } : {}) });
      } catch (err) {
        throw pullError(err, url, deadline.aborted ? `no answer within ${this.opts.downloadTimeoutMs / 1000} s` : undefined);
      }
      if (!res.url.startsWith('https://')) {
        await res.body?.cancel().catch(() => undefined);
        throw new WorkloadError('IMAGE_PULL_FAILED', `${redactUrl(url)} redirected to ${redactUrl(res.url)}, which is not https`, { transient: false, details: { field } });
      }
      if (res.status !== 200 || !res.body) {
        await res.body?.cancel().catch(() => undefined);
        const message = `GET ${redactUrl(url)}: HTTP ${res.status} ${res.statusText}`;
        if (res.status === 404 || res.status === 410) throw new WorkloadError('IMAGE_NOT_FOUND', message, { details: { field, status: res.status } });
        throw new WorkloadError('IMAGE_PULL_FAILED', message, { transient: res.status >= 500 || res.status === 429 || res.status === 408, details: { field, status: res.status } });
      }
      try {
        await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), hashingStream(hash, (n) => (bytes += n)), createWriteStream(tmp, { mode: 0o644 }), { signal: s });
      } catch (err) {
        if (errnoOf(err) === 'ENOSPC') throw fsError(err, 'download');
        throw pullError(err, url, deadline.aborted ? `download did not finish within ${this.opts.downloadTimeoutMs / 1000} s` : undefined);
      }
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== digest) {
        throw new WorkloadError('IMAGE_PULL_FAILED', `${redactUrl(url)}: sha256 of the download is ${hexOf(got)}, the spec expects ${hexOf(digest)}`, {
          transient: false,
          userMessage: 'The downloaded base image does not match the sha256 in the spec.',
          details: { field },
        });
      }
      await this.checkImage(tmp, format, field, signal);
      await chmod(tmp, 0o644);
      await rename(tmp, dest);
      this.opts.logger.info({ url: redactUrl(url), digest, bytes, ms: Date.now() - started }, 'base image downloaded');
      return { path: dest, format, digest };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** `qemu-img info -f <format>`: the image must be of that format and must not point at other files. */
  async checkImage(file: string, format: ImageFormat, field: string, signal?: AbortSignal): Promise<{ virtualSize: number }> {
    let info: unknown;
    try {
      const { stdout } = await runTool(this.opts.qemuImg, ['info', '--output=json', '-f', format, file], { timeoutMs: this.opts.timeoutMs, signal, label: 'qemu-img info' });
      info = JSON.parse(stdout);
    } catch (err) {
      if (err instanceof ToolError && err.failure === 'exit') {
        throw new WorkloadError('INVALID_SPEC', `${field} is not a usable ${format} image: ${err.toolMessage}`, { cause: err, details: { field } });
      }
      throw qemuImgError(err, 'qemu-img info');
    }
    const rec = (typeof info === 'object' && info !== null ? info : {}) as Record<string, unknown>;
    const specific = rec['format-specific'] as { data?: Record<string, unknown> } | undefined;
    if (rec['backing-filename'] !== undefined || rec['full-backing-filename'] !== undefined) {
      throw new WorkloadError('INVALID_SPEC', `${field} refers to a backing file (${String(rec['backing-filename'])}); base images must be self-contained`, { details: { field } });
    }
    if (specific?.data?.['data-file'] !== undefined) {
      throw new WorkloadError('INVALID_SPEC', `${field} uses an external data file; base images must be self-contained`, { details: { field } });
    }
    const size = typeof rec['virtual-size'] === 'number' ? rec['virtual-size'] : 0;
    return { virtualSize: size };
  }

  /**
   * Creates a VM disk: an empty qcow2 of `sizeBytes`, or a qcow2 overlay on a cached base image
   * (grown to `sizeBytes` when given). The file is 0600; libvirt relabels it for QEMU while the VM runs.
   */
  async createDisk(file: string, opts: { sizeBytes?: number | undefined; base?: CachedImage | undefined }, signal?: AbortSignal): Promise<void> {
    await mkdir(dirname(file), { recursive: true, mode: 0o711 });
    await chmod(dirname(file), 0o711);
    const args = ['create', '-q', '-f', 'qcow2'];
    if (opts.base) args.push('-F', opts.base.format, '-b', opts.base.path);
    args.push(file);
    if (opts.sizeBytes !== undefined) args.push(String(opts.sizeBytes));
    try {
      await runTool(this.opts.qemuImg, args, { timeoutMs: this.opts.timeoutMs, signal, label: 'qemu-img create' });
      await chmod(file, 0o600);
    } catch (err) {
      await rm(file, { force: true });
      throw qemuImgError(err, 'qemu-img create');
    }
  }

  /** Deletes a VM's directory, keeping the files named in `keep` (retained disks). */
  async removeVmFiles(domain: string, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
    const dir = this.vmDir(domain);
    const removed: string[] = [];
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return removed;
      throw fsError(err, 'remove');
    }
    for (const e of entries) {
      const p = join(dir, e);
      if (keep.has(p)) continue;
      const st = await lstat(p).catch(() => undefined);
      if (!st) continue;
      await rm(p, { recursive: st.isDirectory(), force: true });
      removed.push(p);
    }
    if (keep.size === 0 || ![...keep].some((k) => dirname(k) === dir)) await rmdir(dir).catch(() => undefined);
    return removed;
  }

  /** Deletes one file of a VM (a disk whose base changed) if it lies in the VM's directory. */
  async removeVmFile(domain: string, file: string): Promise<void> {
    const dir = this.vmDir(domain);
    if (dirname(resolve(file)) !== dir) throw new WorkloadError('INTERNAL', `refusing to delete ${file}: not in ${dir}`);
    await rm(file, { force: true });
  }
}

/** Discards what it is given (hashing a file reads it through hashingStream into this). */
function discard(): Writable {
  return new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** The URL without user info or query (which may carry tokens), for logs and messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return '(invalid URL)';
  }
}

function pullError(err: unknown, url: string, timeoutMessage?: string): WorkloadError {
  if (err instanceof WorkloadError) return err;
  if (timeoutMessage !== undefined) return new WorkloadError('TIMEOUT', `GET ${redactUrl(url)}: ${timeoutMessage}`, { cause: err });
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  const message = `GET ${redactUrl(url)}: ${err instanceof Error ? err.message : String(err)}${cause}`;
  if (err instanceof Error && err.name === 'AbortError') return new WorkloadError('TIMEOUT', message, { cause: err });
  return new WorkloadError('IMAGE_PULL_FAILED', message, { cause: err });
}

function qemuImgError(err: unknown, operation: string): WorkloadError {
  if (err instanceof WorkloadError) return err;
  if (err instanceof ToolError) {
    if (err.failure === 'not-found') {
      return new WorkloadError('RUNTIME_UNAVAILABLE', err.message, { cause: err, userMessage: 'qemu-img is not installed on this host; VM disks cannot be created.', details: { operation } });
    }
    if (err.failure === 'timeout' || err.failure === 'aborted') return new WorkloadError('TIMEOUT', err.message, { cause: err, details: { operation } });
    if (/No space left on device/i.test(err.stderr)) return new WorkloadError('NO_SPACE', err.toolMessage, { cause: err, details: { operation } });
    return new WorkloadError('VM_DEFINE_FAILED', err.toolMessage, { cause: err, details: { operation } });
  }
  return fsError(err, operation);
}
