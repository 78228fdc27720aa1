import { vmPolicyViolations } from '../../policy/container-policy.js';
import { describeSpecChanges, type ChangeWording } from '../canonical-json.js';
import { newestMatching } from '../observed.js';
import type { TypeDescriptor } from '../runtime.js';
import { canonicalVmV1, canonicalVmV2, VM_HASH_VERSION } from './canonical.js';
import { poolDiskVolumeName } from './ids.js';
import { vmReportBlock } from './report.js';
import { vmWorkload, type VmWorkload } from './spec.js';

const WORDING: ChangeWording = {
  maps: new Set(['cloudInit.metaData']),
  secretPrefixes: ['cloudInit', 'login'],
};

const FORMS: Readonly<Record<number, (spec: VmWorkload['spec']) => object>> = { 1: canonicalVmV1, 2: canonicalVmV2 };

/** The `vm` workload type, owned by the libvirt runtime. */
export const vmType: TypeDescriptor<VmWorkload> = {
  type: 'vm',
  about: 'a libvirt virtual machine',
  schema: vmWorkload,
  // 2: defaults folded (bus virtio = absent, ...); domains labelled 1 keep version 1's rules.
  hashVersion: VM_HASH_VERSION,
  canonical: (w, version) => FORMS[version]?.(w.spec),
  describeChanges: (a, b) => describeSpecChanges(a, b, WORDING),
  // The runtime reads the object's own shutdown timeout from its metadata (the old spec's, on a replace).
  stopTimeoutSeconds: () => undefined,
  // A VM that is shut off while desired running is started again: a guest has no restart policy of ours.
  staysDown: () => undefined,
  policy: (w, policy) => vmPolicyViolations(w, policy),
  primary: newestMatching,
  report: vmReportBlock,
  capabilities: { exitEvidence: false, engineRestarts: false },
  // Base images of the disks, as the image cache names them (sha256:<hex>) and by source: GC keeps
  // the cache entries a desired VM uses (docs/gc.md).
  images: (w) => vmImageRefs(w),
  // Disks with `pool:` are storage volumes (docs/storage.md): planned and admitted against the
  // pool's quota with the document's volumes; the storage gate holds the VM until they are Ready.
  ownVolumes: (w) => poolDisks(w).map((x) => ({ name: poolDiskVolumeName(w.id, x.name), pool: x.pool, sizeBytes: x.sizeBytes, reclaimPolicy: x.reclaimPolicy ?? 'delete' })),
  // Also the document volumes its disks attach: the gate holds the VM until they are Ready.
  volumeRefs: (w) => [...poolDisks(w).map((x) => poolDiskVolumeName(w.id, x.name)), ...attachedVolumes(w)],
  /**
   * A guest holds its vCPUs and its memory plus QEMU's own (VM_MEMORY_OVERHEAD_BYTES), and may grow
   * each disk to its sizeBytes (overlays are thin, but admission counts what they may take). A disk
   * in a pool is counted by its pool's quota instead, not twice.
   */
  requests(w) {
    const s = w.spec;
    const disk = (s.disks ?? []).reduce((sum, x) => sum + (typeof x.sizeBytes === 'number' && x.pool === undefined ? x.sizeBytes : 0), 0);
    return { cpus: s.vcpus, memoryBytes: s.memoryMiB * 1024 * 1024 + VM_MEMORY_OVERHEAD_BYTES, ...(disk > 0 ? { diskBytes: disk } : {}) };
  },
};

/** The document volumes a VM's disks attach (`volume:`). */
export function attachedVolumes(w: VmWorkload): string[] {
  return (w.spec.disks ?? []).flatMap((x) => (x.volume !== undefined ? [x.volume] : []));
}

/** The disks of a VM that live in a storage pool (the schema makes sizeBytes required for them). */
export function poolDisks(w: VmWorkload): { name: string; pool: string; sizeBytes: number; reclaimPolicy?: 'delete' | 'retain' | undefined }[] {
  return (w.spec.disks ?? []).flatMap((x) => (x.pool !== undefined && x.sizeBytes !== undefined ? [{ name: x.name, pool: x.pool, sizeBytes: x.sizeBytes, reclaimPolicy: x.reclaimPolicy }] : []));
}

/** `sha256:<hex>` of every disk image with a digest, and `path:`/`url:` of its source. */
export function vmImageRefs(w: VmWorkload): string[] {
  const out: string[] = [];
  for (const disk of w.spec.disks ?? []) {
    const img = disk.image;
    if (!img) continue;
    if (img.sha256 !== undefined) out.push(`sha256:${img.sha256}`);
    out.push('url' in img ? `url:${img.url}` : `path:${img.path}`);
  }
  return out;
}

/**
 * Memory QEMU uses beside the guest's (device emulation, the TCG translation cache, page tables):
 * a flat 64 MiB per VM, about what a small guest's QEMU process adds on top of its RAM.
 */
export const VM_MEMORY_OVERHEAD_BYTES = 64 * 1024 * 1024;
