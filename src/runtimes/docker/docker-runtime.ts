import type Dockerode from 'dockerode';
import DockerClient from './dockerode.js';

import { WorkloadError } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import type { ContainerWorkload } from './spec.js';
import { containerType } from './type.js';
import type { ActualState } from '../../spec/status-report.js';
import {
  LABELS,
  hashVersionOf,
  type ApplyContext,
  type ObservedWorkload,
  type RemoveReason,
  type TypeDescriptor,
  type WorkloadBase,
  type Runtime,
  type RuntimeEvent,
  type RuntimeHealth,
  type WorkloadUsage,
} from '../runtime.js';
import { containerName, toCreateOptions } from './container-config.js';
import { cannotStartAgain, dockerErrorMessage, dockerStatusCode, translateDockerError, type DockerErrorContext } from './translate-error.js';
import { mapLimit, usageFromDockerStats } from './usage.js';
import { imagePresent, pullImage } from './images.js';
import { streamDockerEvents } from './event-stream.js';

export { pullProgress } from './images.js';

export interface DockerRuntimeOptions {
  /** Unix socket of the Docker Engine, e.g. /var/run/docker.sock. */
  socketPath: string;
  nodeId: string;
  /** Prefix of container names; names are cosmetic, labels are what observe() trusts. */
  namePrefix: string;
  logger: Logger;
}

/** Bounds for calls made without a caller's signal, so a wedged daemon cannot hang health or observe forever. */
const HEALTH_FACTS_TTL_MS = 5 * 60_000;
const HEALTH_TIMEOUT_MS = 10_000;
const OBSERVE_TIMEOUT_MS = 30_000;
const CLEANUP_TIMEOUT_MS = 30_000;
/** logTail() returns at most this many bytes of output: crash evidence, not a log shipper. */
export const LOG_TAIL_MAX_BYTES = 8 * 1024;
const LOG_TAIL_MAX_LINES = 1_000;
/** An event line longer than this is not an event; drop it rather than grow without bound. */
const EVENT_ACTIONS = ['die', 'oom', 'destroy', 'start', 'stop', 'kill'];
/** usage(): engine calls in flight at once, so 200 containers never mean 400 requests at the daemon together. */
const USAGE_CONCURRENCY = 4;

/**
 * dockerode 5 accepts `{ abortSignal }` on ping/version/info, but @types/dockerode 4 declares them without
 * an options argument; this view lets us pass the signal without widening anything to `any`.
 */
interface SignalOptions {
  abortSignal?: AbortSignal;
}
interface SystemApi {
  ping(opts: SignalOptions): Promise<unknown>;
  version(opts: SignalOptions): Promise<Dockerode.DockerVersion>;
  info(opts: SignalOptions): Promise<unknown>;
}

/** Container.stats with the abortSignal dockerode 5 honours but @types/dockerode 4 does not declare. */
interface StatsApi {
  stats(opts: { stream: false; 'one-shot': boolean; abortSignal: AbortSignal }): Promise<unknown>;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal ? AbortSignal.any([signal, AbortSignal.timeout(ms)]) : AbortSignal.timeout(ms);
}




function asContainer(w: WorkloadBase): ContainerWorkload {
  if (w.type !== 'container') {
    throw new WorkloadError('INVALID_SPEC', `the docker runtime runs container workloads, not ${w.type} (workload ${w.id})`);
  }
  // The workload was validated against the container type's schema when its document was loaded.
  return w as ContainerWorkload;
}

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for unit tests)
// ---------------------------------------------------------------------------------------------

/**
 * Docker's container states as our ActualState. `dead` (a removal that failed half-way) and `removing` are
 * neither running nor cleanly exited: `unknown` makes the planner look again instead of trusting them.
 */
export function mapDockerState(state: string): ActualState {
  switch (state.toLowerCase()) {
    case 'created':
      return 'created';
    case 'running':
      return 'running';
    case 'paused':
      return 'paused';
    case 'restarting':
      return 'restarting';
    case 'exited':
      return 'exited';
    default:
      return 'unknown';
  }
}

