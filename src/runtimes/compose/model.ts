import { createRequire } from 'node:module';
import type * as YamlModule from 'yaml';

import { interpolateTree, type InterpolationError } from './interpolate.js';

/*
 * A compose file, parsed, interpolated and validated into the agent's own model of an app. The walker
 * knows every key it supports; any other key is an error naming its path (`services.api.devices`), never
 * silently ignored. Short and long syntax (ports, volumes, depends_on, env lists/maps, ...) become one form.
 *
 * `yaml` is loaded on first use (require, so schema checks stay synchronous): a host without compose
 * workloads never loads it.
 */

const require = createRequire(import.meta.url);
let yamlLib: typeof YamlModule | undefined;
function yaml(): typeof YamlModule {
  yamlLib ??= require('yaml') as typeof YamlModule;
  return yamlLib;
}

export interface ComposeIssue {
  path: string;
  message: string;
}

export type RestartName = 'no' | 'always' | 'unless-stopped' | 'on-failure';
export type DependsCondition = 'service_started' | 'service_healthy' | 'service_completed_successfully';

export interface PortSpec {
  target: number;
  published?: number;
  hostIp?: string;
  protocol: 'tcp' | 'udp' | 'sctp';
}

export interface MountSpec {
  type: 'volume' | 'bind' | 'tmpfs';
  /** Volume key of the file (not yet project-prefixed), absolute host path, or absent (anonymous / tmpfs). */
  source?: string;
  target: string;
  readOnly: boolean;
  tmpfsSizeBytes?: number;
}

export interface DependsOn {
  service: string;
  condition: DependsCondition;
  required: boolean;
  restart: boolean;
}

export interface HealthcheckSpec {
  test?: string[];
  disable?: boolean;
  intervalNs?: number;
  timeoutNs?: number;
  startPeriodNs?: number;
  retries?: number;
}

export interface FileObjectRef {
  /** Top-level key in `secrets` / `configs`. */
  source: string;
  /** Absolute path in the container. */
  target: string;
  mode: number;
  uid?: string;
  gid?: string;
}

export interface ServiceNetwork {
  /** Key in the top-level `networks` (or "default"). */
  key: string;
  aliases?: string[];
  ipv4Address?: string;
}

export interface ServiceSpec {
  name: string;
  image: string;
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment: Record<string, string>;
  ports: PortSpec[];
  expose: string[];
  volumes: MountSpec[];
  volumesFrom: { service: string; readOnly: boolean }[];
  restart: { name: RestartName; maxRetries?: number };
  networks: ServiceNetwork[];
  networkMode?: string;
  dependsOn: DependsOn[];
  containerName?: string;
  hostname?: string;
  user?: string;
  workingDir?: string;
  labels: Record<string, string>;
  capAdd: string[];
  capDrop: string[];
  sysctls: Record<string, string>;
  extraHosts: string[];
  dns: string[];
  tmpfs: string[];
  ulimits: Record<string, { soft: number; hard: number }>;
  init?: boolean;
  readOnly?: boolean;
  shmSizeBytes?: number;
  stopSignal?: string;
  stopGraceSeconds?: number;
  healthcheck?: HealthcheckSpec;
  memLimitBytes?: number;
  memReservationBytes?: number;
  cpus?: number;
  cpusReservation?: number;
  secrets: FileObjectRef[];
  configs: FileObjectRef[];
  profiles: string[];
  /** The service as written (after interpolation), for docker compose's own config hash. */
  raw: Record<string, unknown>;
}

export interface NetworkSpec {
  key: string;
  /** Engine name: `<project>_<key>`, or `name:` / the external name. */
  name: string;
  external: boolean;
  driver?: string;
  driverOpts: Record<string, string>;
  internal?: boolean;
  attachable?: boolean;
  enableIpv6?: boolean;
  labels: Record<string, string>;
  ipam?: { driver?: string; config: { subnet?: string; gateway?: string; ipRange?: string }[] };
}

export interface VolumeSpec {
  key: string;
  name: string;
  external: boolean;
  driver?: string;
  driverOpts: Record<string, string>;
  labels: Record<string, string>;
}

export interface FileObjectSpec {
  key: string;
  /** The value (inline `content`, or the spec env variable named by `environment`). Never logged. */
  content: string;
}

export interface ComposeApp {
  project: string;
  /** Services enabled by the active profiles, in dependency order (dependencies first). */
  services: ServiceSpec[];
  networks: Map<string, NetworkSpec>;
  volumes: Map<string, VolumeSpec>;
  secrets: Map<string, FileObjectSpec>;
  configs: Map<string, FileObjectSpec>;
  /** Not errors, but a person should know (a `required: false` dependency that is absent, ...). */
  warnings: string[];
}

export type ParseResult = { ok: true; app: ComposeApp } | { ok: false; issues: ComposeIssue[] };

export interface ParseInput {
  project: string;
  composeYaml: string;
  env?: Readonly<Record<string, string>> | undefined;
  profiles?: readonly string[] | undefined;
}

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, t: 1024 ** 4, tb: 1024 ** 4 };

