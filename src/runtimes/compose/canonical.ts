import { hash } from 'node:crypto';

import { describeSpecChanges, isPlainObject, pruneCanonical, stableStringify, type CanonicalObject, type ChangeWording } from '../canonical-json.js';
import { normalizeImageRef } from '../docker/canonical.js';
import type { ComposeApp, MountSpec, PortSpec, ServiceSpec } from './model.js';

/*
 * The canonical form of one compose service, hash version 2 of the compose type (docs/hash-versions.md).
 * It is built from the agent's own model, never from the YAML as written, so spellings that mean the
 * same thing give the same form: `restart: "no"` and no restart, env as a list or a map, ports in short
 * or long syntax, `1g` and `1024m`, key order, `command: a b` and `command: [a, b]`. Only what reaches
 * the engine object is in it (a volume's driver does not recreate a container; data is never touched),
 * and secret values enter as their sha256 only.
 *
 * Changing this form changes every hash: that needs a new hash version, never an edit in place
 * (docker/compose#11335 recreated every container of every project after an upgrade).
 */

export const SERVICE_HASH_VERSION = 2;

/** POSIX-shell-like word splitting, the way compose turns `command: sh -c "x y"` into a list. */
export function shellSplit(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && i + 1 < s.length && '"\\$`'.includes(s[i + 1] as string)) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (c === ' ' || c === '\t' || c === '\n') {
      if (has || cur !== '') out.push(cur);
      cur = '';
      has = false;
    } else cur += c;
  }
  if (has || cur !== '') out.push(cur);
  return out;
}

export const asArgv = (c: string[] | string | undefined): string[] | undefined => (c === undefined ? undefined : typeof c === 'string' ? shellSplit(c) : c);

function portKey(p: PortSpec): string {
  return `${p.hostIp ?? ''}:${p.published ?? ''}:${p.target}/${p.protocol}`;
}

/** A mount's engine-side identity: project-prefixed volume names, so the form says what the engine gets. */
function mountForm(m: MountSpec, app: ComposeApp): CanonicalObject {
  const out: CanonicalObject = { target: m.target, type: m.type };
  if (m.type === 'volume' && m.source !== undefined) out.source = app.volumes.get(m.source)?.name ?? m.source;
  else if (m.source !== undefined) out.source = m.source;
  if (m.readOnly) out.readOnly = true;
  if (m.tmpfsSizeBytes !== undefined) out.sizeBytes = m.tmpfsSizeBytes;
  return out;
}

const sha = (s: string) => `sha256:${hash('sha256', s, 'hex')}`;

/** The canonical form of a service (pruned, sorted keys). */
export function canonicalService(s: ServiceSpec, app: ComposeApp): CanonicalObject {
  const restart = s.restart.name === 'no' ? undefined : s.restart.maxRetries !== undefined ? `${s.restart.name}:${s.restart.maxRetries}` : s.restart.name;
  const hc = s.healthcheck;
  const form = {
    image: normalizeImageRef(s.image),
    command: asArgv(s.command),
    entrypoint: asArgv(s.entrypoint),
    env: s.environment,
    ports: [...new Set(s.ports.map(portKey))].sort(),
    expose: [...new Set(s.expose.map((e) => (e.includes('/') ? e : `${e}/tcp`)))].sort(),
    volumes: s.volumes.map((m) => mountForm(m, app)).sort((a, b) => String(a.target).localeCompare(String(b.target))),
    volumesFrom: s.volumesFrom.map((v) => `${v.service}:${v.readOnly ? 'ro' : 'rw'}`).sort(),
    restart,
    networkMode: s.networkMode,
    networks: s.networks
      .map((n) => {
        const spec = app.networks.get(n.key);
        return {
          name: spec?.name ?? n.key,
          aliases: n.aliases ? [...new Set(n.aliases)].sort() : undefined,
          ipv4Address: n.ipv4Address,
          // The network's own config: a change recreates the network and every service on it.
          network: spec ? { driver: spec.driver === 'bridge' ? undefined : spec.driver, driverOpts: spec.driverOpts, internal: spec.internal || undefined, enableIpv6: spec.enableIpv6 || undefined, attachable: spec.attachable || undefined, ipam: spec.ipam, labels: spec.labels, external: spec.external || undefined } : undefined,
        };
      })
      .sort((a, b) => a.name.localeCompare(b.name)),
    dependsOn: s.dependsOn.map((d) => ({ service: d.service, condition: d.condition, required: d.required ? undefined : false, restart: d.restart || undefined })).sort((a, b) => a.service.localeCompare(b.service)),
    containerName: s.containerName,
    hostname: s.hostname,
    user: s.user,
    workingDir: s.workingDir,
    labels: s.labels,
    capAdd: [...new Set(s.capAdd.map(capName))].sort(),
    capDrop: [...new Set(s.capDrop.map(capName))].sort(),
    sysctls: s.sysctls,
    extraHosts: [...s.extraHosts].sort(),
    dns: s.dns,
    tmpfs: [...s.tmpfs].sort(),
    ulimits: s.ulimits,
    init: s.init || undefined,
    readOnly: s.readOnly || undefined,
    shmSizeBytes: s.shmSizeBytes,
    stopSignal: s.stopSignal === undefined || s.stopSignal.toUpperCase() === 'SIGTERM' ? undefined : s.stopSignal.toUpperCase(),
    stopGraceSeconds: s.stopGraceSeconds === 10 ? undefined : s.stopGraceSeconds,
    healthcheck: hc ? (hc.disable ? { disable: true } : { test: hc.test, intervalNs: hc.intervalNs, timeoutNs: hc.timeoutNs, startPeriodNs: hc.startPeriodNs, retries: hc.retries }) : undefined,
    memLimitBytes: s.memLimitBytes,
    memReservationBytes: s.memReservationBytes,
    cpus: s.cpus,
    secrets: s.secrets.map((r) => ({ target: r.target, mode: r.mode, uid: r.uid, gid: r.gid, content: sha(app.secrets.get(r.source)?.content ?? '') })).sort((a, b) => a.target.localeCompare(b.target)),
    configs: s.configs.map((r) => ({ target: r.target, mode: r.mode, uid: r.uid, gid: r.gid, content: sha(app.configs.get(r.source)?.content ?? '') })).sort((a, b) => a.target.localeCompare(b.target)),
  };
  const pruned = pruneCanonical(form);
  return isPlainObject(pruned) ? (pruned as CanonicalObject) : {};
}

