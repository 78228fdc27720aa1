import { posix } from 'node:path';
import { nonEmpty, sortedRecord } from '../canonical-json.js';
import type { ContainerSpec, Mount, PortMapping } from './spec.js';

/*
 * The canonical form of a container spec, what the spec-hash label on every container is computed
 * from (hash version 1). Two rules keep it stable:
 *  - equal specs never look different: defaults are applied, then every field equal to its
 *    default is DROPPED (so a later version that adds an optional field with a default does not
 *    change existing hashes), empty arrays/objects vanish, and equivalent spellings are folded;
 *  - the form is part of the fleet contract: a change needs a new hash version (docs/hash-versions.md).
 *    test/unit/canonical.test.ts pins a golden hash per version for that reason.
 */

// ---------------------------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------------------------

const DEFAULT_REGISTRY = 'docker.io';
const DEFAULT_TAG = 'latest';
/** Hosts that are Docker Hub under another name (the legacy index and the v2 endpoint). */
const HUB_ALIASES: ReadonlySet<string> = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** A first path component is a registry host when it looks like one (as distribution/reference decides). */
function isRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

/**
 * `[registry/]repository[:tag][@digest]` -> `registry/repository[:tag][@digest]`, after
 * distribution/reference's ParseNormalizedNamed: `nginx`, `nginx:latest`,
 * `docker.io/library/nginx:latest` and `index.docker.io/library/nginx:latest` are one image.
 * The fully-qualified form is canonical because it is the only one that says which registry is
 * meant. A missing tag becomes `latest` unless a digest pins the image; a tag beside a digest is
 * kept (informative; Docker ignores it when pulling).
 */