/** "1g", "1024m", "512k", "100b" or a number of bytes, as compose reads them (binary units). */
export function parseBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  if (!m) return undefined;
  const unit = BYTE_UNITS[(m[2] ?? '').toLowerCase()];
  if (unit === undefined) return undefined;
  return Math.round(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go-style durations compose accepts ("1m30s", "500ms", "10s", "1.5s"); a bare number is seconds. */
export function parseDurationNs(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1e9) : undefined;
  if (typeof v !== 'string' || v.trim() === '') return undefined;
  const s = v.trim();
  if (/^\d+(?:\.\d+)?$/.test(s)) return Math.round(Number(s) * 1e9);
  let total = 0;
  let rest = s;
  while (rest !== '') {
    const m = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number);
    rest = rest.slice(m[0].length);
  }
  return Math.round(total);
}

// ---------------------------------------------------------------------------------------------
// The walker
// ---------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Quotes a value from the file for a message, clipped: the file is input, and a message must stay readable. */
function q(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 79)}…` : s;
}

const MAX_MESSAGE = 500;

class Walker {
  readonly issues: ComposeIssue[] = [];
  readonly warnings: string[] = [];

  fail(path: string, message: string): undefined {
    // Keys come from the file too: a long one must not make the message unreadable.
    const clip = (t: string) => (t.length > MAX_MESSAGE ? `${t.slice(0, MAX_MESSAGE - 1)}…` : t);
    this.issues.push({ path: clip(path), message: clip(message) });
    return undefined;
  }

  /** Reports every key not in `allowed` (x-* extensions pass) as not supported. */
  keys(o: Obj, path: string, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (k.startsWith('x-') || allowed.includes(k)) continue;
      this.fail(path ? `${path}.${k}` : k, 'not supported');
    }
  }

  obj(v: unknown, path: string): Obj | undefined {
    if (v === undefined || v === null) return {};
    if (!isObj(v)) return this.fail(path, `must be a mapping, got ${kind(v)}`);
    return v;
  }

  str(v: unknown, path: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    return this.fail(path, `must be a string, got ${kind(v)}`);
  }

  bool(v: unknown, path: string): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === 'false') return v === 'true';
    return this.fail(path, `must be true or false, got ${kind(v)}`);
  }

  num(v: unknown, path: string): number | undefined {
    if (v === undefined || v === null) return undefined;
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
    if (!Number.isFinite(n)) return this.fail(path, `must be a number, got ${kind(v)}`);
    return n;
  }

  int(v: unknown, path: string): number | undefined {
    const n = this.num(v, path);
    if (n !== undefined && !Number.isInteger(n)) return this.fail(path, 'must be an integer');
    return n;
  }

  strList(v: unknown, path: string): string[] {
    if (v === undefined || v === null) return [];
    if (typeof v === 'string') return [v];
    if (!Array.isArray(v)) {
      this.fail(path, `must be a list, got ${kind(v)}`);
      return [];
    }
    const out: string[] = [];
    v.forEach((el, i) => {
      const s = this.str(el, `${path}[${i}]`);
      if (s !== undefined) out.push(s);
    });
    return out;
  }

  /** A list of strings only (command, entrypoint may also be one string). */
  commandLike(v: unknown, path: string): string[] | string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'string') return v;
    return this.strList(v, path);
  }

  /** `KEY=VALUE` list or mapping (environment, labels, sysctls); a list entry without "=" takes the spec env's value. */
  mapping(v: unknown, path: string, env?: Readonly<Record<string, string>>): Record<string, string> {
    const out: Record<string, string> = {};
    if (v === undefined || v === null) return out;
    if (Array.isArray(v)) {
      v.forEach((el, i) => {
        const s = this.str(el, `${path}[${i}]`);
        if (s === undefined) return;
        const eq = s.indexOf('=');
        if (eq === -1) {
          const fromEnv = env?.[s];
          if (fromEnv !== undefined) setOwn(out, s, fromEnv);
        } else setOwn(out, s.slice(0, eq), s.slice(eq + 1));
      });
      return out;
    }
    if (!isObj(v)) {
      this.fail(path, `must be a list or a mapping, got ${kind(v)}`);
      return out;
    }
    for (const [k, val] of Object.entries(v)) {
      if (val === null || val === undefined) {
        const fromEnv = env?.[k];
        if (fromEnv !== undefined) setOwn(out, k, fromEnv);
        continue;
      }
      const s = this.str(val, `${path}.${k}`);
      if (s !== undefined) setOwn(out, k, s);
    }
    return out;
  }
}

function setOwn(o: Record<string, string>, k: string, v: string): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

const SERVICE_KEYS = [
  'image', 'build', 'command', 'entrypoint', 'environment', 'ports', 'expose', 'volumes', 'volumes_from', 'restart', 'networks',
  'network_mode', 'depends_on', 'secrets', 'configs', 'container_name', 'healthcheck', 'stop_signal', 'stop_grace_period',
  'hostname', 'cap_add', 'cap_drop', 'user', 'working_dir', 'labels', 'sysctls', 'extra_hosts', 'dns', 'tmpfs', 'ulimits',
  'init', 'read_only', 'shm_size', 'deploy', 'mem_limit', 'mem_reservation', 'cpus', 'profiles',
] as const;
const TOP_KEYS = ['services', 'networks', 'volumes', 'secrets', 'configs', 'name', 'version'];
const SERVICE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]*$/;
const RESTARTS: readonly string[] = ['no', 'always', 'unless-stopped', 'on-failure'];
const CONDITIONS: readonly string[] = ['service_started', 'service_healthy', 'service_completed_successfully'];

function parsePortShort(w: Walker, s: string, path: string): PortSpec[] {
  // [[host_ip:]published:]target[/protocol]; IPv6 host addresses come in brackets.
  const [body, proto = 'tcp'] = s.split('/') as [string, string?];
  if (proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp') return w.fail(path, `unknown protocol ${proto}`) ?? [];
  let hostIp: string | undefined;
  let rest = body;
  const v6 = /^\[([^\]]+)\]:(.*)$/.exec(body);
  if (v6) {
    hostIp = v6[1];
    rest = v6[2] as string;
  }
  const parts = rest.split(':');
  if (parts.length > 3) return w.fail(path, `cannot read port ${q(s)}`) ?? [];
  if (parts.length === 3) hostIp = parts.shift();
  const target = parts.pop() as string;
  const published = parts.pop();
  if (target.includes('-') || (published ?? '').includes('-')) return w.fail(path, 'port ranges are not supported') ?? [];
  const t = Number(target);
  if (!Number.isInteger(t) || t < 1 || t > 65535) return w.fail(path, `target port ${q(target)} must be 1-65535`) ?? [];
  const out: PortSpec = { target: t, protocol: proto };
  if (published !== undefined && published !== '') {
    const p = Number(published);
    if (!Number.isInteger(p) || p < 1 || p > 65535) return w.fail(path, `published port ${q(published)} must be 1-65535`) ?? [];
    out.published = p;
  }
  if (hostIp !== undefined && hostIp !== '') out.hostIp = hostIp;
  return [out];
}

function parsePorts(w: Walker, v: unknown, path: string): PortSpec[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return w.fail(path, `must be a list, got ${kind(v)}`) ?? [];
  const out: PortSpec[] = [];
  v.forEach((el, i) => {
    const p = `${path}[${i}]`;
    if (typeof el === 'number' || typeof el === 'string') {
      out.push(...parsePortShort(w, String(el), p));
      return;
    }
    if (!isObj(el)) return w.fail(p, `must be a string or a mapping, got ${kind(el)}`);
    w.keys(el, p, ['target', 'published', 'host_ip', 'protocol', 'mode', 'name', 'app_protocol']);
    const target = w.int(el.target, `${p}.target`);
    if (target === undefined) return w.fail(`${p}.target`, 'required');
    const protocol = w.str(el.protocol, `${p}.protocol`) ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp') return w.fail(`${p}.protocol`, `unknown protocol ${protocol}`);
    const mode = w.str(el.mode, `${p}.mode`);
    if (mode !== undefined && mode !== 'host' && mode !== 'ingress') w.fail(`${p}.mode`, 'must be host or ingress');
    const port: PortSpec = { target, protocol };
    const published = w.str(el.published, `${p}.published`);
    if (published !== undefined && published !== '') {
      const n = Number(published);
      if (!Number.isInteger(n) || n < 1 || n > 65535) return w.fail(`${p}.published`, published.includes('-') ? 'port ranges are not supported' : 'must be 1-65535');
      port.published = n;
    }
    const hostIp = w.str(el.host_ip, `${p}.host_ip`);
    if (hostIp !== undefined && hostIp !== '') port.hostIp = hostIp;
    out.push(port);
    return undefined;
  });
  return out;
}

function parseVolumes(w: Walker, v: unknown, path: string, declared: Obj): MountSpec[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return w.fail(path, `must be a list, got ${kind(v)}`) ?? [];
  const out: MountSpec[] = [];
  v.forEach((el, i) => {
    const p = `${path}[${i}]`;
    let m: MountSpec | undefined;
    if (typeof el === 'string') {
      const parts = el.split(':');
      if (parts.length === 1) m = { type: 'volume', target: parts[0] as string, readOnly: false };
      else {
        const [src, target, mode = 'rw'] = parts as [string, string, string?];
        if (parts.length > 3) return w.fail(p, `cannot read volume ${q(el)}`);
        const modes = mode.split(',');
        for (const md of modes) if (!['ro', 'rw', 'z', 'Z', 'nocopy'].includes(md)) return w.fail(p, `volume mode ${md} is not supported`);
        const isPath = src.startsWith('/') || src.startsWith('.') || src.startsWith('~');
        m = { type: isPath ? 'bind' : 'volume', source: src, target, readOnly: modes.includes('ro') };
      }
    } else if (isObj(el)) {
      w.keys(el, p, ['type', 'source', 'target', 'read_only', 'volume', 'tmpfs', 'bind', 'consistency']);
      const type = w.str(el.type, `${p}.type`);
      if (type !== 'volume' && type !== 'bind' && type !== 'tmpfs') return w.fail(`${p}.type`, 'must be volume, bind or tmpfs');
      const target = w.str(el.target, `${p}.target`);
      if (target === undefined) return w.fail(`${p}.target`, 'required');
      m = { type, target, readOnly: w.bool(el.read_only, `${p}.read_only`) ?? false };
      const source = w.str(el.source, `${p}.source`);
      if (source !== undefined && source !== '') m.source = source;
      if (el.volume !== undefined) {
        const vo = w.obj(el.volume, `${p}.volume`);
        if (vo) w.keys(vo, `${p}.volume`, ['nocopy']);
      }
      if (el.bind !== undefined) {
        const bo = w.obj(el.bind, `${p}.bind`);
        if (bo) w.keys(bo, `${p}.bind`, []);
      }
      if (el.tmpfs !== undefined) {
        const to = w.obj(el.tmpfs, `${p}.tmpfs`);
        if (to) {
          w.keys(to, `${p}.tmpfs`, ['size']);
          const size = to.size === undefined ? undefined : parseBytes(to.size);
          if (to.size !== undefined && size === undefined) w.fail(`${p}.tmpfs.size`, 'must be a size like 64m');
          if (size !== undefined) m.tmpfsSizeBytes = size;
        }
      }
    } else return w.fail(p, `must be a string or a mapping, got ${kind(el)}`);
    if (!m.target.startsWith('/')) return w.fail(p, `target ${q(m.target)} must be an absolute path`);
    if (m.type === 'bind') {
      if (m.source === undefined) return w.fail(p, 'a bind mount needs a source');
      if (!m.source.startsWith('/')) return w.fail(p, `bind source ${q(m.source)} must be an absolute path (there is no project folder on the host)`);
    }
    if (m.type === 'volume' && m.source !== undefined && !Object.hasOwn(declared, m.source)) {
      return w.fail(p, `volume ${q(m.source)} is not declared in the top-level volumes`);
    }
    out.push(m);
    return undefined;
  });
  return out;
}

function parseDependsOn(w: Walker, v: unknown, path: string): DependsOn[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) {
    return w.strList(v, path).map((service) => ({ service, condition: 'service_started' as const, required: true, restart: false }));
  }
  if (!isObj(v)) return w.fail(path, `must be a list or a mapping, got ${kind(v)}`) ?? [];
  const out: DependsOn[] = [];
  for (const [service, raw] of Object.entries(v)) {
    const p = `${path}.${service}`;
    const o = w.obj(raw, p);
    if (!o) continue;
    w.keys(o, p, ['condition', 'required', 'restart']);
    const condition = w.str(o.condition, `${p}.condition`) ?? 'service_started';
    if (!CONDITIONS.includes(condition)) {
      w.fail(`${p}.condition`, `must be one of ${CONDITIONS.join(', ')}`);
      continue;
    }
    out.push({ service, condition: condition as DependsCondition, required: w.bool(o.required, `${p}.required`) ?? true, restart: w.bool(o.restart, `${p}.restart`) ?? false });
  }
  return out;
}

function parseHealthcheck(w: Walker, v: unknown, path: string): HealthcheckSpec | undefined {
  if (v === undefined || v === null) return undefined;
  const o = w.obj(v, path);
  if (!o) return undefined;
  w.keys(o, path, ['test', 'interval', 'timeout', 'retries', 'start_period', 'disable']);
  const h: HealthcheckSpec = {};
  if (w.bool(o.disable, `${path}.disable`) === true) return { disable: true };
  if (o.test !== undefined) {
    if (typeof o.test === 'string') h.test = ['CMD-SHELL', o.test];
    else {
      const t = w.strList(o.test, `${path}.test`);
      if (t[0] === 'NONE') return { disable: true };
      if (t.length > 0 && !['CMD', 'CMD-SHELL'].includes(t[0] as string)) w.fail(`${path}.test`, 'a list must start with CMD, CMD-SHELL or NONE');
      h.test = t;
    }
  }
  for (const [key, field] of [['interval', 'intervalNs'], ['timeout', 'timeoutNs'], ['start_period', 'startPeriodNs']] as const) {
    if (o[key] === undefined) continue;
    const ns = parseDurationNs(o[key]);
    if (ns === undefined) w.fail(`${path}.${key}`, 'must be a duration like 10s or 1m30s');
    else h[field] = ns;
  }
  const retries = w.int(o.retries, `${path}.retries`);
  if (retries !== undefined) h.retries = retries;
  return h;
}

function parseFileRefs(w: Walker, v: unknown, path: string, declared: Obj, kindName: 'secrets' | 'configs'): FileObjectRef[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) return w.fail(path, `must be a list, got ${kind(v)}`) ?? [];
  const out: FileObjectRef[] = [];
  v.forEach((el, i) => {
    const p = `${path}[${i}]`;
    let ref: FileObjectRef | undefined;
    const defaultTarget = (src: string) => (kindName === 'secrets' ? `/run/secrets/${src}` : `/${src}`);
    if (typeof el === 'string') ref = { source: el, target: defaultTarget(el), mode: 0o400 };
    else if (isObj(el)) {
      w.keys(el, p, ['source', 'target', 'uid', 'gid', 'mode']);
      const source = w.str(el.source, `${p}.source`);
      if (source === undefined) return w.fail(`${p}.source`, 'required');
      let target = w.str(el.target, `${p}.target`) ?? defaultTarget(source);
      if (kindName === 'secrets' && !target.startsWith('/')) target = `/run/secrets/${target}`;
      // `mode: 0440` is octal in compose files (YAML 1.1), but YAML 1.2 reads it as decimal 440: digits 0-7 are taken as octal.
      const mode = el.mode === undefined ? 0o400 : typeof el.mode === 'number' && !/^[0-7]{1,4}$/.test(String(el.mode)) ? el.mode : Number.parseInt(String(el.mode), 8);
      if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) return w.fail(`${p}.mode`, 'must be a file mode like 0400');
      ref = { source, target, mode };
      const uid = w.str(el.uid, `${p}.uid`);
      const gid = w.str(el.gid, `${p}.gid`);
      if (uid !== undefined) ref.uid = uid;
      if (gid !== undefined) ref.gid = gid;
    } else return w.fail(p, `must be a string or a mapping, got ${kind(el)}`);
    if (!Object.hasOwn(declared, ref.source)) return w.fail(p, `${kindName.slice(0, -1)} ${q(ref.source)} is not declared in the top-level ${kindName}`);
    if (!ref.target.startsWith('/')) return w.fail(p, 'target must be an absolute path');
    out.push(ref);
    return undefined;
  });
  return out;
}

function parseUlimits(w: Walker, v: unknown, path: string): Record<string, { soft: number; hard: number }> {
  const out: Record<string, { soft: number; hard: number }> = {};
  const o = w.obj(v, path);
  if (!o) return out;
  for (const [name, raw] of Object.entries(o)) {
    const p = `${path}.${name}`;
    if (typeof raw === 'number' || typeof raw === 'string') {
      const n = w.int(raw, p);
      if (n !== undefined) out[name] = { soft: n, hard: n };
      continue;
    }
    const lo = w.obj(raw, p);
    if (!lo) continue;
    w.keys(lo, p, ['soft', 'hard']);
    const soft = w.int(lo.soft, `${p}.soft`);
    const hard = w.int(lo.hard, `${p}.hard`);
    if (soft === undefined || hard === undefined) w.fail(p, 'needs soft and hard');
    else out[name] = { soft, hard };
  }
  return out;
}

function parseDeploy(w: Walker, v: unknown, path: string, s: ServiceSpec): void {
  const o = w.obj(v, path);
  if (!o) return;
  w.keys(o, path, ['resources']);
  const r = w.obj(o.resources, `${path}.resources`);
  if (!r) return;
  w.keys(r, `${path}.resources`, ['limits', 'reservations']);
  for (const which of ['limits', 'reservations'] as const) {
    if (r[which] === undefined) continue;
    const p = `${path}.resources.${which}`;
    const lim = w.obj(r[which], p);
    if (!lim) continue;
    w.keys(lim, p, ['cpus', 'memory']);
    const cpus = w.num(lim.cpus, `${p}.cpus`);
    const mem = lim.memory === undefined ? undefined : parseBytes(lim.memory);
    if (lim.memory !== undefined && mem === undefined) w.fail(`${p}.memory`, 'must be a size like 512m');
    if (which === 'limits') {
      if (cpus !== undefined) s.cpus ??= cpus;
      if (mem !== undefined) s.memLimitBytes ??= mem;
    } else {
      if (cpus !== undefined) s.cpusReservation = cpus;
      if (mem !== undefined) s.memReservationBytes ??= mem;
    }
  }
}

function parseService(w: Walker, name: string, raw: unknown, top: { networks: Obj; volumes: Obj; secrets: Obj; configs: Obj }, env: Readonly<Record<string, string>>): ServiceSpec | undefined {
  const path = `services.${name}`;
  if (!SERVICE_NAME.test(name)) return w.fail(path, 'a service name has letters, digits, ".", "_" and "-" only');
  const o = w.obj(raw, path);
  if (!o) return undefined;
  w.keys(o, path, SERVICE_KEYS);
  const image = w.str(o.image, `${path}.image`);
  if (image === undefined || image === '') {
    return w.fail(path, o.build !== undefined ? 'has only `build`: an agent cannot build images, so the service needs an `image`' : 'needs an `image`');
  }
  const restartRaw = w.str(o.restart, `${path}.restart`) ?? 'no';
  const [restartName, maxRetries] = restartRaw.split(':') as [string, string?];
  const restart: ServiceSpec['restart'] = { name: (restartName === '' ? 'no' : restartName) as RestartName };
  if (!RESTARTS.includes(restart.name)) w.fail(`${path}.restart`, `must be one of ${RESTARTS.join(', ')}`);
  if (maxRetries !== undefined) {
    const n = Number(maxRetries);
    if (restart.name !== 'on-failure' || !Number.isInteger(n) || n < 0) w.fail(`${path}.restart`, 'only on-failure takes a retry count (on-failure:3)');
    else restart.maxRetries = n;
  }
  const s: ServiceSpec = {
    name,
    image,
    environment: w.mapping(o.environment, `${path}.environment`, env),
    ports: parsePorts(w, o.ports, `${path}.ports`),
    expose: w.strList(o.expose, `${path}.expose`),
    volumes: parseVolumes(w, o.volumes, `${path}.volumes`, top.volumes),
    volumesFrom: [],
    restart,
    networks: [],
    dependsOn: parseDependsOn(w, o.depends_on, `${path}.depends_on`),
    labels: w.mapping(o.labels, `${path}.labels`),
    capAdd: w.strList(o.cap_add, `${path}.cap_add`),
    capDrop: w.strList(o.cap_drop, `${path}.cap_drop`),
    sysctls: w.mapping(o.sysctls, `${path}.sysctls`),
    extraHosts: Array.isArray(o.extra_hosts) || typeof o.extra_hosts === 'string' ? w.strList(o.extra_hosts, `${path}.extra_hosts`) : Object.entries(w.mapping(o.extra_hosts, `${path}.extra_hosts`)).map(([h, ip]) => `${h}:${ip}`),
    dns: w.strList(o.dns, `${path}.dns`),
    tmpfs: w.strList(o.tmpfs, `${path}.tmpfs`),
    ulimits: parseUlimits(w, o.ulimits, `${path}.ulimits`),
    secrets: parseFileRefs(w, o.secrets, `${path}.secrets`, top.secrets, 'secrets'),
    configs: parseFileRefs(w, o.configs, `${path}.configs`, top.configs, 'configs'),
    profiles: w.strList(o.profiles, `${path}.profiles`),
    raw: o,
  };
  for (const label of Object.keys(s.labels)) {
    if (label.startsWith('dev.persys.') || label.startsWith('com.docker.compose.')) w.fail(`${path}.labels.${label}`, 'is reserved (set by the agent)');
  }
  const command = w.commandLike(o.command, `${path}.command`);
  if (command !== undefined) s.command = command;
  const entrypoint = w.commandLike(o.entrypoint, `${path}.entrypoint`);
  if (entrypoint !== undefined) s.entrypoint = entrypoint;
  for (const [key, field] of [['container_name', 'containerName'], ['hostname', 'hostname'], ['user', 'user'], ['working_dir', 'workingDir'], ['stop_signal', 'stopSignal']] as const) {
    const val = w.str(o[key], `${path}.${key}`);
    if (val !== undefined) s[field] = val;
  }
  const init = w.bool(o.init, `${path}.init`);
  if (init !== undefined) s.init = init;
  const ro = w.bool(o.read_only, `${path}.read_only`);
  if (ro !== undefined) s.readOnly = ro;
  if (o.shm_size !== undefined) {
    const b = parseBytes(o.shm_size);
    if (b === undefined) w.fail(`${path}.shm_size`, 'must be a size like 64m');
    else s.shmSizeBytes = b;
  }
  if (o.stop_grace_period !== undefined) {
    const ns = parseDurationNs(o.stop_grace_period);
    if (ns === undefined) w.fail(`${path}.stop_grace_period`, 'must be a duration like 10s');
    else s.stopGraceSeconds = Math.ceil(ns / 1e9);
  }
  const hc = parseHealthcheck(w, o.healthcheck, `${path}.healthcheck`);
  if (hc) s.healthcheck = hc;
  for (const [key, field] of [['mem_limit', 'memLimitBytes'], ['mem_reservation', 'memReservationBytes']] as const) {
    if (o[key] === undefined) continue;
    const b = parseBytes(o[key]);
    if (b === undefined) w.fail(`${path}.${key}`, 'must be a size like 512m or 1g');
    else s[field] = b;
  }
  const cpus = w.num(o.cpus, `${path}.cpus`);
  if (cpus !== undefined) s.cpus = cpus;
  if (o.deploy !== undefined) parseDeploy(w, o.deploy, `${path}.deploy`, s);

  const mode = w.str(o.network_mode, `${path}.network_mode`);
  if (mode !== undefined) {
    if (!/^(host|none|bridge|service:.+|container:.+)$/.test(mode)) w.fail(`${path}.network_mode`, 'must be host, none, bridge, service:NAME or container:NAME');
    if (o.networks !== undefined) w.fail(`${path}.networks`, 'cannot be combined with network_mode');
    s.networkMode = mode;
  } else if (o.networks === undefined || o.networks === null) {
    s.networks = [{ key: 'default' }];
  } else if (Array.isArray(o.networks)) {
    s.networks = w.strList(o.networks, `${path}.networks`).map((key) => ({ key }));
  } else {
    const no = w.obj(o.networks, `${path}.networks`) ?? {};
    for (const [key, nraw] of Object.entries(no)) {
      const p = `${path}.networks.${key}`;
      const n: ServiceNetwork = { key };
      const nc = w.obj(nraw, p);
      if (nc) {
        w.keys(nc, p, ['aliases', 'ipv4_address']);
        const aliases = w.strList(nc.aliases, `${p}.aliases`);
        if (aliases.length > 0) n.aliases = aliases;
        const ip = w.str(nc.ipv4_address, `${p}.ipv4_address`);
        if (ip !== undefined) n.ipv4Address = ip;
      }
      s.networks.push(n);
    }
  }
  for (const n of s.networks) {
    if (n.key !== 'default' && !Object.hasOwn(top.networks, n.key)) w.fail(`${path}.networks`, `network ${q(n.key)} is not declared in the top-level networks`);
  }
  w.strList(o.volumes_from, `${path}.volumes_from`).forEach((vf, i) => {
    const [src, m = 'rw'] = vf.split(':') as [string, string?];
    if (src.startsWith('container:')) w.fail(`${path}.volumes_from[${i}]`, 'only services of this file are supported');
    else s.volumesFrom.push({ service: src, readOnly: m === 'ro' });
  });
  return s;
}

function parseNetworks(w: Walker, o: Obj, project: string, used: Set<string>): Map<string, NetworkSpec> {
  const out = new Map<string, NetworkSpec>();
  const entries: [string, unknown][] = Object.entries(o);
  if (used.has('default') && !Object.hasOwn(o, 'default')) entries.push(['default', {}]);
  for (const [key, raw] of entries) {
    const p = `networks.${key}`;
    const n = w.obj(raw, p);
    if (!n) continue;
    w.keys(n, p, ['driver', 'driver_opts', 'internal', 'attachable', 'enable_ipv6', 'labels', 'external', 'name', 'ipam']);
    const external = w.bool(n.external, `${p}.external`) ?? false;
    const name = w.str(n.name, `${p}.name`) ?? (external ? key : `${project}_${key}`);
    const spec: NetworkSpec = { key, name, external, driverOpts: w.mapping(n.driver_opts, `${p}.driver_opts`), labels: w.mapping(n.labels, `${p}.labels`) };
    const driver = w.str(n.driver, `${p}.driver`);
    if (driver !== undefined) spec.driver = driver;
    for (const [k, f] of [['internal', 'internal'], ['attachable', 'attachable'], ['enable_ipv6', 'enableIpv6']] as const) {
      const b = w.bool(n[k], `${p}.${k}`);
      if (b !== undefined) spec[f] = b;
    }
    if (n.ipam !== undefined) {
      const io = w.obj(n.ipam, `${p}.ipam`);
      if (io) {
        w.keys(io, `${p}.ipam`, ['driver', 'config']);
        const ipam: NonNullable<NetworkSpec['ipam']> = { config: [] };
        const d = w.str(io.driver, `${p}.ipam.driver`);
        if (d !== undefined) ipam.driver = d;
        if (Array.isArray(io.config)) {
          io.config.forEach((c, i) => {
            const cp = `${p}.ipam.config[${i}]`;
            const co = w.obj(c, cp);
            if (!co) return;
            w.keys(co, cp, ['subnet', 'gateway', 'ip_range']);
            const entry: { subnet?: string; gateway?: string; ipRange?: string } = {};
            const subnet = w.str(co.subnet, `${cp}.subnet`);
            const gateway = w.str(co.gateway, `${cp}.gateway`);
            const ipRange = w.str(co.ip_range, `${cp}.ip_range`);
            if (subnet !== undefined) entry.subnet = subnet;
            if (gateway !== undefined) entry.gateway = gateway;
            if (ipRange !== undefined) entry.ipRange = ipRange;
            ipam.config.push(entry);
          });
        } else if (io.config !== undefined) w.fail(`${p}.ipam.config`, 'must be a list');
        spec.ipam = ipam;
      }
    }
    out.set(key, spec);
  }
  return out;
}

function parseVolumeDecls(w: Walker, o: Obj, project: string): Map<string, VolumeSpec> {
  const out = new Map<string, VolumeSpec>();
  for (const [key, raw] of Object.entries(o)) {
    const p = `volumes.${key}`;
    const n = w.obj(raw, p);
    if (!n) continue;
    w.keys(n, p, ['driver', 'driver_opts', 'labels', 'external', 'name']);
    const external = w.bool(n.external, `${p}.external`) ?? false;
    const name = w.str(n.name, `${p}.name`) ?? (external ? key : `${project}_${key}`);
    const spec: VolumeSpec = { key, name, external, driverOpts: w.mapping(n.driver_opts, `${p}.driver_opts`), labels: w.mapping(n.labels, `${p}.labels`) };
    const driver = w.str(n.driver, `${p}.driver`);
    if (driver !== undefined) spec.driver = driver;
    out.set(key, spec);
  }
  return out;
}

function parseFileObjects(w: Walker, o: Obj, which: 'secrets' | 'configs', env: Readonly<Record<string, string>>): Map<string, FileObjectSpec> {
  const out = new Map<string, FileObjectSpec>();
  for (const [key, raw] of Object.entries(o)) {
    const p = `${which}.${key}`;
    const n = w.obj(raw, p);
    if (!n) continue;
    w.keys(n, p, ['content', 'environment', 'name']);
    if (n.content !== undefined) {
      const c = w.str(n.content, `${p}.content`);
      if (c !== undefined) out.set(key, { key, content: c });
    } else if (n.environment !== undefined) {
      const varName = w.str(n.environment, `${p}.environment`);
      if (varName === undefined) continue;
      const value = env[varName];
      if (value === undefined) w.fail(`${p}.environment`, `variable ${varName} is not in the workload's env`);
      else out.set(key, { key, content: value });
    } else w.fail(p, 'needs `content` or `environment` (files and external ones are not supported on an agent)');
  }
  return out;
}

