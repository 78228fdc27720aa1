/**
 * Engine restarts (issue 16, family 2), with the built CLI and a loopback fleet server.
 *
 * Docker: a private dockerd (own network namespace, socket and data root; the shared engine is never
 * touched) runs a fleet of FLEET containers. For DOCKER_ROUNDS rounds a new generation recreates
 * some of them (env change), and the private dockerd is stopped at a seeded random moment after
 * the agent took that generation (so during its steps). While it is down:
 *   - every report says `node.runtimes.docker` is down and every desired workload's error is
 *     RUNTIME_UNAVAILABLE, and no report drops a workload's record;
 * after it is back (measured from its first `/_ping` answer):
 *   - no container the agent could not see was removed: every workload not recreated by this
 *     generation keeps its container (same id) through the whole round;
 *   - the fleet converges (engine state and the report) within 2 reconcile intervals plus a slack
 *     for the engine's own restart of its containers;
 *   - the event stream reconnected: a container stopped behind the agent's back one interval after
 *     the engine is back is seen as a `runtime event` (logged only by the event stream's callback)
 *     within one reconcile interval. (Before the fix in src/agent.ts the reconnect backoff, grown
 *     during the outage to up to 30 s, ran on after the engine was back and such stops were missed.)
 *
 * libvirt: a private libvirtd (own mount and network namespaces, run/lib/etc dirs and socket; the
 * shared daemon is never touched, see test/helpers/private-libvirtd.ts) runs a TCG VM. For
 * LIBVIRT_ROUNDS rounds a new generation adds a VM, and the private libvirtd is stopped at a seeded
 * random moment after the agent took it (so while the new VM's disk, domain or start is under way).
 * While it is down, every report says `node.runtimes.libvirt` is down and every desired VM's error
 * is RUNTIME_UNAVAILABLE. After it is back: the VMs that were running still run in the same QEMU
 * process (nothing removed, nothing recreated), every desired VM runs with exactly one domain and
 * one disk directory (nothing orphaned by the cut), and the report converges, within 2 reconcile
 * intervals plus a slack.
 *
 * Seed: ENGINE_RESTARTS_SEED (printed); rounds: ENGINE_RESTARTS_ROUNDS (default 3).
 * Prints one line: FIGURES engine-restarts: ...
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import Docker from 'dockerode';

import { AgentProcess, waitFor, type LogLine } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { buildTestGuest, type TestGuest } from '../helpers/guest.js';
import { privateDockerdSkipReason, startPrivateDockerd, type PrivateDockerd } from '../helpers/private-dockerd.js';
import { privateLibvirtdSkipReason, startPrivateLibvirtd, type PrivateLibvirtd } from '../helpers/private-libvirtd.js';
import { seededRandom } from '../helpers/seeded-random.js';

const exec = promisify(execFile);
const IMAGE = 'persys-test/busybox:1';
const FLEET = 10;
const RECREATE = 4;
const INTERVAL_S = 3;
/** The engine's own start of its containers and the agent's first cycle after the ping, on 2 busy cores. */
const CONVERGE_SLACK_MS = 6_000;
const ROUNDS = Number(process.env.ENGINE_RESTARTS_ROUNDS ?? 3);
const SEED = Number(process.env.ENGINE_RESTARTS_SEED ?? randomInt(1, 2 ** 31 - 1));
const ONLY = process.env.ENGINE_RESTARTS_ONLY; // 'docker' | 'libvirt': one part while developing

const dockerSkip = (await requireEngine('docker')) || (await privateDockerdSkipReason()) || (ONLY === 'libvirt' && 'ENGINE_RESTARTS_ONLY=libvirt');
const libvirtSkip = (await requireEngine('libvirt')) || (await privateLibvirtdSkipReason()) || (ONLY === 'docker' && 'ENGINE_RESTARTS_ONLY=docker');
const LIBVIRT_ROUNDS = Number(process.env.ENGINE_RESTARTS_LIBVIRT_ROUNDS ?? 2);

/** Figures both suites add to; printed once, after the last suite. */
const figures: { dockerRounds: number; convergeMs: number[]; eventsReconnected: number; eventsTried: number; wedgedReplaced: number; libvirt: string } = {
  dockerRounds: 0,
  wedgedReplaced: 0,
  convergeMs: [],
  eventsReconnected: 0,
  eventsTried: 0,
  libvirt: 'not-run',
};

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};
const secs = (ms: number): string => (Number.isFinite(ms) ? (ms / 1000).toFixed(1) : 'n/a');

