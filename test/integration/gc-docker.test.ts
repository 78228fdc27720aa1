/**
 * The garbage collector on the real dockerd, with the built agent (issue 12, "What it must show"):
 *   - an orphan container with our node label appears; it is removed after gc.orphanGraceSeconds and
 *     not before; `persys-agent gc --dry-run` lists it first and removes nothing;
 *   - an image used only by an old revision is removed once over the threshold (set low here), and
 *     the image of a desired workload never is;
 *   - after an agent restart the image references are still known (the store keeps them).
 * Test images are built locally FROM persys-test/busybox:1 with a tag unique to this run, and removed after.
 * Periodic passes are an hour apart here, so each pass is the one the test asks for.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import Docker from 'dockerode';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';

const exec = promisify(execFile);
const skip = await requireEngine('docker');
const GRACE_S = 8;

interface GcPass {
  dryRun: boolean;
  removed: { kind: string; id: string; name?: string; reason: string }[];
  failed: unknown[];
  notes: string[];
}

async function buildImage(tag: string, which: string): Promise<void> {
  const child = exec('docker', ['build', '-q', '-t', tag, '-'], { timeout: 120_000 });
  child.child.stdin?.end(`FROM persys-test/busybox:1\nLABEL dev.persys.test=gc which=${which}\n`);
  await child;
}

describe('garbage collection on the real dockerd (built agent)', { skip, timeout: 240_000 }, () => {
  const nodeId = testNodeId('test-gc');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  const run = nodeId.slice(-12).replace(/[^a-z0-9]/g, '');
  const OLD = `persys-test/gc-old:${run}`;
  const NEW = `persys-test/gc-new:${run}`;
  let dir: string;
  let desiredPath: string;
  let configPath: string;
  let agent: AgentProcess | undefined;

  const doc = (generation: number, image: string, revision: string) =>
    JSON.stringify({
      apiVersion: 'persys.dev/v1',
      kind: 'DesiredState',
      nodeId,
      generation,
      workloads: [{ id: 'web', type: 'container', revision, spec: { image, command: ['sleep', '3600'], stopTimeoutSeconds: 1, network: { mode: 'none' } } }],
    });
  const gc = async (...flags: string[]): Promise<GcPass> => {
    const r = await runCli(['gc', '--json', '--config', configPath, ...flags]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout) as GcPass;
  };
  const imageExists = (tag: string) =>
    docker
      .getImage(tag)
      .inspect()
      .then(() => true)
      .catch(() => false);
  const containerExists = (id: string) =>
    docker
      .getContainer(id)
      .inspect()
      .then(() => true)
      .catch(() => false);
  const web = async () => (await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`, 'dev.persys.workload-id=web'] } }))[0];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-gc-'));
    desiredPath = join(dir, 'desired.json');
    configPath = join(dir, 'config.json');
    await Promise.all([buildImage(OLD, 'old'), buildImage(NEW, 'new')]);
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        metrics: { listen: 'off' },
        reconcile: { intervalSeconds: 1 },
        docker: { namePrefix: `t-${nodeId}-` },
        libvirt: { enabled: false },
        // Image GC "over the threshold": 0 % means always over; 0 % low means everything unreferenced goes.
        gc: { intervalSeconds: 3600, orphanGraceSeconds: GRACE_S, imageMinAgeSeconds: 1, imageHighThresholdPercent: 0, imageLowThresholdPercent: 0 },
      }),
    );
    await writeFile(desiredPath, doc(1, OLD, '1'));
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    for (const t of [OLD, NEW]) await docker.getImage(t).remove({ force: true }).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('an orphan is listed by gc --dry-run, and removed only after the grace period', async () => {
    agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]);
    await waitFor('web running on the old image', async () => (await web())?.State === 'running', 60_000);

    const labels = { 'dev.persys.managed': 'true', 'dev.persys.node-id': nodeId };
    const orphan = await docker.createContainer({ name: `t-${nodeId}-ghost`, Image: 'persys-test/busybox:1', Cmd: ['sleep', '3600'], Labels: { ...labels, 'dev.persys.workload-id': 'ghost', 'dev.persys.type': 'container' }, HostConfig: { NetworkMode: 'none' } });
    const stray = await docker.createContainer({ name: `t-${nodeId}-stray`, Image: 'persys-test/busybox:1', Cmd: ['true'], Labels: labels, HostConfig: { NetworkMode: 'none' } });
    const createdAt = Date.now();

    // Within the grace period: neither a dry run nor a pass touches them (nor does the reconcile loop).
    const early = await gc('--dry-run');
    assert.deepEqual(early.removed.filter((r) => r.kind === 'orphan'), [], JSON.stringify(early));
    const pass = await gc();
    assert.deepEqual(pass.removed.filter((r) => r.kind === 'orphan'), []);
    assert.ok(await containerExists(orphan.id), 'the orphan is still there within the grace period');
    assert.ok(await containerExists(stray.id));

    await new Promise((r) => setTimeout(r, Math.max(0, createdAt + (GRACE_S + 1.5) * 1000 - Date.now())));
    const dry = await gc('--dry-run');
    assert.equal(dry.dryRun, true);
    const listed = dry.removed.filter((r) => r.kind === 'orphan').map((r) => r.id).sort();
    assert.deepEqual(listed, [orphan.id, stray.id].sort(), JSON.stringify(dry));
    assert.match(dry.removed.find((r) => r.id === orphan.id)?.reason ?? '', /no record and no desired workload claims ghost/);
    assert.ok(await containerExists(orphan.id), 'a dry run removes nothing');
    assert.ok(await containerExists(stray.id), 'a dry run removes nothing');
    // The human form says the same.
    const human = await runCli(['gc', '--dry-run', '--config', configPath]);
    assert.match(human.stdout, /would remove orphan/);

    const real = await gc();
    assert.deepEqual(real.removed.filter((r) => r.kind === 'orphan').map((r) => r.id).sort(), [orphan.id, stray.id].sort());
    assert.equal(await containerExists(orphan.id), false);
    assert.equal(await containerExists(stray.id), false);
    assert.ok(agent.lines.some((l) => l.level === 30 && l.msg.startsWith('gc removed orphan') && l.id === orphan.id && typeof l.reason === 'string'), 'logged at INFO with the reason');
    // The desired workload and its image are untouched, although image GC is active (threshold 0).
    assert.equal((await web())?.State, 'running');
    assert.ok(await imageExists(OLD), 'the image of a desired workload is never removed');
    const status = await runCli(['status', '--json', '--config', configPath]);
    const report = JSON.parse(status.stdout) as { gc?: { removed: { id: string }[] } };
    assert.ok(report.gc?.removed.some((r) => r.id === orphan.id), 'listed in the status report');
  });

  it('an image only an old revision used is removed over the threshold, also after a restart; the desired one stays', async () => {
    await writeFile(desiredPath, doc(2, NEW, '2'));
    await waitFor('web on the new image', async () => {
      const c = await web();
      return c?.State === 'running' && c.Image === NEW;
    }, 60_000);
    // A restart: the new agent never saw generation 1; only the store knows OLD was ours.
    await agent?.stop('SIGTERM');
    const state = JSON.parse(await readFile(join(dir, 'state', 'state.json'), 'utf8')) as { imageRefs?: Record<string, { unreferencedSince?: string }> };
    assert.ok(state.imageRefs?.[OLD]?.unreferencedSince, `state.json keeps the old reference: ${JSON.stringify(state.imageRefs)}`);
    assert.ok(state.imageRefs?.[NEW] && state.imageRefs[NEW].unreferencedSince === undefined);
    agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]);
    await waitFor('the agent back', async () => (await runCli(['status', '--json', '--config', configPath])).code === 0, 30_000, 500);
    await new Promise((r) => setTimeout(r, 1200)); // imageMinAgeSeconds 1

    const dry = await gc('--dry-run');
    const debug = async () => `${JSON.stringify(dry)}\nstate: ${await readFile(join(dir, 'state', 'state.json'), 'utf8')}\nimages: ${JSON.stringify((await docker.listImages()).filter((i) => (i.RepoTags ?? []).some((t) => t.includes(run))))}`;
    assert.deepEqual(dry.removed.filter((r) => r.kind === 'image').map((r) => r.id), [OLD], await debug());
    assert.ok(await imageExists(OLD), 'a dry run removes nothing');
    const real = await gc();
    assert.deepEqual(real.removed.filter((r) => r.kind === 'image').map((r) => r.id), [OLD]);
    assert.equal(await imageExists(OLD), false, 'the old revision\'s image is gone');
    assert.ok(await imageExists(NEW), 'the desired image stays');
    assert.ok(await imageExists('persys-test/busybox:1'), 'an image the agent never used stays');
    assert.equal((await web())?.State, 'running');
  });
});