/** Dependency order (dependencies first, ties by name), or the cycle as `a -> b -> a`. */
export function dependencyOrder(services: readonly ServiceSpec[]): { order: ServiceSpec[] } | { cycle: string[] } {
  const byName = new Map(services.map((s) => [s.name, s]));
  const deps = (s: ServiceSpec): string[] => {
    const out = new Set<string>(s.dependsOn.map((d) => d.service));
    for (const vf of s.volumesFrom) out.add(vf.service);
    const m = s.networkMode?.startsWith('service:') ? s.networkMode.slice('service:'.length) : undefined;
    if (m !== undefined) out.add(m);
    return [...out].filter((d) => byName.has(d)).sort();
  };
  const state = new Map<string, 'visiting' | 'done'>();
  const order: ServiceSpec[] = [];
  const stack: string[] = [];
  let cycle: string[] | undefined;
  const visit = (name: string): void => {
    if (cycle) return;
    const st = state.get(name);
    if (st === 'done') return;
    if (st === 'visiting') {
      cycle = [...stack.slice(stack.indexOf(name)), name];
      return;
    }
    state.set(name, 'visiting');
    stack.push(name);
    const s = byName.get(name) as ServiceSpec;
    for (const d of deps(s)) visit(d);
    stack.pop();
    state.set(name, 'done');
    order.push(s);
  };
  for (const name of [...byName.keys()].sort()) visit(name);
  return cycle ? { cycle } : { order };
}

