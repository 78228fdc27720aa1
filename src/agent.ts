import { watch, type FSWatcher } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Cron } from 'croner';
import type { Config } from './config/schema.js';
import { startApiServer } from './api/server.js';
import { apiSocketPath } from './api/client.js';
import { SourceError } from './errors/index.js';
import { resolveNodeId } from './identity/node-id.js';
import type { Logger } from './log.js';
import { HostCollector } from './metrics/host.js';
import { readHostId } from './metrics/host-id.js';
import { configIntervals } from './metrics/intervals.js';
import { MetricsPusher } from './metrics/push.js';
import { computeReadiness } from './metrics/readiness.js';
import { createAgentMetrics, type AgentMetrics } from './metrics/registry.js';
import { startMetricsServer } from './metrics/server.js';
import { RuntimeHealthBoard, WorkloadStatsCollector } from './metrics/workload-stats.js';
import { drainSteps } from './reconcile/drain.js';
import { Executor } from './reconcile/executor.js';
import { ReconcileLoop, type CycleSummary } from './reconcile/loop.js';
import { RuntimeAvailabilityLog } from './reconcile/runtime-availability.js';
import { createRuntimes } from './runtimes/create-runtimes.js';
import { BUILTIN_TYPES } from './runtimes/registry.js';
import { admissionGate, computeCommitted } from './resources/admission.js';
import { registerResourceMetrics } from './resources/metrics.js';
import { ResourceMonitor } from './resources/monitor.js';
import type { Runtime } from './runtimes/runtime.js';
import { buildStatusReport } from './status/build-report.js';
import { GarbageCollector } from './gc/collector.js';
import { registerGcMetrics } from './gc/metrics.js';
import { acquireStateDirLock } from './store/lock.js';
import { hasLegacyRuntimeFacts, moveLegacyEvidence, moveLegacySecrets } from './runtimes/legacy-state.js';
import { Store, storeErrorCode } from './store/store.js';
import { SystemdNotifier } from './systemd/notify.js';
import { createSyncClients } from './sync/sync-clients.js';
import { registerExpiryMetrics } from './trust/expiry-metrics.js';
import { trustSettingsFrom } from './trust/settings.js';
import { SourcePoller } from './sync/poller.js';
import { StatusReporter } from './sync/reporter.js';
import { DesiredStateSource, type PullResult } from './sync/source.js';
import { backoffDelayMs, sleep } from './util/backoff.js';
import { AGENT_VERSION } from './version.js';
import { hostVolumeOpsFor } from './storage/host-ops.js';
import { StorageManager } from './storage/manager.js';
import { registerStorageMetrics } from './storage/metrics.js';
import type { UpdateHold } from './reconcile/steps.js';
import { afterPass, namedVolumeDir, heldUpdates, updateGates } from './updates/gates.js';
import { UpdateState } from './updates/state.js';

export interface AgentOptions {
  config: Config;
  /** Local desired-state file used when source.url is not configured (embedded defaults). */
  desiredPath: string;
  logger: Logger;
}

export const expandUrl = (template: string, nodeId: string) => template.replaceAll('{nodeId}', encodeURIComponent(nodeId));

/**
 * Wires the parts together: store -> identity -> runtimes -> source/poller -> loop -> reporter
 * -> metrics. Owns the one AbortController that shutdown aborts.
 */
