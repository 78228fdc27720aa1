import { hash } from 'node:crypto';

import type { ComposeApp, ServiceSpec } from './model.js';
import { parseDurationNs } from './model.js';

/*
 * `com.docker.compose.config-hash` exactly as docker-compose 1.29 computes it (compose/service.py
 * `config_dict()` + compose/utils.py `json_hash`: sha256 of Python's json.dumps(sort_keys=True,
 * separators=(',', ':')) over the service's options as compose normalised them, its image id, its
 * networks and network mode). With the same label, `docker-compose up -d` run after the agent finds
 * every container up to date and changes nothing.
 *
 * This hash is compose's, not ours: it changes with spellings (`mem_limit: 1g` vs `1024m`) and with
 * the image id. The agent's own per-service hash (canonical.ts) is what decides a recreate.
 * Checked against docker-compose 1.29.2 in test/unit/compose-hash.test.ts (golden values it printed)
 * and in the interop integration test. Not reproduced: `build` contexts (a path on the publisher's
 * machine) and compose's own secrets (1.29 has no `content:`), so such services do not match.
 */

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Python's json.dumps(obj, sort_keys=True, separators=(',', ':')) with ensure_ascii. */
export function pythonJson(v: Json): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(v);
  if (typeof v === 'string') return pyString(v);
  if (Array.isArray(v)) return `[${v.map(pythonJson).join(',')}]`;
  const keys = Object.keys(v).sort();
  return `{${keys.map((k) => `${pyString(k)}:${pythonJson(v[k] as Json)}`).join(',')}}`;
}

