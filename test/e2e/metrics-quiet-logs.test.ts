/**
 * Quiet logs, through the built CLI at the default INFO level: a healthy agent with nothing to do
 * logs nothing for many reconcile, poll, stats and heartbeat intervals; a change logs one INFO line
 * summarising the reconcile (next to the pull's "new desired state"); a failure logs at WARN (transient)
 * or ERROR (terminal) with the workload, the error code and the attempt.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AgentProcess, waitFor, type LogLine } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { freePort, httpGet } from '../helpers/prometheus.js';

const skip = await requireEngine('docker');
const RECONCILE_SECONDS = 1;
const IDLE_INTERVALS = 8;

describe('quiet logs', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-quiet');
  let dir: string;
  let agent: AgentProcess;
  let port: number;
  let generation = 0;

  const container = (id: string, spec: Record<string, unknown> = {}) => ({
    id,
    type: 'container',
    spec: { image: 'persys-test/busybox:1', stopTimeoutSeconds: 1, network: { mode: 'none' }, ...spec },
  });
  /** Atomic (temp file + rename): the agent watches the file and must never see half of it. */
  const publish = async (workloads: unknown[]) => {
    const tmp = join(dir, '.desired-state.json.tmp');
    await writeFile(tmp, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: ++generation, workloads }));
    await rename(tmp, join(dir, 'desired-state.json'));
  };
  const metric = async (re: RegExp) => Number(re.exec((await httpGet(`http://127.0.0.1:${port}/metrics`)).body)?.[1] ?? 'NaN');
  const reconcileRuns = () => metric(/^persys_reconcile_runs_total (\d+)/m);
  const running = () => metric(/^persys_workloads\{type="container",phase="Running"\} (\d+)/m);
  const linesSince = (mark: number, minLevel = 30): LogLine[] => agent.lines.slice(mark).filter((l) => l.level >= minLevel);
  const show = (lines: LogLine[]) => lines.map((l) => JSON.stringify(l)).join('\n');

  /** Lets `n` reconcile cycles pass (counted by the agent's own metric, so the test proves they ran). */
  const idleFor = async (n: number) => {
    const before = await reconcileRuns();
    await waitFor(`${n} reconcile cycles`, async () => (await reconcileRuns()) >= before + n, (n + 10) * RECONCILE_SECONDS * 1000 + 10_000, 250);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-quiet-'));
    port = await freePort();
    await publish([container('a'), container('b')]);
    agent = AgentProcess.start([
      'run',
      '--desired',
      join(dir, 'desired-state.json'),
      `--nodeId=${nodeId}`,
      `--stateDir=${join(dir, 'state')}`,
      `--docker.namePrefix=t-${nodeId}-`,
      '--libvirt.enabled=false',
      `--metrics.listen=127.0.0.1:${port}`,
      '--logLevel=info',
      `--reconcile.intervalSeconds=${RECONCILE_SECONDS}`,
      '--source.pollIntervalSeconds=1',
      '--metrics.statsIntervalSeconds=1',
      '--status.heartbeatSeconds=1',
      '--retry.initialDelaySeconds=1',
      '--retry.maxDelaySeconds=2',
    ]);
    await waitFor('both Running', async () => (await running()) === 2, 60_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${agent.dump()}`);
    });
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('logs nothing at INFO or above while healthy and idle for several reconcile intervals', async () => {
    // Startup: "persys-agent starting", "new desired state" and one "reconciled:" line, nothing more.
    const startup = linesSince(0);
    assert.deepEqual(
      startup.map((l) => l.msg.replace(/:.*/, ':')),
      ['persys-agent starting', 'new desired state', 'reconciled:'],
      show(startup),
    );
    await idleFor(1); // a cycle already in flight when Running was seen may still log
    const mark = agent.lines.length;
    const pullsBefore = await metric(/^persys_desired_state_pulls_total\{result="304"\} (\d+)/m);
    await idleFor(IDLE_INTERVALS);
    const pullsAfter = await metric(/^persys_desired_state_pulls_total\{result="304"\} (\d+)/m);
    assert.ok(pullsAfter > pullsBefore, 'polls happened too');
    assert.ok((await metric(/^persys_status_reports_total\{result="ok"\} (\d+)/m)) > 2, 'heartbeats were sent');
    assert.deepEqual(linesSince(mark), [], `no INFO/WARN/ERROR lines while idle:\n${show(linesSince(mark))}`);
    assert.ok(agent.lines.length === mark, 'and nothing at DEBUG either, since the level is INFO');
  });

  it('logs one INFO line summarising a reconcile that changed something', async () => {
    const mark = agent.lines.length;
    await publish([container('a', { env: { MODE: 'two' } }), container('b')]);
    await waitFor('the reconcile line', () => agent.lines.slice(mark).some((l) => l.msg.startsWith('reconciled:')), 30_000);
    await idleFor(3);
    const info = linesSince(mark);
    const reconciled = info.filter((l) => l.msg.startsWith('reconciled:'));
    assert.equal(reconciled.length, 1, show(info));
    assert.equal(reconciled[0]?.level, 30);
    assert.match(reconciled[0]?.msg ?? '', /^reconciled: 1 step\(s\) applied, 0 failed$/);
    assert.deepEqual(reconciled[0]?.steps, ['recreate a: env MODE added']);
    // The only other line is the pull that brought the change.
    assert.deepEqual(info.filter((l) => !l.msg.startsWith('reconciled:')).map((l) => l.msg), ['new desired state'], show(info));
    assert.ok(!agent.dump().includes('"two"'), 'env values never reach the log');
  });

  it('logs a failure at WARN/ERROR with the workload, the code and the attempt', async () => {
    const mark = agent.lines.length;
    await publish([container('a', { env: { MODE: 'two' } }), container('b'), container('broken', { image: 'persys-test/missing:0', pullPolicy: 'Never' })]);
    const warn = await waitFor('a WARN/ERROR line for broken', () => agent.lines.slice(mark).find((l) => l.level >= 40 && l.workloadId === 'broken'), 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${show(agent.lines.slice(mark))}`);
    });
    assert.equal(warn.code, 'IMAGE_NOT_FOUND', JSON.stringify(warn));
    assert.equal(warn.attempt, 1, JSON.stringify(warn));
    assert.equal(typeof warn.err, 'string');
    assert.ok((await metric(/^persys_errors_total\{code="IMAGE_NOT_FOUND"\} (\d+)/m)) >= 1, 'and it is counted by code');
    // Nothing else above INFO: the failure is said once per attempt, with its details.
    assert.ok(linesSince(mark, 40).every((l) => l.workloadId === 'broken'), show(linesSince(mark, 40)));
  });
});