export class Agent {
  private readonly abort = new AbortController();
  /** Aborts running steps: only when the SIGTERM drain time is up (this.abort stops new ones). */
  private readonly stepAbort = new AbortController();
  private executor: Executor | undefined;
  private runtimeLog: RuntimeAvailabilityLog | undefined;
  private readonly closers: (() => Promise<void> | void)[] = [];
  private loop!: ReconcileLoop;
  private reporter!: StatusReporter;
  private store!: Store;
  private runtimes: Runtime[] = [];
  /** Runtimes this agent knows but did not build (disabled by config), for status and /readyz. */
  private absentRuntimes: { name: string; reason: string }[] = [];
  /** The runtime of each workload type it owns. */
  private runtimeOf = new Map<string, Runtime>();
  private metrics!: AgentMetrics;
  /** Newest health per runtime (reconcile cycles and the stats pass): /readyz and persys_runtime_up. */
  private readonly health = new RuntimeHealthBoard();
  /**
   * An event watcher in its reconnect backoff, by runtime: woken when a cycle sees its runtime come
   * back, because the backoff grew while the engine was down (up to 30 s) and the die/stop events of
   * that time would be missed. Only a down -> up edge wakes it, so a runtime whose ping answers but
   * whose event stream fails still backs off.
   */
  private readonly eventWakers = new Map<string, () => void>();
  /** Whether the newest cycle saw each runtime up (for the down -> up edge above). */
  private readonly cycleSawUp = new Map<string, boolean>();
  private stats: WorkloadStatsCollector | undefined;
  /** Updates held in the last pass (src/updates), for the status report. */
  private heldUpdates: ReadonlyMap<string, UpdateHold> = new Map();
  /** Pools and volumes (src/storage, docs/storage.md). */
  storage!: StorageManager;
  /** The garbage collector; `gc.runNow(reason)` runs a pass at once (the DiskPressure hook). */
  gc!: GarbageCollector;
  /**
   * Host capacity, usage and node conditions (src/resources). `resources.onDiskPressure(fn)` is the
   * hook for "GC runs at once under DiskPressure": fn is called when DiskPressure turns on.
   */
  resources!: ResourceMonitor;
  nodeId = '';
  metricsPort: number | null = null;
  private stopped = false;
  private systemd: SystemdNotifier | undefined;

  private constructor(private readonly opts: AgentOptions) {}

