/**
 * Full disks (issue 16, fault family 5), with the built CLI, real engines and a loopback fleet server.
 *
 * (a) The state dir on a tiny tmpfs of its own, filled while the agent runs and new generations
 *     arrive (0 bytes left, then less than a state file: a write that fails halfway, then full with
 *     an engine event that changes a record, then full across a SIGKILL and a restart with the
 *     source down, then a start on a full dir). All along, a sampler reads every state file (none is
 *     ever unreadable or truncated) and the applied generation (desired.json, the reports, the
 *     container's env) never goes backwards. Each time: the error is in /readyz and in the report
 *     with code NO_SPACE; once the space is freed the pending generation is stored and applied and
 *     /readyz is ready again, within a bounded time (printed).
 *     (Moved here from kill9.test.ts: "rollback below the running generation" on a full state dir.)
 * (b) Docker's data root full, on a private dockerd (own netns, own data root on a small tmpfs): a
 *     generation whose image pull cannot fit (the loopback registry's image is larger than what is
 *     left, while what is left stays above the DiskPressure threshold, so the engine's own ENOSPC is
 *     what the agent meets). The workload's error is NO_SPACE with dockerd's message, the running
 *     container it would replace and an unrelated running one are not removed, the store stays
 *     readable, retries back off; once the space is freed the workloads converge.
 *
 * Prints one line: FIGURES full-disks: stateDirFills=N unreadable=0 rollbacks=0 recoverSeconds=... dockerRootRecoverSeconds=...
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import Docker from 'dockerode';

import { AgentProcess, waitFor } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { startOciRegistry, type OciRegistry } from '../helpers/oci-registry.js';
import { privateDockerdSkipReason, startPrivateDockerd, type PrivateDockerd } from '../helpers/private-dockerd.js';
import { freePort, httpGet, OwnedProcess } from '../helpers/prometheus.js';
import { backoffCeilingMs } from '../../src/util/backoff.js';

const exec = promisify(execFile);
const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';

/** What the figures line reports; filled by the parts as they run. */
const figures = { stateDirFills: 0, unreadable: 0, rollbacks: 0, recoverSeconds: [] as number[], dockerRootRecoverSeconds: Number.NaN };

after(() => {
  const max = (xs: number[]) => (xs.length === 0 ? 'n/a' : Math.max(...xs).toFixed(1));
  console.log(
    `FIGURES full-disks: stateDirFills=${figures.stateDirFills} unreadable=${figures.unreadable} rollbacks=${figures.rollbacks} ` +
      `recoverSeconds=${max(figures.recoverSeconds)} dockerRootRecoverSeconds=${Number.isFinite(figures.dockerRootRecoverSeconds) ? figures.dockerRootRecoverSeconds.toFixed(1) : 'n/a'}`,
  );
});

