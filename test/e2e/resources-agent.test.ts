/**
 * Admission and node conditions with the built agent against the real dockerd.
 *  - resources.reserved.memoryBytes leaves 100 MiB allocatable: of two 64 MiB containers the first
 *    runs, the second gets INSUFFICIENT_RESOURCES with the numbers in the report, `plan` shows the
 *    same denial, nothing of it is created, it is not retried in a loop; once the host has room
 *    (the first is dropped from the document) it is created.
 *  - DiskPressure on a small tmpfs state dir: the condition is reported (status and /readyz), a new
 *    workload is not admitted and says why; when space is freed and the transition period passed,
 *    the condition clears and the workload is created. The DiskPressure hook (GC's trigger) fires.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';

import Docker from 'dockerode';
import * as v from 'valibot';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, engineAvailable, requireEngine, testNodeId } from '../helpers/engines.js';
import { freePort, promtoolCheckMetrics } from '../helpers/prometheus.js';
import { readCpuMemory } from '../../src/resources/capacity.js';
import { ResourceMonitor } from '../../src/resources/monitor.js';
import { statusReport } from '../../src/spec/status-report.js';

const run = promisify(execFile);
const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';
const MIB = 1024 * 1024;

interface ReportWorkload {
  id: string;
  phase: string;
  message: string;
  error: { code: string; message: string; transient: boolean } | null;
  retry: { attempts: number; gaveUp: boolean };
}
interface Report {
  seq: number;
  observedGeneration: number | null;
  node: {
    capacity?: Record<string, number>;
    allocatable?: Record<string, number>;
    committed?: Record<string, number>;
    usage?: Record<string, number>;
    conditions?: { type: string; status: boolean; reason: string }[];
  };
  workloads: ReportWorkload[];
}

const container = (id: string, memoryBytes?: number) => ({
  id,
  type: 'container',
  revision: '1',
  spec: { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, ...(memoryBytes !== undefined ? { resources: { memoryBytes } } : {}) },
});

async function readReport(stateDir: string): Promise<Report | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as Report;
  } catch {
    return undefined;
  }
}

/** Whether this process may mount a tmpfs (root in the testbed). */
async function canMount(dir: string): Promise<boolean> {
  try {
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', dir]);
    return true;
  } catch {
    return false;
  }
}