/** Parses, interpolates and validates a compose file; every problem comes back with its path. */
export function parseCompose(input: ParseInput): ParseResult {
  const env = input.env ?? {};
  let doc: unknown;
  try {
    const docs = yaml().parseAllDocuments(input.composeYaml, { merge: true, uniqueKeys: true });
    if (Array.isArray(docs)) {
      if (docs.length !== 1) return { ok: false, issues: [{ path: '(root)', message: `must hold one YAML document, found ${docs.length}` }] };
    }
    const one = Array.isArray(docs) ? docs[0] : docs;
    if (!one) return { ok: false, issues: [{ path: '(root)', message: 'empty' }] };
    if (one.errors.length > 0) {
      const e = one.errors[0] as YamlModule.YAMLError;
      return { ok: false, issues: [{ path: '(root)', message: `YAML: ${e.message.split('\n')[0] ?? e.message}` }] };
    }
    doc = one.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    return { ok: false, issues: [{ path: '(root)', message: `YAML: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}` }] };
  }
  const w = new Walker();
  if (!isObj(doc)) return { ok: false, issues: [{ path: '(root)', message: `must be a mapping, got ${kind(doc)}` }] };
  const interpolationErrors: InterpolationError[] = [];
  const root = interpolateTree(doc, env, interpolationErrors) as Obj;
  if (interpolationErrors.length > 0) return { ok: false, issues: interpolationErrors };

  w.keys(root, '', TOP_KEYS);
  const name = w.str(root.name, 'name');
  if (name !== undefined && name !== input.project) w.fail('name', `is ${q(name)} but the workload's project is ${q(input.project)}`);
  const top = {
    networks: w.obj(root.networks, 'networks') ?? {},
    volumes: w.obj(root.volumes, 'volumes') ?? {},
    secrets: w.obj(root.secrets, 'secrets') ?? {},
    configs: w.obj(root.configs, 'configs') ?? {},
  };
  const servicesObj = w.obj(root.services, 'services') ?? {};
  if (Object.keys(servicesObj).length === 0) w.fail('services', 'at least one service is needed');
  const all: ServiceSpec[] = [];
  for (const [sname, raw] of Object.entries(servicesObj)) {
    const s = parseService(w, sname, raw, top, env);
    if (s) all.push(s);
  }
  const profiles = new Set(input.profiles ?? []);
  const enabled = all.filter((s) => s.profiles.length === 0 || s.profiles.some((p) => profiles.has(p)));
  const names = new Set(enabled.map((s) => s.name));
  const allNames = new Set(all.map((s) => s.name));
  const kept: ServiceSpec[] = [];
  for (const s of enabled) {
    s.dependsOn = s.dependsOn.filter((d) => {
      if (names.has(d.service)) return true;
      const why = allNames.has(d.service) ? 'is not enabled by the active profiles' : 'is not a service of this file';
      if (d.required) w.fail(`services.${s.name}.depends_on.${d.service}`, why);
      else w.warnings.push(`services.${s.name}.depends_on.${d.service}: ${why}; required: false, so it is skipped`);
      return false;
    });
    for (const vf of s.volumesFrom) if (!names.has(vf.service)) w.fail(`services.${s.name}.volumes_from`, `service ${vf.service} is not an enabled service of this file`);
    const nm = s.networkMode?.startsWith('service:') ? s.networkMode.slice(8) : undefined;
    if (nm !== undefined && !names.has(nm)) w.fail(`services.${s.name}.network_mode`, `service ${nm} is not an enabled service of this file`);
    kept.push(s);
  }
  const containerNames = new Map<string, string>();
  for (const s of kept) {
    if (s.containerName === undefined) continue;
    const other = containerNames.get(s.containerName);
    if (other !== undefined) w.fail(`services.${s.name}.container_name`, `${s.containerName} is also the container_name of ${other}`);
    containerNames.set(s.containerName, s.name);
  }
  const usedNetworks = new Set(kept.flatMap((s) => s.networks.map((n) => n.key)));
  const networks = parseNetworks(w, top.networks, input.project, usedNetworks);
  const volumes = parseVolumeDecls(w, top.volumes, input.project);
  const secrets = parseFileObjects(w, top.secrets, 'secrets', env);
  const configs = parseFileObjects(w, top.configs, 'configs', env);
  const ordered = dependencyOrder(kept);
  if ('cycle' in ordered) w.fail('services', `dependency cycle: ${ordered.cycle.join(' -> ')}`);
  if (w.issues.length > 0) return { ok: false, issues: w.issues };
  if (kept.length === 0) return { ok: false, issues: [{ path: 'services', message: 'no service is enabled by the active profiles' }] };
  return {
    ok: true,
    app: { project: input.project, services: 'order' in ordered ? ordered.order : [], networks, volumes, secrets, configs, warnings: w.warnings },
  };
}

/**
 * Memoised parse: the schema check, the type's canonical form and the runtime all need the same app,
 * and a 1 MiB file should be parsed once per content, not once per caller. Small and bounded.
 */
const MEMO_MAX = 64;
const memo = new Map<string, ParseResult>();
export function parseComposeCached(input: ParseInput): ParseResult {
  const key = JSON.stringify([input.project, input.composeYaml, input.env ?? {}, input.profiles ?? []]);
  const hit = memo.get(key);
  if (hit) {
    memo.delete(key);
    memo.set(key, hit);
    return hit;
  }
  const r = parseCompose(input);
  memo.set(key, r);
  if (memo.size > MEMO_MAX) memo.delete(memo.keys().next().value as string);
  return r;
}
