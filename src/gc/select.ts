import type { Config } from '../config/schema.js';
import { isFailedRecord } from '../reconcile/planner.js';
import type { ObservedWorkload, WorkloadBase } from '../runtimes/runtime.js';
import type { ImageRefEntry, WorkloadRecord } from '../store/types.js';

/*
 * What a garbage-collection pass removes, and why: a pure function of what the engines, the store
 * and the file system showed (no clock but `now`, no I/O), so every rule is a table test with a
 * fake clock. src/gc/collector.ts gathers the input, calls this, and carries out the result.
 */

export type GcConfig = Config['gc'];

/** What is removed, as counted in metrics (`persys_gc_removed_total{kind}`) and listed in the report. */
export const GC_KINDS = ['orphan', 'zombie', 'failed-record', 'image', 'vm-disk', 'vm-image-cache', 'vm-seed', 'vm-console-log'] as const;
export type GcKind = (typeof GC_KINDS)[number];

/** An engine object with our node label that observe() does not return (no workload id): docker containers. */
export interface StrayObject {
  runtime: string;
  kind: 'container';
  id: string;
  name: string;
  state: string;
  /** Engine creation time (ISO), when the engine tells it. */
  createdAt?: string;
}

/** One image of the engine (docker images). */
export interface EngineImage {
  id: string;
  /** repo:tag references (RepoTags), and repo@sha256:... (RepoDigests). */
  tags: string[];
  digests: string[];
  createdAt: string;
  /** Size including the layers it shares with its parent (Docker's Size). */
  sizeBytes: number;
  /** The image it was built on, when built here (Docker's ParentId); its layers stay when this one goes. */
  parentId?: string;
}

export interface FileFact {
  path: string;
  /** Last change (ISO). */
  mtime: string;
  sizeBytes: number;
}

/** The libvirt runtime's files (src/runtimes/libvirt/storage.ts layout). */
export interface VmFiles {
  /** libvirt.namePrefix: domain names are <prefix><workload id>. */
  namePrefix: string;
  /** vms/<domain>/ directories, with their files. */
  domains: { domain: string; files: FileFact[] }[];
  /** images/sha256-<hex>.<format> cache entries. */
  cache: (FileFact & { hex: string })[];
  /** Resolved paths of backing files named by any disk under vms/ (qcow2 headers). */
  backing: ReadonlySet<string>;
  /** console/<domain>.log files. */
  consoleLogs: (FileFact & { domain: string })[];
}

export interface GcInput {
  now: Date;
  config: GcConfig;
  /** null: no desired state was ever loaded: GC removes nothing (as the planner). */
  desired: readonly WorkloadBase[] | null;
  records: Readonly<Record<string, WorkloadRecord>>;
  /** From the runtimes that answered. */
  observed: readonly ObservedWorkload[];
  /** Per workload type: whether its runtime answered (a blind runtime's objects and records are left alone). */
  runtimeUp: Readonly<Record<string, boolean>>;
  strays: readonly StrayObject[];
  /** Image references of every desired workload now (descriptor images(w)). */
  referenced: ReadonlySet<string>;
  /** The store's image references (what our workloads ever used, and when last). */
  imageRefs: Readonly<Record<string, ImageRefEntry>>;
  /** Docker's images; undefined when docker did not answer. */
  images: readonly EngineImage[] | undefined;
  /** The file system of Docker's data root; undefined when unknown. */
  disk: { usedBytes: number; availableBytes: number } | undefined;
  vm: VmFiles | undefined;
  /** When GC first saw an object or a dropped record (ms), for what carries no time of its own. */
  firstSeen: ReadonlyMap<string, number>;
  /** Image GC started this pass (usage was over the high threshold): it goes on down to the low one. */
  imagesUnderway?: boolean;
}

export type GcAction =
  | { do: 'remove-observed'; observed: ObservedWorkload }
  | { do: 'remove-container'; runtime: string; id: string }
  | { do: 'forget-record'; id: string }
  | { do: 'remove-image'; ref: string; imageId: string; lastTag: boolean }
  | { do: 'remove-file'; path: string };

export interface GcCandidate {
  kind: GcKind;
  /** What it is: a container id, a record id, an image reference, a file path. */
  id: string;
  name?: string;
  workloadId?: string;
  reason: string;
  /** Bytes it frees (images: the image size when this is its last reference; files: their size). */
  bytes?: number;
  action: GcAction;
}

