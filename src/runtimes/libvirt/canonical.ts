import { isPlainObject, pruneCanonical, type CanonicalObject } from '../canonical-json.js';
import type { VmSpec } from './spec.js';

/*
 * Canonical forms of a VM spec, one per hash version (docs/hash-versions.md). A VM recreate is a
 * reboot, so a form never changes in place: a new rule is a new version, and domains labelled with an
 * older version are judged under that version's rules.
 */

/** The hash version new domains are labelled with. */
export const VM_HASH_VERSION = 2;
/** ACPI shutdown wait before a destroy when the spec does not say. */
export const DEFAULT_SHUTDOWN_SECONDS = 60;

/** Version 1 (agents before hash versions): sorted keys, empties dropped, nothing folded. */
export function canonicalVmV1(spec: VmSpec): CanonicalObject {
  const c = pruneCanonical(spec);
  return isPlainObject(c) ? (c as CanonicalObject) : {};
}

const put = <T>(out: Record<string, unknown>, key: string, value: T | undefined, dflt?: T): void => {
  if (value !== undefined && value !== dflt) out[key] = value;
};

/**
 * Version 2: every default and equivalent spelling folded, so `bus: virtio` and an absent bus (and
 * the other defaults the domain definition applies) are one spec: disk bus virtio, disk format qcow2,
 * reclaimPolicy delete, NIC model virtio, MACs in lower case, machine pc, cpuMode default, firmware
 * bios, vnc false, shutdownTimeoutSeconds 60, login flags false. The sizeBytes of a disk with `pool`
 * is left out (the volume is grown in place); `pool` itself is in (moving a disk is a new disk).
 */
export function canonicalVmV2(spec: VmSpec): CanonicalObject {
  const out: Record<string, unknown> = {};
  put(out, 'vcpus', spec.vcpus);
  put(out, 'memoryMiB', spec.memoryMiB);
  put(out, 'hostname', spec.hostname);
  // Absent means libvirt.domainType of the host's config, which "auto" need not be: not folded.
  put(out, 'domainType', spec.domainType);
  put(out, 'machine', spec.machine, 'pc');
  put(out, 'cpuMode', spec.cpuMode, 'default');
  put(out, 'firmware', spec.firmware, 'bios');
  put(out, 'boot', spec.boot);
  if (spec.disks) {
    out.disks = spec.disks.map((disk) => {
      const o: Record<string, unknown> = { name: disk.name };
      // A pool disk's size is its volume's: the storage layer grows it in place (online while the
      // VM runs), so a larger size is no reason to reboot the guest. Disks without pool as before.
      if (disk.pool === undefined) put(o, 'sizeBytes', disk.sizeBytes);
      put(o, 'pool', disk.pool);
      put(o, 'volume', disk.volume);
      if (disk.image) {
        const img: Record<string, unknown> = { ...disk.image };
        if (img.format === 'qcow2') delete img.format;
        o.image = img;
      }
      put(o, 'bus', disk.bus, 'virtio');
      put(o, 'reclaimPolicy', disk.reclaimPolicy, 'delete');
      return o;
    });
  }
  if (spec.networks) {
    out.networks = spec.networks.map((n) => {
      const o: Record<string, unknown> = 'network' in n ? { network: n.network } : { bridge: n.bridge };
      if (n.mac !== undefined) o.mac = n.mac.toLowerCase().replaceAll('-', ':');
      put(o, 'model', n.model, 'virtio');
      return o;
    });
  }
  put(out, 'cloudInit', spec.cloudInit);
  if (spec.login) {
    const l: Record<string, unknown> = { username: spec.login.username };
    put(l, 'sshAuthorizedKeys', spec.login.sshAuthorizedKeys?.map((k) => k.trim()));
    put(l, 'generatePassword', spec.login.generatePassword, false);
    put(l, 'reportPassword', spec.login.reportPassword, false);
    out.login = l;
  }
  put(out, 'vnc', spec.vnc, false);
  put(out, 'shutdownTimeoutSeconds', spec.shutdownTimeoutSeconds, DEFAULT_SHUTDOWN_SECONDS);
  const c = pruneCanonical(out);
  return isPlainObject(c) ? (c as CanonicalObject) : {};
}