export function normalizeImageRef(ref: string): string {
  const trimmed = ref.trim();
  if (trimmed === '') return trimmed;
  const at = trimmed.indexOf('@');
  const namePart = at >= 0 ? trimmed.slice(0, at) : trimmed;
  const digest = at >= 0 ? trimmed.slice(at + 1) : undefined;

  const lastSlash = namePart.lastIndexOf('/');
  const lastColon = namePart.lastIndexOf(':');
  const hasTag = lastColon > lastSlash;
  const repoPath = hasTag ? namePart.slice(0, lastColon) : namePart;
  const tag = hasTag ? namePart.slice(lastColon + 1) : undefined;

  const firstSlash = repoPath.indexOf('/');
  let registry = DEFAULT_REGISTRY;
  let path = repoPath;
  if (firstSlash >= 0 && isRegistryHost(repoPath.slice(0, firstSlash))) {
    registry = repoPath.slice(0, firstSlash);
    path = repoPath.slice(firstSlash + 1);
  }
  if (HUB_ALIASES.has(registry)) {
    registry = DEFAULT_REGISTRY;
    // Official images live under library/ on Docker Hub.
    if (!path.includes('/')) path = `library/${path}`;
  }

  let out = `${registry}/${path}`;
  if (tag !== undefined && tag !== '') out += `:${tag}`;
  else if (digest === undefined) out += `:${DEFAULT_TAG}`;
  if (digest !== undefined) out += `@${digest}`;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Container spec
// ---------------------------------------------------------------------------------------------

export interface CanonicalPort {
  containerPort: number;
  hostPort?: number;
  /**
   * Absent means every host address, IPv4 and IPv6 (the docker runtime sends HostIp ""), which is
   * NOT the same as an explicit 0.0.0.0 (IPv4 only) or `::`: all three stay distinct.
   */
  hostIp?: string;
  /** Absent means tcp. */
  protocol?: 'udp' | 'sctp';
}

export type CanonicalMount =
  | { type: 'bind' | 'volume'; source: string; target: string; readOnly?: true }
  | { type: 'tmpfs'; target: string; sizeBytes?: number };

export interface CanonicalContainerSpec {
  image: string;
  command?: string[];
  entrypoint?: string[];
  env?: Record<string, string>;
  ports?: CanonicalPort[];
  volumes?: CanonicalMount[];
  resources?: { cpus?: number; memoryBytes?: number; memorySwapBytes?: number; cpuShares?: number; pidsLimit?: number };
  restartPolicy?: 'no' | 'always' | 'on-failure';
  restartMaxRetries?: number;
  labels?: Record<string, string>;
  healthcheck?: { test: string[]; intervalSeconds?: number; timeoutSeconds?: number; retries?: number; startPeriodSeconds?: number };
  user?: string;
  workingDir?: string;
  hostname?: string;
  network?: { mode?: string; dns?: string[]; extraHosts?: string[] };
  security?: {
    privileged?: true;
    capAdd?: string[];
    capDrop?: string[];
    readOnlyRootfs?: true;
    noNewPrivileges?: true;
    seccompProfile?: string;
    apparmorProfile?: string;
  };
  logging?: { driver: string; options?: Record<string, string> };
  stopSignal?: string;
  stopTimeoutSeconds?: number;
}

/**
 * What the canonical form does with every ContainerSpec field. A field added to the schema
 * without a decision here does not compile: otherwise it would silently stay out of the hash,
 * and changing it would never recreate the container. (A test checks each "hashed" field is.)
 */
export const CONTAINER_SPEC_FIELDS: Readonly<Record<keyof ContainerSpec, 'hashed' | 'not hashed'>> = {
  image: 'hashed',
  pullPolicy: 'not hashed', // when to pull is not what runs
  command: 'hashed',
  entrypoint: 'hashed',
  env: 'hashed',
  ports: 'hashed',
  volumes: 'hashed',
  resources: 'hashed',
  restartPolicy: 'hashed',
  restartMaxRetries: 'hashed',
  labels: 'hashed',
  healthcheck: 'hashed',
  user: 'hashed',
  workingDir: 'hashed',
  hostname: 'hashed',
  network: 'hashed',
  security: 'hashed',
  logging: 'hashed',
  stopSignal: 'hashed',
  stopTimeoutSeconds: 'hashed',
};

/** Defaults a field is compared against before it is dropped. */
const CONTAINER_DEFAULTS = {
  restartPolicy: 'unless-stopped',
  stopTimeoutSeconds: 10,
  protocol: 'tcp',
  // Docker's own default weight; 1024 and "unset" give the same cgroup setting.
  cpuShares: 1024,
  healthcheck: { intervalSeconds: 30, timeoutSeconds: 30, retries: 3, startPeriodSeconds: 0 },
} as const;

/** Linux signal numbers Docker accepts in place of names (x86-64/arm64 numbering). */
const SIGNAL_NUMBERS: Readonly<Record<string, string>> = {
  '1': 'SIGHUP', '2': 'SIGINT', '3': 'SIGQUIT', '6': 'SIGABRT', '9': 'SIGKILL',
  '10': 'SIGUSR1', '12': 'SIGUSR2', '14': 'SIGALRM', '15': 'SIGTERM', '28': 'SIGWINCH',
};

function normalizeSignal(sig: string): string {
  const s = sig.trim().toUpperCase();
  if (/^[0-9]+$/.test(s)) return SIGNAL_NUMBERS[String(Number(s))] ?? String(Number(s));
  return s.startsWith('SIG') ? s : `SIG${s}`;
}

function normalizeCaps(caps: readonly string[] | undefined): string[] | undefined {
  if (!caps || caps.length === 0) return undefined;
  const set = new Set(caps.map((c) => c.trim().toUpperCase().replace(/^CAP_/, '')));
  return [...set].sort();
}

/** `/a//b/./c/` and `/a/b/c` are one path to the engine. */
function normalizePath(p: string): string {
  const n = posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

// Every builder below adds keys in alphabetical order, so the canonical object is already in the
// sorted-key form the hash is taken of and JSON.stringify can serialise it directly (see memoOf).
// A key out of order costs speed, never correctness: the slow stable path takes over.

function canonicalPort(p: PortMapping): CanonicalPort {
  const out: CanonicalPort = { containerPort: p.containerPort };
  const hostIp = p.hostIp?.trim().toLowerCase();
  // "" is how the engine spells "absent"; anything else is a real choice of address family.
  if (hostIp !== undefined && hostIp !== '') out.hostIp = hostIp;
  if (p.hostPort !== undefined) out.hostPort = p.hostPort;
  if (p.protocol !== undefined && p.protocol !== CONTAINER_DEFAULTS.protocol) out.protocol = p.protocol;
  return out;
}

function portKey(p: CanonicalPort): string {
  // Zero-padded numbers so the string order is the numeric order.
  const n = (x: number | undefined) => String(x ?? 0).padStart(5, '0');
  return `${n(p.containerPort)}/${p.protocol ?? 'tcp'}/${p.hostIp ?? ''}/${n(p.hostPort)}`;
}

/** Port lists are sets to the engine: sorted and deduplicated. */
function canonicalPorts(ports: readonly PortMapping[] | undefined): CanonicalPort[] | undefined {
  if (!ports || ports.length === 0) return undefined;
  const byKey = new Map<string, CanonicalPort>();
  for (const p of ports) {
    const c = canonicalPort(p);
    byKey.set(portKey(c), c);
  }
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, c]) => c);
}