interface Report extends JsonObject {
  seq: number;
  observedGeneration: number | null;
  sync: { lastError?: { code: string; message: string } | null };
  workloads: { id: string; phase: string; runtimeId?: string; error?: { code: string; message: string; transient?: boolean } | null; retry?: { attempts: number; nextRetryAt?: string | null }; failures?: { at: string; code: string; message: string }[] }[];
}
interface Readyz {
  status: string;
  checks: Record<string, { ok: boolean; reason: string }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readyz(port: number): Promise<{ status: number; body: Readyz }> {
  const res = await httpGet(`http://127.0.0.1:${port}/readyz`, 5_000);
  return { status: res.status, body: JSON.parse(res.body) as Readyz };
}

/**
 * Reads every file of the state dir the agent owns (dot-named temp files excepted: they are partial
 * by design and never read) and says what is wrong with any: unparsable JSON, an empty or foreign
 * node-id, a file moved aside. Returns the generation desired.json holds (null before the first).
 */
async function inspectStateDir(stateDir: string, nodeId: string): Promise<{ problems: string[]; generation: number | null }> {
  const problems: string[] = [];
  let generation: number | null = null;
  for (const name of await readdir(stateDir)) {
    // Temp files are partial by design and never read; the socket is not a file to read.
    if (name.startsWith('.') || name.startsWith('filler') || name === 'agent.sock') continue;
    if (name.includes('.corrupt-')) {
      problems.push(`${name}: moved aside`);
      continue;
    }
    let text: string;
    try {
      text = await readFile(join(stateDir, name), 'utf8');
    } catch (err) {
      // agent.lock goes away at a clean exit, between readdir and the read: not damage.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && name === 'agent.lock') continue;
      problems.push(`${name}: ${String(err)}`);
      continue;
    }
    if (name === 'node-id') {
      if (text.trim() !== nodeId) problems.push(`node-id holds ${JSON.stringify(text)}`);
      continue;
    }
    try {
      const parsed = JSON.parse(text) as { desired?: { document?: { generation?: number } } };
      if (name === 'desired.json') {
        const g = parsed.desired?.document?.generation;
        if (typeof g !== 'number') problems.push('desired.json: no generation');
        else generation = g;
      }
    } catch (err) {
      problems.push(`${name} (${text.length} bytes): ${String(err)}`);
    }
  }
  return { problems, generation };
}

describe('the state dir on a tiny tmpfs, filled while the agent runs and generations arrive', { skip, timeout: 200_000 }, () => {
  const nodeId = testNodeId('test-fullstate');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let stateDir: string;
  let mounted = false;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let configPath: string;
  let port: number;
  let generation = 0;
  let fillers = 0;
  // The sampler: every state file read again and again while the test runs.
  let sampling = true;
  let sampler: Promise<void> | undefined;
  let reads = 0;
  const problems: string[] = [];
  let lastDiskGeneration = 0;

  // A value that grows by 16 KiB with every generation: each new desired.json (and the state.json
  // holding its spec) is bigger than the space a step leaves, and bigger than the old file plus
  // that space, so a write that went in place (truncate, then write) would fail halfway and leave a
  // truncated file, where a write through a temp file leaves the old one whole.
  const publish = () => {
    generation += 1;
    const PAD = 'p'.repeat((12 + 16 * generation) * 1024);
    server.setDocument(nodeId, {
      apiVersion: 'persys.dev/v1',
      kind: 'DesiredState',
      nodeId,
      generation,
      workloads: [
        { id: 'web', type: 'container', spec: { image: IMAGE, command: ['sleep', '3600'], env: { G: String(generation), PAD }, stopTimeoutSeconds: 1, network: { mode: 'none' } } },
        { id: 'side', type: 'container', spec: { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, network: { mode: 'none' } } },
      ],
    });
    return generation;
  };
  const container = async (id: string) => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`, `dev.persys.workload-id=${id}`] } });
    assert.ok(list.length <= 1, `${list.length} containers for ${id}`);
    if (list.length === 0) return undefined;
    const info = await docker.getContainer(list[0]!.Id).inspect();
    const g = (info.Config.Env ?? []).find((e) => e.startsWith('G='));
    return { id: info.Id, running: info.State.Running, gen: g === undefined ? null : Number(g.slice(2)) };
  };
  /** Fills the tmpfs up to `leave` bytes free (a new filler file each time, so free() removes them all). */
  const fill = async (leave: number) => {
    // Topped up a few times: a write in flight when the space is measured (its temp file beside the
    // old file) frees the old file's pages once it lands, and the space would be back.
    for (let i = 0; i < 5; i++) {
      const s = await statfs(stateDir);
      const free = s.bavail * s.bsize;
      const file = join(stateDir, `filler-${fillers++}`);
      if (leave === 0) await exec('sh', ['-c', `dd if=/dev/zero of=${file} bs=4k 2>/dev/null; true`]);
      else if (free > leave) await writeFile(file, Buffer.alloc(free - leave));
      await sleep(200);
    }
    figures.stateDirFills += 1;
  };
  const free = async () => {
    for (const f of await readdir(stateDir)) if (f.startsWith('filler-')) await rm(join(stateDir, f), { force: true });
  };
  const dump = () => `\n--- agent log ---\n${agent?.dump() ?? ''}`;
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 45_000) =>
    server.waitForReport(nodeId, (r) => pred(r as Report), timeoutMs).then((r) => r as Report, (err: unknown) => {
      throw new Error(`${what}: ${String(err)}${dump()}`);
    });
  const lastError = (r: Report) => r.sync?.lastError ?? null;
  const start = () => (agent = AgentProcess.start(['run', '--config', configPath]));

  /** The error of a generation that cannot be stored, in the report and in /readyz. */
  const assertStoreErrorShown = async (g: number) => {
    const r = await waitReport(`the store error of generation ${g}`, (r) => (lastError(r)?.message ?? '').includes(`generation ${g} not applied: it could not be stored`));
    assert.equal(lastError(r)?.code, 'NO_SPACE', `a clear code: ${JSON.stringify(lastError(r))}`);
    assert.match(lastError(r)?.message ?? '', /no space left on device/i);
    assert.equal(r.observedGeneration, g - 1, 'the report keeps the stored generation as observed');
    const rz = await waitFor('/readyz to say the store cannot be written', async () => {
      const x = await readyz(port);
      return x.status === 503 && x.body.checks.store?.ok === false ? x.body : undefined;
    }, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });
    assert.match(rz.checks.store?.reason ?? '', /desired\.json/, `/readyz names the file: ${JSON.stringify(rz.checks.store)}`);
    assert.match(rz.checks.store?.reason ?? '', /no space left on device/i, `/readyz says why: ${JSON.stringify(rz.checks.store)}`);
    return rz;
  };

  /** Space back: generation g is stored and applied, the report is clean, /readyz ready. Returns seconds. */
  const assertRecovers = async (g: number) => {
    const t0 = Date.now();
    await waitFor(`generation ${g} applied after the space came back`, async () => (await container('web'))?.gen === g && (await container('side'))?.running === true, 90_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });
    await waitReport(`generation ${g} observed with no error`, (r) => r.observedGeneration === g && lastError(r) === null, 60_000);
    await waitFor('/readyz ready again', async () => (await readyz(port)).status === 200, 60_000).catch(async (err: unknown) => {
      throw new Error(`${String(err)}: ${JSON.stringify((await readyz(port).catch(() => undefined))?.body)}${dump()}`);
    });
    const s = (Date.now() - t0) / 1000;
    figures.recoverSeconds.push(s);
    const { generation: onDisk } = await inspectStateDir(stateDir, nodeId);
    assert.equal(onDisk, g, 'desired.json holds the generation in force');
    return s;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-fullstate-'));
    stateDir = join(dir, 'state');
    await mkdir(stateDir, { recursive: true });
    // A tiny tmpfs of our own for the state dir (root only; CI runs as root).
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', stateDir]);
    mounted = true;
    server = await startFleetServer({ tls: null });
    port = await freePort();
    configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir,
        logLevel: 'info',
        source: { url: server.sourceUrl, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 1, debounceMs: 50 },
        reconcile: { intervalSeconds: 1 },
        metrics: { listen: `127.0.0.1:${port}` },
        docker: { namePrefix: `t-${nodeId}-` },
        libvirt: { enabled: false },
        // DiskPressure (nodefs) turns on while the tmpfs is full and holds recreates back; a short
        // transition period lets it clear soon after the space is freed.
        resources: { sampleIntervalSeconds: 1, pressure: { transitionPeriodSeconds: 2 } },
      }),
    );
    sampler = (async () => {
      while (sampling) {
        try {
          const r = await inspectStateDir(stateDir, nodeId);
          reads += 1;
          for (const p of r.problems) if (!problems.includes(p)) problems.push(p);
          if (r.generation !== null) {
            if (r.generation < lastDiskGeneration) {
              figures.rollbacks += 1;
              problems.push(`desired.json went from generation ${lastDiskGeneration} to ${r.generation}`);
            }
            lastDiskGeneration = r.generation;
          }
        } catch (err) {
          problems.push(`sampler: ${String(err)}`);
        }
        await sleep(100);
      }
    })();
  });

  after(async () => {
    sampling = false;
    await sampler;
    figures.unreadable = problems.length;
    await agent?.stop('SIGKILL').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (mounted) await exec('umount', ['-l', stateDir]).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('never leaves a state file unreadable, never rolls back, says NO_SPACE in /readyz and the report, and recovers once space is freed', async () => {
    publish();
    start();
    await waitFor('generation 1 running', async () => (await container('web'))?.gen === 1 && (await container('side'))?.running === true, 90_000).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });
    await waitFor('/readyz ready', async () => (await readyz(port)).status === 200, 60_000);

    // 1. Nothing left at all; a new generation arrives.
    let web = await container('web');
    await fill(0);
    let g = publish();
    await assertStoreErrorShown(g);
    await sleep(3000); // several polls, reconcile passes and store retries
    assert.deepEqual(await container('web'), web, `generation ${g} was not applied while it could not be stored`);
    await free();
    const s1 = await assertRecovers(g);

    // 2. Less left than a state file needs (its write fails halfway), a new generation, and an engine
    //    event that changes a record: state.json cannot be written either, and /readyz says so.
    web = await container('web');
    await fill(8 * 1024);
    g = publish();
    await assertStoreErrorShown(g);
    const side = await container('side');
    assert.ok(side);
    await docker.getContainer(side.id).kill();
    const rz = await waitFor('/readyz to name state.json too', async () => {
      const x = await readyz(port);
      return /state\.json/.test(x.body.checks.store?.reason ?? '') ? x.body : undefined;
    }, 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });
    assert.match(rz.checks.store?.reason ?? '', /no space left on device/i, JSON.stringify(rz.checks.store));
    assert.equal((await container('web'))?.id, web?.id, 'web is not recreated while its generation cannot be stored');
    await free();
    const s2 = await assertRecovers(g);

    // 3. Full, a generation pending, SIGKILL; the space back but the source down: the restarted agent
    //    keeps the stored generation without churn (no rollback below the running one, no apply of
    //    one it never stored); then the source is back and the pending generation is applied.
    web = await container('web');
    await fill(0);
    g = publish();
    await assertStoreErrorShown(g);
    await agent!.stop('SIGKILL');
    await free();
    server.setFault(nodeId, { status: 503 });
    const before = server.reports(nodeId).length;
    start();
    await waitReport('a report from the restarted agent', (r) => r.observedGeneration === g - 1 && server.reports(nodeId).length > before);
    await sleep(3000);
    assert.deepEqual(await container('web'), web, 'after the restart: the same container with the stored generation, never recreated');
    server.setFault(nodeId, null);
    const s3 = await assertRecovers(g);

    // 4. A start on a full state dir: the agent stops cleanly-enough (SIGTERM), the dir fills, it starts.
    assert.equal(await agent!.stop('SIGTERM'), 0, `clean exit${dump()}`);
    await fill(0);
    g = publish();
    const full = start();
    const code = await Promise.race([full.exited(), sleep(30_000).then(() => 'running' as const)]);
    const why = [...full.lines.map((l) => l.msg + (typeof l.err === 'string' ? `: ${l.err}` : '')), ...full.stderr].filter((m) => /no space/i.test(m)).at(-1) ?? '';
    process.stdout.write(`full-disks: an agent started on a full state dir: ${code === 'running' ? 'keeps running' : `exits ${String(code)}: ${why.trim().split('\n')[0]}`}\n`);
    if (code !== 'running') {
      assert.match(full.dump(), /no space left on device/i, `it says why it cannot start${dump()}`);
      await free();
      start();
    } else {
      await assertStoreErrorShown(g);
      await free();
    }
    const s4 = await assertRecovers(g);

    sampling = false;
    await sampler;
    const left = (await readdir(stateDir)).filter((f) => f.startsWith('.') || f.includes('.corrupt-'));
    assert.deepEqual(left, [], 'no temp file left and nothing moved aside');
    figures.unreadable = problems.length;
    assert.deepEqual(problems, [], `every state file readable in ${reads} reads, desired.json never went back`);
    // The reports: observedGeneration never goes back, seq always grows.
    const reps = server.reports(nodeId) as Report[];
    for (let i = 1; i < reps.length; i++) {
      const [a, b] = [reps[i - 1]!, reps[i]!];
      if ((b.observedGeneration ?? 0) < (a.observedGeneration ?? 0)) figures.rollbacks += 1;
      assert.ok(b.seq > a.seq, `seq went from ${a.seq} to ${b.seq}`);
    }
    assert.equal(figures.rollbacks, 0, 'no rollback');
    process.stdout.write(`full-disks: state dir: ${figures.stateDirFills} fills, ${reads} reads of every state file, recovered in ${[s1, s2, s3, s4].map((s) => s.toFixed(1)).join(', ')} s\n`);
  });
});

/** Joins two sockets both ways; either side's end or error ends the other. */
function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
}

/**
 * Makes the loopback registry (127.0.0.1:PORT in the host's namespace) answer at 127.0.0.1:PORT
 * inside the private dockerd's own network namespace, through a unix socket (file system paths are
 * shared across network namespaces): a forwarder run in that namespace with nsenter, and a bridge
 * in this process. Loopback on both sides only.
 */
async function reachRegistryFrom(netnsPid: number, reg: OciRegistry, dir: string): Promise<{ stop: () => Promise<void> }> {
  const nsenter = (args: string[]) => exec('nsenter', [`--net=/proc/${netnsPid}/ns/net`, '--', ...args]);
  await nsenter(['ip', 'link', 'set', 'lo', 'up']); // unshare --net leaves it down
  const sock = join(dir, 'reg.sock');
  const bridge: Server = createServer((c) => splice(c, createConnection({ host: '127.0.0.1', port: reg.port })));
  await new Promise<void>((resolve, reject) => bridge.once('error', reject).listen(sock, resolve));
  const script =
    "const net=require('net');const [port,sock]=process.argv.slice(1);" +
    "net.createServer(c=>{const u=net.connect(sock);c.pipe(u);u.pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy());})" +
    ".listen(+port,'127.0.0.1',()=>console.log('listening'));";
  // nsenter without a pid namespace execs the program: this pid is the forwarder's, ours to stop.
  const fwd = new OwnedProcess(spawn('nsenter', [`--net=/proc/${netnsPid}/ns/net`, '--', process.execPath, '-e', script, String(reg.port), sock], { stdio: ['ignore', 'pipe', 'pipe'] }), 'registry forwarder');
  await waitFor('the forwarder in the private netns', () => {
    if (fwd.exited) throw new Error(`forwarder exited: ${fwd.log()}`);
    return fwd.output.join('').includes('listening');
  }, 15_000, 50);
  return {
    stop: async () => {
      await fwd.stop('SIGTERM', 5_000);
      await new Promise<void>((resolve) => bridge.close(() => resolve()));
    },
  };
}

describe("Docker's data root full on a private dockerd: an image pull that cannot fit", { skip: skip || (await privateDockerdSkipReason()), timeout: 200_000 }, () => {
  const nodeId = testNodeId('test-fullroot');
  const DATA_MIB = 96;
  const LEAVE_MIB = 30; // above the 15 % imagefs threshold, below what the image needs
  const BIG_MIB = 40; // the registry image's extra layer: random bytes, so gzip does not shrink it
  let dir: string;
  let mounted = false;
  let d: PrivateDockerd | undefined;
  let docker: Docker;
  let reg: OciRegistry | undefined;
  let forward: { stop: () => Promise<void> } | undefined;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let stateDir: string;
  let configPath: string;
  let generation = 0;
  const RETRY = { initialDelaySeconds: 1, multiplier: 2, maxDelaySeconds: 8, maxAttempts: 30 };

  const small = { image: IMAGE, command: ['sleep', '3600'], stopTimeoutSeconds: 1, network: { mode: 'none' } };
  const publish = (workloads: unknown[]) => {
    generation += 1;
    server.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads });
    return generation;
  };
  const containers = async () => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
    return new Map(list.map((c) => [c.Labels['dev.persys.workload-id'] ?? '?', { id: c.Id, image: c.Image, running: c.State === 'running' }]));
  };
  const dump = () => `\n--- agent log ---\n${agent?.dump() ?? ''}\n--- dockerd ---\n${d?.log() ?? ''}`;
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 60_000) =>
    server.waitForReport(nodeId, (r) => pred(r as Report), timeoutMs).then((r) => r as Report, (err: unknown) => {
      throw new Error(`${what}: ${String(err)}${dump()}`);
    });
  const entry = (r: Report, id: string) => r.workloads.find((w) => w.id === id);
  const dataRoot = () => join(dir, 'data');

  before(async () => {
    dir = await mkdtemp('/tmp/pfd-'); // short: the private dockerd's socket lives in it
    await mkdir(dataRoot(), { recursive: true });
    await exec('mount', ['-t', 'tmpfs', '-o', `size=${DATA_MIB}m`, 'tmpfs', dataRoot()]);
    mounted = true;
    d = await startPrivateDockerd(dir);
    docker = new Docker({ socketPath: d.socketPath });
    await exec('sh', ['-c', `docker save ${IMAGE} | docker -H unix://${d.socketPath} load -q`], { timeout: 120_000 });
    reg = await startOciRegistry({ images: [{ name: 'persys-test/big:1', from: IMAGE, fillerBytes: BIG_MIB << 20 }] });
    const pid = Number((await readFile(join(dir, 'd.pid'), 'utf8')).trim());
    forward = await reachRegistryFrom(pid, reg, dir);
    server = await startFleetServer({ tls: null });
    stateDir = join(dir, 'state');
    configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir,
        logLevel: 'info',
        source: { url: server.sourceUrl, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 1, debounceMs: 50 },
        reconcile: { intervalSeconds: 1 },
        metrics: { listen: 'off' },
        docker: { socketPath: d.socketPath, namePrefix: `t-${nodeId}-` },
        libvirt: { enabled: false },
        // The imagefs threshold off: a failing pull fills the disk to 0 for a moment, and a sample
        // then would turn DiskPressure on and deny the retry (INSUFFICIENT_RESOURCES, tested in
        // test/e2e/resources-agent.test.ts). Here the engine's own ENOSPC is what the agent meets.
        resources: { pressure: { imagefsAvailablePercent: 0 } },
      }),
    );
  });

  after(async () => {
    await agent?.stop('SIGKILL').catch(() => undefined);
    if (d?.running()) {
      for (const c of await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } }).catch(() => [])) {
        await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
      }
    }
    await forward?.stop().catch(() => undefined);
    await reg?.close().catch(() => undefined);
    await server?.close();
    await d?.close().catch(() => undefined);
    if (mounted) await exec('umount', ['-l', dataRoot()]).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the pull fails NO_SPACE with dockerd\'s message, nothing running is removed, retries back off, and it converges once space is freed', async () => {
    assert.ok(d && reg);
    const bigRef = reg.ref('persys-test/big:1');
    publish([
      { id: 'keep', type: 'container', spec: small },
      { id: 'web', type: 'container', spec: { ...small, env: { V: '1' } } },
    ]);
    agent = AgentProcess.start(['run', '--config', configPath]);
    const g1 = await waitFor('generation 1 running', async () => {
      const m = await containers();
      return m.get('keep')?.running && m.get('web')?.running ? m : undefined;
    }, 90_000).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });

    // Fill Docker's file system up to LEAVE_MIB free: less than the image's layer needs.
    const s = await statfs(dataRoot());
    await writeFile(join(dataRoot(), 'filler'), Buffer.alloc(Number(s.bavail) * s.bsize - (LEAVE_MIB << 20)));
    const filled = await statfs(dataRoot());
    const freePct = (Number(filled.bavail) / Number(filled.blocks)) * 100;
    assert.ok(freePct > 15 && Number(filled.bavail) * filled.bsize < BIG_MIB << 20, `${freePct.toFixed(1)} % free: above DiskPressure's 15 %, below the ${BIG_MIB} MiB layer`);

    // web moves to the big image (a recreate: the pull comes first), and a new workload needs it too.
    const g2 = publish([
      { id: 'keep', type: 'container', spec: small },
      { id: 'web', type: 'container', retry: RETRY, spec: { ...small, image: bigRef, env: { V: '2' } } },
      { id: 'new', type: 'container', retry: RETRY, spec: { ...small, image: bigRef } },
    ]);
    const failing = await waitReport('NO_SPACE for web and new, at least 4 attempts of new', (r) => {
      const [w, n] = [entry(r, 'web'), entry(r, 'new')];
      return r.observedGeneration === g2 && w?.error?.code === 'NO_SPACE' && n?.error?.code === 'NO_SPACE' && (n.retry?.attempts ?? 0) >= 4;
    }, 90_000);
    for (const id of ['web', 'new']) {
      const e = entry(failing, id)!;
      assert.match(e.error?.message ?? '', /no space left on device/, `${id}: dockerd's message: ${JSON.stringify(e.error)}`);
      assert.equal(e.error?.transient, true, `${id}: transient`);
      assert.ok(e.failures?.every((f) => f.code === 'NO_SPACE'), `${id}: every failure NO_SPACE: ${JSON.stringify(e.failures)}`);
    }
    assert.equal(entry(failing, 'keep')?.phase, 'Running');

    // Nothing that was running is removed: the same two containers, running, all along.
    const now = await containers();
    assert.deepEqual([...now.keys()].sort(), ['keep', 'web'], 'no container for new, none removed');
    for (const id of ['keep', 'web']) assert.deepEqual(now.get(id), g1.get(id), `${id} is the generation-1 container, still running`);

    // The store stays readable.
    const st = await inspectStateDir(stateDir, nodeId);
    assert.deepEqual(st.problems, []);
    assert.equal(st.generation, g2);

    // Retries follow the backoff: every attempt n is scheduled within the ceiling of attempt n
    // (full jitter: between 0 and min(8 s, 1 s x 2^(n-1))) and the next one does not come earlier.
    const sched = new Map<number, { nextRetryAt: number }>();
    for (const r of server.reports(nodeId) as Report[]) {
      const n = entry(r, 'new');
      if (n?.retry?.nextRetryAt && n.retry.attempts > 0) sched.set(n.retry.attempts, { nextRetryAt: Date.parse(n.retry.nextRetryAt) });
    }
    const fails = (entry(failing, 'new')!.failures ?? []).map((f) => Date.parse(f.at));
    const policy = { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 8000 };
    const gaps: string[] = [];
    for (let k = 1; k < fails.length; k++) {
      const next = sched.get(k)?.nextRetryAt;
      assert.ok(next !== undefined, `attempt ${k}'s schedule was reported`);
      const planned = next - fails[k - 1]!;
      assert.ok(planned >= 0 && planned <= backoffCeilingMs(policy, k) + 50, `attempt ${k}: retry planned ${planned} ms after it, ceiling ${backoffCeilingMs(policy, k)} ms`);
      assert.ok(fails[k]! >= next - 50, `attempt ${k + 1} came ${next - fails[k]!} ms before its time`);
      gaps.push(`${((fails[k]! - fails[k - 1]!) / 1000).toFixed(1)}`);
    }

    // Space back: the next attempt pulls, web is replaced, new starts, keep is untouched.
    await rm(join(dataRoot(), 'filler'));
    const t0 = Date.now();
    await waitFor('convergence after the space came back', async () => {
      const m = await containers();
      return m.get('web')?.running && m.get('web')?.image === bigRef && m.get('new')?.running ? m : undefined;
    }, 90_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}${dump()}`);
    });
    figures.dockerRootRecoverSeconds = (Date.now() - t0) / 1000;
    await waitReport('a clean report of generation 2', (r) => r.observedGeneration === g2 && ['keep', 'web', 'new'].every((id) => entry(r, id)?.phase === 'Running' && !entry(r, id)?.error));
    assert.deepEqual((await containers()).get('keep'), g1.get('keep'), 'keep was never touched');
    assert.deepEqual((await inspectStateDir(stateDir, nodeId)).problems, []);
    process.stdout.write(`full-disks: docker data root: web's error while full: ${JSON.stringify(entry(failing, 'web')?.error?.message)}\n`);
    process.stdout.write(`full-disks: docker data root: ${fails.length} NO_SPACE attempts of new, gaps ${gaps.join(', ')} s; converged ${figures.dockerRootRecoverSeconds.toFixed(1)} s after the space came back\n`);
  });
});