export interface GcSelection {
  candidates: GcCandidate[];
  /** Keys of things seen for the first time in this pass (the caller remembers them in firstSeen). */
  seen: string[];
  /** Image references to drop from the store: neither referenced nor present on the engine any more. */
  pruneRefs: string[];
  /** Why image GC did or did not run this pass (for `gc --dry-run` and the log). */
  imageNote: string;
}

const MS = 1000;

/** Docker's normal form of an image reference: no docker.io/ or library/, and :latest when untagged. */
export function normalizeImageRef(ref: string): string {
  let r = ref.trim();
  for (const p of ['docker.io/', 'index.docker.io/', 'registry-1.docker.io/']) if (r.startsWith(p)) r = r.slice(p.length);
  if (r.startsWith('library/') && r.split('/').length === 2) r = r.slice('library/'.length);
  if (r.includes('@')) return r;
  const lastSlash = r.lastIndexOf('/');
  return r.slice(lastSlash + 1).includes(':') ? r : `${r}:latest`;
}

const fmtAge = (ms: number): string => `${Math.floor(ms / MS)} s`;
const pct = (x: number): string => `${x.toFixed(1)}%`;

function ageMs(now: number, iso: string | undefined, seenKey: string, firstSeen: ReadonlyMap<string, number>, seen: string[]): number {
  const t = iso === undefined ? Number.NaN : Date.parse(iso);
  if (Number.isFinite(t) && t > 0) return now - t;
  const first = firstSeen.get(seenKey);
  if (first === undefined) {
    seen.push(seenKey);
    return 0;
  }
  return now - first;
}

export function selectGarbage(i: GcInput): GcSelection {
  const out: GcSelection = { candidates: [], seen: [], pruneRefs: [], imageNote: '' };
  if (i.desired === null) {
    out.imageNote = 'no desired state loaded yet: nothing is removed';
    return out;
  }
  const now = i.now.getTime();
  const graceMs = i.config.orphanGraceSeconds * MS;
  const desiredIds = new Set(i.desired.map((w) => w.id));
  const hasRecord = (id: string) => Object.hasOwn(i.records, id);
  const up = (t: string) => Object.hasOwn(i.runtimeUp, t) && i.runtimeUp[t] === true;

  // Orphans (nobody claims them; after the grace, so a create in flight is never touched) and
  // zombies (exited objects of workloads no longer desired).
  const observedIds = new Set<string>();
  for (const o of i.observed) {
    observedIds.add(o.workloadId);
    if (!up(o.type) || desiredIds.has(o.workloadId)) continue;
    const base = { id: o.runtimeId, name: o.name, workloadId: o.workloadId, action: { do: 'remove-observed', observed: o } as const };
    if (!hasRecord(o.workloadId)) {
      const age = ageMs(now, o.createdAt, `${o.runtime}:${o.runtimeId}`, i.firstSeen, out.seen);
      if (age < graceMs) continue;
      out.candidates.push({ ...base, kind: 'orphan', reason: `${o.type} ${o.name} carries our node label, but no record and no desired workload claims ${o.workloadId} (${fmtAge(age)} old, grace ${i.config.orphanGraceSeconds} s)` });
    } else if (o.state === 'exited') {
      out.candidates.push({ ...base, kind: 'zombie', reason: `exited ${o.type} ${o.name} of ${o.workloadId}, which is no longer desired` });
    }
  }
  for (const s of i.strays) {
    const age = ageMs(now, s.createdAt, `${s.runtime}:${s.id}`, i.firstSeen, out.seen);
    if (age < graceMs) continue;
    out.candidates.push({
      kind: 'orphan',
      id: s.id,
      name: s.name,
      reason: `${s.kind} ${s.name} (${s.state}) carries our node label but no workload id (${fmtAge(age)} old, grace ${i.config.orphanGraceSeconds} s)`,
      action: { do: 'remove-container', runtime: s.runtime, id: s.id },
    });
  }

  // Records of failed workloads the desired state dropped, once nothing of them is left on an engine.
  const keepMs = i.config.failedRetentionSeconds * MS;
  for (const r of Object.values(i.records)) {
    if (desiredIds.has(r.id) || observedIds.has(r.id) || !up(r.type) || !isFailedRecord(r)) continue;
    const key = `record:${r.id}`;
    const dropped = i.firstSeen.get(key);
    if (dropped === undefined) out.seen.push(key);
    // Counted from the later of its last change and the moment this agent saw it dropped.
    const since = Math.max(Date.parse(r.updatedAt) || 0, dropped ?? now);
    if (now - since < keepMs) continue;
    out.candidates.push({
      kind: 'failed-record',
      id: r.id,
      workloadId: r.id,
      reason: `record of failed workload ${r.id} (${r.error?.code ?? r.phase}), dropped from the desired state; kept ${fmtAge(now - since)} (retention ${i.config.failedRetentionSeconds} s)`,
      action: { do: 'forget-record', id: r.id },
    });
  }

  selectImages(i, now, out);
  if (i.vm) selectVmFiles(i, i.vm, now, desiredIds, observedIds, out);
  return out;
}

