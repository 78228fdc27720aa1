import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { Cron } from 'croner';

import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { ObservedWorkload, Runtime, WorkloadBase } from '../runtimes/runtime.js';
import type { Store } from '../store/store.js';
import type { ImageRefEntry } from '../store/types.js';
import { diskUsage, dockerGc, statusOf, type DockerGc } from './docker.js';
import type { GcMetrics } from './metrics.js';
import { normalizeImageRef, selectGarbage, type EngineImage, type GcCandidate, type GcInput, type StrayObject, type VmFiles } from './select.js';
import { readVmFiles } from './vm-files.js';

/** Bounds of one pass: removals (one engine call or file each) and wall time. The rest waits for the next pass. */
export const MAX_REMOVALS_PER_PASS = 100;
export const PASS_TIMEOUT_MS = 60_000;
/** Removals in flight at once (images: one at a time, in order). */
export const REMOVAL_CONCURRENCY = 4;
/** Extra image rounds after measuring the disk again (see pass()). */
export const IMAGE_ROUNDS = 3;
/** Entries of `removed` kept for the status report (the counts are in metrics). */
export const REPORT_MAX_REMOVED = 50;

/** One thing a pass removed (or would remove), as the status report and `persys-agent gc` show it. */
export type GcEntry = Omit<GcCandidate, 'action'>;

export interface GcPassResult {
  at: string;
  dryRun: boolean;
  /** What asked for the pass: periodic, DiskPressure, the CLI, ... */
  trigger: string;
  durationMs: number;
  /** Engine calls made (observe lists, docker lists, removals). */
  engineCalls: number;
  /** Removed (or, in a dry run, what would be). */
  removed: GcEntry[];
  failed: (GcEntry & { error: string })[];
  freedBytes: number;
  /** Selected but left for the next pass (MAX_REMOVALS_PER_PASS or the time bound). */
  deferred: number;
  notes: string[];
}

/** The report's `gc` block: the last pass that was not a dry run. */
export interface GcReport {
  lastRunAt: string;
  removed: GcEntry[];
  freedBytes: number;
}

export interface GcDeps {
  config: Config;
  store: Store;
  runtimes: readonly Runtime[];
  nodeId: string;
  stateDir: string;
  logger: Logger;
  metrics?: GcMetrics;
  types?: TypeRegistry;
  /** A runtime's data root (from its health): Docker's is the file system image GC watches. */
  dataRootOf?: (runtime: string) => string | undefined;
  /** Test seams: the docker side, the disk figures, the clock. */
  docker?: DockerGc | null;
  disk?: (path: string) => Promise<{ usedBytes: number; availableBytes: number } | undefined>;
  now?: () => Date;
  /** Something was removed: the status report has news. */
  onChange?: () => void;
}

const entryOf = (c: GcCandidate): GcEntry => ({
  kind: c.kind,
  id: c.id,
  ...(c.name !== undefined ? { name: c.name } : {}),
  ...(c.workloadId !== undefined ? { workloadId: c.workloadId } : {}),
  reason: c.reason,
  ...(c.bytes !== undefined ? { bytes: c.bytes } : {}),
});

/** Image references of desired workloads, by the descriptor hook images(w), with the type that named them. */
export function desiredImageRefs(workloads: readonly WorkloadBase[], types: TypeRegistry = BUILTIN_TYPES): Map<string, string> {
  const out = new Map<string, string>();
  for (const w of workloads) {
    const d = types.get(w.type);
    for (const ref of d?.images?.(w) ?? []) if (!out.has(ref)) out.set(ref, w.type);
  }
  return out;
}

/**
 * The store's image references after seeing `workloads` as the desired ones: new references are added,
 * ones no longer desired get `unreferencedSince`, ones desired again lose it. Returns null when
 * nothing changes (so nothing is written).
 */
export function nextImageRefs(current: Readonly<Record<string, ImageRefEntry>>, desired: ReadonlyMap<string, string>, now: Date, addOnly = false): Record<string, ImageRefEntry> | null {
  const at = now.toISOString();
  const next: Record<string, ImageRefEntry> = { ...current };
  let changed = false;
  for (const [ref, type] of desired) {
    const e = Object.hasOwn(next, ref) ? next[ref] : undefined;
    if (!e) {
      next[ref] = { type, firstReferencedAt: at };
      changed = true;
    } else if (e.unreferencedSince !== undefined) {
      next[ref] = { type: e.type, firstReferencedAt: e.firstReferencedAt };
      changed = true;
    }
  }
  if (!addOnly) {
    for (const [ref, e] of Object.entries(next)) {
      if (!desired.has(ref) && e.unreferencedSince === undefined) {
        next[ref] = { ...e, unreferencedSince: at };
        changed = true;
      }
    }
  }
  return changed ? next : null;
}