/** The exit code in a list Status such as "Exited (3) 2 minutes ago"; the list call has no other field for it. */
export function parseExitCode(status: string): number | undefined {
  const m = /^(?:Exited|Restarting) \((-?\d+)\)/i.exec(status.trim());
  return m?.[1] === undefined ? undefined : Number.parseInt(m[1], 10);
}

/** Docker's zero time ("0001-01-01T00:00:00Z") means "never". */
function engineTime(t: string | undefined): string | null {
  if (t === undefined || t === '' || t.startsWith('0001-01-01')) return null;
  return t;
}

/**
 * Splits Docker's multiplexed log format (8-byte header: stream type, 3 zero bytes, big-endian length)
 * into text, in the order the engine wrote it. Output of a TTY container is not multiplexed: when the
 * first header is implausible the whole buffer is taken as raw text.
 */
export function demuxDockerLogs(buf: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset < buf.length) {
    if (buf.length - offset < 8) break;
    const type = buf.readUInt8(offset);
    const plausible = (type === 0 || type === 1 || type === 2) && buf.readUInt8(offset + 1) === 0 && buf.readUInt16BE(offset + 2) === 0;
    if (!plausible) {
      // Only the very first frame decides raw vs multiplexed; garbage later is kept as text rather than lost.
      parts.push(buf.subarray(offset));
      offset = buf.length;
      break;
    }
    const len = buf.readUInt32BE(offset + 4);
    const start = offset + 8;
    const end = Math.min(buf.length, start + len);
    parts.push(buf.subarray(start, end));
    offset = end;
  }
  return Buffer.concat(parts).toString('utf8');
}

/** The last lines of `text` that fit in `maxBytes`, without a partial first line when it had to be cut. */
export function tailLines(text: string, maxBytes: number = LOG_TAIL_MAX_BYTES): string[] {
  let body = text.replace(/\r\n/g, '\n');
  if (body.endsWith('\n')) body = body.slice(0, -1);
  if (body === '') return [];
  const bytes = Buffer.from(body, 'utf8');
  if (bytes.length > maxBytes) {
    // Cut on bytes (the bound is in bytes), then drop the line the cut went through.
    const cut = bytes.subarray(bytes.length - maxBytes).toString('utf8');
    const nl = cut.indexOf('\n');
    body = nl === -1 ? cut : cut.slice(nl + 1);
  }
  return body.split('\n');
}

/** The engine event we care about, or undefined for anything that is not one of our containers. */
export function parseDockerEvent(line: string): RuntimeEvent | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isRecord(parsed)) return undefined;
  const type = parsed.Type ?? parsed.type;
  if (type !== undefined && type !== 'container') return undefined;
  const actor = isRecord(parsed.Actor) ? parsed.Actor : {};
  const attrs = isRecord(actor.Attributes) ? actor.Attributes : {};
  const workloadId = attrs[LABELS.workloadId];
  const ownType = attrs[LABELS.type];
  // Compose containers carry our managed/node labels too; they belong to the compose runtime.
  if (typeof workloadId !== 'string' || (ownType !== undefined && ownType !== 'container')) return undefined;
  const action = typeof parsed.Action === 'string' ? parsed.Action : typeof parsed.status === 'string' ? parsed.status : undefined;
  const id = typeof actor.ID === 'string' ? actor.ID : typeof parsed.id === 'string' ? parsed.id : undefined;
  if (action === undefined || id === undefined) return undefined;
  return { workloadId, action, runtimeId: id };
}

// ---------------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------------

export class DockerRuntime implements Runtime {
  readonly name = 'docker' as const;
  readonly types: readonly TypeDescriptor[] = [containerType];
  /** The node's primary runtime: readiness needs it even when nothing is desired yet. */
  readonly primary = true;

  private readonly docker: Dockerode;
  private readonly nodeId: string;
  private readonly namePrefix: string;
  private readonly logger: Logger;
  private readonly socketPath: string;

  constructor(opts: DockerRuntimeOptions) {
    this.socketPath = opts.socketPath;
    this.docker = new DockerClient({ socketPath: opts.socketPath });
    this.nodeId = opts.nodeId;
    this.namePrefix = opts.namePrefix;
    this.logger = opts.logger.child({ runtime: 'docker' });
  }

