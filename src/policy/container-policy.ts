import type { Config } from '../config/schema.js';
import { WorkloadError } from '../errors/index.js';
import type { Workload } from '../spec/desired-state.js';

/**
 * The host's policy, checked before anything touches an engine: privileged containers, host
 * paths and the host network are denied unless this host's config allows them. A denial is
 * terminal (POLICY_DENIED): retrying cannot change the host's mind.
 */
export function policyViolations(w: Workload, policy: Config['policy']): string[] {
  if (w.type !== 'container') return [];
  const out: string[] = [];
  const { spec } = w;
  if (spec.security?.privileged && !policy.allowPrivileged) {
    out.push('spec.security.privileged: privileged containers are denied on this host (policy.allowPrivileged)');
  }
  if (spec.network?.mode === 'host' && !policy.allowHostNetwork) {
    out.push('spec.network.mode: the host network is denied on this host (policy.allowHostNetwork)');
  }
  (spec.volumes ?? []).forEach((m, i) => {
    if (m.type !== 'bind') return;
    if (!policy.allowHostPaths) {
      out.push(`spec.volumes[${i}].source: host path ${m.source} is denied on this host (policy.allowHostPaths)`);
      return;
    }
    const prefixes = policy.allowedHostPathPrefixes;
    const under = (p: string) => m.source === p || m.source.startsWith(p.endsWith('/') ? p : `${p}/`);
    if (prefixes.length > 0 && !prefixes.some(under)) {
      out.push(`spec.volumes[${i}].source: host path ${m.source} is not under policy.allowedHostPathPrefixes (${prefixes.join(', ')})`);
    }
  });
  return out;
}

export function assertPolicy(w: Workload, policy: Config['policy']): void {
  const v = policyViolations(w, policy);
  if (v.length > 0) throw new WorkloadError('POLICY_DENIED', v.join('; '), { details: { violations: v.length } });
}
