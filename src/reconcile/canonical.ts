import { hash } from 'node:crypto';
import { posix } from 'node:path';
import type { ContainerSpec, Mount, PortMapping } from '../spec/container.js';
import type { Workload, WorkloadType } from '../spec/desired-state.js';

/*
 * The canonical form of a spec is what the spec-hash label on every engine object is computed
 * from. Two rules keep it stable:
 *  - equal specs never look different: defaults are applied, then every field equal to its
 *    default is DROPPED (so a later version that adds an optional field with a default does not
 *    change existing hashes), empty arrays/objects vanish, and equivalent spellings are folded;
 *  - the form is part of the fleet contract: changing it changes every hash and recreates every
 *    container on upgrade. test/unit/canonical.test.ts pins a golden hash for that reason.
 */

export type CanonicalJson = string | number | boolean | null | CanonicalJson[] | { [key: string]: CanonicalJson };
export type CanonicalObject = { [key: string]: CanonicalJson };

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

/**
 * Assigns an own property even for the key "__proto__" (a valid env name), which a plain
 * assignment would turn into a prototype change, silently dropping the variable from the hash.
 */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

function sortedRecord(r: Readonly<Record<string, string>> | undefined): Record<string, string> | undefined {
  if (!r) return undefined;
  const keys = Object.keys(r).sort();
  if (keys.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const k of keys) setOwn(out, k, r[k] as string);
  return out;
}