function canonicalMount(m: Mount): CanonicalMount {
  if (m.type === 'tmpfs') {
    return m.sizeBytes !== undefined
      ? { sizeBytes: m.sizeBytes, target: normalizePath(m.target), type: 'tmpfs' }
      : { target: normalizePath(m.target), type: 'tmpfs' };
  }
  const source = m.type === 'bind' ? normalizePath(m.source) : m.source;
  const target = normalizePath(m.target);
  return m.readOnly === true ? { readOnly: true, source, target, type: m.type } : { source, target, type: m.type };
}

/** Docker sorts mounts by destination itself, so list order carries no meaning: sort by target. */
function canonicalMounts(mounts: readonly Mount[] | undefined): CanonicalMount[] | undefined {
  if (!mounts || mounts.length === 0) return undefined;
  const keyed = mounts.map((m) => {
    const c = canonicalMount(m);
    return { key: `${c.target}\u0000${c.type}\u0000${'source' in c ? c.source : ''}`, c };
  });
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return keyed.map((k) => k.c);
}

function canonicalResources(r: ContainerSpec['resources']): CanonicalContainerSpec['resources'] {
  if (!r) return undefined;
  const out: NonNullable<CanonicalContainerSpec['resources']> = {};
  if (r.cpuShares !== undefined && r.cpuShares !== CONTAINER_DEFAULTS.cpuShares) out.cpuShares = r.cpuShares;
  if (r.cpus !== undefined) out.cpus = r.cpus;
  if (r.memoryBytes !== undefined) out.memoryBytes = r.memoryBytes;
  if (r.memorySwapBytes !== undefined) out.memorySwapBytes = r.memorySwapBytes;
  if (r.pidsLimit !== undefined) out.pidsLimit = r.pidsLimit;
  return Object.keys(out).length > 0 ? out : undefined;
}

function canonicalHealthcheck(h: ContainerSpec['healthcheck']): CanonicalContainerSpec['healthcheck'] {
  if (!h) return undefined;
  const d = CONTAINER_DEFAULTS.healthcheck;
  const out = {} as NonNullable<CanonicalContainerSpec['healthcheck']>;
  if (h.intervalSeconds !== undefined && h.intervalSeconds !== d.intervalSeconds) out.intervalSeconds = h.intervalSeconds;
  if (h.retries !== undefined && h.retries !== d.retries) out.retries = h.retries;
  if (h.startPeriodSeconds !== undefined && h.startPeriodSeconds !== d.startPeriodSeconds) out.startPeriodSeconds = h.startPeriodSeconds;
  out.test = [...h.test];
  if (h.timeoutSeconds !== undefined && h.timeoutSeconds !== d.timeoutSeconds) out.timeoutSeconds = h.timeoutSeconds;
  return out;
}

