import type Dockerode from 'dockerode';

import { stableStringify } from '../canonical-json.js';
import { LABELS } from '../runtime.js';
import { asArgv } from './canonical.js';
import type { ComposeApp, NetworkSpec, ServiceSpec, VolumeSpec } from './model.js';

/*
 * Engine objects of a compose app, named and labelled the way docker compose does (so `docker compose`
 * and `docker-compose` users recognise them), plus our dev.persys.* labels on every object.
 */

export const COMPOSE = {
  project: 'com.docker.compose.project',
  service: 'com.docker.compose.service',
  number: 'com.docker.compose.container-number',
  oneoff: 'com.docker.compose.oneoff',
  configHash: 'com.docker.compose.config-hash',
  workingDir: 'com.docker.compose.project.working_dir',
  dependsOn: 'com.docker.compose.depends_on',
  version: 'com.docker.compose.version',
  network: 'com.docker.compose.network',
  volume: 'com.docker.compose.volume',
} as const;

/** Our labels beyond runtime.ts LABELS, on compose objects only. */
export const COMPOSE_LABELS = {
  serviceHash: 'dev.persys.service-hash',
  /** keep | delete: what removing the app does with its named volumes (read back at removal). */
  volumesPolicy: 'dev.persys.compose-volumes',
  /** Hash of a network's own config, so a changed network is recreated. */
  networkHash: 'dev.persys.network-hash',
} as const;

/** The compose version whose config-hash format the labels follow (compose-hash.ts). */
export const COMPOSE_VERSION = '1.29.2';
/** compose writes the folder it ran in; an agent has none, so the labels name the state of the app. */
export const WORKING_DIR = '/';

export interface OwnContext {
  nodeId: string;
  workloadId: string;
  revision: string | undefined;
  specHash: string;
  hashVersion: number;
}

export function ownLabels(ctx: OwnContext): Record<string, string> {
  const l: Record<string, string> = {
    [LABELS.managed]: 'true',
    [LABELS.nodeId]: ctx.nodeId,
    [LABELS.workloadId]: ctx.workloadId,
    [LABELS.specHash]: ctx.specHash,
    [LABELS.hashVersion]: String(ctx.hashVersion),
    [LABELS.type]: 'compose',
  };
  if (ctx.revision !== undefined) l[LABELS.revision] = ctx.revision;
  return l;
}

export const containerNameOf = (app: ComposeApp, s: ServiceSpec): string => s.containerName ?? `${app.project}-${s.name}-1`;

/** compose v2's depends_on label: `db:service_healthy:false,cache:service_started:false`. */
export function dependsOnLabel(s: ServiceSpec): string {
  return s.dependsOn.map((d) => `${d.service}:${d.condition}:${d.restart ? 'true' : 'false'}`).join(',');
}

export interface DependsOnEntry {
  service: string;
  condition: string;
  required: boolean;
}

export function parseDependsOnLabel(label: string | undefined): DependsOnEntry[] {
  if (label === undefined || label === '') return [];
  return label.split(',').map((part) => {
    const [service = '', condition = 'service_started'] = part.split(':');
    return { service, condition, required: true };
  });
}

export function networkHash(n: NetworkSpec): string {
  return stableStringify({ driver: n.driver ?? 'bridge', driverOpts: n.driverOpts, internal: n.internal ?? false, attachable: n.attachable ?? false, ipv6: n.enableIpv6 ?? false, ipam: n.ipam ?? null, labels: n.labels });
}

export function networkCreateOptions(app: ComposeApp, n: NetworkSpec, own: OwnContext): Dockerode.NetworkCreateOptions {
  const opts: Dockerode.NetworkCreateOptions = {
    Name: n.name,
    CheckDuplicate: true,
    Driver: n.driver ?? 'bridge',
    Options: { ...n.driverOpts },
    Labels: {
      ...n.labels,
      [COMPOSE.project]: app.project,
      [COMPOSE.network]: n.key,
      [COMPOSE.version]: COMPOSE_VERSION,
      ...ownLabels(own),
      [COMPOSE_LABELS.networkHash]: networkHash(n),
    },
  };
  if (n.internal !== undefined) opts.Internal = n.internal;
  if (n.attachable !== undefined) opts.Attachable = n.attachable;
  if (n.enableIpv6 !== undefined) opts.EnableIPv6 = n.enableIpv6;
  if (n.ipam) {
    opts.IPAM = {
      Driver: n.ipam.driver ?? 'default',
      Config: n.ipam.config.map((c) => {
        const e: { Subnet?: string; Gateway?: string; IPRange?: string } = {};
        if (c.subnet !== undefined) e.Subnet = c.subnet;
        if (c.gateway !== undefined) e.Gateway = c.gateway;
        if (c.ipRange !== undefined) e.IPRange = c.ipRange;
        return e;
      }),
    };
  }
  return opts;
}

