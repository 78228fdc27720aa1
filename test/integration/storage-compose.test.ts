/**
 * A compose app's service mounts an agent volume (a loop pool volume) on the real dockerd, driven by the
 * built agent (issue 13, docs/storage.md "Compose apps"):
 *   - the compose file names the agent volume as an external volume (`external: true`, `name: <volume>`);
 *   - while the volume is refused (pool too small) the app is refused with STORAGE_QUOTA_EXCEEDED: no
 *     container, and no plain Docker volume of that name (which Docker would make on container create);
 *   - once the pool has room the volume is made (loop image, ext4, Docker local-driver volume on the
 *     loop device) and only then the app starts: its /data is that 32 MiB filesystem, writes past it
 *     fail with ENOSPC, and the data is in the volume, not the container.
 * Containers and volumes carry the node id; the pool directory names it; after() removes all of them
 * and every loop device backed by a file there, also after a failure.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { AgentProcess, runCli, waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { cleanupStorage, loopDevices, poolDir, TEST_POOL_ROOT } from '../helpers/storage.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const IMAGE = 'persys-test/busybox:1';
const skip = await requireEngine('docker');

interface Status {
  workloads: { id: string; phase: string; error?: { code: string; message: string } | null }[];
  storage?: { volumes: { name: string; phase: string; attachedTo: string[]; error: string | null }[] };
}

describe('storage: a compose service mounts an agent loop volume (built agent, real dockerd)', { skip, timeout: 300_000 }, () => {
  const nodeId = testNodeId('test-stcp');
  const root = join(TEST_POOL_ROOT, nodeId);
  const loopPath = poolDir(nodeId, 'fast');
  const vol = `${nodeId}-db`;
  const project = `p${nodeId.replace(/[^a-z0-9]/g, '').slice(-12)}`;
  let dir = '';
  let configPath = '';
  let desiredPath = '';
  let agent: AgentProcess | undefined;
  const composeYaml = `services:
  app:
    image: ${IMAGE}
    command: ["sh", "-c", "echo from-compose > /data/marker; sleep 3600"]
    network_mode: none
    volumes:
      - db:/data
volumes:
  db:
    external: true
    name: ${vol}
`;
  const write = (generation: number, capacityBytes: number) =>
    writeFile(
      desiredPath,
      JSON.stringify({
        apiVersion: 'persys.dev/v1',
        kind: 'DesiredState',
        nodeId,
        generation,
        storagePools: [{ name: 'fast', type: 'loop', path: loopPath, capacityBytes }],
        volumes: [{ name: vol, pool: 'fast', sizeBytes: 32 * MiB, reclaimPolicy: 'delete' }],
        workloads: [{ id: 'shop', type: 'compose', spec: { project, composeYaml } }],
      }),
    );
  const status = async (): Promise<Status> => JSON.parse((await runCli(['status', '--json', '--config', configPath])).stdout) as Status;
  const containers = async (): Promise<string[]> => (await run('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`])).stdout.split('\n').filter(Boolean);
  const volumeExists = async (): Promise<boolean> => run('docker', ['volume', 'inspect', vol]).then(() => true, () => false);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-stcp-'));
    configPath = join(dir, 'config.json');
    desiredPath = join(dir, 'desired.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir: join(dir, 'state'),
        metrics: { listen: 'off' },
        reconcile: { intervalSeconds: 1 },
        libvirt: { enabled: false },
        docker: { namePrefix: `t-${nodeId}-` },
        policy: { allowedStoragePrefixes: [root] },
      }),
    );
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    if (agent && process.env.PERSYS_TEST_LOG === '1') console.log(agent.dump());
    for (const c of await containers().catch(() => [] as string[])) await run('docker', ['rm', '-f', c]).catch(() => undefined);
    await cleanupStorage(nodeId, root);
    // By name too: a volume Docker made itself (what this test guards against) carries no label of ours.
    await run('docker', ['volume', 'rm', '-f', vol]).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
    assert.deepEqual(await loopDevices(root), [], 'no loop device of this suite is left attached');
    assert.equal(await volumeExists(), false, 'the Docker volume is gone');
  });

  it('holds the app until the agent volume exists, then its service writes into the loop volume (ENOSPC at its size)', async () => {
    // 16 MiB pool: the 32 MiB volume is refused, and with it the app.
    await write(1, 16 * MiB);
    agent = AgentProcess.start(['run', '--config', configPath, '--desired', desiredPath]);
    const s1 = await waitFor('shop refused', async () => {
      const s = await status();
      return s.workloads.find((w) => w.id === 'shop')?.error?.code === 'STORAGE_QUOTA_EXCEEDED' ? s : undefined;
    }, 90_000, 1000);
    assert.match(s1.workloads.find((w) => w.id === 'shop')?.error?.message ?? '', new RegExp(`volume ${vol} needs 32 MiB in pool fast; 16 MiB left`));
    assert.deepEqual(s1.storage?.volumes.find((v) => v.name === vol)?.attachedTo, ['shop']);
    // A few passes: still no container, and Docker made no plain volume of that name.
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(await containers(), []);
    assert.equal(await volumeExists(), false, 'no Docker volume before the agent makes it');

    // Room in the pool: the volume is made, then the app starts on it.
    await write(2, 64 * MiB);
    const t0 = Date.now();
    await waitFor('shop Running', async () => (await status()).workloads.find((w) => w.id === 'shop')?.phase === 'Running', 120_000, 1000);
    const upMs = Date.now() - t0;
    const inspect = JSON.parse((await run('docker', ['volume', 'inspect', vol])).stdout) as { Labels: Record<string, string>; Options: Record<string, string> }[];
    assert.equal(inspect[0]?.Options.type, 'ext4');
    assert.equal(inspect[0]?.Options.device, join(loopPath, '.dev', vol), 'the local-driver volume is on the loop device link');
    assert.equal(inspect[0]?.Labels['dev.persys.volume'], vol, 'it is the agent volume, not one Docker or the compose runtime made');
    assert.equal(inspect[0]?.Labels['com.docker.compose.project'], undefined);
    assert.equal((await loopDevices(root)).length, 1);

    const [cid] = await containers();
    assert.ok(cid);
    const mounts = JSON.parse((await run('docker', ['inspect', '--format', '{{json .Mounts}}', cid])).stdout) as { Type: string; Name?: string; Destination: string }[];
    assert.deepEqual(mounts.map((m) => [m.Type, m.Name, m.Destination]), [['volume', vol, '/data']]);
    const exec = async (script: string): Promise<{ code: number; out: string }> => {
      try {
        const { stdout, stderr } = await run('docker', ['exec', cid, 'sh', '-c', script]);
        return { code: 0, out: stdout + stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
      }
    };
    await waitFor('marker written', async () => (await exec('cat /data/marker')).out.includes('from-compose'), 30_000, 500);
    // /data is the volume's own ext4 (about 32 MiB), not the host's file system.
    const df = await exec('df -P -k /data | tail -1');
    const totalKiB = Number(df.out.trim().split(/\s+/)[1]);
    assert.ok(totalKiB > 24 * 1024 && totalKiB <= 32 * 1024, `df: ${df.out}`);
    const dd = await exec('dd if=/dev/zero of=/data/fill bs=1M count=40');
    assert.notEqual(dd.code, 0, dd.out);
    assert.match(dd.out, /No space left on device/);
    // The data lives in the volume: another container mounting it sees the service's file.
    const other = await run('docker', ['run', '--rm', '--label', `dev.persys.node-id=${nodeId}`, '--network', 'none', '-v', `${vol}:/d`, IMAGE, 'cat', '/d/marker']);
    assert.equal(other.stdout.trim(), 'from-compose');
    console.log(`# compose on an agent loop volume: app Running ${upMs} ms after the pool had room; /data ${(totalKiB / 1024).toFixed(1)} MiB; ENOSPC past it`);
  });
});