function canonicalNetwork(n: ContainerSpec['network']): CanonicalContainerSpec['network'] {
  if (!n) return undefined;
  const out: NonNullable<CanonicalContainerSpec['network']> = {};
  // DNS servers and host entries keep their order: resolv.conf and /etc/hosts are read top-down.
  const dns = nonEmpty(n.dns);
  if (dns) out.dns = dns;
  const extraHosts = nonEmpty(n.extraHosts);
  if (extraHosts) out.extraHosts = extraHosts;
  // "default" is Docker's alias of bridge on Linux (and cannot be a user network name).
  if (n.mode !== undefined && n.mode !== 'bridge' && n.mode !== 'default') out.mode = n.mode;
  return Object.keys(out).length > 0 ? out : undefined;
}

function canonicalSecurity(s: ContainerSpec['security']): CanonicalContainerSpec['security'] {
  if (!s) return undefined;
  const out: NonNullable<CanonicalContainerSpec['security']> = {};
  if (s.apparmorProfile !== undefined) out.apparmorProfile = s.apparmorProfile;
  const capAdd = normalizeCaps(s.capAdd);
  if (capAdd) out.capAdd = capAdd;
  const capDrop = normalizeCaps(s.capDrop);
  if (capDrop) out.capDrop = capDrop;
  if (s.noNewPrivileges === true) out.noNewPrivileges = true;
  if (s.privileged === true) out.privileged = true;
  if (s.readOnlyRootfs === true) out.readOnlyRootfs = true;
  if (s.seccompProfile !== undefined) out.seccompProfile = s.seccompProfile;
  return Object.keys(out).length > 0 ? out : undefined;
}

function canonicalLogging(l: ContainerSpec['logging']): CanonicalContainerSpec['logging'] {
  if (!l) return undefined;
  const out: NonNullable<CanonicalContainerSpec['logging']> = { driver: l.driver };
  const options = sortedRecord(l.options);
  if (options) out.options = options;
  return out;
}

/**
 * The container spec with defaults folded away. pullPolicy is deliberately absent: when to pull
 * is not what runs, and changing it must not recreate the container.
 */
export function canonicalContainerSpec(spec: ContainerSpec): CanonicalContainerSpec {
  const out = {} as CanonicalContainerSpec;
  const command = nonEmpty(spec.command);
  if (command) out.command = command;
  const entrypoint = nonEmpty(spec.entrypoint);
  if (entrypoint) out.entrypoint = entrypoint;
  const env = sortedRecord(spec.env);
  if (env) out.env = env;
  const healthcheck = canonicalHealthcheck(spec.healthcheck);
  if (healthcheck) out.healthcheck = healthcheck;
  if (spec.hostname !== undefined && spec.hostname !== '') out.hostname = spec.hostname;
  out.image = normalizeImageRef(spec.image);
  const labels = sortedRecord(spec.labels);
  if (labels) out.labels = labels;
  const logging = canonicalLogging(spec.logging);
  if (logging) out.logging = logging;
  const network = canonicalNetwork(spec.network);
  if (network) out.network = network;
  const ports = canonicalPorts(spec.ports);
  if (ports) out.ports = ports;
  const resources = canonicalResources(spec.resources);
  if (resources) out.resources = resources;

  const policy = spec.restartPolicy ?? CONTAINER_DEFAULTS.restartPolicy;
  // Docker only accepts a retry cap with on-failure, and 0 there means "no cap" (the default).
  if (policy === 'on-failure' && spec.restartMaxRetries !== undefined && spec.restartMaxRetries !== 0) {
    out.restartMaxRetries = spec.restartMaxRetries;
  }
  if (policy !== CONTAINER_DEFAULTS.restartPolicy) out.restartPolicy = policy;

  const security = canonicalSecurity(spec.security);
  if (security) out.security = security;
  if (spec.stopSignal !== undefined) out.stopSignal = normalizeSignal(spec.stopSignal);
  if (spec.stopTimeoutSeconds !== undefined && spec.stopTimeoutSeconds !== CONTAINER_DEFAULTS.stopTimeoutSeconds) {
    out.stopTimeoutSeconds = spec.stopTimeoutSeconds;
  }
  if (spec.user !== undefined && spec.user !== '') out.user = spec.user;
  const volumes = canonicalMounts(spec.volumes);
  if (volumes) out.volumes = volumes;
  if (spec.workingDir !== undefined) out.workingDir = normalizePath(spec.workingDir);
  return out;
}