/** Images: only references our workloads used that nothing desired uses now, over the high threshold, oldest first, down to the low one. */
function selectImages(i: GcInput, now: number, out: GcSelection): void {
  const referenced = new Set([...i.referenced].map(normalizeImageRef));
  const ours = new Map<string, ImageRefEntry>();
  for (const [ref, e] of Object.entries(i.imageRefs)) if (e.type !== 'vm') ours.set(normalizeImageRef(ref), e);
  if (i.images === undefined) {
    out.imageNote = 'images: docker did not answer';
    return;
  }
  const present = new Set<string>();
  for (const img of i.images) for (const t of [...img.tags, ...img.digests]) present.add(normalizeImageRef(t));
  for (const [ref, e] of Object.entries(i.imageRefs)) {
    const n = normalizeImageRef(ref);
    if (e.type !== 'vm' && !present.has(n) && !referenced.has(n)) out.pruneRefs.push(ref);
  }
  if (!i.disk) {
    out.imageNote = 'images: the usage of the Docker data root is unknown';
    return;
  }
  const total = i.disk.usedBytes + i.disk.availableBytes;
  const usedPct = total > 0 ? (i.disk.usedBytes / total) * 100 : 0;
  const high = i.config.imageHighThresholdPercent;
  const low = i.config.imageLowThresholdPercent;
  if (usedPct < high && !(i.imagesUnderway === true && usedPct > low)) {
    out.imageNote = `images: Docker's file system is ${pct(usedPct)} used, below gc.imageHighThresholdPercent ${high}%`;
    return;
  }
  const need = i.disk.usedBytes - (low / 100) * total;
  const minAgeMs = i.config.imageMinAgeSeconds * MS;
  interface Pick {
    img: EngineImage;
    refs: string[];
    last: number;
  }
  const picks: Pick[] = [];
  const sizeOf = new Map(i.images.map((x) => [x.id, x.sizeBytes] as const));
  // What removing an image frees: its own layers, not those of the image it was built on.
  const own = (x: EngineImage): number => Math.max(0, x.sizeBytes - (x.parentId !== undefined ? (sizeOf.get(x.parentId) ?? 0) : 0));
  for (const img of i.images) {
    const all = [...img.tags, ...img.digests];
    if (all.length === 0) continue;
    const norm = all.map(normalizeImageRef);
    // Any desired workload's reference keeps the whole image (its layers are the same).
    if (norm.some((n) => referenced.has(n))) continue;
    const mine = all.filter((_, k) => ours.has(norm[k] as string));
    if (mine.length === 0) continue; // not an image our workloads used: the host owner's
    // Unreferenced since the latest of its references' moments (one without a moment: now).
    const last = Math.max(...mine.map((r) => Date.parse(ours.get(normalizeImageRef(r))?.unreferencedSince ?? '') || now));
    if (now - last < minAgeMs) continue;
    picks.push({ img, refs: img.tags.filter((t) => ours.has(normalizeImageRef(t))), last });
  }
  picks.sort((a, b) => a.last - b.last || Date.parse(a.img.createdAt) - Date.parse(b.img.createdAt) || (a.img.id < b.img.id ? -1 : 1));
  let freed = 0;
  let count = 0;
  for (const p of picks) {
    if (freed >= need) break;
    // Tags the host owner added to the same image stay; the image then stays too (nothing is freed).
    const lastTag = p.img.tags.length === p.refs.length && p.img.digests.length <= 1;
    const refs = p.refs.length > 0 ? p.refs : p.img.digests.slice(0, 1);
    refs.forEach((ref, k) => {
      const isLast = lastTag && k === refs.length - 1;
      out.candidates.push({
        kind: 'image',
        id: ref,
        name: p.img.id,
        reason: `no desired workload references ${ref} (unreferenced for ${fmtAge(now - p.last)}, min age ${i.config.imageMinAgeSeconds} s); Docker's file system is ${pct(usedPct)} used (high ${high}%, low ${low}%)`,
        ...(isLast ? { bytes: own(p.img) } : {}),
        action: { do: 'remove-image', ref, imageId: p.img.id, lastTag: isLast },
      });
    });
    if (lastTag) freed += own(p.img);
    count++;
  }
  out.imageNote = `images: Docker's file system is ${pct(usedPct)} used (high ${high}%): ${count} of ${picks.length} unreferenced image(s) selected, oldest first, to free about ${Math.max(0, Math.round(need))} bytes down to ${low}%`;
}

