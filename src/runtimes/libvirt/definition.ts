/**
 * From a VM workload (plus what the runtime resolved on disk: boot files, disks, seed) to the domain
 * definition that domain-xml.ts renders. Pure, so representative specs are unit-tested end to end.
 */
import { DEFAULT_SHUTDOWN_SECONDS, VM_HASH_VERSION } from './canonical.js';
import type { VmWorkload } from './spec.js';
import { LABELS } from '../runtime.js';
import type { DomainDefinition, DomainDisk, DomainMetadata, DomainNic } from './domain-xml.js';
import { derivedMac, domainUuid, normalizeMac } from './ids.js';
import { keyFingerprint } from './ssh-keys.js';

export { DEFAULT_SHUTDOWN_SECONDS };

export interface DefinitionInput {
  workload: VmWorkload;
  nodeId: string;
  name: string;
  specHash: string;
  /** The hash version specHash was computed under (default the vm type's current one). */
  hashVersion?: number;
  domainType: 'kvm' | 'qemu';
  /** The agent's copies of boot.kernel / boot.initrd (storage.ensureBootFile). */
  kernel?: string;
  initrd?: string;
  disks: DomainDisk[];
  seedIso?: string;
  consoleLog: string;
}

export function nicsOf(w: VmWorkload, nodeId: string): DomainNic[] {
  return (w.spec.networks ?? []).map((n, i) => ({
    kind: 'network' in n ? 'network' : 'bridge',
    source: 'network' in n ? n.network : n.bridge,
    mac: normalizeMac(n.mac ?? derivedMac(nodeId, w.id, i)),
    model: n.model ?? 'virtio',
  }));
}

export function domainDefinition(i: DefinitionInput): DomainDefinition {
  const w = i.workload;
  const nics = nicsOf(w, i.nodeId);
  const login = w.spec.login
    ? { username: w.spec.login.username, fingerprints: (w.spec.login.sshAuthorizedKeys ?? []).map(keyFingerprint), reportPassword: w.spec.login.reportPassword === true }
    : undefined;
  const metadata: DomainMetadata = {
    labels: {
      [LABELS.managed]: 'true',
      [LABELS.nodeId]: i.nodeId,
      [LABELS.workloadId]: w.id,
      [LABELS.revision]: w.revision ?? '',
      [LABELS.specHash]: i.specHash,
      [LABELS.hashVersion]: String(i.hashVersion ?? VM_HASH_VERSION),
      [LABELS.type]: 'vm',
    },
    shutdownTimeoutSeconds: w.spec.shutdownTimeoutSeconds ?? DEFAULT_SHUTDOWN_SECONDS,
    disks: i.disks,
    nics,
    ...(i.seedIso !== undefined ? { seedFile: i.seedIso } : {}),
    consoleLog: i.consoleLog,
    vnc: w.spec.vnc === true,
    ...(login ? { login } : {}),
  };
  const boot =
    w.spec.boot && i.kernel !== undefined
      ? {
          kernel: i.kernel,
          ...(i.initrd !== undefined ? { initrd: i.initrd } : {}),
          ...(w.spec.boot.cmdline !== undefined ? { cmdline: w.spec.boot.cmdline } : {}),
        }
      : undefined;
  const cpuMode = w.spec.cpuMode === 'default' ? undefined : w.spec.cpuMode;
  return {
    name: i.name,
    uuid: domainUuid(i.nodeId, w.id),
    domainType: i.domainType,
    title: `persys workload ${w.id}`,
    memoryMiB: w.spec.memoryMiB,
    vcpus: w.spec.vcpus,
    machine: w.spec.machine ?? 'pc',
    ...(cpuMode ? { cpuMode } : {}),
    firmware: w.spec.firmware ?? 'bios',
    ...(boot ? { boot } : {}),
    disks: i.disks,
    ...(i.seedIso !== undefined ? { seedIso: i.seedIso } : {}),
    nics,
    consoleLog: i.consoleLog,
    vnc: w.spec.vnc === true,
    guestAgentChannel: true,
    metadata,
  };
}