describe('admission and node conditions (built agent, real dockerd)', { skip, timeout: 240_000 }, () => {
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  const agents: AgentProcess[] = [];
  const nodes: string[] = [];
  const mounts: string[] = [];

  const ours = async (nodeId: string) => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return list.map((c) => c.Labels['dev.persys.workload-id']).sort();
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-resources-'));
  });
  after(async () => {
    for (const a of agents) await a.stop('SIGTERM').catch(() => undefined);
    for (const n of nodes) await cleanupDockerByLabel(n).catch(() => undefined);
    for (const m of mounts) await run('umount', ['-l', m]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('reserved memory leaves room for one of two 64 MiB containers: the second is denied with the numbers, nothing of it is created', async () => {
    const nodeId = testNodeId('test-res');
    nodes.push(nodeId);
    const stateDir = join(dir, 'mem-state');
    const desired = join(dir, 'mem-desired.json');
    const cfg = join(dir, 'mem-config.json');
    // The agent reads capacity the same way: reserve all but 100 MiB.
    const capacity = (await readCpuMemory()).memoryBytes;
    const port = await freePort();
    await writeFile(
      cfg,
      JSON.stringify({
        nodeId,
        stateDir,
        reconcile: { intervalSeconds: 1 },
        status: { heartbeatSeconds: 1, debounceMs: 50 },
        metrics: { listen: `127.0.0.1:${port}` },
        docker: { namePrefix: `t-${nodeId}-` },
        resources: { reserved: { memoryBytes: capacity - 100 * MIB } },
      }),
    );
    const doc = (generation: number, workloads: unknown[]) => JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads });
    await writeFile(desired, doc(1, [container('a', 64 * MIB), container('b', 64 * MIB)]));
    const denied = 'needs 64 MiB memory; 36 MiB allocatable left (100 MiB allocatable, 64 MiB committed to 1 workload)';
    const planSteps = async () => {
      const plan = await runCli(['plan', '--config', cfg, '--desired', desired, '--json']);
      assert.equal(plan.code, 0, plan.stderr);
      return (JSON.parse(plan.stdout) as { steps: { workloadId: string; kind: string; reason: string; code?: string; violations?: string[] }[] }).steps;
    };
    // Before the agent runs, `plan` shows what it will do: a created, b denied with the numbers.
    const first = await planSteps();
    assert.equal(first.find((s) => s.workloadId === 'a')?.kind, 'create');
    const planned = first.find((s) => s.workloadId === 'b');
    assert.equal(planned?.kind, 'deny');
    assert.equal(planned?.code, 'INSUFFICIENT_RESOURCES');
    assert.deepEqual(planned?.violations, [denied]);

    const agent = AgentProcess.start(['run', '--config', cfg, '--desired', desired]);
    agents.push(agent);

    const r = await waitFor(
      'a Running, b denied',
      async () => {
        const rep = await readReport(stateDir);
        const a = rep?.workloads.find((w) => w.id === 'a');
        const b = rep?.workloads.find((w) => w.id === 'b');
        return a?.phase === 'Running' && b?.error?.code === 'INSUFFICIENT_RESOURCES' && rep?.node.committed?.memoryBytes === 64 * MIB ? rep : undefined;
      },
      90_000,
    ).catch((err: unknown) => assert.fail(`${String(err)}\n${agent.dump()}`));
    const b = r.workloads.find((w) => w.id === 'b')!;
    assert.ok(v.safeParse(statusReport, r).success, 'the report with node.committed and node.conditions matches its schema');
    assert.equal(b.error?.message, denied);
    assert.equal(b.error?.transient, false, 'terminal: not retried with backoff');
    assert.equal(b.phase, 'Failed');
    assert.equal(b.retry.gaveUp, true);
    assert.equal(r.node.capacity?.memoryBytes, capacity);
    assert.equal(r.node.allocatable?.memoryBytes, 100 * MIB);
    assert.equal(r.node.committed?.memoryBytes, 64 * MIB);
    assert.ok((r.node.usage?.memoryBytes ?? 0) > 0);
    assert.deepEqual(r.node.conditions?.map((c) => [c.type, c.status]), [['MemoryPressure', false], ['DiskPressure', false], ['PIDPressure', false]]);
    assert.deepEqual(await ours(nodeId), ['a'], 'nothing of b was created');

    // `plan` shows the same decision, from the same gate: recorded now, so its reason on a noop.
    const again = await planSteps();
    assert.equal(again.find((s) => s.workloadId === 'b')?.kind, 'noop');
    assert.equal(again.find((s) => s.workloadId === 'b')?.reason, `INSUFFICIENT_RESOURCES: ${denied}`);

    // Metrics: the four figures and the conditions, clean under promtool.
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, new RegExp(`^persys_node_allocatable_memory_bytes ${100 * MIB}$`, 'm'));
    assert.match(text, new RegExp(`^persys_node_committed_memory_bytes ${64 * MIB}$`, 'm'));
    assert.match(text, new RegExp(`^persys_node_capacity_memory_bytes ${capacity}$`, 'm'));
    assert.match(text, /^persys_node_condition\{condition="DiskPressure"\} 0$/m);
    if ((await engineAvailable('prometheus')).ok) {
      const lint = await promtoolCheckMetrics(text);
      assert.equal(lint.code, 0, lint.output);
      assert.doesNotMatch(lint.output, /persys_node_/, lint.output);
    }

    // `persys-agent status` says what is committed of what is allocatable.
    const status = await runCli(['status', '--stateDir', stateDir]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^committed: .*64 MiB of 100 MiB memory allocatable$/m);

    // A few passes later: still one attempt, still nothing of b (no retry loop).
    await new Promise((res) => setTimeout(res, 4000));
    const later = await readReport(stateDir);
    assert.equal(later?.workloads.find((w) => w.id === 'b')?.retry.attempts, 1);
    assert.deepEqual(await ours(nodeId), ['a']);

    // The host has room again (a is dropped): b is admitted and created, without a new revision of b.
    await writeFile(desired, doc(2, [container('b', 64 * MIB)]));
    await waitFor(
      'b Running after a left',
      async () => {
        const rep = await readReport(stateDir);
        return rep?.workloads.find((w) => w.id === 'b')?.phase === 'Running' && rep.workloads.every((w) => w.id !== 'a');
      },
      90_000,
    ).catch((err: unknown) => assert.fail(`${String(err)}\n${agent.dump()}`));
    assert.deepEqual(await ours(nodeId), ['b']);
    await agent.stop('SIGTERM');
  });

  it('DiskPressure on a small tmpfs state dir: reported, new workloads wait with the reason, admitted once it clears', async (t) => {
    const stateDir = join(dir, 'tmpfs-state');
    await mkdir(stateDir, { recursive: true });
    if (!(await canMount(stateDir))) return t.skip('cannot mount a tmpfs here (needs root)');
    mounts.push(stateDir);
    const nodeId = testNodeId('test-resdisk');
    nodes.push(nodeId);
    // 4 MiB file system, 3.8 MiB filled: under 10% available (kubelet nodefs.available).
    const fill = join(stateDir, 'fill');
    await writeFile(fill, Buffer.alloc(3.8 * MIB));

    // The hook GC runs on: fires when DiskPressure turns on (in this process, on the same tmpfs).
    const fired: string[] = [];
    const monitor = new ResourceMonitor({
      settings: { reserved: { cpus: 0, memoryBytes: 0, diskBytes: 0 }, overcommit: { cpu: 1, memory: 1 }, pressure: { memoryAvailableBytes: 0, nodefsAvailablePercent: 10, nodefsInodesFreePercent: 5, imagefsAvailablePercent: 15, pidAvailablePercent: 0, transitionPeriodSeconds: 1 }, sampleIntervalSeconds: 1 },
      requireRequests: false,
      stateDir,
    });
    monitor.onDiskPressure((reason) => fired.push(reason));
    assert.deepEqual(await monitor.sample(), ['DiskPressure']);
    assert.equal(fired.length, 1);
    assert.match(fired[0] ?? '', new RegExp(`^nodefs\\.available [\\d.]+% < 10% \\(.* free on ${stateDir.replaceAll('/', '\\/')}\\)$`));

    const desired = join(dir, 'disk-desired.json');
    const cfg = join(dir, 'disk-config.json');
    const port = await freePort();
    await writeFile(
      cfg,
      JSON.stringify({
        nodeId,
        stateDir,
        reconcile: { intervalSeconds: 1 },
        status: { heartbeatSeconds: 1, debounceMs: 50 },
        metrics: { listen: `127.0.0.1:${port}` },
        docker: { namePrefix: `t-${nodeId}-` },
        resources: { sampleIntervalSeconds: 1, pressure: { transitionPeriodSeconds: 2 } },
      }),
    );
    await writeFile(desired, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 1, workloads: [container('p', 16 * MIB)] }));
    const agent = AgentProcess.start(['run', '--config', cfg, '--desired', desired]);
    agents.push(agent);

    const r = await waitFor(
      'DiskPressure reported and p denied',
      async () => {
        const rep = await readReport(stateDir);
        const p = rep?.workloads.find((w) => w.id === 'p');
        return rep?.node.conditions?.find((c) => c.type === 'DiskPressure')?.status === true && p?.error?.code === 'INSUFFICIENT_RESOURCES' ? rep : undefined;
      },
      60_000,
    ).catch((err: unknown) => assert.fail(`${String(err)}\n${agent.dump()}`));
    const cond = r.node.conditions?.find((c) => c.type === 'DiskPressure');
    assert.match(cond?.reason ?? '', /^nodefs\.available [\d.]+% < 10%/);
    const p = r.workloads.find((w) => w.id === 'p')!;
    assert.match(p.error?.message ?? '', /^the node has DiskPressure \(nodefs\.available [\d.]+% < 10% .*\); no new workloads are admitted until it clears$/);
    assert.deepEqual(await ours(nodeId), [], 'nothing was created under pressure');
    const readyz = (await (await fetch(`http://127.0.0.1:${port}/readyz`)).json()) as { checks?: Record<string, { ok: boolean; reason: string }> } & Record<string, unknown>;
    const checks = (readyz.checks ?? readyz) as Record<string, { ok: boolean; reason: string }>;
    assert.equal(checks.resources?.ok, false, JSON.stringify(readyz));
    assert.match(checks.resources?.reason ?? '', /^DiskPressure: nodefs\.available/);
    assert.match(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), /^persys_node_condition\{condition="DiskPressure"\} 1$/m);
    assert.ok(agent.lines.some((l) => l.msg.startsWith('node condition DiskPressure is on')), 'logged at WARN when it turned on');
    // GC runs at once under DiskPressure (src/gc): its pass is logged with that trigger.
    await waitFor('the GC pass DiskPressure asked for', () => agent.lines.find((l) => l.msg.startsWith('gc pass') && /^DiskPressure: /.test(String(l.trigger))), 15_000);

    // Space freed: after the transition period the condition clears and p is created.
    await rm(fill);
    await waitFor(
      'DiskPressure cleared and p Running',
      async () => {
        const rep = await readReport(stateDir);
        return rep?.node.conditions?.find((c) => c.type === 'DiskPressure')?.status === false && rep.workloads.find((w) => w.id === 'p')?.phase === 'Running';
      },
      60_000,
    ).catch((err: unknown) => assert.fail(`${String(err)}\n${agent.dump()}`));
    assert.deepEqual(await ours(nodeId), ['p']);
    await agent.stop('SIGTERM');
  });
});