function pyString(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function toJson(v: unknown): Json {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (Array.isArray(v)) return v.map(toJson);
  if (typeof v === 'object') {
    const out: { [k: string]: Json } = {};
    for (const [k, x] of Object.entries(v)) Object.defineProperty(out, k, { value: toJson(x), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return String(v);
}

/** compose's list-or-dict fields as a dict; a list entry without "=" is null (compose reads it from its own env). */
function listOrDict(v: unknown, stringify = false): Json {
  const out: { [k: string]: Json } = {};
  if (Array.isArray(v)) {
    for (const el of v) {
      const s = String(el);
      const eq = s.indexOf('=');
      out[eq === -1 ? s : s.slice(0, eq)] = eq === -1 ? null : s.slice(eq + 1);
    }
    return out;
  }
  if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) out[k] = stringify && x !== null && x !== undefined ? String(x) : toJson(x);
    return out;
  }
  return toJson(v);
}

function portTuple(p: unknown): Json[] {
  if (p !== null && typeof p === 'object') {
    const o = p as Record<string, unknown>;
    const published = o.published === undefined || o.published === null ? null : Number(o.published);
    return [Number(o.target), published, (o.protocol as string | undefined) ?? null, (o.mode as string | undefined) ?? null, null];
  }
  const s = String(p);
  const [body, proto] = s.split('/') as [string, string?];
  const parts = body.split(':');
  const target = Number(parts.pop());
  const published = parts.length > 0 ? Number(parts.pop()) : null;
  const hostIp = parts.length > 0 ? (parts.pop() as string) : null;
  return [target, published, proto ?? null, null, hostIp];
}

function volumeEntry(v: unknown, app: ComposeApp): Json {
  if (typeof v === 'string') {
    const parts = v.split(':');
    if (parts.length === 1) return [null, parts[0] as string, 'rw'];
    const [src, target, mode = 'rw'] = parts as [string, string, string?];
    const external = src.startsWith('/') || src.startsWith('.') || src.startsWith('~') ? src : app.volumes.get(src)?.name ?? `${app.project}_${src}`;
    return [external, target, mode];
  }
  const o = toJson(v) as { [k: string]: Json };
  if (o.type === 'volume' && typeof o.source === 'string') o.source = app.volumes.get(o.source)?.name ?? `${app.project}_${o.source}`;
  return o;
}

function restartDict(v: unknown): Json {
  const [name, max = '0'] = String(v).split(':') as [string, string?];
  return { MaximumRetryCount: Number(max), Name: name };
}

function healthcheckDict(v: unknown): Json {
  const o = toJson(v) as { [k: string]: Json };
  if (o === null || typeof o !== 'object') return o;
  if ('disable' in o) return { test: ['NONE'] };
  for (const k of ['interval', 'timeout', 'start_period']) {
    if (o[k] !== undefined && o[k] !== null) o[k] = parseDurationNs(o[k]) ?? o[k];
  }
  return o;
}

/** The options dict compose 1.29 keeps on its Service (compose/project.py, from_config). */
export function compose129Options(s: ServiceSpec, app: ComposeApp): { [k: string]: Json } {
  const raw = s.raw;
  const o: { [k: string]: Json } = {};
  for (const [k, v] of Object.entries(raw)) {
    if (['networks', 'network_mode', 'volumes_from', 'secrets', 'platform', 'links', 'configs', 'deploy', 'scale'].includes(k)) continue;
    o[k] = toJson(v);
  }
  if (raw.environment !== undefined) o.environment = listOrDict(raw.environment);
  if (raw.labels !== undefined) o.labels = listOrDict(raw.labels);
  if (raw.sysctls !== undefined) o.sysctls = listOrDict(raw.sysctls, true);
  if (raw.restart !== undefined) o.restart = restartDict(raw.restart);
  if (Array.isArray(raw.ports)) o.ports = raw.ports.map(portTuple);
  if (raw.healthcheck !== undefined) o.healthcheck = healthcheckDict(raw.healthcheck);
  o.volumes = Array.isArray(raw.volumes) ? raw.volumes.map((v) => volumeEntry(v, app)) : [];
  if (Array.isArray(raw.depends_on)) {
    const d: { [k: string]: Json } = {};
    for (const name of raw.depends_on) d[String(name)] = { condition: 'service_started' };
    o.depends_on = d;
  }
  // compose/utils translate_deploy_keys_to_container_config: limits become cpus / mem_limit, reservations mem_reservation.
  const deploy = raw.deploy as { resources?: { limits?: { cpus?: unknown; memory?: unknown }; reservations?: { memory?: unknown } } } | undefined;
  const res = deploy?.resources;
  if (res?.limits?.cpus !== undefined && o.cpus === undefined) o.cpus = Number(res.limits.cpus);
  if (res?.limits?.memory !== undefined && o.mem_limit === undefined) o.mem_limit = toJson(res.limits.memory);
  if (res?.reservations?.memory !== undefined && o.mem_reservation === undefined) o.mem_reservation = toJson(res.reservations.memory);
  o.device_requests = null;
  o.platform = null;
  return o;
}

/** compose 1.29's config hash of one service, given the image id its container runs. */
export function compose129ConfigHash(s: ServiceSpec, app: ComposeApp, imageId: string | null): string {
  const networks: { [k: string]: Json } = {};
  let net: string;
  if (s.networkMode !== undefined) {
    net = s.networkMode.startsWith('service:') ? s.networkMode.slice('service:'.length) : s.networkMode;
  } else {
    const rawNets = s.raw.networks;
    for (const n of [...s.networks].sort((a, b) => a.key.localeCompare(b.key))) {
      const name = app.networks.get(n.key)?.name ?? `${app.project}_${n.key}`;
      const given = rawNets !== null && typeof rawNets === 'object' && !Array.isArray(rawNets) ? (rawNets as Record<string, unknown>)[n.key] : undefined;
      networks[name] = given === null || given === undefined ? {} : toJson(given);
    }
    net = Object.keys(networks)[0] ?? `${app.project}_default`;
  }
  const dict: Json = {
    options: compose129Options(s, app),
    image_id: imageId,
    links: [],
    net,
    ipc_mode: null,
    networks,
    secrets: [],
    volumes_from: s.volumesFrom.map((v) => [v.service, v.readOnly ? 'ro' : 'rw']),
  };
  return hash('sha256', pythonJson(dict), 'hex');
}
