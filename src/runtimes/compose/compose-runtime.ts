import { StringDecoder } from 'node:string_decoder';

import type Dockerode from 'dockerode';

import { WorkloadError } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import type { ActualState } from '../../spec/status-report.js';
import { hashCanonical } from '../canonical-json.js';
import { demuxDockerLogs, mapDockerState, parseDockerEvent, parseExitCode, tailLines } from '../docker/docker-runtime.js';
import DockerClient from '../docker/dockerode.js';
import { streamDockerEvents } from '../docker/event-stream.js';
import { imagePresent, pullImage } from '../docker/images.js';
import { dockerErrorMessage, dockerStatusCode, translateDockerError, type DockerErrorContext } from '../docker/translate-error.js';
import {
  LABELS,
  hashVersionOf,
  type ApplyContext,
  type CreatedWorkload,
  type ObservedWorkload,
  type RemoveReason,
  type Runtime,
  type RuntimeEvent,
  type RuntimeHealth,
  type TypeDescriptor,
  type WorkloadBase,
} from '../runtime.js';
import { canonicalAppOf, canonicalServices } from './canonical.js';
import { compose129ConfigHash } from './compose-hash.js';
import {
  COMPOSE,
  COMPOSE_LABELS,
  containerNameOf,
  extraNetworks,
  networkCreateOptions,
  networkHash,
  ownLabels,
  parseDependsOnLabel,
  serviceCreateOptions,
  volumeCreateOptions,
  type OwnContext,
} from './engine-config.js';
import { fileObjectsArchive } from './file-objects.js';
import { parseComposeCached, type ComposeApp, type ServiceSpec } from './model.js';
import type { ServiceStatus } from './report.js';
import type { ComposeWorkload } from './spec.js';
import { COMPOSE_HASH_VERSION, composeType } from './type.js';

export interface ComposeRuntimeOptions {
  socketPath: string;
  nodeId: string;
  logger: Logger;
  /** Longest wait for one depends_on condition (healthy, completed); default 120 s. */
  dependencyTimeoutMs?: number;
}

const OBSERVE_TIMEOUT_MS = 30_000;
const CLEANUP_TIMEOUT_MS = 30_000;
const DEFAULT_DEPENDENCY_TIMEOUT_MS = 120_000;
const OPTIONAL_DEPS_LABEL = 'dev.persys.compose-optional-deps';
/** Log lines kept as a failing service's crash evidence (the report shrinks them further when it must). */
const SERVICE_LOG_TAIL_LINES = 10;
/** Inspects in flight at once when gathering evidence, so a big app is not a burst at the daemon. */
const EVIDENCE_CONCURRENCY = 4;

/** What an inspect told of one container: restarts, and for a failing one its crash evidence. */
interface ContainerEvidence {
  /** The list facts it was read for: re-read when they change. */
  key: string;
  restarts: number;
  oomKilled: boolean;
  engineError: string;
  finishedAt: string | undefined;
  logTail: string[] | undefined;
}