  /** Runs one engine call; whatever it throws leaves as a WorkloadError. */
  private async call<T>(context: DockerErrorContext, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw translateDockerError(err, context);
    }
  }

  private get system(): SystemApi {
    // See SystemApi: the runtime methods take the options the published types omit.
    return this.docker as unknown as SystemApi;
  }

  /**
   * Every cycle pings; version and capacity (GET /info is the engine's slowest answer with many
   * containers) are re-read only every HEALTH_FACTS_TTL_MS or after a failure.
   */
  async health(signal?: AbortSignal): Promise<RuntimeHealth> {
    const s = withTimeout(signal, HEALTH_TIMEOUT_MS);
    try {
      await this.call('inspect', () => this.system.ping({ abortSignal: s }));
      const cached = this.healthFacts;
      if (cached && Date.now() - cached.at < HEALTH_FACTS_TTL_MS) return cached.health;
      const fresh = await this.readHealthFacts(s);
      this.healthFacts = { at: Date.now(), health: fresh };
      return fresh;
    } catch (err) {
      this.healthFacts = undefined;
      const e = translateDockerError(err, 'inspect');
      this.logger.debug({ code: e.code, err: e.message }, 'docker health check failed');
      return { up: false, reason: `${e.code}: ${e.message}` };
    }
  }

  private healthFacts: { at: number; health: RuntimeHealth } | undefined;

  private async readHealthFacts(s: AbortSignal): Promise<RuntimeHealth> {
    const [version, info] = await Promise.all([
      this.call('inspect', () => this.system.version({ abortSignal: s })),
      this.call('inspect', () => this.system.info({ abortSignal: s })),
    ]);
    const capacity: Record<string, number> = {};
    if (isRecord(info)) {
      if (typeof info.NCPU === 'number') capacity.cpus = info.NCPU;
      if (typeof info.MemTotal === 'number') capacity.memoryBytes = info.MemTotal;
    }
    const dataRoot = isRecord(info) && typeof info.DockerRootDir === 'string' ? info.DockerRootDir : undefined;
    return {
      up: true,
      reason: `docker ${version.Version} (API ${version.ApiVersion}) on ${this.socketPath}`,
      version: version.Version,
      capacity,
      ...(dataRoot ? { dataRoot } : {}),
    };
  }

  /** Every container labelled as ours for this node: the one engine call behind observe() and usage(). */
  private listOurs(signal: AbortSignal) {
    return this.call('list', () =>
      this.docker.listContainers({
        all: true,
        filters: { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${this.nodeId}`] },
        abortSignal: signal,
      }),
    );
  }

  async observe(signal?: AbortSignal): Promise<ObservedWorkload[]> {
    const s = withTimeout(signal, OBSERVE_TIMEOUT_MS);
    const list = await this.listOurs(s);
    const out: ObservedWorkload[] = [];
    for (const c of list) {
      const labels = c.Labels ?? {};
      const workloadId = labels[LABELS.workloadId];
      const type = labels[LABELS.type];
      // Compose containers share our managed/node labels but are the compose runtime's to observe.
      if (type !== undefined && type !== 'container') continue;
      if (workloadId === undefined || workloadId === '') {
        this.logger.warn({ containerId: c.Id }, 'container carries our labels but no workload id; ignoring it');
        continue;
      }
      const state = mapDockerState(c.State);
      const o: ObservedWorkload = {
        workloadId,
        type: 'container',
        runtime: 'docker',
        runtimeId: c.Id,
        name: (c.Names[0] ?? '').replace(/^\//, ''),
        revision: labels[LABELS.revision],
        specHash: labels[LABELS.specHash],
        hashVersion: hashVersionOf(labels[LABELS.hashVersion]),
        state,
        createdAt: new Date(c.Created * 1000).toISOString(),
        parts: [{ kind: 'container', id: c.Id }],
      };
      if (state === 'unknown' || state === 'paused') o.engineState = c.State;
      // restartCount, oomKilled and startedAt are only in inspect(); one list call must stay one call.
      if (state === 'exited' || state === 'restarting') o.exitCode = parseExitCode(c.Status) ?? null;
      out.push(o);
    }
    return out;
  }

  /**
   * Usage of our containers: one list call, then per container an inspect (restart count) and, when
   * running, a one-shot stats read (`stream=false&one-shot=true`: no second sample, no 1 s wait), at
   * most USAGE_CONCURRENCY at a time. A container that vanishes or fails on the way is left out.
   */
  async usage(signal?: AbortSignal): Promise<WorkloadUsage[]> {
    const s = withTimeout(signal, OBSERVE_TIMEOUT_MS);
    const list = await this.listOurs(s);
    const ours = list.filter((c) => {
      const type = c.Labels?.[LABELS.type];
      return (type === undefined || type === 'container') && (c.Labels?.[LABELS.workloadId] ?? '') !== '';
    });
    const results = await mapLimit(ours, USAGE_CONCURRENCY, async (c): Promise<WorkloadUsage | undefined> => {
      const container = this.docker.getContainer(c.Id);
      try {
        const [info, stats] = await Promise.all([
          container.inspect({ abortSignal: s }),
          c.State === 'running' ? (container as unknown as StatsApi).stats({ stream: false, 'one-shot': true, abortSignal: s }) : undefined,
        ]);
        return {
          workloadId: c.Labels[LABELS.workloadId] as string,
          type: 'container',
          runtimeId: c.Id,
          ...(stats === undefined ? {} : usageFromDockerStats(stats)),
          restarts: info.RestartCount,
        };
      } catch (err) {
        if (s.aborted) throw translateDockerError(err, 'inspect');
        this.logger.debug({ containerId: c.Id.slice(0, 12), err: dockerErrorMessage(err) }, 'no usage for container');
        return undefined;
      }
    });
    return results.filter((u): u is WorkloadUsage => u !== undefined);
  }

  private imagePresent(ref: string, signal: AbortSignal): Promise<{ present: true } | { present: false; message: string }> {
    return imagePresent(this.docker, ref, signal);
  }

  async prepare(workload: WorkloadBase, ctx: ApplyContext): Promise<void> {
    const w = asContainer(workload);
    const ref = w.spec.image;
    const policy = w.spec.pullPolicy ?? 'IfNotPresent';
    if (policy === 'Always') {
      await this.pull(ref, ctx);
      return;
    }
    const local = await this.imagePresent(ref, ctx.signal);
    if (local.present) return;
    if (policy === 'Never') {
      throw new WorkloadError('IMAGE_NOT_FOUND', local.message, {
        userMessage: 'The image is not present on this host and the pull policy is Never.',
        details: { operation: 'inspect', image: ref, pullPolicy: policy },
      });
    }
    await this.pull(ref, ctx);
  }

  private pull(ref: string, ctx: ApplyContext): Promise<void> {
    return pullImage(this.docker, ref, ctx, this.logger);
  }

  async create(workload: WorkloadBase, ctx: ApplyContext): Promise<ObservedWorkload> {
    const w = asContainer(workload);
    ctx.progress?.('Creating');
    if (ctx.nodeId !== this.nodeId) {
      // observe() filters on the runtime's node id; labelling with another would create an invisible container.
      this.logger.warn({ workloadId: w.id, ctxNodeId: ctx.nodeId, nodeId: this.nodeId }, 'apply context names another node id; using the runtime\'s');
    }
    const opts = toCreateOptions(w, { nodeId: this.nodeId, specHash: ctx.specHash, hashVersion: ctx.hashVersion, namePrefix: this.namePrefix });
    const name = containerName(this.namePrefix, w.id);
    const requestedAt = Date.now();
    let container: Dockerode.Container;
    try {
      container = await this.createOnce(opts, ctx.signal);
    } catch (err) {
      // prepare() normally ran just before; the image may have been removed since (image GC, a
      // person). Creating first and pulling only on "No such image" saves an inspect per container.
      if (dockerStatusCode(err) !== 404 || !/no such image/i.test(dockerErrorMessage(err))) throw await this.createFailed(err, name, ctx.specHash, requestedAt);
      await this.prepare(w, ctx);
      ctx.progress?.('Creating');
      try {
        container = await this.createOnce(opts, ctx.signal);
      } catch (again) {
        throw await this.createFailed(again, name, ctx.specHash, requestedAt);
      }
    }
    this.logger.debug({ workloadId: w.id, containerId: container.id.slice(0, 12), name }, 'created container');
    // Everything an observation holds is known from the request: no inspect round trip.
    return {
      workloadId: w.id,
      type: 'container',
      runtime: 'docker',
      runtimeId: container.id,
      name,
      revision: w.revision,
      specHash: ctx.specHash,
      hashVersion: ctx.hashVersion ?? containerType.hashVersion,
      state: 'created',
      exitCode: null,
      restartCount: 0,
      createdAt: new Date(requestedAt).toISOString(),
      parts: [{ kind: 'container', id: container.id }],
    };
  }

  private createOnce(opts: Dockerode.ContainerCreateOptions, signal: AbortSignal): Promise<Dockerode.Container> {
    return this.docker.createContainer({ ...opts, abortSignal: signal });
  }

  private async createFailed(err: unknown, name: string, specHash: string, requestedAt: number): Promise<WorkloadError> {
    const e = translateDockerError(err, 'create');
    // An aborted request may still have been carried out by the engine: look for it and take it away.
    if (e.code === 'TIMEOUT') await this.removeOrphanOfCreate(name, specHash, requestedAt);
    return e;
  }

  /** Best-effort removal on a failure path, with its own deadline because the caller's signal may be spent. */
  private async forceRemove(id: string, workloadId: string): Promise<void> {
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true, abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
      this.logger.info({ workloadId, containerId: id.slice(0, 12) }, 'removed container left by a failed create');
    } catch (err) {
      if (dockerStatusCode(err) === 404) return;
      this.logger.warn({ workloadId, containerId: id.slice(0, 12), err: dockerErrorMessage(err) }, 'could not remove container left by a failed create');
    }
  }

  /**
   * After an aborted create: removes the container of that name only if it is provably the one we asked
   * for (our node, the same spec hash, created after the request went out), never an older namesake.
   */
  private async removeOrphanOfCreate(name: string, specHash: string, requestedAtMs: number): Promise<void> {
    try {
      const info = await this.docker.getContainer(name).inspect({ abortSignal: AbortSignal.timeout(CLEANUP_TIMEOUT_MS) });
      const labels = info.Config.Labels ?? {};
      const created = Date.parse(info.Created);
      const ours =
        labels[LABELS.nodeId] === this.nodeId && labels[LABELS.specHash] === specHash && Number.isFinite(created) && created >= requestedAtMs - 2_000;
      if (ours) await this.forceRemove(info.Id, labels[LABELS.workloadId] ?? name);
    } catch (err) {
      if (dockerStatusCode(err) !== 404) {
        this.logger.warn({ name, err: dockerErrorMessage(err) }, 'could not check for a container left by an aborted create');
      }
    }
  }

  async start(observed: ObservedWorkload, signal: AbortSignal): Promise<void> {
    try {
      await this.docker.getContainer(observed.runtimeId).start({ abortSignal: signal });
      this.logger.debug({ workloadId: observed.workloadId, containerId: observed.runtimeId.slice(0, 12) }, 'started container');
    } catch (err) {
      // 304: already running, which is what was asked.
      if (dockerStatusCode(err) === 304) return;
      // An engine restart cut a start short and left the id taken in containerd: the executor replaces it.
      const message = dockerErrorMessage(err);
      if (cannotStartAgain(message, observed.runtimeId)) {
        throw new WorkloadError('STUCK', message, { cause: err, details: { operation: 'start', replace: true } });
      }
      throw translateDockerError(err, 'start');
    }
  }

  async stop(observed: ObservedWorkload, signal: AbortSignal, timeoutSeconds?: number): Promise<void> {
    // Without `t` the engine uses the container's StopTimeout (from the spec) or its default of 10 s.
    const opts: Dockerode.ContainerStopOptions = { abortSignal: signal };
    if (timeoutSeconds !== undefined) opts.t = timeoutSeconds;
    try {
      await this.docker.getContainer(observed.runtimeId).stop(opts);
      this.logger.debug({ workloadId: observed.workloadId, containerId: observed.runtimeId.slice(0, 12) }, 'stopped container');
    } catch (err) {
      // 304: already stopped.
      if (dockerStatusCode(err) === 304) return;
      throw translateDockerError(err, 'stop');
    }
  }

  /** A container owns nothing that outlives it but named volumes, which are never removed here: `why` changes nothing. */
  async remove(observed: ObservedWorkload, signal: AbortSignal, _why: RemoveReason = 'removed-from-desired'): Promise<void> {
    try {
      // v: true removes the container's anonymous volumes (image VOLUMEs); named volumes are never touched.
      await this.docker.getContainer(observed.runtimeId).remove({ force: true, v: true, abortSignal: signal });
      this.logger.debug({ workloadId: observed.workloadId, containerId: observed.runtimeId.slice(0, 12) }, 'removed container');
    } catch (err) {
      const status = dockerStatusCode(err);
      // 404: already gone. 409 "removal ... is already in progress": someone else is finishing the job.
      if (status === 404) return;
      if (status === 409 && /already in progress/i.test(dockerErrorMessage(err))) return;
      throw translateDockerError(err, 'remove');
    }
  }

  async inspect(observed: ObservedWorkload, signal?: AbortSignal): Promise<ObservedWorkload | undefined> {
    return this.inspectById(observed.runtimeId, observed.workloadId, withTimeout(signal, OBSERVE_TIMEOUT_MS));
  }

  private async inspectById(id: string, workloadId: string, signal: AbortSignal): Promise<ObservedWorkload | undefined> {
    let info: Dockerode.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(id).inspect({ abortSignal: signal });
    } catch (err) {
      if (dockerStatusCode(err) === 404) return undefined;
      throw translateDockerError(err, 'inspect');
    }
    const labels = info.Config.Labels ?? {};
    const state = mapDockerState(info.State.Status);
    const o: ObservedWorkload = {
      workloadId: labels[LABELS.workloadId] ?? workloadId,
      type: 'container',
      runtime: 'docker',
      runtimeId: info.Id,
      name: info.Name.replace(/^\//, ''),
      revision: labels[LABELS.revision],
      specHash: labels[LABELS.specHash],
      hashVersion: hashVersionOf(labels[LABELS.hashVersion]),
      state,
      // A running container's ExitCode is a stale 0; an exited one, or one the restart policy is about
      // to restart, has the code of its last exit (crash evidence).
      exitCode: state === 'exited' || state === 'restarting' ? info.State.ExitCode : null,
      oomKilled: info.State.OOMKilled,
      restartCount: info.RestartCount,
      startedAt: engineTime(info.State.StartedAt),
      finishedAt: engineTime(info.State.FinishedAt),
      createdAt: info.Created,
      parts: [{ kind: 'container', id: info.Id }],
    };
    if (state === 'unknown' || state === 'paused') o.engineState = info.State.Status;
    return o;
  }

  async logTail(observed: ObservedWorkload, lines: number, signal?: AbortSignal): Promise<string[]> {
    const tail = Math.max(1, Math.min(LOG_TAIL_MAX_LINES, Math.floor(lines)));
    const raw: unknown = await this.call('inspect', () =>
      this.docker.getContainer(observed.runtimeId).logs({
        stdout: true,
        stderr: true,
        follow: false,
        tail,
        abortSignal: withTimeout(signal, OBSERVE_TIMEOUT_MS),
      }),
    );
    // docker-modem hands back a Buffer, except when the (TTY) output happened to parse as JSON.
    const text = Buffer.isBuffer(raw) ? demuxDockerLogs(raw) : typeof raw === 'string' ? raw : JSON.stringify(raw) ?? '';
    return tailLines(text, LOG_TAIL_MAX_BYTES).slice(-tail);
  }

  /**
   * Streams die/oom/destroy/start/stop/kill of our containers until `signal` aborts. `since` is the call
   * time, so events between the call and the stream being established are replayed, not lost (a few from
   * the same second may come twice: they are triggers, duplicates are harmless). An end of the stream
   * that the caller did not ask for rejects with RUNTIME_UNAVAILABLE; reconnecting is the caller's job.
   */
  async events(signal: AbortSignal, onEvent: (e: RuntimeEvent) => void): Promise<void> {
    const filters = { type: ['container'], label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${this.nodeId}`], event: EVENT_ACTIONS };
    await streamDockerEvents(this.docker, filters, parseDockerEvent, onEvent, signal, this.logger);
  }
}