function capName(c: string): string {
  const u = c.toUpperCase();
  return u.startsWith('CAP_') ? u.slice(4) : u;
}

/** `sha256:<hex>` of a service's canonical form under the hash version (the `dev.persys.service-hash` label). */
export function serviceHash(form: CanonicalObject): string {
  return sha(stableStringify({ service: form, v: SERVICE_HASH_VERSION }));
}

/**
 * The workload's canonical form: the project and each service's hash. The spec hash is derived from the
 * per-service hashes only, so the compose runtime can compute the same hash from the labels of the
 * containers it finds (observe), and a service that changes changes its own entry and nothing else.
 */
export interface CanonicalApp {
  project: string;
  services: Record<string, string>;
}

/**
 * Forms by service hash, so a plan reason can name the field that changed (`api: env DB_HOST changed`)
 * although the record keeps hashes only. Filled when a document is canonicalised; bounded. After an agent
 * restart an old form is unknown, and the reason says `api: changed`.
 */
const FORMS_MAX = 4096;
const formsByHash = new Map<string, CanonicalObject>();
function remember(h: string, form: CanonicalObject): void {
  if (formsByHash.has(h)) formsByHash.delete(h);
  formsByHash.set(h, form);
  if (formsByHash.size > FORMS_MAX) formsByHash.delete(formsByHash.keys().next().value as string);
}

export function canonicalServices(app: ComposeApp, volumesPolicy: 'keep' | 'delete'): Map<string, { hash: string; form: CanonicalObject }> {
  const out = new Map<string, { hash: string; form: CanonicalObject }>();
  for (const s of app.services) {
    const form = canonicalService(s, app);
    // Carried on the containers (removal reads it from there), so it is part of each service's form.
    if (volumesPolicy === 'delete') form.volumesPolicy = 'delete';
    const h = serviceHash(form);
    remember(h, form);
    out.set(s.name, { hash: h, form });
  }
  return out;
}

export function canonicalAppOf(project: string, serviceHashes: ReadonlyMap<string, string> | Readonly<Record<string, string>>): CanonicalApp {
  const entries = serviceHashes instanceof Map ? [...serviceHashes.entries()] : Object.entries(serviceHashes);
  const services: Record<string, string> = {};
  for (const [name, h] of entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) services[name] = h;
  return { project, services };
}

export function canonicalApp(app: ComposeApp, volumesPolicy: 'keep' | 'delete' = 'keep'): CanonicalApp {
  const m = canonicalServices(app, volumesPolicy);
  return canonicalAppOf(app.project, new Map([...m].map(([k, v]) => [k, v.hash])));
}

const SERVICE_WORDING: ChangeWording = {
  maps: new Set(['env', 'labels', 'sysctls', 'ulimits']),
  secretPrefixes: ['env', 'labels', 'secrets', 'configs', 'command', 'entrypoint'],
};

/** `api: env DB_HOST changed`, `worker: added`, `old: removed`, per service, for plan reasons. */
export function describeAppChanges(a: unknown, b: unknown): string[] {
  const sa = isPlainObject(a) && isPlainObject(a.services) ? a.services : undefined;
  const sb = isPlainObject(b) && isPlainObject(b.services) ? b.services : undefined;
  if (!sa || !sb) return describeSpecChanges(a, b);
  const out: string[] = [];
  if (isPlainObject(a) && isPlainObject(b) && a.project !== b.project) out.push(`project changed (${String(a.project)} -> ${String(b.project)})`);
  for (const name of [...new Set([...Object.keys(sa), ...Object.keys(sb)])].sort()) {
    const ha = sa[name];
    const hb = sb[name];
    if (ha === undefined) out.push(`${name}: added`);
    else if (hb === undefined) out.push(`${name}: removed`);
    else if (ha !== hb) {
      const fa = typeof ha === 'string' ? formsByHash.get(ha) : undefined;
      const fb = typeof hb === 'string' ? formsByHash.get(hb) : undefined;
      const reasons = fa && fb ? describeSpecChanges(fa, fb, SERVICE_WORDING) : ['changed'];
      for (const r of reasons) out.push(`${name}: ${r}`);
    }
  }
  return out;
}