  static async start(opts: AgentOptions): Promise<Agent> {
    const agent = new Agent(opts);
    try {
      await agent.init();
    } catch (err) {
      await agent.stop().catch(() => undefined);
      throw err;
    }
    return agent;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  private async init(): Promise<void> {
    const { config, logger } = this.opts;
    const signal = this.abort.signal;
    // Type=notify under systemd: WATCHDOG=1 while the event loop runs, READY=1 after the first cycle.
    const systemd = (this.systemd = new SystemdNotifier({ env: process.env, logger }));
    systemd.startWatchdog(signal);
    systemd.readyAtLatest(120_000, 'started; the first reconcile is still running');
    const stateDir = resolve(config.stateDir);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    // Before anything in the state dir is read or written; released last (closers run in reverse).
    const lock = await acquireStateDirLock(stateDir);
    this.closers.push(() => lock.release());
    this.store = await Store.open(stateDir, logger);
    this.closers.push(() => this.store.close());

    const id = await resolveNodeId({ ...(config.nodeId ? { override: config.nodeId } : {}), stateDir, logger });
    this.nodeId = id.nodeId;
    if (this.store.data.nodeId !== this.nodeId) this.store.update((d) => void (d.nodeId = this.nodeId));
    logger.info({ nodeId: this.nodeId, idSource: id.source, stateDir, version: AGENT_VERSION }, 'persys-agent starting');

    // createRuntimes also gives the host policy the facts of this host (state dir, engine sockets).
    const built = createRuntimes(config, {
      nodeId: this.nodeId,
      stateDir,
      logger,
      onChange: () => this.reporter?.markDirty(),
      // Read when a VM is created, by which time the storage manager exists and the gate saw the volume Ready.
      storageVolume: (name) => this.storage?.volume(name),
    });
    this.runtimes = built.runtimes;
    this.absentRuntimes = built.absent;
    // State files of agents before runtime contract v2: moved into the records' generic fields once.
    if (hasLegacyRuntimeFacts(this.store.data)) this.store.update((d) => void (moveLegacySecrets(d), moveLegacyEvidence(d)));
    this.closers.push(async () => {
      for (const rt of this.runtimes) await rt.close?.();
    });

    this.resources = new ResourceMonitor({
      settings: config.resources,
      requireRequests: config.policy.requireResourceRequests,
      stateDir,
      paths: () => this.resourcePaths(),
      logger,
    });
    // Admission needs figures before the first pass; a host that cannot be read admits by requests unknown.
    await this.resources.sample().catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not read host resources'));
    this.stats = new WorkloadStatsCollector({ runtimes: this.runtimes, intervalSeconds: config.metrics.statsIntervalSeconds, health: this.health, logger });
    this.metrics = createAgentMetrics(
      { nodeId: this.nodeId, version: AGENT_VERSION, hostname: hostname(), hostId: await readHostId(stateDir), intervals: configIntervals(config) },
      {
        lastPullSuccessAt: () => this.store.data.sync.lastSuccessAt,
        desiredGeneration: () => this.store.data.desired?.document.generation ?? null,
        desiredWorkloads: () => this.store.data.desired?.document.workloads ?? [],
        workloadPhases: () => Object.values(this.store.data.records),
        store: () => this.store,
        statusReports: () => this.reporter?.sends ?? { ok: 0, error: 0 },
        runtimeHealth: () => this.health.all(),
        workloadUsage: () => this.stats?.usage() ?? [],
        workloadStatsCollections: () => this.stats?.counts ?? [],
        host: new HostCollector({
          filesystems: () => {
            const fs = [{ purpose: 'state', path: stateDir }];
            // Where each engine keeps its data (images, disks), under the runtime's name.
            for (const rt of this.runtimes) {
              const root = this.health.get(rt.name)?.dataRoot;
              if (root && !fs.some((f) => f.path === root)) fs.push({ purpose: rt.name, path: root });
            }
            return fs;
          },
        }),
      },
    );
    registerExpiryMetrics(this.metrics.registry, () => this.store.data.desired?.document.expiresAt);
    registerResourceMetrics(this.metrics.registry, { figures: () => this.resourceFigures(), conditions: () => this.resources.conditions() });
    this.store.onWrite = (ms) => this.metrics.storeWriteDuration.observe(ms / 1000);
    this.runtimeOf = new Map(this.runtimes.flatMap((rt) => rt.types.map((t) => [t.type, rt] as const)));
    const markDirty = () => this.reporter?.markDirty();
    // Loop volumes are attached again before the first reconcile, so no container starts without its volume.
    this.storage = new StorageManager({
      stateDir,
      nodeId: this.nodeId,
      ops: hostVolumeOpsFor(config),
      allowedPrefixes: config.policy.allowedStoragePrefixes,
      types: BUILTIN_TYPES,
      logger,
      onChange: markDirty,
    });
    await this.storage.start();
    registerStorageMetrics(this.metrics.registry, () => this.storage.report());
    const executor = new Executor({ nodeId: this.nodeId, runtimes: this.runtimeOf, store: this.store, config, logger, onRecordChange: markDirty, abortSteps: this.stepAbort.signal });
    this.executor = executor;
    this.runtimeLog = new RuntimeAvailabilityLog(logger);
    const updates = new UpdateState(stateDir);
    this.loop = new ReconcileLoop({
      store: this.store,
      runtimes: this.runtimes,
      executor,
      logger,
      policy: config.policy,
      gates: (view) => [
        admissionGate(this.resources.admissionSettings(), {
          desired: this.store.data.desired?.document.workloads ?? [],
          observed: view.observed,
          records: this.store.data.records,
          types: BUILTIN_TYPES,
        }),
        // Maintenance windows, update locks, update.maxParallel (docs/updates.md).
        ...updateGates({ config, desired: this.store.data.desired?.document, stateDir, volumeDir: namedVolumeDir((rt) => this.health.get(rt)?.dataRoot), state: updates, warn: (f, m) => logger.warn(f, m) }),
      ],
      storage: this.storage,
      onRecordChange: markDirty,
      onCycle: (s) => {
        this.recordCycleMetrics(s);
        this.heldUpdates = heldUpdates(s.plan.steps);
        try {
          const desired = this.store.data.desired?.document;
          afterPass(updates, s.results, desired ? new Set(desired.workloads.map((w) => w.id)) : null);
        } catch (err) {
          logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not write updates.json');
        }
        void systemd.ready(`reconciled generation ${this.store.data.desired?.document.generation ?? 'none'}: ${Object.keys(this.store.data.records).length} workload(s)`);
      },
    });

    // The garbage collector: its own schedule (gc.intervalSeconds), src/gc, docs/gc.md.
    this.gc = new GarbageCollector({
      config,
      store: this.store,
      runtimes: this.runtimes,
      nodeId: this.nodeId,
      stateDir,
      logger,
      metrics: registerGcMetrics(this.metrics.registry),
      dataRootOf: (runtime) => this.health.get(runtime)?.dataRoot,
      onChange: markDirty,
    });

    const sourceUrl = expandUrl(config.source.url ?? pathToFileURL(resolve(this.opts.desiredPath)).href, this.nodeId);
    const statusUrl = expandUrl(config.status.url ?? pathToFileURL(resolve(stateDir, 'status.json')).href, this.nodeId);
    // Source and status each get their own client: their own CA, client certificate and token.
    const { source: http, status: statusHttp } = createSyncClients(config, sourceUrl, statusUrl);
    this.closers.push(() => http.close(), () => statusHttp.close());
    const trust = trustSettingsFrom(config);

    this.reporter = new StatusReporter({
      url: statusUrl,
      httpClient: statusHttp,
      heartbeatSeconds: config.status.heartbeatSeconds,
      debounceMs: config.status.debounceMs,
      buildReport: (seq) => this.buildReport(seq),
      loadSeq: () => this.store.data.reporter.seq,
      saveSeq: (seq) => this.store.beforeReport(seq),
      logger,
    });

    const source = new DesiredStateSource({
      url: sourceUrl,
      httpClient: http,
      ...(trust !== undefined ? { trust } : {}),
      storedDocument: () => this.store.data.desired?.document ?? null,
      maxBodyBytes: config.source.maxBodyBytes,
      timeoutMs: config.source.timeoutSeconds * 1000,
      logger,
    });
    const poller = new SourcePoller({
      source: {
        pull: async (o) => {
          const end = this.metrics.pullDuration.startTimer();
          try {
            return await source.pull(o);
          } finally {
            end();
          }
        },
      },
      nodeId: this.nodeId,
      pollIntervalSeconds: config.source.pollIntervalSeconds,
      longPollSeconds: config.source.longPollSeconds,
      state: () => ({ currentEtag: this.store.data.desired?.etag ?? null, storedGeneration: this.store.data.desired?.document.generation ?? null }),
      onResult: (r) => this.onPull(r, sourceUrl),
      logger,
    });

    if (config.metrics.listen !== 'off') {
      const srv = await startMetricsServer(config.metrics.listen, {
        registry: this.metrics.registry,
        alive: () => !this.stopped,
        ready: async () => this.readiness(),
        logger,
      });
      this.metricsPort = srv.port;
      this.closers.push(() => srv.close());
      logger.debug({ listen: config.metrics.listen, port: srv.port }, 'metrics listening');
    }
    void this.stats.start(signal);
    if (config.metrics.push.url) {
      const pusher = new MetricsPusher({
        url: config.metrics.push.url,
        nodeId: this.nodeId,
        registry: this.metrics.registry,
        intervalSeconds: config.metrics.push.intervalSeconds,
        deleteOnShutdown: config.metrics.push.deleteOnShutdown,
        logger,
        onResult: (ok) => this.metrics.pushes.inc({ result: ok ? 'ok' : 'error' }),
      });
      void pusher.start(signal);
      this.closers.push(() => pusher.stop());
    }

    // The local control API (`persys-agent status`, `retry`): owner-only unix socket in the state dir.
    const api = await startApiServer(
      apiSocketPath(stateDir),
      {
        status: () => this.buildReport(this.store.data.reporter.seq),
        retry: async (id) => {
          const rec = await this.loop.requestRetry(id, signal);
          return rec ? this.buildReport(this.store.data.reporter.seq).workloads.find((w) => w.id === id) ?? { id } : undefined;
        },
        gc: (o) => this.gc.runNow(o.dryRun ? 'persys-agent gc --dry-run' : 'persys-agent gc', o),
        sync: async () => {
          // Answers after the pull this request caused and a cycle that started after it.
          await poller.pullNow();
          await this.loop.trigger('sync requested', signal);
          return { synced: true, observedGeneration: this.store.data.desired?.document.generation ?? null };
        },
      },
      logger,
    );
    this.closers.push(() => api.close());

    this.reporter.start(signal);
    void poller.run(signal);
    if (sourceUrl.startsWith('file:')) this.watchFile(fileURLToPath(sourceUrl), () => poller.triggerNow());

    const cron = new Cron('* * * * * *', { interval: config.reconcile.intervalSeconds, protect: true }, () => {
      void this.loop.trigger('periodic', signal);
    });
    this.closers.push(() => cron.stop());
    for (const rt of this.runtimes) void this.watchEvents(rt, signal);
    this.gc.start(signal);
    // GC runs at once under DiskPressure (issue 12): a pass now, after the one in flight if any.
    const gcUnderPressure = (reason: string): void => {
      this.gc.runNow(`DiskPressure: ${reason}`).catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'garbage collection under DiskPressure failed'));
    };
    const offDiskPressure = this.resources.onDiskPressure(gcUnderPressure);
    // On already at the first sample (taken before this subscription): a pass now as well.
    const onAtStart = this.resources.active().find((c) => c.type === 'DiskPressure');
    if (onAtStart) gcUnderPressure(onAtStart.reason);
    this.closers.push(() => {
      offDiskPressure();
      this.gc.stop();
    });
    // A condition that turns on or off changes what admission decides: report it and plan again.
    void this.resources.run(signal, (changed) => {
      this.reporter.markDirty();
      void this.loop.trigger(`node condition changed: ${changed.join(', ')}`, signal);
    });