/** Runs `fn` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

interface AppContainer {
  id: string;
  name: string;
  service: string;
  state: ActualState;
  engineState: string;
  status: string;
  labels: Record<string, string>;
  created: number;
  health: 'healthy' | 'unhealthy' | 'starting' | undefined;
  exitCode: number | undefined;
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal ? AbortSignal.any([signal, AbortSignal.timeout(ms)]) : AbortSignal.timeout(ms);
}

function healthOf(status: string): AppContainer['health'] {
  const m = /\((healthy|unhealthy|health: starting)\)/.exec(status);
  if (!m) return undefined;
  return m[1] === 'health: starting' ? 'starting' : (m[1] as 'healthy' | 'unhealthy');
}

function asCompose(w: WorkloadBase): ComposeWorkload {
  if (w.type !== 'compose') throw new WorkloadError('INVALID_SPEC', `the compose runtime runs compose workloads, not ${w.type} (workload ${w.id})`);
  return w as ComposeWorkload;
}

/** The app of a validated workload (the schema already parsed it; this is the memoised result). */
export function appOf(w: ComposeWorkload): ComposeApp {
  const r = parseComposeCached(w.spec);
  if (!r.ok) throw new WorkloadError('INVALID_SPEC', r.issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  return r.app;
}

/** Dependency order of the containers found, from their depends_on labels (unknown services last). */
function orderContainers(list: readonly AppContainer[]): AppContainer[] {
  const byService = new Map(list.map((c) => [c.service, c]));
  const done = new Set<string>();
  const out: AppContainer[] = [];
  const visit = (c: AppContainer, seen: Set<string>): void => {
    if (done.has(c.service) || seen.has(c.service)) return;
    seen.add(c.service);
    const deps = parseDependsOnLabel(c.labels[COMPOSE.dependsOn]).map((d) => d.service);
    const mode = c.labels['dev.persys.compose-after'];
    if (mode) deps.push(...mode.split(','));
    for (const d of deps.sort()) {
      const dc = byService.get(d);
      if (dc) visit(dc, seen);
    }
    done.add(c.service);
    out.push(c);
  };
  for (const c of [...list].sort((a, b) => a.service.localeCompare(b.service))) visit(c, new Set());
  return out;
}

/**
 * Services only ever needed with `required: false`: the dependants start without them, so their exit
 * does not fail the app. A service that nothing depends on, or that one dependant requires, is required.
 */
export function optionalServices(list: readonly Pick<AppContainer, 'service' | 'labels'>[]): Set<string> {
  const optional = new Set<string>();
  const required = new Set<string>();
  for (const c of list) {
    const soft = new Set((c.labels[OPTIONAL_DEPS_LABEL] ?? '').split(',').filter((x) => x !== ''));
    for (const d of parseDependsOnLabel(c.labels[COMPOSE.dependsOn])) (soft.has(d.service) ? optional : required).add(d.service);
  }
  for (const r of required) optional.delete(r);
  return optional;
}

/** The app's state from its required services: running only when every one runs (or completed with 0). */
export function appState(all: readonly AppContainer[]): { state: ActualState; exitCode: number | null | undefined } {
  if (all.length === 0) return { state: 'missing', exitCode: undefined };
  const optional = optionalServices(all);
  const list = all.filter((c) => !optional.has(c.service) || c.state === 'running');
  if (list.length === 0) return { state: 'exited', exitCode: 0 };
  let running = 0;
  let completed = 0;
  let created = 0;
  let failedExit: number | undefined;
  let odd: ActualState | undefined;
  for (const c of list) {
    if (c.state === 'running') running++;
    else if (c.state === 'exited' && c.exitCode === 0) completed++;
    else if (c.state === 'created') created++;
    else if (c.state === 'exited') failedExit ??= c.exitCode ?? -1;
    else odd ??= c.state;
  }
  if (odd !== undefined) return { state: odd, exitCode: undefined };
  if (failedExit !== undefined) return { state: 'exited', exitCode: failedExit };
  if (created > 0) return { state: running > 0 ? 'exited' : 'created', exitCode: null };
  if (running > 0) return { state: 'running', exitCode: null };
  return { state: 'exited', exitCode: completed > 0 ? 0 : null };
}

export class ComposeRuntime implements Runtime {
  readonly name = 'compose' as const;
  readonly types: readonly TypeDescriptor[] = [composeType];

  private readonly docker: Dockerode;
  private readonly nodeId: string;
  private readonly logger: Logger;
  private readonly dependencyTimeoutMs: number;
  /** Per workload, what observe() last saw of its services (the report block, without an engine call). */
  private readonly seen = new Map<string, { services: ServiceStatus[]; volumesKept?: string[] }>();
  /** Per container id, its last inspect (restarts, crash evidence); refreshed when its list facts change or an event names it. */
  private readonly evidence = new Map<string, ContainerEvidence>();
  /** Containers an engine event named since their last inspect (a restart looks the same in a list). */
  private readonly dirty = new Set<string>();

  constructor(opts: ComposeRuntimeOptions) {
    this.docker = new DockerClient({ socketPath: opts.socketPath });
    this.nodeId = opts.nodeId;
    this.logger = opts.logger.child({ runtime: 'compose' });
    this.dependencyTimeoutMs = opts.dependencyTimeoutMs ?? DEFAULT_DEPENDENCY_TIMEOUT_MS;
  }

  private async call<T>(context: DockerErrorContext, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw translateDockerError(err, context);
    }
  }

  async health(signal?: AbortSignal): Promise<RuntimeHealth> {
    const s = withTimeout(signal, 10_000);
    try {
      const v = await this.call('inspect', () => (this.docker as unknown as { version(o: { abortSignal: AbortSignal }): Promise<Dockerode.DockerVersion> }).version({ abortSignal: s }));
      return { up: true, reason: `native compose on docker ${v.Version} (API ${v.ApiVersion})`, version: v.Version };
    } catch (err) {
      const e = translateDockerError(err, 'inspect');
      return { up: false, reason: `${e.code}: ${e.message}` };
    }
  }

  private filters(workloadId?: string): { label: string[] } {
    const label = [`${LABELS.managed}=true`, `${LABELS.nodeId}=${this.nodeId}`, `${LABELS.type}=compose`];
    if (workloadId !== undefined) label.push(`${LABELS.workloadId}=${workloadId}`);
    return { label };
  }

  private async list(signal: AbortSignal, workloadId?: string): Promise<AppContainer[]> {
    const raw = await this.call('list', () => this.docker.listContainers({ all: true, filters: this.filters(workloadId), abortSignal: signal }));
    return raw.map((c) => {
      const state = mapDockerState(c.State);
      return {
        id: c.Id,
        name: (c.Names[0] ?? '').replace(/^\//, ''),
        service: c.Labels[COMPOSE.service] ?? '',
        state,
        engineState: c.State,
        status: c.Status,
        labels: c.Labels,
        created: c.Created,
        health: healthOf(c.Status),
        exitCode: state === 'exited' || state === 'restarting' ? parseExitCode(c.Status) : undefined,
      };
    });
  }

  /** One workload's observation from its containers; the spec hash is rebuilt from their service-hash labels. */
  private observed(workloadId: string, list: AppContainer[]): ObservedWorkload {
    const newest = list.reduce((a, b) => (b.created > a.created ? b : a));
    const project = newest.labels[COMPOSE.project] ?? '';
    const hashes = new Map<string, string>();
    let consistent = true;
    for (const c of list) {
      const h = c.labels[COMPOSE_LABELS.serviceHash];
      if (h === undefined || hashes.has(c.service) || c.labels[COMPOSE.project] !== project || hashVersionOf(c.labels[LABELS.hashVersion]) !== COMPOSE_HASH_VERSION) consistent = false;
      else hashes.set(c.service, h);
    }
    const { state, exitCode } = appState(list);
    const o: ObservedWorkload = {
      workloadId,
      type: 'compose',
      runtime: 'compose',
      runtimeId: `compose:${project}`,
      name: project,
      revision: newest.labels[LABELS.revision],
      specHash: consistent ? hashCanonical('compose', canonicalAppOf(project, hashes)) : undefined,
      hashVersion: COMPOSE_HASH_VERSION,
      state,
      exitCode,
      createdAt: new Date(newest.created * 1000).toISOString(),
      parts: list.map((c) => ({ kind: 'container', id: c.id })),
    };
    if (state === 'unknown' || state === 'paused' || state === 'restarting') {
      const oddOne = list.find((c) => c.state === state);
      if (oddOne && state !== 'restarting') o.engineState = oddOne.engineState;
    }
    return o;
  }

  /**
   * Restarts and crash evidence of the containers listed: an inspect (and, for a failing one, its log
   * tail) only for a container not seen before, whose list facts changed, or that an event named, so
   * a cycle where nothing changed costs no engine call beyond the list.
   */
  private async gatherEvidence(list: readonly AppContainer[], signal: AbortSignal): Promise<void> {
    const todo = list.filter((c) => {
      const e = this.evidence.get(c.id);
      return !e || e.key !== evidenceKey(c) || this.dirty.has(c.id) || c.state === 'restarting';
    });
    await eachLimited(todo, EVIDENCE_CONCURRENCY, async (c) => {
      let info: Dockerode.ContainerInspectInfo;
      try {
        info = await this.docker.getContainer(c.id).inspect({ abortSignal: signal });
      } catch (err) {
        // Evidence is an extra: a container gone meanwhile (404) or one failed inspect does not fail
        // the observation (the list is the truth); an abort does.
        if (dockerStatusCode(err) === 404) return;
        if (signal.aborted) throw translateDockerError(err, 'inspect');
        this.logger.debug({ containerId: c.id.slice(0, 12), err: dockerErrorMessage(err) }, 'no evidence for a service container this time');
        return;
      }
      this.dirty.delete(c.id);
      const failing = serviceFailing(c);
      let logTail: string[] | undefined;
      if (failing) {
        try {
          const raw: unknown = await this.docker.getContainer(c.id).logs({ stdout: true, stderr: true, follow: false, tail: SERVICE_LOG_TAIL_LINES, abortSignal: signal });
          const text = Buffer.isBuffer(raw) ? demuxDockerLogs(raw) : typeof raw === 'string' ? raw : '';
          logTail = tailLines(text).slice(-SERVICE_LOG_TAIL_LINES);
        } catch (err) {
          if (dockerStatusCode(err) !== 404) this.logger.debug({ containerId: c.id.slice(0, 12), err: dockerErrorMessage(err) }, 'no log tail for a failing service');
        }
      }
      const finished = info.State.FinishedAt;
      this.evidence.set(c.id, {
        key: evidenceKey(c),
        restarts: info.RestartCount ?? 0,
        oomKilled: info.State.OOMKilled === true,
        engineError: info.State.Error ?? '',
        finishedAt: finished && !finished.startsWith('0001-') ? finished : undefined,
        logTail,
      });
    });
  }

  private remember(workloadId: string, list: readonly AppContainer[]): void {
    const prev = this.seen.get(workloadId);
    const services: ServiceStatus[] = orderContainers(list).map((c) => {
      const s: ServiceStatus = { name: c.service, containerIds: [c.id], state: c.state };
      const e = this.evidence.get(c.id);
      if (c.health !== undefined) s.health = c.health;
      if (c.exitCode !== undefined) s.exitCode = c.exitCode;
      if (e) s.restarts = e.restarts;
      // A start the engine refused leaves the container "created" with the engine's error on it.
      if (serviceFailing(c) || (e !== undefined && e.engineError !== '')) {
        // The engine's own words first (a start that failed), then what the exit says.
        const why = e?.engineError || (c.state === 'exited' || c.state === 'restarting' ? `exited with code ${c.exitCode ?? 'unknown'}${e?.oomKilled ? ' (OOMKilled)' : ''}` : c.health === 'unhealthy' ? 'unhealthy' : c.status);
        s.error = why;
        if (e?.oomKilled) s.oomKilled = true;
        if (e?.finishedAt) s.finishedAt = e.finishedAt;
        if (e?.logTail && e.logTail.length > 0) s.logTail = e.logTail;
      }
      return s;
    });
    this.seen.set(workloadId, prev?.volumesKept ? { services, volumesKept: prev.volumesKept } : { services });
  }

  async observe(signal?: AbortSignal): Promise<ObservedWorkload[]> {
    const list = await this.list(withTimeout(signal, OBSERVE_TIMEOUT_MS));
    const groups = new Map<string, AppContainer[]>();
    for (const c of list) {
      const id = c.labels[LABELS.workloadId];
      if (id === undefined || id === '') continue;
      const g = groups.get(id);
      if (g) g.push(c);
      else groups.set(id, [c]);
    }
    await this.gatherEvidence(list, withTimeout(signal, OBSERVE_TIMEOUT_MS));
    const present = new Set(list.map((c) => c.id));
    for (const id of this.evidence.keys()) if (!present.has(id)) this.evidence.delete(id);
    const out: ObservedWorkload[] = [];
    for (const [id, g] of groups) {
      out.push(this.observed(id, g));
      this.remember(id, g);
    }
    for (const id of this.seen.keys()) if (!groups.has(id) && !this.seen.get(id)?.volumesKept) this.seen.delete(id);
    return out;
  }

  live(workloadId: string): unknown {
    return this.seen.get(workloadId);
  }

  async prepare(workload: WorkloadBase, ctx: ApplyContext): Promise<void> {
    const app = appOf(asCompose(workload));
    for (const image of [...new Set(app.services.map((s) => s.image))]) {
      const local = await imagePresent(this.docker, image, ctx.signal);
      if (!local.present) await pullImage(this.docker, image, ctx, this.logger);
    }
  }

  private own(w: ComposeWorkload, ctx: ApplyContext): OwnContext {
    return { nodeId: this.nodeId, workloadId: w.id, revision: w.revision, specHash: ctx.specHash, hashVersion: ctx.hashVersion ?? COMPOSE_HASH_VERSION };
  }

  /** Networks of the app: missing ones created; ours whose config changed (or that are no longer wanted) removed first. */
  private async syncNetworks(app: ComposeApp, w: ComposeWorkload, own: OwnContext, signal: AbortSignal): Promise<void> {
    const existing = await this.call('list', () => this.docker.listNetworks({ filters: this.filters(w.id), abortSignal: signal } as Dockerode.NetworkListOptions));
    const wanted = new Map([...app.networks.values()].filter((n) => !n.external).map((n) => [n.name, n]));
    for (const n of existing) {
      const want = wanted.get(n.Name);
      if (want && n.Labels?.[COMPOSE_LABELS.networkHash] === networkHash(want)) {
        wanted.delete(n.Name);
        continue;
      }
      // Changed or gone from the file: its containers were removed before this runs.
      await this.removeNetwork(n.Id, n.Name, w.id);
    }
    for (const n of wanted.values()) {
      try {
        await this.docker.createNetwork({ ...networkCreateOptions(app, n, own), abortSignal: signal } as Dockerode.NetworkCreateOptions);
        this.logger.debug({ workloadId: w.id, network: n.name }, 'created network');
      } catch (err) {
        // 409: a network of that name exists but is not labelled ours (made by docker compose, or by hand): use it.
        if (dockerStatusCode(err) !== 409) throw translateDockerError(err, 'create');
        this.logger.info({ workloadId: w.id, network: n.name }, 'network exists and is not labelled as ours; using it');
      }
    }
  }

  private async removeNetwork(id: string, name: string, workloadId: string): Promise<void> {
    try {
      await this.docker.getNetwork(id).remove({ abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) } as object);
      this.logger.debug({ workloadId, network: name }, 'removed network');
    } catch (err) {
      if (dockerStatusCode(err) === 404) return;
      throw translateDockerError(err, 'remove');
    }
  }

  /** Named volumes: created when missing, reused when present (data is never recreated). */
  private async ensureVolumes(app: ComposeApp, w: ComposeWorkload, own: OwnContext, signal: AbortSignal): Promise<void> {
    for (const vol of app.volumes.values()) {
      if (vol.external) continue;
      try {
        await raceInspect(this.docker.getVolume(vol.name).inspect({ abortSignal: signal } as object));
        continue;
      } catch (err) {
        if (dockerStatusCode(err) !== 404) throw translateDockerError(err, 'inspect');
      }
      await this.call('create', () => this.docker.createVolume({ ...volumeCreateOptions(app, vol, own), abortSignal: signal } as Dockerode.VolumeCreateOptions));
      this.logger.debug({ workloadId: w.id, volume: vol.name }, 'created volume');
    }
  }

  private async imageIds(app: ComposeApp, signal: AbortSignal): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    for (const image of new Set(app.services.map((s) => s.image))) {
      try {
        const info = await raceInspect(this.docker.getImage(image).inspect({ abortSignal: signal } as object) as Promise<Dockerode.ImageInspectInfo>);
        out.set(image, info.Id);
      } catch (err) {
        if (dockerStatusCode(err) !== 404) throw translateDockerError(err, 'inspect');
        out.set(image, null);
      }
    }
    return out;
  }

  /** Creates the containers of `services` (dependency order), each with its networks and files; none started. */
  private async createServices(app: ComposeApp, w: ComposeWorkload, ctx: ApplyContext, services: readonly ServiceSpec[], existing: Map<string, string>): Promise<AppContainer[]> {
    const policy = w.spec.volumes ?? 'keep';
    const hashes = canonicalServices(app, policy);
    const own = this.own(w, ctx);
    const images = await this.imageIds(app, ctx.signal);
    const created: AppContainer[] = [];
    const containerOf = (svc: string) => existing.get(svc) ?? created.find((c) => c.service === svc)?.id;
    const createOne = async (s: ServiceSpec): Promise<void> => {
      const opts = serviceCreateOptions(app, s, {
        own,
        serviceHash: hashes.get(s.name)?.hash ?? '',
        configHash: compose129ConfigHash(s, app, images.get(s.image) ?? null),
        volumesPolicy: policy,
        containerOf,
      });
      const optional = s.dependsOn.filter((d) => !d.required).map((d) => d.service);
      const after = [...s.volumesFrom.map((v) => v.service), ...(s.networkMode?.startsWith('service:') ? [s.networkMode.slice(8)] : [])];
      const labels = opts.Labels as Record<string, string>;
      if (optional.length > 0) labels[OPTIONAL_DEPS_LABEL] = optional.join(',');
      if (after.length > 0) labels['dev.persys.compose-after'] = after.join(',');
      // No abort signal on the create itself: an aborted request can still make a container we never
      // learn the id of (an orphan). The signal is checked before; the call is short.
      ctx.signal.throwIfAborted();
      const c = await this.call('create', () => this.docker.createContainer(opts));
      created.push({ id: c.id, name: opts.name as string, service: s.name, state: 'created', engineState: 'created', status: 'Created', labels, created: Math.floor(Date.now() / 1000), health: undefined, exitCode: undefined });
      for (const n of extraNetworks(app, s)) {
        await this.call('create', () => this.docker.getNetwork(n.name).connect({ Container: c.id, EndpointConfig: n.endpoint, abortSignal: ctx.signal } as object));
      }
      const archive = fileObjectsArchive(app, s);
      if (archive) await this.call('create', () => c.putArchive(archive, { path: '/', abortSignal: ctx.signal } as object));
      this.logger.debug({ workloadId: w.id, service: s.name, containerId: c.id.slice(0, 12) }, 'created service container');
    };
    try {
      // Level by level (a service after those it names in network_mode/volumes_from/depends_on); the
      // services of one level are independent, so they are created together.
      for (const level of creationLevels(services)) {
        const results = await Promise.allSettled(level.map(createOne));
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      }
    } catch (err) {
      await this.removeContainers(created, w.id);
      throw err;
    }
    return created;
  }

  private async removeContainers(list: readonly AppContainer[], workloadId: string, signal?: AbortSignal): Promise<void> {
    for (const c of [...orderContainers(list)].reverse()) {
      try {
        await this.docker.getContainer(c.id).remove({ force: true, v: true, abortSignal: signal ?? AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
        this.logger.debug({ workloadId, service: c.service, containerId: c.id.slice(0, 12) }, 'removed service container');
      } catch (err) {
        const status = dockerStatusCode(err);
        if (status === 404 || (status === 409 && /already in progress/i.test(dockerErrorMessage(err)))) continue;
        throw translateDockerError(err, 'remove');
      }
    }
  }

  private result(w: ComposeWorkload, ctx: ApplyContext, list: AppContainer[]): CreatedWorkload {
    const o = this.observed(w.id, list);
    this.remember(w.id, list);
    // The hash the step asked for: labels say the same, unless an older agent's containers are mixed in.
    return { ...o, specHash: o.specHash === undefined ? undefined : ctx.specHash, revision: w.revision };
  }

  async create(workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload> {
    const w = asCompose(workload);
    const app = appOf(w);
    ctx.progress?.('Creating');
    const own = this.own(w, ctx);
    // Leftovers of this workload (a half-done earlier attempt) go first: create starts from nothing.
    const leftovers = await this.list(ctx.signal, w.id);
    if (leftovers.length > 0) await this.removeContainers(leftovers, w.id, ctx.signal);
    await this.syncNetworks(app, w, own, ctx.signal);
    await this.ensureVolumes(app, w, own, ctx.signal);
    const created = await this.createServices(app, w, ctx, app.services, new Map());
    const v = this.seen.get(w.id);
    if (v?.volumesKept) this.logger.info({ workloadId: w.id, volumes: v.volumesKept }, 'compose app re-added; reusing its kept volumes');
    this.seen.delete(w.id);
    return this.result(w, ctx, created);
  }

  /** Starts what is not running, in dependency order, waiting for each depends_on condition. */
  async start(observed: ObservedWorkload, signal: AbortSignal): Promise<void> {
    const list = await this.list(signal, observed.workloadId);
    await this.startInOrder(list, observed.workloadId, signal);
  }

  /**
   * Starts the containers as a dependency graph: each service starts once every one of its depends_on
   * conditions holds (and what it shares a namespace or volumes with has started), so independent
   * services start together. The first failure stops the scheduling of the rest and is thrown once
   * what is in flight has settled.
   */
  private async startInOrder(list: readonly AppContainer[], workloadId: string, signal: AbortSignal, only?: ReadonlySet<string>): Promise<void> {
    const byService = new Map(list.map((c) => [c.service, c]));
    const failure = new AbortController();
    const all = AbortSignal.any([signal, failure.signal]);
    const conditions = new Map<string, Promise<void>>();
    const started = new Map<string, Promise<void>>();
    let first: { err: unknown } | undefined;
    const startOf = (c: AppContainer): Promise<void> => {
      let p = started.get(c.service);
      if (!p) {
        p = this.startService(c, byService, workloadId, all, only, startOf, conditions);
        // The first failure is the one reported; it stops the others' waits (they then fail too).
        p.catch((err: unknown) => {
          if (!first && !failure.signal.aborted) first = { err };
          failure.abort();
        });
        started.set(c.service, p);
      }
      return p;
    };
    const results = await Promise.allSettled(orderContainers(list).map(startOf));
    if (first) throw first.err;
    const any = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (any) throw signal.aborted ? translateDockerError(signal.reason, 'start') : any.reason;
  }

  private async startService(
    c: AppContainer,
    byService: ReadonlyMap<string, AppContainer>,
    workloadId: string,
    signal: AbortSignal,
    only: ReadonlySet<string> | undefined,
    startOf: (c: AppContainer) => Promise<void>,
    conditions: Map<string, Promise<void>>,
  ): Promise<void> {
    const optional = new Set((c.labels[OPTIONAL_DEPS_LABEL] ?? '').split(',').filter((x) => x !== ''));
    const after = (c.labels['dev.persys.compose-after'] ?? '').split(',').filter((x) => x !== '');
    const waits: Promise<void>[] = [];
    for (const name of after) {
      const dc = byService.get(name);
      if (dc) waits.push(startOf(dc));
    }
    for (const dep of parseDependsOnLabel(c.labels[COMPOSE.dependsOn])) {
      const dc = byService.get(dep.service);
      if (!dc) continue;
      const key = `${dep.service}:${dep.condition}`;
      let cond = conditions.get(key);
      if (!cond) {
        cond = startOf(dc).then(() => this.waitFor(dc, dep.condition, c.service, signal));
        conditions.set(key, cond);
      }
      waits.push(
        cond.catch((err: unknown) => {
          if (!optional.has(dep.service) || signal.aborted) throw err;
          this.logger.warn({ workloadId, service: c.service, dependency: dep.service, err: err instanceof Error ? err.message : String(err) }, 'optional dependency (required: false) not ready; starting anyway');
        }),
      );
    }
    const settled = await Promise.allSettled(waits);
    const bad = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (bad) throw bad.reason;
    if (signal.aborted) throw new AbortedByPeer();
    if (c.state === 'running' || (only && !only.has(c.service))) return;
    try {
      await this.docker.getContainer(c.id).start({ abortSignal: signal });
      this.logger.debug({ workloadId, service: c.service, containerId: c.id.slice(0, 12) }, 'started service');
    } catch (err) {
      if (dockerStatusCode(err) === 304) return;
      if (signal.aborted) throw new AbortedByPeer();
      const e = translateDockerError(err, 'start');
      throw new WorkloadError(e.code, `service ${c.service}: ${e.message}`, { cause: e, details: { service: c.service } });
    }
  }

  private async inspectState(id: string, signal: AbortSignal): Promise<Dockerode.ContainerInspectInfo> {
    return this.call('inspect', () => this.docker.getContainer(id).inspect({ abortSignal: signal }));
  }

  /**
   * Waits until `dep` meets `condition`, driven by the container's Docker events (health_status, die),
   * with one inspect after the stream is open so nothing between the two is missed. Bounded by the
   * dependency timeout (or the healthcheck's own budget when that is longer).
   */
  private async waitFor(dep: AppContainer, condition: string, forService: string, signal: AbortSignal): Promise<void> {
    if (condition === 'service_started') return;
    const info = await this.inspectState(dep.id, signal);
    const hc = info.Config.Healthcheck;
    if (condition === 'service_healthy' && (!hc || !hc.Test || hc.Test[0] === 'NONE')) {
      throw new WorkloadError('INVALID_SPEC', `service ${forService} waits for ${dep.service} to be healthy, but ${dep.service} has no healthcheck`, { details: { service: dep.service } });
    }
    const budgetMs = hc ? Math.max(this.dependencyTimeoutMs, ((hc.StartPeriod ?? 0) + ((hc.Retries ?? 3) + 1) * ((hc.Interval ?? 30e9) + (hc.Timeout ?? 30e9))) / 1e6) : this.dependencyTimeoutMs;
    const events = new AbortController();
    const limit = AbortSignal.timeout(budgetMs);
    const all = AbortSignal.any([signal, limit, events.signal]);
    let stream: NodeJS.ReadableStream | undefined;
    try {
      stream = await this.docker.getEvents({ filters: { type: ['container'], container: [dep.id] }, abortSignal: all });
      stream.on('error', () => undefined);
      const verdict = (i: Dockerode.ContainerInspectInfo): 'ok' | 'wait' | string => {
        const st = i.State;
        if (condition === 'service_completed_successfully') {
          if (st.Status === 'exited' || st.Status === 'dead') return st.ExitCode === 0 ? 'ok' : `${dep.service} exited with code ${st.ExitCode}`;
          return 'wait';
        }
        const health = (st as { Health?: { Status?: string; Log?: { Output?: string }[] } }).Health;
        if (health?.Status === 'healthy') return 'ok';
        if (health?.Status === 'unhealthy') {
          const last = health.Log?.at(-1)?.Output?.trim().slice(0, 200);
          return `${dep.service} is unhealthy${last ? ` (last check: ${last})` : ''}`;
        }
        if (st.Status === 'exited' || st.Status === 'dead') return `${dep.service} exited with code ${st.ExitCode} before becoming healthy`;
        return 'wait';
      };
      const judge = async (): Promise<'ok' | 'wait' | string> => verdict(await this.inspectState(dep.id, all));
      let v = await judge();
      if (v === 'wait') {
        v = await new Promise<string>((resolve, reject) => {
          const decoder = new StringDecoder('utf8');
          let buf = '';
          let busy = false;
          let again = false;
          const check = (): void => {
            if (busy) {
              again = true;
              return;
            }
            busy = true;
            judge().then(
              (r) => {
                busy = false;
                if (r !== 'wait') resolve(r);
                else if (again) {
                  again = false;
                  check();
                }
              },
              (err: unknown) => reject(err),
            );
          };
          stream?.on('data', (chunk: Buffer) => {
            buf += decoder.write(chunk);
            let nl: number;
            while ((nl = buf.indexOf('\n')) !== -1) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (/health_status|"die"|"destroy"|"stop"|"kill"/.test(line)) check();
            }
          });
          const onEnd = (): void => reject(all.reason ?? new Error('the Docker event stream ended'));
          stream?.on('end', onEnd);
          stream?.on('close', onEnd);
          all.addEventListener('abort', onEnd, { once: true });
        });
      }
      if (v !== 'ok') {
        throw new WorkloadError('DEPENDENCY_FAILED', `service ${forService} depends on ${dep.service} (${condition}): ${v}`, { details: { service: dep.service, condition } });
      }
    } catch (err) {
      if (err instanceof WorkloadError) throw err;
      if (limit.aborted && !signal.aborted) {
        throw new WorkloadError('DEPENDENCY_FAILED', `service ${forService} depends on ${dep.service} (${condition}): not met within ${Math.round(budgetMs / 1000)} s`, { details: { service: dep.service, condition } });
      }
      throw translateDockerError(err, 'events');
    } finally {
      events.abort();
      const destroyable = stream as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
      destroyable?.destroy?.();
    }
  }

  async stop(observed: ObservedWorkload, signal: AbortSignal, timeoutSeconds?: number): Promise<void> {
    const list = await this.list(signal, observed.workloadId);
    for (const c of orderContainers(list).reverse()) {
      const opts: Dockerode.ContainerStopOptions = { abortSignal: signal };
      if (timeoutSeconds !== undefined) opts.t = timeoutSeconds;
      try {
        await this.docker.getContainer(c.id).stop(opts);
      } catch (err) {
        if (dockerStatusCode(err) === 304 || dockerStatusCode(err) === 404) continue;
        throw translateDockerError(err, 'stop');
      }
    }
  }

  /**
   * Containers (reverse dependency order), then networks; named volumes stay unless the app says
   * `volumes: delete` (read from its containers) and it is really going (not a replace).
   */
  async remove(observed: ObservedWorkload, signal: AbortSignal, why: RemoveReason): Promise<void> {
    const list = await this.list(signal, observed.workloadId);
    const deleteVolumes = why !== 'replace' && list.some((c) => c.labels[COMPOSE_LABELS.volumesPolicy] === 'delete');
    await this.removeContainers(list, observed.workloadId, signal);
    if (why === 'replace') return;
    const nets = await this.call('list', () => this.docker.listNetworks({ filters: this.filters(observed.workloadId), abortSignal: signal } as Dockerode.NetworkListOptions));
    for (const n of nets) await this.removeNetwork(n.Id, n.Name, observed.workloadId);
    const vols = await this.call('list', () => this.docker.listVolumes({ filters: this.filters(observed.workloadId), abortSignal: signal } as object));
    const names = (vols.Volumes ?? []).map((v) => v.Name).sort();
    if (deleteVolumes) {
      for (const name of names) await this.call('remove', () => this.docker.getVolume(name).remove({ abortSignal: signal } as object));
      if (names.length > 0) this.logger.info({ workloadId: observed.workloadId, volumes: names }, 'removed compose app and its volumes (volumes: delete)');
      this.seen.delete(observed.workloadId);
    } else if (names.length > 0) {
      this.logger.info({ workloadId: observed.workloadId, volumes: names }, 'removed compose app; kept its named volumes (re-adding the app reuses them; volumes: delete removes them)');
      this.seen.set(observed.workloadId, { services: [], volumesKept: names });
    } else this.seen.delete(observed.workloadId);
  }

  /**
   * A changed app, service by service: only services whose own hash changed (or whose container is
   * missing), plus those sharing their network namespace or volumes, are removed and created again;
   * services no longer in the file go; networks whose config changed are recreated. Unchanged
   * containers keep running (their ids stay).
   */
  async update(observed: ObservedWorkload, workload: WorkloadBase, ctx: ApplyContext): Promise<CreatedWorkload> {
    const w = asCompose(workload);
    const app = appOf(w);
    const hashes = canonicalServices(app, w.spec.volumes ?? 'keep');
    const list = await this.list(ctx.signal, w.id);
    const byService = new Map<string, AppContainer[]>();
    for (const c of list) byService.set(c.service, [...(byService.get(c.service) ?? []), c]);
    const changed = new Set<string>();
    for (const s of app.services) {
      const cs = byService.get(s.name) ?? [];
      const c = cs[0];
      if (cs.length !== 1 || !c || c.labels[COMPOSE_LABELS.serviceHash] !== hashes.get(s.name)?.hash || c.name !== containerNameOf(app, s)) changed.add(s.name);
    }
    // Dependants that share a changed service's network namespace or volumes go with it.
    for (let grew = true; grew; ) {
      grew = false;
      for (const s of app.services) {
        if (changed.has(s.name)) continue;
        const mode = s.networkMode?.startsWith('service:') ? s.networkMode.slice(8) : undefined;
        if ((mode !== undefined && changed.has(mode)) || s.volumesFrom.some((v) => changed.has(v.service))) {
          changed.add(s.name);
          grew = true;
        }
      }
    }
    const wantedServices = new Set(app.services.map((s) => s.name));
    const going = list.filter((c) => changed.has(c.service) || !wantedServices.has(c.service));
    this.logger.info({ workloadId: w.id, recreate: [...changed].sort(), remove: going.filter((c) => !wantedServices.has(c.service)).map((c) => c.service) }, 'updating compose app service by service');
    ctx.progress?.('Creating');
    for (const c of orderContainers(going).reverse()) {
      try {
        await this.docker.getContainer(c.id).stop({ abortSignal: ctx.signal });
      } catch (err) {
        if (dockerStatusCode(err) !== 304 && dockerStatusCode(err) !== 404) throw translateDockerError(err, 'stop');
      }
    }
    await this.removeContainers(going, w.id, ctx.signal);
    const own = this.own(w, ctx);
    await this.syncNetworks(app, w, own, ctx.signal);
    await this.ensureVolumes(app, w, own, ctx.signal);
    const kept = list.filter((c) => !going.includes(c));
    const existing = new Map(kept.map((c) => [c.service, c.id]));
    const created = await this.createServices(app, w, ctx, app.services.filter((s) => changed.has(s.name)), existing);
    const now = [...kept, ...created];
    if ((w.desiredState ?? 'running') === 'running') {
      ctx.progress?.('Starting');
      try {
        await this.startInOrder(now, w.id, ctx.signal);
      } catch (err) {
        // Nothing half-started of the new services stays: they go, and the next cycle tries again.
        await this.removeContainers(created, w.id);
        throw err;
      }
    }
    return this.result(w, ctx, await this.list(ctx.signal, w.id));
  }

  async inspect(observed: ObservedWorkload, signal?: AbortSignal): Promise<ObservedWorkload | undefined> {
    const list = await this.list(withTimeout(signal, OBSERVE_TIMEOUT_MS), observed.workloadId);
    if (list.length === 0) return undefined;
    await this.gatherEvidence(list, withTimeout(signal, OBSERVE_TIMEOUT_MS));
    this.remember(observed.workloadId, list);
    return this.observed(observed.workloadId, list);
  }

  async events(signal: AbortSignal, onEvent: (e: RuntimeEvent) => void): Promise<void> {
    const filters = { type: ['container'], label: this.filters().label, event: ['die', 'oom', 'destroy', 'start', 'stop', 'kill', 'health_status'] };
    // An event marks its container for a fresh inspect (a restart between two lists looks like nothing).
    const mark = (e: RuntimeEvent): void => {
      if (e.runtimeId) this.dirty.add(e.runtimeId);
      onEvent(e);
    };
    await streamDockerEvents(this.docker, filters, parseComposeEvent, mark, signal, this.logger);
  }
}

/** An engine event of one of our compose containers, as a runtime event of its app. */
export function parseComposeEvent(line: string): RuntimeEvent | undefined {
  // parseDockerEvent leaves compose containers out (they are not the docker runtime's); read them here.
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const p = parsed as { Action?: unknown; Actor?: { ID?: unknown; Attributes?: Record<string, unknown> } };
  const attrs = p.Actor?.Attributes ?? {};
  if (attrs[LABELS.type] !== 'compose') return undefined;
  const workloadId = attrs[LABELS.workloadId];
  const id = p.Actor?.ID;
  if (typeof workloadId !== 'string' || typeof id !== 'string' || typeof p.Action !== 'string') return undefined;
  return { workloadId, action: p.Action.split(':')[0] as string, runtimeId: id };
}

/** A service not started because another one failed first (that failure is the one reported). */
class AbortedByPeer extends Error {
  constructor() {
    super('not started: another service of the app failed first');
  }
}

/**
 * `services` (in dependency order) in levels: a service's level is one past the highest level of the
 * services it needs (depends_on, volumes_from, network_mode: service:) among them.
 */
export function creationLevels(services: readonly ServiceSpec[]): ServiceSpec[][] {
  const names = new Set(services.map((s) => s.name));
  const level = new Map<string, number>();
  const levels: ServiceSpec[][] = [];
  for (const s of services) {
    const needs = [...s.dependsOn.map((d) => d.service), ...s.volumesFrom.map((v) => v.service), ...(s.networkMode?.startsWith('service:') ? [s.networkMode.slice(8)] : [])];
    const l = Math.max(-1, ...needs.filter((n) => names.has(n)).map((n) => level.get(n) ?? -1)) + 1;
    level.set(s.name, l);
    (levels[l] ??= []).push(s);
  }
  return levels.filter((x) => x !== undefined);
}

/** The list facts evidence is read for: a change of any of them means a fresh inspect. */
function evidenceKey(c: AppContainer): string {
  return `${c.engineState}|${c.exitCode ?? ''}|${c.health ?? ''}`;
}

/** A service that is not doing its job: exited non-zero, restarting, dead, or unhealthy. */
function serviceFailing(c: AppContainer): boolean {
  return (c.state === 'exited' && c.exitCode !== 0) || c.state === 'restarting' || c.engineState === 'dead' || c.health === 'unhealthy';
}

/** dockerode's inspect promise, typed. */
function raceInspect<T>(p: Promise<T>): Promise<T> {
  return p;
}

// Re-exported so tests and the bench read the same label names.
export { COMPOSE, COMPOSE_LABELS, ownLabels, parseDockerEvent };
