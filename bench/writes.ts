/**
 * Bytes the agent writes to disk while nothing changes: the built CLI as a real process with 200
 * running containers, desired state pulled and status pushed over real HTTPS (a loopback fleet
 * server with a throwaway CA), heartbeat 5 s. `write_bytes` of /proc/<pid>/io (bytes the process
 * caused to be written to storage, counted when the pages are dirtied) is read when the fleet has
 * settled and again after the idle window; a bare node process read over the same window is the
 * baseline. The state dir is on the real disk (not a tmpfs, where nothing would count).
 *
 * The idle window is 5 minutes (the figure); BENCH_WRITES_IDLE_SECONDS shortens it for
 * development, and the row name says which window was measured.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { makeThrowawayCa } from '../test/helpers/tls.js';
import { startFleetServer, type JsonObject } from '../test/helpers/fleet-server.js';
import { benchDocument, benchNodeId, DOCKER_SOCKET, progress, removeNode, round2, sleep, spawnNode, stopChild, type Section } from './lib.js';
import { CLI } from './rss.js';

const HEARTBEAT_SECONDS = 5;
const SETTLE_MS = 15_000;
const BRING_UP_TIMEOUT_MS = 300_000;

async function writeBytes(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/io`, 'utf8');
  const m = /^write_bytes:\s+(\d+)$/m.exec(text);
  if (!m?.[1]) throw new Error(`no write_bytes in /proc/${pid}/io`);
  return Number(m[1]);
}

export async function benchIdleWrites(size: number, signal: AbortSignal): Promise<Section> {
  const idleSeconds = Number(process.env.BENCH_WRITES_IDLE_SECONDS ?? 300);
  if (!(idleSeconds > 0)) throw new Error(`BENCH_WRITES_IDLE_SECONDS must be positive, got ${process.env.BENCH_WRITES_IDLE_SECONDS}`);
  // /var/tmp: on the root disk here, where /tmp may be a tmpfs on other machines.
  const dir = join('/var/tmp', `persys-bench-writes-${process.pid}`);
  await mkdir(dir, { recursive: true });
  const pki = await makeThrowawayCa(dir);
  const server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
  const nodeId = benchNodeId();
  const stateDir = join(dir, 'state');
  let agent: ReturnType<typeof spawnNode> | undefined;
  let bare: ReturnType<typeof spawnNode> | undefined;
  try {
    server.setDocument(nodeId, benchDocument(nodeId, size));
    const configFile = join(dir, 'config.json');
    await writeFile(
      configFile,
      JSON.stringify({
        nodeId,
        stateDir,
        logLevel: 'warn',
        source: { url: server.sourceUrl, caFile: pki.caCert },
        // The status POSTs go through the same HTTPS client (and CA) as the pulls.
        status: { url: server.statusUrl, heartbeatSeconds: HEARTBEAT_SECONDS },
        metrics: { listen: '127.0.0.1:0' },
        docker: { socketPath: DOCKER_SOCKET, namePrefix: `${nodeId}-` },
      }),
    );
    progress(`idle writes: agent brings up ${size} containers (status over HTTPS, heartbeat ${HEARTBEAT_SECONDS} s)`);
    agent = spawnNode([CLI, 'run', '--config', configFile]);
    const running = (r: JsonObject) => Array.isArray(r.workloads) && r.workloads.length === size && (r.workloads as { phase?: string }[]).every((w) => w.phase === 'Running');
    const upBy = Date.now() + BRING_UP_TIMEOUT_MS;
    while (!server.reports(nodeId).some(running)) {
      if (agent.child.exitCode !== null) throw new Error(`the agent exited before its workloads were Running:\n${agent.tail()}`);
      if (Date.now() > upBy) throw new Error(`not all ${size} workloads Running after ${BRING_UP_TIMEOUT_MS / 1000} s:\n${agent.tail()}`);
      await sleep(500, signal);
    }
    await sleep(SETTLE_MS, signal);
    bare = spawnNode(['-e', 'setInterval(()=>{},1000)']);
    const reportsBefore = server.reports(nodeId).length;
    const [a0, b0] = await Promise.all([writeBytes(agent.pid), writeBytes(bare.pid)]);
    const stateBefore = (await stat(join(stateDir, 'state.json'))).mtimeMs;
    progress(`idle writes: measuring for ${idleSeconds} s`);
    const end = Date.now() + idleSeconds * 1000;
    while (Date.now() < end) {
      if (agent.child.exitCode !== null) throw new Error(`the agent exited during the idle window:\n${agent.tail()}`);
      await sleep(Math.min(5000, end - Date.now()), signal);
    }
    const [a1, b1] = await Promise.all([writeBytes(agent.pid), writeBytes(bare.pid)]);
    const reports = server.reports(nodeId).length - reportsBefore;
    const stateSize = (await stat(join(stateDir, 'state.json'))).size;
    const stateRewritten = (await stat(join(stateDir, 'state.json'))).mtimeMs !== stateBefore;
    const window = idleSeconds === 300 ? '5 idle minutes' : `${idleSeconds} idle s (BENCH_WRITES_IDLE_SECONDS; the issue's window is 300 s)`;
    return {
      rows: [
        {
          name: `bytes written by the agent, ${window}, ${size} workloads, heartbeat ${HEARTBEAT_SECONDS} s, HTTPS`,
          value: round2((a1 - a0) / 1024),
          unit: 'KiB',
          baseline: { name: 'bare node, same window', value: round2((b1 - b0) / 1024) },
          target: idleSeconds === 300 ? { on: 'value', max: 64, text: '< 64 KiB' } : { on: 'value', max: (64 * idleSeconds) / 300, text: `< ${round2((64 * idleSeconds) / 300)} KiB (64 KiB per 5 min)` },
        },
        { name: `status reports sent in that window`, value: reports, unit: 'reports' },
        // Shows that the counter counts: the bring-up (200 records, desired.json, node-id) did write.
        { name: `bytes written by the agent from start until ${size} workloads settled`, value: round2(a0 / 1024), unit: 'KiB' },
      ],
      notes: [
        `idle writes: state.json is ${round2(stateSize / 1024)} KiB with ${size} records and was ${stateRewritten ? 'REWRITTEN' : 'not rewritten'} during the window; ` +
          `the landed store rewrote it (desired document included) on every report: ${reports} x that size = ${round2((reports * stateSize) / 1024)} KiB plus the document.`,
      ],
    };
  } finally {
    await Promise.all([agent ? stopChild(agent) : undefined, bare ? stopChild(bare) : undefined]);
    await server.close();
    await removeNode(nodeId).catch((err: unknown) => progress(`removal failed (retried at the end): ${String(err)}`));
    await rm(dir, { recursive: true, force: true });
  }
}