    // Re-adopt what the runtime already runs for us, with the desired state we stored last time.
    void this.loop.trigger('start', signal);
  }

  private async onPull(r: PullResult | SourceError, url: string): Promise<void> {
    const now = new Date().toISOString();
    if (r instanceof SourceError) {
      this.metrics.pulls.inc({ result: 'error' });
      this.metrics.errors.inc({ code: r.code });
      const prev = this.store.data.sync.lastError;
      this.store.setSync({ lastPullAt: now, lastError: { code: r.code, message: r.message, at: now } });
      if (!prev || prev.message !== r.message) {
        this.opts.logger.warn({ code: r.code, err: r.message }, 'desired state rejected; the last good one stays in force');
      }
      this.reporter.markDirty();
      return;
    }
    const hadError = this.store.data.sync.lastError !== null;
    if (r.kind === 'not-modified' && !hadError) this.store.noteSync({ lastPullAt: now, lastSuccessAt: now });
    else this.store.setSync({ lastPullAt: now, lastSuccessAt: now, lastError: null });
    if (r.kind === 'not-modified') {
      this.metrics.pulls.inc({ result: '304' });
      if (hadError) this.reporter.markDirty();
      return;
    }
    this.metrics.pulls.inc({ result: '200' });
    const prevGen = this.store.data.desired?.document.generation ?? null;
    // Durable before its first step: the loop sees it only once desired.json holds it. If it cannot
    // be stored it is not applied: the error is reported, and the throw makes the poller back off and
    // pull (and store) again, the etag still being the old one.
    // The images the new document names are remembered before it is applied, and the ones it no
    // longer names are marked unreferenced after: the store never forgets an image of ours (GC).
    this.gc.noteDesired(r.document.workloads, true);
    try {
      await this.store.setDesired({ document: r.document, etag: r.etag, receivedAt: now, source: url, ...(r.signedBy.length > 0 ? { signedBy: r.signedBy } : {}) });
    } catch (err) {
      const message = `generation ${r.document.generation} not applied: it could not be stored: ${err instanceof Error ? err.message : String(err)}; retrying`;
      const code = storeErrorCode(err);
      this.store.setSync({ lastError: { code, message, at: new Date().toISOString() } });
      this.metrics.errors.inc({ code });
      this.reporter.markDirty();
      throw new Error(message, { cause: err });
    }
    this.gc.noteDesired(r.document.workloads);
    this.metrics.desiredGeneration.set(r.document.generation);
    this.opts.logger.info({ generation: r.document.generation, previous: prevGen, workloads: r.document.workloads.length }, 'new desired state');
    this.reporter.markDirty();
    void this.loop.trigger('new desired state', this.abort.signal);
  }

  /** Engine events (die, oom, destroy) of our workloads trigger a cycle; the stream reconnects with backoff. */
  private async watchEvents(rt: Runtime, signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      const started = Date.now();
      try {
        await rt.events(signal, (e) => {
          this.opts.logger.debug({ runtime: rt.name, workloadId: e.workloadId, action: e.action }, 'runtime event');
          this.loop.noteEvent(e);
          void this.loop.trigger(`${rt.name} ${e.action} ${e.workloadId}`, signal);
        });
      } catch (err) {
        this.opts.logger.debug({ runtime: rt.name, err: err instanceof Error ? err.message : String(err) }, 'event stream ended');
      }
      if (signal.aborted) return;
      failures = Date.now() - started > 60_000 ? 1 : failures + 1;
      const wake = new AbortController();
      const onStop = (): void => wake.abort();
      signal.addEventListener('abort', onStop, { once: true });
      this.eventWakers.set(rt.name, onStop);
      try {
        await sleep(backoffDelayMs({ initialDelayMs: 1000, maxDelayMs: 30_000, multiplier: 2 }, failures) + 250, wake.signal);
      } finally {
        this.eventWakers.delete(rt.name);
        signal.removeEventListener('abort', onStop);
      }
      if (signal.aborted) return;
      // The stream may have missed events while it was down.
      void this.loop.trigger(`${rt.name} events reconnect`, signal);
    }
  }

  /** fs.watch on the directory: the file may not exist yet, and editors replace files by rename. */
  private watchFile(path: string, onChange: () => void): void {
    const name = basename(path);
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dirname(path), { persistent: false }, (_event, file) => {
        if (file === null || file.toString() === name) onChange();
      });
      watcher.on('error', () => watcher?.close());
      this.closers.push(() => watcher?.close());
    } catch (err) {
      this.opts.logger.debug({ err: err instanceof Error ? err.message : String(err) }, 'cannot watch desired-state file; polling only');
    }
  }

  private recordCycleMetrics(s: CycleSummary): void {
    const m = this.metrics;
    m.reconcileRuns.inc();
    m.reconcileDuration.observe(s.durationMs / 1000);
    for (const r of s.results) {
      m.steps.inc({ kind: r.step.kind, result: r.ok ? 'ok' : 'error' });
      if (r.error) m.errors.inc({ code: r.error.code });
    }
    const observedAt = Date.now() - s.durationMs;
    for (const [name, h] of s.view.health) {
      this.health.update(name, h, observedAt);
      if (h.up && this.cycleSawUp.get(name) === false) this.eventWakers.get(name)?.();
      this.cycleSawUp.set(name, h.up);
    }
    this.runtimeLog?.note(s.view.health, this.runtimes, this.store.data.desired?.document.workloads ?? []);
  }

  private readiness() {
    const { config } = this.opts;
    return computeReadiness({
      now: Date.now(),
      store: { writable: this.store.writable, lastError: this.store.writeError },
      // The node's primary runtime always counts; the others once a workload of theirs is desired.
      runtimes: this.runtimes.map((rt) => ({
        name: rt.name,
        health: this.health.get(rt.name),
        required: rt.primary === true || (this.store.data.desired?.document.workloads.some((w) => this.runtimeOf.get(w.type) === rt) ?? false),
      })),
      absentRuntimes: this.absentRuntimes,
      lastPullSuccessAt: this.store.data.sync.lastSuccessAt,
      lastPullError: this.store.data.sync.lastError,
      pollIntervalSeconds: config.source.pollIntervalSeconds,
      longPollSeconds: config.source.longPollSeconds,
      conditions: this.resources.conditions(),
    });
  }

  /** File systems that count for DiskPressure beside the state dir: each runtime's data root (imagefs) and the storage pools. */
  private resourcePaths(): { role: string; path: string }[] {
    const out: { role: string; path: string }[] = [];
    for (const rt of this.runtimes) {
      const root = this.health.get(rt.name)?.dataRoot;
      if (root) out.push({ role: 'imagefs', path: root });
    }
    const pools = (this.store.data.desired?.document as { storagePools?: unknown } | undefined)?.storagePools;
    if (Array.isArray(pools)) {
      for (const p of pools as { path?: unknown }[]) if (typeof p.path === 'string') out.push({ role: 'storage', path: p.path });
    }
    return out;
  }

  /** capacity, allocatable and usage as last sampled; committed from the last pass's observation. */
  private resourceFigures() {
    const s = this.resources.latest();
    const view = this.loop?.lastView;
    const committed = view
      ? computeCommitted({ desired: this.store.data.desired?.document.workloads ?? [], observed: view.observed, records: this.store.data.records, types: BUILTIN_TYPES }).total
      : undefined;
    return { ...(s ? { capacity: s.capacity, allocatable: s.allocatable, usage: s.usage } : {}), ...(committed ? { committed } : {}) };
  }

  private buildReport(seq: number) {
    const view = this.loop.lastView;
    const runtimes: Record<string, string> = { ...(view?.status ?? {}) };
    for (const rt of this.runtimes) runtimes[rt.name] ??= 'down: not observed yet';
    for (const a of this.absentRuntimes) runtimes[a.name] = `down: ${a.reason}`;
    // Capacity from the host (cgroup or /proc; statfs), not from whichever engine answers first.
    const { capacity, ...figures } = this.resourceFigures();
    return buildStatusReport({
      live: (type, id, state) => this.runtimeOf.get(type)?.live?.(id, state),
      nodeId: this.nodeId,
      seq,
      agentVersion: AGENT_VERSION,
      hostname: hostname(),
      data: this.store.data,
      runtimes,
      ...(capacity ? { capacity } : {}),
      ...(this.gc?.report() ? { gc: this.gc.report() } : {}),
      resources: { ...figures, conditions: this.resources.conditions() },
      storage: this.storage.report(),
      updates: this.heldUpdates,
      now: new Date(),
    });
  }

  /**
   * SIGTERM path: stop triggers and new steps, let running steps finish within
   * shutdown.drainSeconds, then abort the rest (they clean up what they made), send a last report
   * and flush the store.
   */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    void this.systemd?.stopping();
    this.abort.abort();
    const executor = this.executor;
    if (this.loop && executor) {
      await drainSteps({
        idle: () => this.loop.idle(),
        inFlight: () => [...executor.inFlight.keys()],
        abortSteps: () => this.stepAbort.abort(),
        quiesce: (ms) => executor.quiesce(ms),
        drainSeconds: this.opts.config.shutdown.drainSeconds,
        logger: this.opts.logger,
      });
    }
    this.stepAbort.abort();
    if (this.reporter) await this.reporter.flush(AbortSignal.timeout(Math.min(5000, timeoutMs / 4))).catch(() => undefined);
    for (const close of this.closers.reverse()) {
      try {
        await close();
      } catch (err) {
        this.opts.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'error during shutdown');
      }
    }
  }
}
