import { realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { WorkloadError } from '../errors/index.js';
import type { Workload } from '../spec/desired-state.js';

/**
 * The host's policy, checked before anything touches an engine. A denial is terminal
 * (POLICY_DENIED): retrying cannot change the host's mind. Every violation names the field, the
 * value and the config key that would allow it.
 *
 * Fields the container spec does not have (devices, pid/ipc/uts/userns namespaces, sysctls,
 * free-form securityOpt) cannot be set at all: the strict schema refuses them, so there is no
 * rule to walk around here.
 */
export type Policy = Config['policy'];

export interface PolicyContext {
  /** Resolves symlinks (default fs.realpathSync; a missing tail is resolved through its parent). */
  realpath?: (path: string) => string;
  /** The agent's state dir, always denied as a bind source (default: the config default ./.persys-agent). */
  stateDir?: string;
  /** The Docker socket the agent uses (default /var/run/docker.sock), always denied. */
  dockerSocket?: string;
}

let hostContext: PolicyContext = {};

/**
 * Sets the host facts every later policy check uses when its caller passes no context (the
 * planner calls the rules with the workload and the policy only): the agent's state dir and
 * Docker socket. Called once at start by `run` and `plan`.
 */
export function configurePolicyContext(config: Pick<Config, 'stateDir' | 'docker'>): void {
  hostContext = { stateDir: resolve(config.stateDir), dockerSocket: config.docker.socketPath };
}

/** Capabilities that amount to root on the host (or close): denied unless policy.allowedCapabilities lists them. */
export const DANGEROUS_CAPABILITIES: readonly string[] = [
  'ALL',
  'SYS_ADMIN',
  'SYS_MODULE',
  'SYS_PTRACE',
  'SYS_RAWIO',
  'SYS_BOOT',
  'NET_ADMIN',
  'DAC_READ_SEARCH',
  'SYS_TIME',
  'BPF',
  'PERFMON',
];

/** Host paths a bind mount may reach only when policy.allowedHostPathPrefixes names them (or a path in them) exactly. */
const ALWAYS_DENIED = ['/', '/etc', '/proc', '/sys', '/dev', '/root', '/var/run/docker.sock', '/run/docker.sock'];

const normalizeCap = (c: string): string => c.toUpperCase().replace(/^CAP_/, '');
const isUnder = (p: string, prefix: string): boolean => p === prefix || p.startsWith(prefix === '/' ? '/' : `${prefix}/`);
const strictlyUnder = (p: string, prefix: string): boolean => p !== prefix && isUnder(p, prefix);

/** fs.realpathSync, but a path that does not exist (yet) resolves through its nearest existing ancestor. */
export function resolveRealpath(path: string, real: (p: string) => string = realpathSync): string {
  const abs = resolve(path);
  try {
    return real(abs);
  } catch {
    const parent = dirname(abs);
    if (parent === abs) return abs;
    return join(resolveRealpath(parent, real), basename(abs));
  }
}

/** Registry host and repository path of an image reference (Docker's rules: a first part with . or : or localhost is a host). */
export function imageRegistry(image: string): { registry: string; repository: string } {
  const noDigest = image.split('@')[0] ?? image;
  const slash = noDigest.indexOf('/');
  const first = slash === -1 ? '' : noDigest.slice(0, slash);
  const hasHost = slash !== -1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = hasHost ? first : 'docker.io';
  let repo = hasHost ? noDigest.slice(slash + 1) : noDigest;
  // A tag is a ':' after the last '/'; a port is before it.
  const lastSlash = repo.lastIndexOf('/');
  const colon = repo.indexOf(':', lastSlash + 1);
  if (colon !== -1) repo = repo.slice(0, colon);
  if (!hasHost && !repo.includes('/')) repo = `library/${repo}`;
  return { registry: registry === 'index.docker.io' || registry === 'registry-1.docker.io' ? 'docker.io' : registry, repository: repo };
}

export function policyViolations(w: Workload, policy: Policy, ctx: PolicyContext = hostContext): string[] {
  if (w.type !== 'container') return [];
  const out: string[] = [];
  const { spec } = w;
  const sec = spec.security;
  if (sec?.privileged && !policy.allowPrivileged) {
    out.push('spec.security.privileged: privileged containers are denied on this host (policy.allowPrivileged)');
  }
  const allowedCaps = new Set(policy.allowedCapabilities.map(normalizeCap));
  (sec?.capAdd ?? []).forEach((c, i) => {
    const cap = normalizeCap(c);
    if (DANGEROUS_CAPABILITIES.includes(cap) && !allowedCaps.has(cap)) {
      out.push(`spec.security.capAdd[${i}]: capability ${c} is denied on this host (policy.allowedCapabilities)`);
    }
  });
  if (sec?.seccompProfile?.toLowerCase() === 'unconfined' && !policy.allowUnconfinedSeccomp) {
    out.push('spec.security.seccompProfile: "unconfined" is denied on this host (policy.allowUnconfinedSeccomp)');
  }
  if (sec?.apparmorProfile?.toLowerCase() === 'unconfined' && !policy.allowUnconfinedApparmor) {
    out.push('spec.security.apparmorProfile: "unconfined" is denied on this host (policy.allowUnconfinedApparmor)');
  }
  if (spec.network?.mode === 'host' && !policy.allowHostNetwork) {
    out.push('spec.network.mode: the host network is denied on this host (policy.allowHostNetwork)');
  }
  const registries = policy.allowedRegistries;
  if (registries !== undefined) {
    const { registry, repository } = imageRegistry(spec.image);
    const full = `${registry}/${repository}`;
    if (!registries.some((r) => r === registry || full.startsWith(`${r}/`) || full === r)) {
      out.push(`spec.image: image ${spec.image} is from registry ${registry}, which policy.allowedRegistries does not list (${registries.join(', ') || 'none'})`);
    }
  }
  (spec.volumes ?? []).forEach((m, i) => {
    if (m.type !== 'bind') return;
    const v = bindViolation(m.source, policy, ctx);
    if (v !== undefined) out.push(`spec.volumes[${i}].source: ${v}`);
  });
  return out;
}

/** Why a bind of host path `source` is denied, or undefined when it is allowed. */
function bindViolation(source: string, policy: Policy, ctx: PolicyContext): string | undefined {
  if (!policy.allowHostPaths) return `host path ${source} is denied on this host (policy.allowHostPaths)`;
  const realFn = ctx.realpath ?? realpathSync;
  const real = resolveRealpath(source, realFn);
  const shown = real === source ? `host path ${source}` : `host path ${source} (resolves to ${real})`;
  const prefixes = policy.allowedHostPathPrefixes.map((p) => ({ named: p, real: resolveRealpath(p, realFn) }));
  const sensitive = [...ALWAYS_DENIED, ctx.dockerSocket ?? '/var/run/docker.sock', resolve(ctx.stateDir ?? './.persys-agent')];
  const sensitiveReal = [...new Set(sensitive.flatMap((s) => [s, resolveRealpath(s, realFn)]))];
  for (const s of sensitiveReal) {
    // The path itself, a path inside it ('/' only itself), or a directory that contains it.
    const hits = real === s || (s !== '/' && strictlyUnder(real, s)) || strictlyUnder(s, real);
    if (!hits) continue;
    // Named exactly: an allowed prefix that is this sensitive path, or a path inside it, and
    // holds the source; a directory containing it only when the prefix is the source itself.
    const named = prefixes.some((p) => (isUnder(real, p.real) && (p.real === s || strictlyUnder(p.real, s))) || p.real === real);
    if (!named) {
      const what = strictlyUnder(s, real) ? `it contains ${s}, which is` : `${s} is`;
      return `${shown} is denied: ${what} always denied unless policy.allowedHostPathPrefixes names it exactly`;
    }
  }
  if (prefixes.length > 0 && !prefixes.some((p) => isUnder(real, p.real))) {
    return `${shown} is not under policy.allowedHostPathPrefixes (${policy.allowedHostPathPrefixes.join(', ')})`;
  }
  return undefined;
}

/**
 * VM rules: host bridges only when policy.allowedBridges lists them, libvirt networks only from
 * policy.allowedNetworks when that is set. VM host paths (boot.kernel, boot.initrd,
 * disks[].image.path) are checked by the libvirt runtime on their realpath against
 * libvirt.allowedPathPrefixes (src/runtimes/libvirt/storage.ts).
 */
export function vmPolicyViolations(w: Workload, policy: Policy): string[] {
  if (w.type !== 'vm') return [];
  const out: string[] = [];
  (w.spec.networks ?? []).forEach((n, i) => {
    if ('bridge' in n) {
      if (!policy.allowedBridges.includes(n.bridge)) out.push(`spec.networks[${i}].bridge: host bridge ${n.bridge} is denied on this host (policy.allowedBridges)`);
    } else if (policy.allowedNetworks !== undefined && !policy.allowedNetworks.includes(n.network)) {
      out.push(`spec.networks[${i}].network: libvirt network ${n.network} is not in policy.allowedNetworks (${policy.allowedNetworks.join(', ') || 'none'})`);
    }
  });
  return out;
}

export function assertPolicy(w: Workload, policy: Policy, ctx: PolicyContext = hostContext): void {
  const v = [...policyViolations(w, policy, ctx), ...vmPolicyViolations(w, policy)];
  if (v.length > 0) throw new WorkloadError('POLICY_DENIED', v.join('; '), { details: { violations: v.length } });
}