const SEED = 'seed.iso';
const DISK = /^disk-(.+)\.qcow2$/;

/** VM leftovers: seed ISOs and console logs of domains nobody claims, disks of replaced revisions, unused image-cache entries. */
function selectVmFiles(i: GcInput, vm: VmFiles, now: number, desiredIds: ReadonlySet<string>, observedIds: ReadonlySet<string>, out: GcSelection): void {
  const graceMs = i.config.orphanGraceSeconds * MS;
  const desiredVms = new Map<string, WorkloadBase>();
  for (const w of i.desired ?? []) if (w.type === 'vm') desiredVms.set(`${vm.namePrefix}${w.id}`, w);
  const observedNames = new Set(i.observed.filter((o) => o.type === 'vm').map((o) => o.name));
  const claimed = (domain: string): boolean => {
    if (desiredVms.has(domain) || observedNames.has(domain)) return true;
    if (!domain.startsWith(vm.namePrefix)) return true; // not named by us: leave it alone
    const id = domain.slice(vm.namePrefix.length);
    return desiredIds.has(id) || observedIds.has(id) || Object.hasOwn(i.records, id);
  };
  if (i.runtimeUp.vm !== true) return; // a blind runtime may still run domains that use these files
  const age = (f: FileFact) => now - (Date.parse(f.mtime) || now);

  for (const d of vm.domains) {
    const w = desiredVms.get(d.domain);
    if (w) {
      // Disks the current spec no longer names: left by a replaced revision.
      const names = new Set(((w.spec as { disks?: { name: string }[] }).disks ?? []).map((x) => x.name));
      for (const f of d.files) {
        const m = DISK.exec(f.path.slice(f.path.lastIndexOf('/') + 1));
        if (!m || names.has(m[1] as string)) continue;
        if (age(f) < i.config.replacedDiskRetentionSeconds * MS) continue;
        out.candidates.push({ kind: 'vm-disk', id: f.path, workloadId: w.id, reason: `disk ${m[1]} of VM ${w.id} is not in its desired spec (a replaced revision's), unchanged for ${fmtAge(age(f))} (retention ${i.config.replacedDiskRetentionSeconds} s)`, bytes: f.sizeBytes, action: { do: 'remove-file', path: f.path } });
      }
      continue;
    }
    if (claimed(d.domain)) continue;
    // An unclaimed domain's disks may be kept on purpose (reclaimPolicy retain): only the seed goes.
    for (const f of d.files) {
      if (!f.path.endsWith(`/${SEED}`) || age(f) < graceMs) continue;
      out.candidates.push({ kind: 'vm-seed', id: f.path, reason: `cloud-init seed of domain ${d.domain}, which no record and no desired workload claims`, bytes: f.sizeBytes, action: { do: 'remove-file', path: f.path } });
    }
  }
  for (const f of vm.consoleLogs) {
    if (claimed(f.domain) || age(f) < graceMs) continue;
    out.candidates.push({ kind: 'vm-console-log', id: f.path, reason: `console log of domain ${f.domain}, which no record and no desired workload claims`, bytes: f.sizeBytes, action: { do: 'remove-file', path: f.path } });
  }
  // A desired VM whose image has no digest may use any cache entry (its digest is known only after the copy).
  const unhashed = [...desiredVms.values()].some((w) => ((w.spec as { disks?: { image?: { sha256?: string } }[] }).disks ?? []).some((x) => x.image !== undefined && x.image.sha256 === undefined));
  if (unhashed) return;
  for (const f of vm.cache) {
    if (i.referenced.has(`sha256:${f.hex}`) || vm.backing.has(f.path)) continue;
    if (age(f) < i.config.imageMinAgeSeconds * MS) continue;
    out.candidates.push({ kind: 'vm-image-cache', id: f.path, reason: `base image sha256:${f.hex.slice(0, 12)} is used by no desired VM and backs no disk`, bytes: f.sizeBytes, action: { do: 'remove-file', path: f.path } });
  }
}
