/**
 * Stable identities of a VM workload's libvirt objects, derived (never random) so that a redefinition
 * after a revision change, an agent restart or a lost store finds the same domain and the same DHCP
 * lease: the domain UUID from node id + workload id, each NIC's MAC from node id + workload id + index.
 */
import { createHash } from 'node:crypto';

/** XML namespace of our `<metadata>` element in domain XML. */
export const METADATA_NS = 'https://persys.dev/xmlns/libvirt/workload/1';
export const METADATA_PREFIX = 'persys';

export function domainName(prefix: string, workloadId: string): string {
  return `${prefix}${workloadId}`;
}

/**
 * The storage volume of a VM disk declared with `pool:` (docs/storage.md): `<workload id>.<disk>`,
 * in the libvirt pool as `<workload id>.<disk>.qcow2`. Stable, so a retained disk is found again
 * when the VM is declared again; the document check refuses a name that two disks (or a disk and a
 * `volumes[]` entry) would share.
 */
export function poolDiskVolumeName(workloadId: string, disk: string): string {
  return `${workloadId}.${disk}`;
}

/** The libvirt volume (file name in its pool) of a storage volume in a libvirt pool. */
export const libvirtVolName = (volume: string): string => `${volume}.qcow2`;

/**
 * A name-based UUID (RFC 4122 version 5 layout over SHA-256 instead of SHA-1: the bits that say
 * "version 5, RFC variant" are set, the rest is the hash) of `persys/<nodeId>/<workloadId>`.
 * libvirt refuses a second define of a name with a new UUID; a stable one makes define a redefine.
 */
export function domainUuid(nodeId: string, workloadId: string): string {
  const h = createHash('sha256').update(`persys/${nodeId}/${workloadId}`).digest();
  const b = Buffer.from(h.subarray(0, 16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x50;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * 52:54:00:xx:xx:xx (the QEMU/KVM OUI libvirt itself uses) with the last three bytes from
 * SHA-256 of `persys/<nodeId>/<workloadId>/<index>`: stable across redefinitions, so a DHCP server
 * hands the VM the same address again. A spec may set its own MAC instead.
 */
export function derivedMac(nodeId: string, workloadId: string, index: number): string {
  const h = createHash('sha256').update(`persys/${nodeId}/${workloadId}/${index}`).digest();
  const tail = [h[0] ?? 0, h[1] ?? 0, h[2] ?? 0].map((x) => x.toString(16).padStart(2, '0'));
  return ['52', '54', '00', ...tail].join(':');
}

/** Lower-case, colon-separated: how libvirt prints MACs, so comparisons are plain string equality. */
export function normalizeMac(mac: string): string {
  return mac.trim().toLowerCase().replace(/-/g, ':');
}

/** The cloud-init instance-id: changes with the revision and with the spec (cloud-init then re-runs per-instance modules). */
export function instanceId(workloadId: string, revision: string | undefined, specHash: string): string {
  const hex = specHash.replace(/^sha256:/, '').slice(0, 12);
  return `iid-${workloadId}-${revision ?? 'none'}-${hex}`;
}
