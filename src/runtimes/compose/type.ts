import { policyViolations } from '../../policy/container-policy.js';
import { isPlainObject, pruneCanonical } from '../canonical-json.js';
import type { ContainerWorkload } from '../docker/spec.js';
import { newestMatching } from '../observed.js';
import type { ResourceRequests, TypeDescriptor } from '../runtime.js';
import { canonicalApp, describeAppChanges } from './canonical.js';
import { parseComposeCached, type ComposeApp } from './model.js';
import { composeReportBlock } from './report.js';
import { composeWorkload, type ComposeWorkload } from './spec.js';

/** 2: per-service hashes of src/runtimes/compose/canonical.ts (1 was the spec as written, before a runtime existed). */
export const COMPOSE_HASH_VERSION = 2;

function appOrUndefined(w: ComposeWorkload): ComposeApp | undefined {
  const r = parseComposeCached(w.spec);
  return r.ok ? r.app : undefined;
}

/**
 * Host policy, per service, by the container rules (capabilities, host network, bind mounts,
 * registries): a compose file must not be a way around what a container workload may not do.
 */
function composePolicy(w: ComposeWorkload, policy: Parameters<typeof policyViolations>[1]): string[] {
  const app = appOrUndefined(w);
  if (!app) return [];
  const out: string[] = [];
  for (const s of app.services) {
    const network: { mode?: string } = {};
    if (s.networkMode === 'host') network.mode = 'host';
    const pseudo = {
      id: w.id,
      type: 'container',
      spec: {
        image: s.image,
        security: { capAdd: s.capAdd },
        network,
        volumes: s.volumes.filter((m) => m.type === 'bind').map((m) => ({ type: 'bind' as const, source: m.source as string, target: m.target, readOnly: m.readOnly })),
      },
    } as unknown as ContainerWorkload;
    for (const v of policyViolations(pseudo, policy)) out.push(`services.${s.name}: ${v}`);
  }
  return out;
}

/** The `compose` workload type, owned by the compose runtime (native compose on the Docker API). */
export const composeType: TypeDescriptor<ComposeWorkload> = {
  type: 'compose',
  about: 'a compose app (native engine on the Docker API)',
  schema: composeWorkload,
  hashVersion: COMPOSE_HASH_VERSION,
  canonical(w, version) {
    if (version === 1) {
      const c = pruneCanonical(w.spec);
      return isPlainObject(c) ? c : {};
    }
    if (version !== COMPOSE_HASH_VERSION) return undefined;
    const app = appOrUndefined(w);
    return app ? canonicalApp(app, w.spec.volumes ?? 'keep') : { invalid: true, project: w.spec.project };
  },
  describeChanges: describeAppChanges,
  // Each container stops within its own stop_grace_period (StopTimeout on the container).
  stopTimeoutSeconds: () => undefined,
  staysDown: (_w, exit) => (exit.hasRun && exit.code === 0 ? 'every service completed successfully' : undefined),
  policy: (w, policy) => composePolicy(w, policy),
  primary: newestMatching,
  report: composeReportBlock,
  capabilities: { exitEvidence: false, engineRestarts: true },
  /** Limits (mem_limit, cpus, deploy.resources.limits) count; a service with only reservations counts those. */
  requests(w): ResourceRequests | undefined {
    const app = appOrUndefined(w);
    if (!app) return undefined;
    let cpus = 0;
    let mem = 0;
    for (const s of app.services) {
      cpus += s.cpus ?? s.cpusReservation ?? 0;
      mem += s.memLimitBytes ?? s.memReservationBytes ?? 0;
    }
    const out: ResourceRequests = {};
    if (cpus > 0) out.cpus = Math.round(cpus * 1000) / 1000;
    if (mem > 0) out.memoryBytes = mem;
    return Object.keys(out).length > 0 ? out : undefined;
  },
  /**
   * Engine names of the named volumes its services mount. An agent volume (docs/storage.md) is
   * mounted as an external volume (`volumes: {data: {external: true}}`, or `name:` for another
   * key): the storage gate then holds the whole app until that volume is Ready, so Docker never
   * makes a plain volume of that name first. Other names are the app's own, not the gate's.
   */
  volumeRefs(w) {
    const app = appOrUndefined(w);
    if (!app) return [];
    const out = new Set<string>();
    for (const s of app.services) {
      for (const m of s.volumes) {
        const vol = m.type === 'volume' && m.source !== undefined ? app.volumes.get(m.source) : undefined;
        if (vol) out.add(vol.name);
      }
    }
    return [...out].sort();
  },
  images(w) {
    const app = appOrUndefined(w);
    return app ? [...new Set(app.services.map((s) => s.image))].sort() : [];
  },
};
