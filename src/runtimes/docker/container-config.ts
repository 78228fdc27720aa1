import type Dockerode from 'dockerode';

import type { ContainerWorkload, Mount, PortMapping } from './spec.js';
import { LABELS } from '../runtime.js';
import { containerType } from './type.js';

/** What the mapping needs besides the workload: who we are and what the spec hashes to. */
export interface ContainerConfigContext {
  nodeId: string;
  specHash: string;
  /** The hash version specHash was computed under (default the container type's current one). */
  hashVersion?: number;
  namePrefix: string;
}

/** Docker wants durations in nanoseconds; the spec speaks seconds (fractions allowed). */
const NS_PER_SECOND = 1e9;

/**
 * Docker's own default mode for a tmpfs mount (world-writable with the sticky bit, like /tmp).
 * The engine treats 0 as "default" too, but @types/dockerode requires a Mode once TmpfsOptions
 * is present, so we state the default explicitly rather than send a misleading 0.
 */
const TMPFS_DEFAULT_MODE = 0o1777;

/** The container name for a workload; observe() never relies on it (labels are the truth). */
export function containerName(namePrefix: string, workloadId: string): string {
  return `${namePrefix}${workloadId}`;
}

/** The labels we stamp on every container we create; user labels cannot override them. */
export function ownLabels(w: ContainerWorkload, ctx: Pick<ContainerConfigContext, 'nodeId' | 'specHash' | 'hashVersion'>): Record<string, string> {
  const labels: Record<string, string> = {
    [LABELS.managed]: 'true',
    [LABELS.nodeId]: ctx.nodeId,
    [LABELS.workloadId]: w.id,
    [LABELS.specHash]: ctx.specHash,
    [LABELS.hashVersion]: String(ctx.hashVersion ?? containerType.hashVersion),
    [LABELS.type]: 'container',
  };
  // A missing revision stays a missing label, so observe() reports `undefined` and not "".
  if (w.revision !== undefined) labels[LABELS.revision] = w.revision;
  return labels;
}

function portKey(p: PortMapping): string {
  return `${p.containerPort}/${p.protocol ?? 'tcp'}`;
}

interface PortBinding {
  HostIp: string;
  HostPort: string;
}

function mapPorts(ports: readonly PortMapping[]): { exposed: Record<string, Record<string, never>>; bindings: Record<string, PortBinding[]> } {
  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, PortBinding[]> = {};
  for (const p of ports) {
    const key = portKey(p);
    exposed[key] = {};
    // Without a hostPort the port is only exposed (documented intent), never published on a random port.
    if (p.hostPort === undefined) continue;
    const list = bindings[key] ?? [];
    // An empty HostIp is Docker's "every host address" (IPv4 and IPv6), the same as `docker run -p 8080:80`.
    list.push({ HostIp: p.hostIp ?? '', HostPort: String(p.hostPort) });
    bindings[key] = list;
  }
  return { exposed, bindings };
}

/**
 * Every kind of volume goes through HostConfig.Mounts rather than Binds: with Mounts a missing bind
 * source is an error (MOUNT_FAILED) instead of Docker silently creating an empty root-owned directory,
 * which would hide a misconfiguration behind a container that "works".
 */
function mapMount(m: Mount): Dockerode.MountSettings {
  switch (m.type) {
    case 'bind':
      return { Type: 'bind', Source: m.source, Target: m.target, ReadOnly: m.readOnly ?? false };
    case 'volume':
      // The volume name is used as given: the storage layer decides names and creates the volume first.
      return { Type: 'volume', Source: m.source, Target: m.target, ReadOnly: m.readOnly ?? false };
    case 'tmpfs': {
      const mount: Dockerode.MountSettings = { Type: 'tmpfs', Source: '', Target: m.target };
      if (m.sizeBytes !== undefined) mount.TmpfsOptions = { SizeBytes: m.sizeBytes, Mode: TMPFS_DEFAULT_MODE };
      return mount;
    }
  }
}

function seconds(s: number | undefined): number | undefined {
  return s === undefined ? undefined : Math.round(s * NS_PER_SECOND);
}

/** Drops keys whose value is undefined, so the create body (and tests' deepEqual) only has what was set. */
function compact<T extends object>(o: T): T {
  for (const key of Object.keys(o) as Array<keyof T>) {
    if (o[key] === undefined) delete o[key];
  }
  return o;
}

/**
 * Maps a container workload to the Docker create body. Pure: the same workload and context always give
 * the same options, which is what lets the spec hash stand for "what the engine was asked for".
 */