function nonEmpty<T>(a: readonly T[] | undefined): T[] | undefined {
  return a && a.length > 0 ? [...a] : undefined;
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

// ---------------------------------------------------------------------------------------------
// Generic canonical form (compose, VM) and hashing
// ---------------------------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Sorted keys; undefined, empty arrays and empty objects dropped. Array elements are kept even
 * when they prune to empty: a position in a list (a disk, a NIC) means something.
 */
export function pruneCanonical(value: unknown): CanonicalJson | undefined {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) {
    if (value.length === 0) return undefined;
    return value.map((el) => pruneCanonical(el) ?? (Array.isArray(el) ? [] : isPlainObject(el) ? {} : null));
  }
  if (isPlainObject(value)) {
    const out: CanonicalObject = {};
    for (const k of Object.keys(value).sort()) {
      const v = pruneCanonical(value[k]);
      if (v !== undefined) setOwn(out, k, v);
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
  return undefined;
}

export type CanonicalSpec = CanonicalContainerSpec | CanonicalObject;

function computeCanonical(w: Workload): CanonicalSpec {
  switch (w.type) {
    case 'container':
      return canonicalContainerSpec(w.spec);
    case 'compose':
    case 'vm': {
      // Refined by the compose and VM runtimes' own rules later; for now sorted keys, empties dropped.
      const c = pruneCanonical(w.spec);
      return isPlainObject(c) ? (c as CanonicalObject) : {};
    }
  }
}

/** JSON with object keys sorted at every level, so key order in the document never matters. */
export function stableStringify(value: unknown): string {
  if (value === undefined) return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : stableStringify(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const v = obj[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${stableStringify(v)}`);
  }
  return `{${parts.join(',')}}`;
}

interface Memo {
  canonical: CanonicalSpec;
  hash: string;
}

/**
 * Two caches, because the planner hashes every desired workload on every pass (5,000 workloads
 * must plan well under 50 ms):
 *  - by object: the desired document is immutable once loaded, so identity is a safe key, and a
 *    WeakMap lets an old document's entries go with it;
 *  - by content: a store that hands out a fresh copy of the same document, or a new generation
 *    that changed only a few workloads, costs one JSON.stringify per spec instead of a
 *    canonicalisation and a sha256. Bounded in characters (a compose file may be 1 MiB), and
 *    cleared when full: simple, and always correct.
 */
const byObject = new WeakMap<Workload, Memo>();
const byContent = new Map<string, Memo>();
const BY_CONTENT_MAX_CHARS = 16 * 1024 * 1024;
const BY_CONTENT_MAX_KEY = 64 * 1024;
let byContentChars = 0;

function memoOf(w: Workload): Memo {
  const hit = byObject.get(w);
  if (hit) return hit;
  const key = `${w.type}\u0000${JSON.stringify(w.spec)}`;
  let m = byContent.get(key);
  if (!m) {
    // Frozen because it is shared between callers (planner, executor, records) and workloads.
    // The top level only: a deep freeze of 5,000 specs was a tenth of a cold plan, and no caller
    // reaches below the top level to write.
    const canonical = Object.freeze(computeCanonical(w));
    m = { canonical, hash: hashCanonical(w.type, canonical) };
    if (key.length <= BY_CONTENT_MAX_KEY) {
      if (byContentChars + key.length > BY_CONTENT_MAX_CHARS) {
        byContent.clear();
        byContentChars = 0;
      }
      byContent.set(key, m);
      byContentChars += key.length;
    }
  }
  byObject.set(w, m);
  return m;
}

/** True when every object in `v` has its keys in sorted order and no undefined values. */
function isSortedDeep(v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'object' || v === null) return true;
  if (Array.isArray(v)) {
    for (const el of v) if (!isSortedDeep(el)) return false;
    return true;
  }
  const rec = v as Record<string, unknown>;
  let prev: string | undefined;
  for (const k in rec) {
    if (!Object.prototype.hasOwnProperty.call(rec, k)) continue;
    if (prev !== undefined && prev >= k) return false;
    if (!isSortedDeep(rec[k])) return false;
    prev = k;
  }
  return true;
}

/** The hash input: type + canonical spec; never revision, desiredState, retry, retryToken or id. */
export function hashCanonical(type: WorkloadType, canonical: unknown): string {
  // Same bytes either way: for sorted input, native JSON.stringify is stableStringify, only faster.
  const body = isSortedDeep(canonical) ? JSON.stringify({ spec: canonical, type }) : stableStringify({ spec: canonical, type });
  return `sha256:${hash('sha256', body, 'hex')}`;
}

/** The canonical spec of a workload (memoised and frozen: do not mutate). */
export function canonicalSpec(w: Workload): CanonicalSpec {
  return memoOf(w).canonical;
}

/** `sha256:<hex>` of the canonical spec; what the spec-hash label on engine objects carries. */
export function specHash(w: Workload): string {
  return memoOf(w).hash;
}

// ---------------------------------------------------------------------------------------------
// Person-readable differences
// ---------------------------------------------------------------------------------------------

/** Maps whose keys are reported one by one ("env FOO changed"); their values are never shown. */
const MAP_PATHS: ReadonlySet<string> = new Set(['env', 'labels', 'logging.options', 'cloudInit.metaData']);
/** Subtrees whose values may be secrets (env, tokens in log options, cloud-init, logins). */
const SECRET_PREFIXES = ['env', 'labels', 'logging.options', 'cloudInit', 'login', 'composeYaml'];
const SECRET_KEY = /pass|secret|token|key|auth|cred/i;
const MAX_SHOWN = 64;

function isSecretPath(path: string): boolean {
  if (SECRET_PREFIXES.some((p) => path === p || path.startsWith(`${p}.`))) return true;
  const last = path.slice(path.lastIndexOf('.') + 1);
  return SECRET_KEY.test(last);
}

/** Control characters (newlines, escapes) would break a one-line reason or a terminal. */
function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20 || s.charCodeAt(i) === 0x7f) return true;
  return false;
}

type Shown = { ok: true; text: string } | { ok: false };

/** A value is shown only when it is a scalar and short; absent fields read "default". */
function show(v: unknown): Shown {
  if (v === undefined) return { ok: true, text: 'default' };
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return { ok: true, text: String(v) };
  if (typeof v === 'string' && v.length <= MAX_SHOWN && !hasControlChar(v)) return { ok: true, text: v === '' ? '""' : v };
  return { ok: false };
}

/** Structural equality of JSON-like values (canonical specs hold nothing else). */
function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(rb, k) || !deepEqual(ra[k], rb[k])) return false;
  }
  return true;
}

function describeMap(path: string, a: unknown, b: unknown, out: string[]): void {
  const ra = isPlainObject(a) ? a : {};
  const rb = isPlainObject(b) ? b : {};
  const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].sort();
  for (const k of keys) {
    const inA = Object.prototype.hasOwnProperty.call(ra, k);
    const inB = Object.prototype.hasOwnProperty.call(rb, k);
    if (inA && !inB) out.push(`${path} ${k} removed`);
    else if (!inA && inB) out.push(`${path} ${k} added`);
    else if (!deepEqual(ra[k], rb[k])) out.push(`${path} ${k} changed`);
  }
}

function describeAt(path: string, a: unknown, b: unknown, out: string[]): void {
  if (deepEqual(a, b)) return;
  if (MAP_PATHS.has(path) && (a === undefined || isPlainObject(a)) && (b === undefined || isPlainObject(b))) {
    describeMap(path, a, b, out);
    return;
  }
  if ((a === undefined || isPlainObject(a)) && (b === undefined || isPlainObject(b))) {
    const ra = a ?? {};
    const rb = b ?? {};
    const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].sort();
    for (const k of keys) describeAt(path ? `${path}.${k}` : k, ra[k], rb[k], out);
    return;
  }
  // Scalars and lists. Lists are never printed: a command line can carry a password.
  if (!Array.isArray(a) && !Array.isArray(b) && !isSecretPath(path)) {
    const sa = show(a);
    const sb = show(b);
    if (sa.ok && sb.ok) {
      out.push(`${path} changed (${sa.text} -> ${sb.text})`);
      return;
    }
  }
  out.push(`${path} changed`);
}

/**
 * Reasons a person can read for the difference between two canonical specs, e.g.
 * `image changed (docker.io/library/nginx:1.26 -> docker.io/library/nginx:1.27)`, `env FOO added`.
 * Env and label values never appear (they may be secrets); other values only when short scalars.
 * Returns [] when the specs are equal.
 */
export function describeSpecChanges(oldCanonical: unknown, newCanonical: unknown): string[] {
  if (deepEqual(oldCanonical, newCanonical)) return [];
  if (!isPlainObject(oldCanonical) || !isPlainObject(newCanonical)) return ['spec changed'];
  const out: string[] = [];
  describeAt('', oldCanonical, newCanonical, out);
  return out.length > 0 ? out : ['spec changed'];
}