export function volumeCreateOptions(app: ComposeApp, vol: VolumeSpec, own: OwnContext): Dockerode.VolumeCreateOptions {
  return {
    Name: vol.name,
    Driver: vol.driver ?? 'local',
    DriverOpts: { ...vol.driverOpts },
    Labels: { ...vol.labels, [COMPOSE.project]: app.project, [COMPOSE.volume]: vol.key, [COMPOSE.version]: COMPOSE_VERSION, ...ownLabels(own) },
  };
}

const NS = 1e9;

export interface ServiceCreateContext {
  own: OwnContext;
  serviceHash: string;
  configHash: string;
  volumesPolicy: 'keep' | 'delete';
  /** Container ids of services already created, for network_mode service:x and volumes_from. */
  containerOf: (service: string) => string | undefined;
}

/** The create body of one service's container (attached to its first network; the others are connected after). */
export function serviceCreateOptions(app: ComposeApp, s: ServiceSpec, ctx: ServiceCreateContext): Dockerode.ContainerCreateOptions {
  const host: Dockerode.HostConfig = {};
  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const p of s.ports) {
    const key = `${p.target}/${p.protocol}`;
    exposed[key] = {};
    const list = bindings[key] ?? [];
    // Like compose: a port without a published one is published on an ephemeral host port.
    list.push({ HostIp: p.hostIp ?? '', HostPort: p.published === undefined ? '' : String(p.published) });
    bindings[key] = list;
  }
  for (const e of s.expose) exposed[e.includes('/') ? e : `${e}/tcp`] = {};
  if (Object.keys(bindings).length > 0) host.PortBindings = bindings;

  const mounts: Dockerode.MountSettings[] = [];
  for (const m of s.volumes) {
    if (m.type === 'tmpfs') {
      const t: Dockerode.MountSettings = { Type: 'tmpfs', Source: '', Target: m.target };
      if (m.tmpfsSizeBytes !== undefined) t.TmpfsOptions = { SizeBytes: m.tmpfsSizeBytes, Mode: 0o1777 };
      mounts.push(t);
    } else if (m.type === 'bind') mounts.push({ Type: 'bind', Source: m.source as string, Target: m.target, ReadOnly: m.readOnly });
    else mounts.push({ Type: 'volume', Source: m.source === undefined ? '' : app.volumes.get(m.source)?.name ?? m.source, Target: m.target, ReadOnly: m.readOnly });
  }
  if (mounts.length > 0) host.Mounts = mounts;
  if (s.tmpfs.length > 0) host.Tmpfs = Object.fromEntries(s.tmpfs.map((t) => [t.split(':')[0] as string, t.split(':')[1] ?? '']));

  host.RestartPolicy = s.restart.maxRetries !== undefined ? { Name: s.restart.name, MaximumRetryCount: s.restart.maxRetries } : { Name: s.restart.name === 'no' ? '' : s.restart.name };
  if (s.capAdd.length > 0) host.CapAdd = [...s.capAdd];
  if (s.capDrop.length > 0) host.CapDrop = [...s.capDrop];
  if (Object.keys(s.sysctls).length > 0) host.Sysctls = { ...s.sysctls };
  if (s.extraHosts.length > 0) host.ExtraHosts = s.extraHosts.map((h) => h.replace(/=/, ':'));
  if (s.dns.length > 0) host.Dns = [...s.dns];
  const ulimits = Object.entries(s.ulimits).map(([Name, l]) => ({ Name, Soft: l.soft, Hard: l.hard }));
  if (ulimits.length > 0) host.Ulimits = ulimits;
  if (s.init !== undefined) host.Init = s.init;
  if (s.readOnly !== undefined) host.ReadonlyRootfs = s.readOnly;
  if (s.shmSizeBytes !== undefined) host.ShmSize = s.shmSizeBytes;
  if (s.memLimitBytes !== undefined) host.Memory = s.memLimitBytes;
  if (s.memReservationBytes !== undefined) host.MemoryReservation = s.memReservationBytes;
  if (s.cpus !== undefined) host.NanoCpus = Math.round(s.cpus * NS);
  const volumesFrom = s.volumesFrom.map((v) => `${ctx.containerOf(v.service) ?? v.service}:${v.readOnly ? 'ro' : 'rw'}`);
  if (volumesFrom.length > 0) host.VolumesFrom = volumesFrom;

  let networking: Dockerode.ContainerCreateOptions['NetworkingConfig'];
  if (s.networkMode !== undefined) {
    host.NetworkMode = s.networkMode.startsWith('service:') ? `container:${ctx.containerOf(s.networkMode.slice(8)) ?? s.networkMode.slice(8)}` : s.networkMode;
  } else {
    const first = [...s.networks].sort((a, b) => a.key.localeCompare(b.key))[0];
    if (first) {
      const name = app.networks.get(first.key)?.name ?? `${app.project}_${first.key}`;
      host.NetworkMode = name;
      networking = { EndpointsConfig: { [name]: endpointConfig(s, first) } };
    }
  }

  const hc = s.healthcheck;
  let healthcheck: Dockerode.HealthConfig | undefined;
  if (hc?.disable) healthcheck = { Test: ['NONE'] };
  else if (hc) {
    healthcheck = {};
    if (hc.test) healthcheck.Test = [...hc.test];
    if (hc.intervalNs !== undefined) healthcheck.Interval = hc.intervalNs;
    if (hc.timeoutNs !== undefined) healthcheck.Timeout = hc.timeoutNs;
    if (hc.startPeriodNs !== undefined) healthcheck.StartPeriod = hc.startPeriodNs;
    if (hc.retries !== undefined) healthcheck.Retries = hc.retries;
  }

  const labels: Record<string, string> = {
    ...s.labels,
    [COMPOSE.project]: app.project,
    [COMPOSE.service]: s.name,
    [COMPOSE.number]: '1',
    [COMPOSE.oneoff]: 'False',
    [COMPOSE.configHash]: ctx.configHash,
    [COMPOSE.workingDir]: WORKING_DIR,
    [COMPOSE.dependsOn]: dependsOnLabel(s),
    [COMPOSE.version]: COMPOSE_VERSION,
    ...ownLabels(ctx.own),
    [COMPOSE_LABELS.serviceHash]: ctx.serviceHash,
    [COMPOSE_LABELS.volumesPolicy]: ctx.volumesPolicy,
  };

  const opts: Dockerode.ContainerCreateOptions = {
    name: containerNameOf(app, s),
    Image: s.image,
    Env: Object.keys(s.environment).sort().map((k) => `${k}=${s.environment[k] ?? ''}`),
    Labels: labels,
    HostConfig: host,
  };
  const cmd = asArgv(s.command);
  if (cmd !== undefined) opts.Cmd = cmd;
  const ep = asArgv(s.entrypoint);
  if (ep !== undefined) opts.Entrypoint = ep;
  if (Object.keys(exposed).length > 0) opts.ExposedPorts = exposed;
  if (healthcheck) opts.Healthcheck = healthcheck;
  if (s.hostname !== undefined) opts.Hostname = s.hostname;
  if (s.user !== undefined) opts.User = s.user;
  if (s.workingDir !== undefined) opts.WorkingDir = s.workingDir;
  if (s.stopSignal !== undefined) opts.StopSignal = s.stopSignal;
  if (s.stopGraceSeconds !== undefined) opts.StopTimeout = s.stopGraceSeconds;
  if (networking) opts.NetworkingConfig = networking;
  return opts;
}

/** Endpoint settings on one network: the service name (and aliases) resolve to it, as with compose. */
export function endpointConfig(s: ServiceSpec, n: ServiceSpec['networks'][number]): Dockerode.EndpointSettings {
  const e: Dockerode.EndpointSettings = { Aliases: [s.name, ...(n.aliases ?? [])] };
  if (n.ipv4Address !== undefined) e.IPAMConfig = { IPv4Address: n.ipv4Address };
  return e;
}

/** The other networks of a service, connected after create (the create body takes one). */
export function extraNetworks(app: ComposeApp, s: ServiceSpec): { name: string; endpoint: Dockerode.EndpointSettings }[] {
  if (s.networkMode !== undefined) return [];
  return [...s.networks]
    .sort((a, b) => a.key.localeCompare(b.key))
    .slice(1)
    .map((n) => ({ name: app.networks.get(n.key)?.name ?? `${app.project}_${n.key}`, endpoint: endpointConfig(s, n) }));
}