/**
 * The garbage collector (issue 12 item 4): on its own croner schedule (gc.intervalSeconds), at once
 * under DiskPressure (`runNow`), and from `persys-agent gc`. Passes never overlap; each is bounded in
 * removals and time. What it removes is decided by selectGarbage (src/gc/select.ts).
 */
export class GarbageCollector {
  private readonly now: () => Date;
  private readonly types: TypeRegistry;
  private readonly docker: DockerGc | null;
  private readonly firstSeen = new Map<string, number>();
  private chain: Promise<unknown> = Promise.resolve();
  private calls = 0;
  private cron: Cron | undefined;
  private signal: AbortSignal | undefined;
  /** The last pass that was not a dry run (the report's `gc` block). */
  last: GcPassResult | undefined;

  constructor(private readonly deps: GcDeps) {
    this.now = deps.now ?? (() => new Date());
    this.types = deps.types ?? BUILTIN_TYPES;
    const dockerRt = deps.runtimes.some((r) => r.name === 'docker');
    this.docker = deps.docker !== undefined ? deps.docker : dockerRt ? dockerGc(deps.config.docker.socketPath, deps.nodeId) : null;
  }

  /** Starts the schedule; passes stop with `signal`. */
  start(signal: AbortSignal): void {
    this.signal = signal;
    const interval = this.deps.config.gc.intervalSeconds;
    // The first pass one interval after start: the reconcile loop re-adopts what exists first.
    this.cron = new Cron('* * * * * *', { interval, protect: true, startAt: new Date(this.now().getTime() + interval * 1000) }, async () => {
      await this.runNow('periodic').catch((err: unknown) => this.deps.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'garbage collection failed'));
    });
    signal.addEventListener('abort', () => this.cron?.stop(), { once: true });
  }

  stop(): void {
    this.cron?.stop();
  }

  /**
   * Runs a pass now (after the one in flight, if any) and resolves with what it removed. The hook
   * for DiskPressure (src/resources) and the local API. A dry run selects and removes nothing.
   */
  runNow(trigger: string, opts: { dryRun?: boolean } = {}): Promise<GcPassResult> {
    const run = this.chain.then(() => this.pass(trigger, opts.dryRun === true));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Remembers the image references of a new desired state (before it is applied: add only; after: full). */
  noteDesired(workloads: readonly WorkloadBase[], addOnly = false): void {
    const next = nextImageRefs(this.deps.store.data.imageRefs ?? {}, desiredImageRefs(workloads, this.types), this.now(), addOnly);
    if (next) this.deps.store.update((d) => void (d.imageRefs = next));
  }

  /** The status report's `gc` block, once a pass ran. */
  report(): GcReport | undefined {
    const l = this.last;
    return l ? { lastRunAt: l.at, removed: l.removed.slice(0, REPORT_MAX_REMOVED), freedBytes: l.freedBytes } : undefined;
  }

  private async pass(trigger: string, dryRun: boolean): Promise<GcPassResult> {
    const started = performance.now();
    const { store, config, logger } = this.deps;
    const signal = this.signal ? AbortSignal.any([this.signal, AbortSignal.timeout(PASS_TIMEOUT_MS)]) : AbortSignal.timeout(PASS_TIMEOUT_MS);
    this.calls = 0;
    const notes: string[] = [];
    const desired = store.data.desired?.document.workloads ?? null;
    if (desired && !dryRun) this.noteDesired(desired);
    const refs = desired ? desiredImageRefs(desired, this.types) : new Map<string, string>();
    const imageRefs = (desired && dryRun ? nextImageRefs(store.data.imageRefs ?? {}, refs, this.now()) : null) ?? store.data.imageRefs ?? {};

    // What the engines hold: each runtime's observe() (one list call), docker's strays and images.
    const observed: ObservedWorkload[] = [];
    const runtimeUp: Record<string, boolean> = {};
    const byName = new Map<string, Runtime>();
    await Promise.all(
      this.deps.runtimes.map(async (rt) => {
        byName.set(rt.name, rt);
        try {
          this.calls++;
          observed.push(...(await rt.observe(signal)));
          for (const t of rt.types) runtimeUp[t.type] = true;
        } catch (err) {
          notes.push(`${rt.name} did not answer (${err instanceof Error ? err.message : String(err)}): its objects are left alone`);
        }
      }),
    );
    const dockerUp = runtimeUp.container === true;
    let strays: StrayObject[] = [];
    let images: EngineImage[] | undefined;
    if (this.docker && dockerUp) {
      this.calls += 2;
      [strays, images] = await Promise.all([this.docker.strays(signal).catch(() => []), this.docker.images(signal).catch(() => undefined)]);
    }
    const root = this.deps.dataRootOf?.('docker') ?? '/var/lib/docker';
    const disk = dockerUp ? await (this.deps.disk ?? diskUsage)(root) : undefined;
    let vm: VmFiles | undefined;
    if (byName.has('libvirt') && runtimeUp.vm === true) {
      const vmRoot = resolve(config.libvirt.storageDir ?? join(this.deps.stateDir, 'libvirt'));
      vm = await readVmFiles(vmRoot, join(this.deps.stateDir, 'libvirt', 'console'), config.libvirt.namePrefix);
    }

    const now = this.now();
    const input: GcInput = {
      now,
      config: config.gc,
      desired,
      records: store.data.records,
      observed,
      runtimeUp,
      strays,
      referenced: new Set(refs.keys()),
      imageRefs,
      images,
      disk,
      vm,
      firstSeen: this.firstSeen,
    };
    const sel = selectGarbage(input);
    if (!dryRun) {
      for (const k of sel.seen) this.firstSeen.set(k, now.getTime());
      this.forgetGone(sel.seen, observed, strays);
      if (sel.pruneRefs.length > 0) store.update((d) => void (d.imageRefs = Object.fromEntries(Object.entries(d.imageRefs ?? {}).filter(([r]) => !sel.pruneRefs.includes(r)))));
    }
    if (sel.imageNote) notes.push(sel.imageNote);

    const result: GcPassResult = { at: now.toISOString(), dryRun, trigger, durationMs: 0, engineCalls: 0, removed: [], failed: [], freedBytes: 0, deferred: 0, notes };
    const todo = sel.candidates.slice(0, MAX_REMOVALS_PER_PASS);
    result.deferred = sel.candidates.length - todo.length;
    const removeOne = async (c: GcCandidate): Promise<void> => {
      if (signal.aborted) {
        result.deferred++;
        return;
      }
      try {
        const freed = await this.carryOut(c, byName, signal);
        const e = entryOf(c);
        if (c.kind === 'image') {
          if (freed) e.bytes = c.bytes ?? 0;
          else delete e.bytes;
        }
        result.removed.push(e);
        result.freedBytes += e.bytes ?? 0;
        this.deps.metrics?.removed(c.kind, e.bytes ?? 0);
        logger.info({ kind: c.kind, id: c.id, ...(c.name ? { name: c.name } : {}), ...(c.workloadId ? { workloadId: c.workloadId } : {}), bytes: e.bytes ?? 0, reason: c.reason }, `gc removed ${c.kind} ${c.name ?? c.id}`);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        // Docker refuses an image a container uses (409, ours in its grace period or the host owner's):
        // it stays, which is right. Not a failure; tried again next pass.
        if (c.kind === 'image' && statusOf(err) === 409) {
          result.notes.push(`kept image ${c.id}: a container uses it`);
          logger.debug({ kind: c.kind, id: c.id, err: message }, `gc kept image ${c.id}: in use`);
          return;
        }
        result.failed.push({ ...entryOf(c), error: message });
        this.deps.metrics?.failed(c.kind);
        logger.warn({ kind: c.kind, id: c.id, err: message }, `gc could not remove ${c.kind} ${c.name ?? c.id}`);
      }
    };
    if (dryRun) {
      for (const c of todo) {
        result.removed.push(entryOf(c));
        result.freedBytes += c.bytes ?? 0;
      }
    } else {
      // Objects and files a few at a time; images one by one, oldest first (the order of the selection).
      const queue = todo.filter((c) => c.kind !== 'image');
      await Promise.all(
        Array.from({ length: Math.min(REMOVAL_CONCURRENCY, queue.length) }, async () => {
          for (let c = queue.shift(); c !== undefined; c = queue.shift()) await removeOne(c);
        }),
      );
      for (const c of todo) if (c.kind === 'image') await removeOne(c);
      // Image sizes count layers shared with others, so the estimate may stop short of the low
      // threshold: measure again and go on, oldest first (a few rounds at most, within the bounds).
      const tried = new Set(todo.filter((c) => c.kind === 'image').map((c) => c.id));
      for (let round = 0; round < IMAGE_ROUNDS && tried.size > 0 && this.docker && !signal.aborted; round++) {
        const disk2 = await (this.deps.disk ?? diskUsage)(root);
        if (!disk2 || (disk2.usedBytes / (disk2.usedBytes + disk2.availableBytes)) * 100 <= config.gc.imageLowThresholdPercent) break;
        this.calls++;
        const images2 = await this.docker.images(signal).catch(() => undefined);
        const again = selectGarbage({ ...input, images: images2, disk: disk2, imageRefs: store.data.imageRefs ?? {}, imagesUnderway: true }).candidates.filter((c) => c.kind === 'image' && !tried.has(c.id));
        if (again.length === 0) break;
        for (const c of again.slice(0, Math.max(0, MAX_REMOVALS_PER_PASS - result.removed.length - result.failed.length))) {
          tried.add(c.id);
          await removeOne(c);
        }
      }
      const order = new Map(todo.map((c, k) => [`${c.kind} ${c.id}`, k] as const));
      const rank = (e: GcEntry) => order.get(`${e.kind} ${e.id}`) ?? todo.length;
      result.removed.sort((a, b) => rank(a) - rank(b));
    }
    result.durationMs = performance.now() - started;
    result.engineCalls = this.calls;
    if (!dryRun) {
      this.last = result;
      this.deps.metrics?.passDone({ ok: !signal.aborted, durationMs: result.durationMs, engineCalls: result.engineCalls, at: now });
      if (result.removed.length > 0) this.deps.onChange?.();
      // Quiet when nothing happened, but a pass DiskPressure asked for is always worth a line.
      logger[result.removed.length > 0 || trigger.startsWith('DiskPressure') ? 'info' : 'debug'](
        { trigger, removed: result.removed.length, failed: result.failed.length, deferred: result.deferred, freedBytes: result.freedBytes, engineCalls: result.engineCalls, durationMs: Math.round(result.durationMs) },
        `gc pass: ${result.removed.length} removed`,
      );
    }
    return result;
  }

  /** Forgets first-seen times of objects that are gone (memory stays bounded). */
  private forgetGone(justSeen: readonly string[], observed: readonly ObservedWorkload[], strays: readonly { runtime: string; id: string }[]): void {
    const live = new Set<string>(justSeen);
    for (const o of observed) live.add(`${o.runtime}:${o.runtimeId}`);
    for (const s of strays) live.add(`${s.runtime}:${s.id}`);
    for (const id of Object.keys(this.deps.store.data.records)) live.add(`record:${id}`);
    for (const k of this.firstSeen.keys()) if (!live.has(k)) this.firstSeen.delete(k);
  }

  /** Carries out one removal; resolves true when bytes were freed (an image's last reference). */
  private async carryOut(c: GcCandidate, runtimes: ReadonlyMap<string, Runtime>, signal: AbortSignal): Promise<boolean> {
    const a = c.action;
    switch (a.do) {
      case 'remove-observed': {
        const rt = runtimes.get(a.observed.runtime);
        if (!rt) throw new Error(`no runtime ${a.observed.runtime}`);
        this.calls++;
        await rt.remove(a.observed, signal, 'gc');
        return true;
      }
      case 'remove-container':
        if (!this.docker) throw new Error('docker is not in use');
        this.calls++;
        await this.docker.removeContainer(a.id, signal);
        return true;
      case 'forget-record':
        this.deps.store.deleteRecord(a.id);
        return true;
      case 'remove-image': {
        if (!this.docker) throw new Error('docker is not in use');
        this.calls++;
        const deleted = await this.docker.removeImage(a.ref, signal);
        const gone = normalizeImageRef(a.ref);
        this.deps.store.update((d) => {
          for (const r of Object.keys(d.imageRefs ?? {})) if (normalizeImageRef(r) === gone) delete d.imageRefs?.[r];
        });
        return deleted;
      }
      case 'remove-file':
        await rm(a.path, { force: true });
        return true;
    }
  }
}
