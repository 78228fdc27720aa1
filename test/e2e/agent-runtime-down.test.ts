/**
 * A runtime that a desired workload needs and that is down is logged once at WARN with the reason,
 * and once at INFO when it comes back (built CLI; a private dockerd, never the shared one, is
 * stopped and started under the agent). Cycles run every second, so "once" is tested.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { AgentProcess, waitFor, type LogLine } from '../helpers/agent-process.js';
import { testNodeId } from '../helpers/engines.js';
import { privateDockerdSkipReason, startPrivateDockerd, type PrivateDockerd } from '../helpers/private-dockerd.js';

const skip = await privateDockerdSkipReason();

describe('runtime down and back (built CLI, private dockerd)', { skip, timeout: 240_000 }, () => {
  let dir: string | undefined;
  let d: PrivateDockerd | undefined;
  let agent: AgentProcess | undefined;
  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await d?.stop().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('WARN once with the reason while down, INFO once when back, WARN again on the next outage', async () => {
    dir = await mkdtemp('/tmp/prd-');
    d = await startPrivateDockerd(dir);
    await d.stop();
    const nodeId = testNodeId('test-rtdown');
    const desired = join(dir, 'desired.json');
    await writeFile(
      desired,
      JSON.stringify({
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId,
        generation: 1,
        workloads: [{ id: 'web', type: 'container', spec: { image: 'persys-test/busybox:1', pullPolicy: 'Never', network: { mode: 'none' } } }],
      }),
    );
    const cfg = join(dir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({ nodeId, stateDir: join(dir, 'state'), metrics: { listen: 'off' }, reconcile: { intervalSeconds: 1 }, docker: { socketPath: d.socketPath, namePrefix: `t-${nodeId}-` }, libvirt: { enabled: false } }),
    );
    agent = AgentProcess.start(['run', '--config', cfg, '--desired', desired]);
    const a = agent;
    const downLines = (): LogLine[] => a.lines.filter((l) => l.level === 40 && /^docker is down: /.test(l.msg));
    const upLines = (): LogLine[] => a.lines.filter((l) => l.level === 30 && l.msg === 'docker is up again');

    const first = await waitFor('the WARN', () => downLines()[0], 30_000);
    assert.equal(first.runtime, 'docker');
    assert.match(String(first.reason), new RegExp(`${d.socketPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}|ENOENT|connect`));
    assert.match(first.msg, /1 desired workload\(s\) need it$/);
    // Several more cycles: still one line.
    const cycles = a.lines.length;
    await new Promise((r) => setTimeout(r, 4000));
    assert.ok(a.lines.length >= cycles);
    assert.equal(downLines().length, 1, a.dump());

    await d.start();
    await waitFor('the INFO', () => upLines()[0], 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(upLines().length, 1, a.dump());

    await d.stop();
    await waitFor('the second WARN', () => downLines()[1], 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(downLines().length, 2, a.dump());
  });
});