interface W {
  id: string;
  type: 'container';
  revision: string;
  desiredState: 'running';
  spec: Record<string, unknown>;
}
interface ReportWorkload {
  id: string;
  phase: string;
  error: { code: string; message: string } | null;
}
interface Report extends JsonObject {
  seq: number;
  sentAt: string;
  observedGeneration: number | null;
  node: { runtimes: Record<string, string> };
  workloads: ReportWorkload[];
}

const workload = (id: string, rev: string): W => ({
  id,
  type: 'container',
  revision: rev,
  desiredState: 'running',
  // network none: the private dockerd has no bridge.
  spec: { image: IMAGE, pullPolicy: 'Never', command: ['sleep', '3600'], env: { REV: rev }, stopTimeoutSeconds: 1, network: { mode: 'none' } },
});

describe('docker engine restarts mid-apply (private dockerd)', { skip: dockerSkip, timeout: 240_000 }, () => {
  const nodeId = testNodeId('test-engrst');
  const random = seededRandom(SEED);
  let dir: string | undefined;
  let d: PrivateDockerd | undefined;
  let docker: Docker;
  let server: FleetServer | undefined;
  let agent: AgentProcess | undefined;
  let generation = 0;
  const desired = new Map<string, W>();

  const publish = (): number => {
    generation += 1;
    server!.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads: [...desired.values()] });
    return generation;
  };
  const ours = () => docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
  /** workload id -> container ids (all states). */
  const containersById = async (): Promise<Map<string, string[]>> => {
    const m = new Map<string, string[]>();
    for (const c of await ours()) {
      const id = c.Labels['dev.persys.workload-id'] ?? '?';
      m.set(id, [...(m.get(id) ?? []), c.Id]);
    }
    return m;
  };

  /** Why the engine does not match the desired state yet, or ''. */
  const notConverged = async (): Promise<string> => {
    const byId = new Map<string, Docker.ContainerInfo[]>();
    for (const c of await ours()) {
      const id = c.Labels['dev.persys.workload-id'] ?? '?';
      byId.set(id, [...(byId.get(id) ?? []), c]);
    }
    for (const [id, cs] of byId) {
      if (!desired.has(id)) return `orphan ${id}`;
      if (cs.length !== 1) return `${cs.length} containers for ${id}`;
    }
    for (const [id, w] of desired) {
      const c = byId.get(id)?.[0];
      if (!c) return `no container for ${id}`;
      if (c.State !== 'running') return `${id} is ${c.State}`;
      if (c.Labels['dev.persys.revision'] !== w.revision) return `${id} has revision ${c.Labels['dev.persys.revision']}, desired ${w.revision}`;
    }
    return '';
  };
  /** The report agrees: the generation observed, every desired workload Running without an error. */
  const reportConverged = (r: JsonObject, gen: number): boolean => {
    const rep = r as Report;
    if (rep.observedGeneration !== gen || !String(rep.node.runtimes.docker ?? '').startsWith('up')) return false;
    const byId = new Map(rep.workloads.map((w) => [w.id, w]));
    return [...desired.keys()].every((id) => byId.get(id)?.phase === 'Running' && byId.get(id)?.error === null);
  };

  before(async () => {
    dir = await mkdtemp('/tmp/er-');
    d = await startPrivateDockerd(dir);
    docker = new Docker({ socketPath: d.socketPath });
    await exec('sh', ['-c', `docker save ${IMAGE} | docker -H unix://${d.socketPath} load -q`], { timeout: 120_000 });
    server = await startFleetServer({ tls: null });
    const cfg = join(dir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        // debug: `runtime event` lines are the proof that the event stream delivers.
        logLevel: 'debug',
        source: { url: server.sourceUrl, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 1, debounceMs: 50 },
        reconcile: { intervalSeconds: INTERVAL_S, concurrency: 4 },
        metrics: { listen: 'off' },
        docker: { socketPath: d.socketPath, namePrefix: `t-${nodeId}-` },
        libvirt: { enabled: false },
      }),
    );
    for (let i = 0; i < FLEET; i++) desired.set(`w${i}`, workload(`w${i}`, 'g1'));
    publish();
    agent = AgentProcess.start(['run', '--config', cfg]);
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    // Ours by label on the private engine (started again if a failure left it down), then the engine itself.
    if (d) {
      await d.start().catch(() => undefined);
      if (d.running()) {
        for (const c of await ours().catch(() => [])) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
      }
      await d.close().catch(() => undefined);
    }
    // Nothing of this node should ever be on the shared engine; if a bug put it there, it goes too.
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`${ROUNDS} rounds: dockerd stopped mid-apply, RUNTIME_UNAVAILABLE while down, nothing removed, converged within 2 intervals, events reconnect`, async () => {
    process.stdout.write(`engine-restarts: seed ${SEED} (ENGINE_RESTARTS_SEED=${SEED} repeats this run)\n`);
    const a = agent!;
    const dump = async () =>
      `engine: ${await notConverged().catch((e: unknown) => String(e))}\n--- agent log ---\n${a.dump()}\n--- private dockerd log (tail) ---\n${d!.log().split('\n').slice(-60).join('\n')}`;
    await waitFor('the first fleet', async () => (await notConverged()) === '', 120_000, 250).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await dump()}`);
    });
    await server!.waitForReport(nodeId, (r) => reportConverged(r, generation), 30_000);

    let midApply = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      const before = await containersById();
      const ids = [...desired.keys()];
      const recreated = new Set<string>();
      while (recreated.size < RECREATE) recreated.add(ids[Math.floor(random() * ids.length)] as string);
      for (const id of recreated) desired.set(id, workload(id, `g${generation + 1}`));
      const kept = ids.filter((id) => !recreated.has(id));
      const gen = publish();

      // The stop lands after the agent took the generation: during its removes, creates or starts.
      const mark = a.lines.length;
      await waitFor(`the agent to take generation ${gen}`, () => a.lines.slice(mark).some((l) => l.msg === 'new desired state' && l.generation === gen), 30_000, 20);
      const stopAfter = Math.floor(random() * 1500);
      await sleep(stopAfter);
      const took = a.lines.findIndex((l, i) => i >= mark && l.msg === 'new desired state' && l.generation === gen);
      if (!a.lines.slice(took).some((l) => typeof l.msg === 'string' && l.msg.startsWith('reconciled:'))) midApply += 1;
      const stopAt = Date.now();
      await d!.stop();

      // Down: every report says so, and the workloads' errors are RUNTIME_UNAVAILABLE.
      const unavailable = (r: JsonObject): boolean => {
        const rep = r as Report;
        if (!String(rep.node.runtimes.docker ?? '').startsWith('down')) return false;
        const byId = new Map(rep.workloads.map((w) => [w.id, w]));
        return [...desired.keys()].every((id) => byId.get(id)?.error?.code === 'RUNTIME_UNAVAILABLE');
      };
      await server!.waitForReport(nodeId, (r) => Date.parse((r as Report).sentAt) > stopAt && unavailable(r), 30_000).catch(async (err: unknown) => {
        throw new Error(`round ${round}: no RUNTIME_UNAVAILABLE report while dockerd was down: ${String(err)}\nlast report: ${JSON.stringify(server!.reports(nodeId).at(-1))}\n${a.dump()}`);
      });
      // Down for 1 to 2 more reconcile intervals, so periodic cycles run against the missing engine.
      await sleep(INTERVAL_S * 1000 * (1 + random()));
      // Reports sent once start() is called may already see the engine back: the down window ends here.
      const startAt = Date.now();
      await d!.start();
      const pingAt = Date.now();

      // While down, no report lost a record; after the first "down" report, each said down.
      const downReports = server!.reports(nodeId).filter((r) => {
        const t = Date.parse((r as Report).sentAt);
        return t > stopAt && t < startAt;
      }) as Report[];
      for (const r of downReports) {
        const have = new Set(r.workloads.map((w) => w.id));
        for (const id of desired.keys()) assert.ok(have.has(id), `round ${round}: report seq ${r.seq} while down has no record of ${id}`);
      }
      const firstDown = downReports.findIndex(unavailable);
      for (const r of downReports.slice(firstDown)) {
        if (!unavailable(r)) assert.fail(`round ${round}: report seq ${r.seq} while down: ${JSON.stringify(r.node.runtimes)} ${JSON.stringify(r.workloads.map((w) => [w.id, w.error?.code, w.error?.message]))}\n${a.dump()}`);
      }

      // Nothing the agent could not see was removed: kept workloads still have their container. The
      // one exception is a container the restarted engine can no longer start (a start the stop cut
      // short leaves its id taken in containerd): the agent replaces that one, and says so.
      const replacedWedged = (): Set<string> =>
        new Set(a.lines.slice(mark).filter((l) => typeof l.msg === 'string' && l.msg.endsWith('cannot be started again; replacing it')).map((l) => String(l.workloadId)));
      const afterRestart = await containersById();
      for (const id of kept) {
        if (!replacedWedged().has(id)) assert.deepEqual(afterRestart.get(id), before.get(id), `round ${round}: container of ${id} (not recreated) after the restart`);
      }

      try {
        await waitFor(`round ${round} to converge`, async () => (await notConverged()) === '', 60_000, 100);
        await server!.waitForReport(nodeId, (r) => Date.parse((r as Report).sentAt) >= pingAt && reportConverged(r, gen), 30_000);
      } catch (err) {
        throw new Error(`${String(err)}\n${await dump()}`);
      }
      const convergeMs = Date.now() - pingAt;
      figures.convergeMs.push(convergeMs);
      const converged = await containersById();
      const wedged = replacedWedged();
      figures.wedgedReplaced += wedged.size;
      for (const id of kept) {
        if (!wedged.has(id)) assert.deepEqual(converged.get(id), before.get(id), `round ${round}: ${id} was not recreated by this generation and keeps its container`);
      }
      assert.ok(
        convergeMs <= 2 * INTERVAL_S * 1000 + CONVERGE_SLACK_MS,
        `round ${round}: converged ${convergeMs} ms after the engine answered, more than 2 reconcile intervals (${2 * INTERVAL_S} s) + ${CONVERGE_SLACK_MS} ms\n${a.dump()}`,
      );

      // Events reconnected: a container stopped behind the agent's back is an event, not a periodic
      // find. The stop comes one interval (+1 s) after the engine is back: the first cycle that sees
      // it up must have had the stream reconnect by then, whatever backoff the outage built up.
      await sleep(Math.max(0, pingAt + INTERVAL_S * 1000 + 1000 - Date.now()));
      const victim = kept.filter((id) => !wedged.has(id))[0] ?? (kept[0] as string);
      const eventMark = a.lines.length;
      const stoppedAt = Date.now();
      figures.eventsTried += 1;
      await docker.getContainer((converged.get(victim) as string[])[0] as string).stop({ t: 1 });
      const isEvent = (l: LogLine): boolean => l.msg === 'runtime event' && l.runtime === 'docker' && l.workloadId === victim;
      const seen = await waitFor(`the ${victim} stop as a docker event`, () => a.lines.slice(eventMark).find(isEvent), INTERVAL_S * 1000, 20).catch(() => undefined);
      assert.ok(seen, `round ${round}: the agent saw no docker event for ${victim} within ${INTERVAL_S} s of its stop: the event stream did not reconnect\n${a.dump()}`);
      figures.eventsReconnected += 1;
      const eventMs = Date.now() - stoppedAt;
      await waitFor(`round ${round}: ${victim} running again`, async () => (await notConverged()) === '', 60_000, 100);
      figures.dockerRounds += 1;
      process.stdout.write(`engine-restarts: round ${round}: recreate ${[...recreated].join(',')}, stop ${stopAfter} ms after the take, down ${pingAt - stopAt} ms, converged ${convergeMs} ms after the ping, event ${eventMs} ms after the stop\n`);
    }
    process.stdout.write(`engine-restarts: docker: ${midApply}/${ROUNDS} stops landed before the generation's first reconcile finished; ${figures.wedgedReplaced} container(s) the restarted engine could not start were replaced\n`);
  });
});

