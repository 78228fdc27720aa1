import { vmPolicyViolations } from '../../policy/container-policy.js';
import { describeSpecChanges, type ChangeWording } from '../canonical-json.js';
import { newestMatching } from '../observed.js';
import type { TypeDescriptor } from '../runtime.js';
import { canonicalVmV1, canonicalVmV2, VM_HASH_VERSION } from './canonical.js';
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
};
