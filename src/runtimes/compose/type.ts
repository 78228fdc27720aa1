import { policyViolations } from '../../policy/container-policy.js';
import { describeSpecChanges, isPlainObject, pruneCanonical, type ChangeWording } from '../canonical-json.js';
import { newestMatching } from '../observed.js';
import type { TypeDescriptor } from '../runtime.js';
import { composeWorkload, type ComposeWorkload } from './spec.js';

const WORDING: ChangeWording = { maps: new Set(['env']), secretPrefixes: ['composeYaml', 'env'] };

/**
 * The `compose` workload type. No runtime owns it in this version (the native compose runtime is its
 * own issue): such workloads are validated and reported RUNTIME_UNAVAILABLE.
 */
export const composeType: TypeDescriptor<ComposeWorkload> = {
  type: 'compose',
  about: 'a compose app (native engine on the Docker API)',
  schema: composeWorkload,
  hashVersion: 1,
  canonical(w, version) {
    if (version !== 1) return undefined;
    const c = pruneCanonical(w.spec);
    return isPlainObject(c) ? c : {};
  },
  describeChanges: (a, b) => describeSpecChanges(a, b, WORDING),
  stopTimeoutSeconds: () => undefined,
  staysDown: () => undefined,
  policy: (w, policy) => policyViolations(w, policy),
  primary: newestMatching,
  capabilities: { exitEvidence: true, engineRestarts: true },
};