export function toCreateOptions(w: ContainerWorkload, ctx: ContainerConfigContext): Dockerode.ContainerCreateOptions {
  const s = w.spec;

  const hostConfig: Dockerode.HostConfig = {};

  const ports = s.ports && s.ports.length > 0 ? mapPorts(s.ports) : undefined;
  if (ports && Object.keys(ports.bindings).length > 0) hostConfig.PortBindings = ports.bindings;

  if (s.volumes && s.volumes.length > 0) hostConfig.Mounts = s.volumes.map(mapMount);

  const r = s.resources;
  if (r) {
    // Rounded: cpus like 0.1 would otherwise give 100000000.00000001, which the engine rejects as non-integer.
    if (r.cpus !== undefined) hostConfig.NanoCpus = Math.round(r.cpus * NS_PER_SECOND);
    if (r.memoryBytes !== undefined) hostConfig.Memory = r.memoryBytes;
    if (r.memorySwapBytes !== undefined) hostConfig.MemorySwap = r.memorySwapBytes;
    if (r.cpuShares !== undefined) hostConfig.CpuShares = r.cpuShares;
    if (r.pidsLimit !== undefined) hostConfig.PidsLimit = r.pidsLimit;
  }

  // unless-stopped by default: containers keep running across an agent restart or outage,
  // and a container the agent stopped on purpose stays stopped across a daemon restart.
  const policy = s.restartPolicy ?? 'unless-stopped';
  hostConfig.RestartPolicy =
    policy === 'on-failure' && s.restartMaxRetries !== undefined
      ? { Name: policy, MaximumRetryCount: s.restartMaxRetries }
      : { Name: policy };

  const n = s.network;
  if (n) {
    if (n.mode !== undefined) hostConfig.NetworkMode = n.mode;
    if (n.dns && n.dns.length > 0) hostConfig.Dns = [...n.dns];
    if (n.extraHosts && n.extraHosts.length > 0) hostConfig.ExtraHosts = [...n.extraHosts];
  }

  const sec = s.security;
  if (sec) {
    if (sec.privileged !== undefined) hostConfig.Privileged = sec.privileged;
    if (sec.capAdd && sec.capAdd.length > 0) hostConfig.CapAdd = [...sec.capAdd];
    if (sec.capDrop && sec.capDrop.length > 0) hostConfig.CapDrop = [...sec.capDrop];
    if (sec.readOnlyRootfs !== undefined) hostConfig.ReadonlyRootfs = sec.readOnlyRootfs;
    const opts: string[] = [];
    if (sec.noNewPrivileges === true) opts.push('no-new-privileges:true');
    // Passed through as given: the Engine API wants "unconfined" or the profile's JSON text here
    // (the docker CLI reads files itself); a pure mapping cannot read host files.
    if (sec.seccompProfile !== undefined) opts.push(`seccomp=${sec.seccompProfile}`);
    if (sec.apparmorProfile !== undefined) opts.push(`apparmor=${sec.apparmorProfile}`);
    if (opts.length > 0) hostConfig.SecurityOpt = opts;
  }

  if (s.logging) hostConfig.LogConfig = { Type: s.logging.driver, Config: { ...(s.logging.options ?? {}) } };

  const h = s.healthcheck;
  const healthcheck: Dockerode.HealthConfig | undefined = h
    ? compact({
        Test: [...h.test],
        Interval: seconds(h.intervalSeconds),
        Timeout: seconds(h.timeoutSeconds),
        Retries: h.retries,
        StartPeriod: seconds(h.startPeriodSeconds),
      })
    : undefined;

  // Sorted so the body does not depend on the key order of the JSON document it came from.
  const env = s.env ? Object.keys(s.env).sort().map((k) => `${k}=${s.env?.[k] ?? ''}`) : undefined;

  return compact<Dockerode.ContainerCreateOptions>({
    name: containerName(ctx.namePrefix, w.id),
    Image: s.image,
    Cmd: s.command ? [...s.command] : undefined,
    Entrypoint: s.entrypoint ? [...s.entrypoint] : undefined,
    Env: env,
    ExposedPorts: ports ? ports.exposed : undefined,
    // Ours are spread last: the schema already reserves dev.persys.*, this makes it impossible to spoof them.
    Labels: { ...(s.labels ?? {}), ...ownLabels(w, ctx) },
    Healthcheck: healthcheck,
    User: s.user,
    WorkingDir: s.workingDir,
    Hostname: s.hostname,
    StopSignal: s.stopSignal,
    StopTimeout: s.stopTimeoutSeconds,
    HostConfig: hostConfig,
  });
}