interface Vm {
  id: string;
  type: 'vm';
  revision: string;
  desiredState: 'running';
  spec: Record<string, unknown>;
}

describe('libvirtd restarts while a VM is being defined (private libvirtd)', { skip: libvirtSkip, timeout: 420_000 }, () => {
  const nodeId = testNodeId('test-lvrst');
  const random = seededRandom(SEED + 1);
  const prefix = `pr${nodeId.slice(-6)}-`;
  let dir: string | undefined;
  let l: PrivateLibvirtd | undefined;
  let guest: TestGuest;
  let server: FleetServer | undefined;
  let agent: AgentProcess | undefined;
  let storageDir = '';
  let generation = 0;
  const desired = new Map<string, Vm>();

  const vm = (id: string): Vm => ({
    id,
    type: 'vm',
    revision: '1',
    desiredState: 'running',
    // No NIC: nothing to reach, and the private daemon's network namespace has no bridge.
    spec: { vcpus: 1, memoryMiB: 96, boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline }, disks: [{ name: 'root', sizeBytes: 16 * 1024 * 1024 }], shutdownTimeoutSeconds: 5 },
  });
  const publish = (): number => {
    generation += 1;
    server!.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads: [...desired.values()] });
    return generation;
  };
  const domains = async (state: '--all' | '--state-running'): Promise<string[]> =>
    (await l!.virsh('list', state, '--name')).split('\n').map((x) => x.trim()).filter((n) => n.startsWith(prefix)).sort();
  const want = (): string[] => [...desired.keys()].map((id) => `${prefix}${id}`).sort();
  /** Why libvirt does not match the desired state yet, or ''. */
  const notConverged = async (): Promise<string> => {
    const all = await domains('--all');
    const running = await domains('--state-running');
    const disks = (await readdir(join(storageDir, 'vms')).catch(() => [] as string[])).filter((n) => n.startsWith(prefix)).sort();
    if (JSON.stringify(all) !== JSON.stringify(want())) return `domains ${all.join(',')}, desired ${want().join(',')}`;
    if (JSON.stringify(running) !== JSON.stringify(want())) return `running ${running.join(',')}, desired ${want().join(',')}`;
    if (JSON.stringify(disks) !== JSON.stringify(want())) return `disk dirs ${disks.join(',')}, desired ${want().join(',')}`;
    return '';
  };
  const reportConverged = (r: JsonObject, gen: number): boolean => {
    const rep = r as Report;
    if (rep.observedGeneration !== gen || !String(rep.node.runtimes.libvirt ?? '').startsWith('up')) return false;
    const byId = new Map(rep.workloads.map((w) => [w.id, w]));
    return [...desired.keys()].every((id) => byId.get(id)?.phase === 'Running' && byId.get(id)?.error === null);
  };
  const unavailable = (r: JsonObject): boolean => {
    const rep = r as Report;
    if (!String(rep.node.runtimes.libvirt ?? '').startsWith('down')) return false;
    const byId = new Map(rep.workloads.map((w) => [w.id, w]));
    return [...desired.keys()].every((id) => byId.get(id)?.error?.code === 'RUNTIME_UNAVAILABLE');
  };

  before(async () => {
    dir = await mkdtemp('/tmp/lr-');
    // QEMU runs as libvirt-qemu: it must traverse to the VM files.
    await chmod(dir, 0o711);
    storageDir = join(dir, 'vmstore');
    guest = await buildTestGuest();
    l = await startPrivateLibvirtd(dir);
    server = await startFleetServer({ tls: null });
    const cfg = join(dir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        logLevel: 'debug',
        source: { url: server.sourceUrl, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 1, debounceMs: 50 },
        reconcile: { intervalSeconds: INTERVAL_S, concurrency: 2 },
        retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
        metrics: { listen: 'off' },
        // 1 vCPU each on a 2-CPU host: admission would refuse the third VM without overcommit.
        resources: { overcommit: { cpu: 4 } },
        docker: { enabled: false },
        libvirt: { uri: l.uri, namePrefix: prefix, domainType: 'qemu', storageDir, allowedPathPrefixes: [guest.dir], ipWaitSeconds: 3600 },
      }),
    );
    desired.set('vm0', vm('vm0'));
    publish();
    agent = AgentProcess.start(['run', '--config', cfg]);
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    // Every domain of the private daemon is ours; close() destroys them, then ends its processes.
    await l?.close().catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`${LIBVIRT_ROUNDS} rounds: libvirtd stopped while a new VM is defined, RUNTIME_UNAVAILABLE while down, running VMs untouched, converged within 2 intervals`, async () => {
    const a = agent!;
    const dump = async () =>
      `libvirt: ${await notConverged().catch((e: unknown) => String(e))}\n--- agent log ---\n${a.dump()}\n--- private libvirtd log (tail) ---\n${l!.log()}`;
    await waitFor('the first VM', async () => (await notConverged()) === '', 120_000, 250).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await dump()}`);
    });
    await server!.waitForReport(nodeId, (r) => reportConverged(r, generation), 30_000);
    const convergeMs: number[] = [];
    let midApply = 0;
    for (let round = 1; round <= LIBVIRT_ROUNDS; round++) {
      const kept = [...desired.keys()];
      const qemuBefore = new Map<string, number | undefined>();
      for (const id of kept) qemuBefore.set(id, await l!.qemuPid(`${prefix}${id}`));
      const added = `vm${round}`;
      desired.set(added, vm(added));
      const mark = a.lines.length;
      const gen = publish();
      await waitFor(`the agent to take generation ${gen}`, () => a.lines.slice(mark).some((x) => x.msg === 'new desired state' && x.generation === gen), 30_000, 20);
      const stopAfter = Math.floor(random() * 800);
      await sleep(stopAfter);
      if (!a.lines.slice(mark).some((x) => typeof x.msg === 'string' && x.msg.startsWith('reconciled:'))) midApply += 1;
      const stopAt = Date.now();
      await l!.stop();

      await server!.waitForReport(nodeId, (r) => Date.parse((r as Report).sentAt) > stopAt && unavailable(r), 30_000).catch(async (err: unknown) => {
        throw new Error(`round ${round}: no RUNTIME_UNAVAILABLE report while libvirtd was down: ${String(err)}\nlast report: ${JSON.stringify(server!.reports(nodeId).at(-1))}\n${await dump()}`);
      });
      await sleep(INTERVAL_S * 1000 * (1 + random()));
      const startAt = Date.now();
      await l!.start();
      const pingAt = Date.now();

      const downReports = server!.reports(nodeId).filter((r) => {
        const t = Date.parse((r as Report).sentAt);
        return t > stopAt && t < startAt;
      }) as Report[];
      for (const r of downReports) {
        const have = new Set(r.workloads.map((w) => w.id));
        for (const id of desired.keys()) assert.ok(have.has(id), `round ${round}: report seq ${r.seq} while down has no record of ${id}`);
      }
      const firstDown = downReports.findIndex(unavailable);
      for (const r of downReports.slice(firstDown)) {
        if (!unavailable(r)) assert.fail(`round ${round}: report seq ${r.seq} while down: ${JSON.stringify(r.node.runtimes)} ${JSON.stringify(r.workloads.map((w) => [w.id, w.error?.code, w.error?.message]))}\n${a.dump()}`);
      }

      try {
        await waitFor(`round ${round} to converge`, async () => (await notConverged()) === '', 60_000, 100);
        await server!.waitForReport(nodeId, (r) => Date.parse((r as Report).sentAt) >= pingAt && reportConverged(r, gen), 30_000);
      } catch (err) {
        throw new Error(`${String(err)}\n${await dump()}`);
      }
      const ms = Date.now() - pingAt;
      convergeMs.push(ms);
      // The VMs that ran before the stop run on in the same QEMU process: nothing was removed or recreated.
      for (const id of kept) assert.equal(await l!.qemuPid(`${prefix}${id}`), qemuBefore.get(id), `round ${round}: ${id} keeps its QEMU process through the libvirtd restart\n${a.dump()}`);
      assert.ok(ms <= 2 * INTERVAL_S * 1000 + CONVERGE_SLACK_MS, `round ${round}: converged ${ms} ms after libvirtd answered, more than 2 reconcile intervals (${2 * INTERVAL_S} s) + ${CONVERGE_SLACK_MS} ms\n${a.dump()}`);
      process.stdout.write(`engine-restarts: libvirt round ${round}: add ${added}, stop ${stopAfter} ms after the take, down ${pingAt - stopAt} ms, converged ${ms} ms after libvirtd answered\n`);
    }
    figures.libvirt = `rounds=${LIBVIRT_ROUNDS},midApply=${midApply},convergeP50=${secs(pct(convergeMs, 50))}s,convergeMax=${secs(Math.max(...convergeMs))}s`;
  });
});

describe('figures', () => {
  it('prints the figures line', () => {
    const interval = `${INTERVAL_S}s`;
    console.log(
      `FIGURES engine-restarts: dockerRounds=${figures.dockerRounds} convergeP50=${secs(pct(figures.convergeMs, 50))}s convergeMax=${secs(Math.max(...figures.convergeMs))}s (interval ${interval}) libvirt=${figures.libvirt} eventsReconnected=${figures.eventsReconnected}/${figures.eventsTried}`,
    );
  });
});
