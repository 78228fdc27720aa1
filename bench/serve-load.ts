/**
 * Load run of `persys-agent serve` (bounded, loopback only): 2,000 simulated long-poll clients
 * (one small undici loop each, not 2,000 agents) against one `serve` over HTTPS, then the same
 * 2,000 clients polling a real nginx statically (every 30 s, the agent's default), in the same run.
 *
 * Prints: server RSS; server CPU per idle minute (measured over a shorter idle window and scaled,
 * as printed); p50/p95 wake latency when one document changes and when all 2,000 change; status
 * intake rate at 2,000 reports. Never fails on a number.
 *
 *   bash bench/serve-load.sh            (raises `ulimit -n`, builds, runs; stops by itself)
 *   BENCH_CLIENTS=500 BENCH_IDLE_SECONDS=10 bash bench/serve-load.sh
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once, setMaxListeners } from 'node:events';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { hashToken, loadOrCreateSecret, newToken, tokensPath } from '../src/control-plane/auth.js';
import { makeThrowawayCa } from '../test/helpers/tls.js';
import { startNginx } from '../test/helpers/nginx.js';
import { measureWireBytes } from './wire-bytes.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 2000);
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 20);
const ONE_CHANGES = 20;
const LONG_POLL_SECONDS = 90;
const STATIC_POLL_SECONDS = 30;
/** Hard stop for the whole run, whatever happens. */
const DEADLINE_MS = 8 * 60_000;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TICKS_PER_SECOND = 100; // USER_HZ on Linux

const hardStop = setTimeout(() => {
  console.error(`serve-load: still running after ${DEADLINE_MS / 60000} min; stopping`);
  cleanup().finally(() => process.exit(1));
}, DEADLINE_MS);
hardStop.unref();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`serve-load: ${sig}; cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

let serveProc: ChildProcess | undefined;
let nginxStop: (() => Promise<void>) | undefined;
let workDir: string | undefined;
const stopping = new AbortController();
setMaxListeners(4 * CLIENTS + 1000, stopping.signal);

async function cleanup(): Promise<void> {
  stopping.abort();
  if (serveProc !== undefined && serveProc.exitCode === null) {
    serveProc.kill('SIGTERM');
    await Promise.race([once(serveProc, 'exit'), new Promise((r) => setTimeout(r, 5000))]);
    if (serveProc.exitCode === null) serveProc.kill('SIGKILL');
  }
  await nginxStop?.().catch(() => undefined);
  if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const doc = (nodeId: string, generation: number) =>
  JSON.stringify({
    apiVersion: 'persys.dev/v1',
    kind: 'DesiredState',
    nodeId,
    generation,
    workloads: [
      { id: 'web', type: 'container', revision: String(generation), desiredState: 'running', spec: { image: 'nginx:1.27', ports: [{ hostPort: 8080, containerPort: 80 }], resources: { cpus: 0.5, memoryBytes: 268435456 } } },
    ],
  });

/** utime + stime of the given pids, in seconds (from /proc). */
async function cpuSeconds(pids: number[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / TICKS_PER_SECOND;
}

async function rssMiB(pids: number[]): Promise<number> {
  let kb = 0;
  for (const pid of pids) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    kb += Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
  return kb / 1024;
}

async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.split(/\s+/).filter((s) => s !== '').map(Number);
}

interface Client {
  nodeId: string;
  token: string;
  etag: string | null;
  generation: number;
  /** Resolvers waiting for this client to see a generation. */
  waiters: Array<{ generation: number; resolve: (at: number) => void }>;
  requests: number;
}

function noteGeneration(c: Client, generation: number): void {
  c.generation = generation;
  const now = performance.now();
  c.waiters = c.waiters.filter((w) => {
    if (generation >= w.generation) {
      w.resolve(now);
      return false;
    }
    return true;
  });
}

function seen(c: Client, generation: number): Promise<number> {
  if (c.generation >= generation) return Promise.resolve(performance.now());
  return new Promise((resolve) => c.waiters.push({ generation, resolve }));
}

/** One GET with If-None-Match (and Prefer when waitSeconds > 0); updates the client. */
async function pull(dispatcher: Agent, url: string, c: Client, waitSeconds: number, token: string | null, signal: AbortSignal): Promise<number> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (c.etag !== null) headers['if-none-match'] = c.etag;
  if (waitSeconds > 0) headers.prefer = `wait=${waitSeconds}`;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await request(url, { dispatcher, headers, headersTimeout: (waitSeconds + 30) * 1000, bodyTimeout: 30_000, signal });
  c.requests++;
  if (res.statusCode === 200) {
    const body = (await res.body.json()) as { generation: number };
    const etag = res.headers.etag;
    c.etag = typeof etag === 'string' ? etag : null;
    noteGeneration(c, body.generation);
  } else await res.body.dump();
  return res.statusCode;
}

async function main(): Promise<void> {
  const started = Date.now();
  workDir = await mkdtemp(join(tmpdir(), 'persys-serve-load-'));
  await chmod(workDir, 0o711);
  const pki = await makeThrowawayCa(workDir);
  const ca = await readFile(pki.caCert);
  const serveDir = join(workDir, 'serve');
  await mkdir(join(serveDir, 'nodes'), { recursive: true });

  // Tokens and documents written directly (2,000 `token` calls would rewrite tokens.json 2,000 times).
  const secret = await loadOrCreateSecret(serveDir);
  const clients: Client[] = [];
  const hashes: Record<string, string> = {};
  for (let i = 0; i < CLIENTS; i++) {
    const nodeId = `load-${String(i).padStart(5, '0')}`;
    const token = newToken();
    hashes[nodeId] = hashToken(secret, token);
    clients.push({ nodeId, token, etag: null, generation: 0, waiters: [], requests: 0 });
    await writeFile(join(serveDir, 'nodes', `${nodeId}.json`), doc(nodeId, 1));
  }
  const admin = newToken();
  await writeFile(tokensPath(serveDir), JSON.stringify({ version: 1, nodes: hashes, admin: hashToken(secret, admin) }), { mode: 0o600 });

  serveProc = spawn(process.execPath, [CLI, 'serve', '--dir', serveDir, '--listen', '127.0.0.1:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--max-held', String(CLIENTS + 100)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    serveProc?.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      const m = /"url":"(https:\/\/[^"]+)".*"serve: listening"/.exec(buf);
      if (m?.[1] !== undefined) resolve(m[1]);
      if (buf.length > 1_000_000) buf = buf.slice(-10_000);
    });
    serveProc?.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
  });
  const servePid = serveProc.pid as number;
  const dispatcher = new Agent({ connections: CLIENTS + 200, connect: { ca, timeout: 30_000 }, keepAliveTimeout: 120_000 });
  const adminCall = async (method: 'GET' | 'PUT' | 'POST', path: string, body?: string, token = admin) => {
    const res = await request(`${url}${path}`, { method, dispatcher, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ?? null });
    const text = await res.body.text();
    return { status: res.statusCode, text };
  };
  const held = async () => Number(/^persys_serve_held_requests (\d+)/m.exec((await adminCall('GET', '/metrics')).text)?.[1] ?? NaN);

  console.log(`serve-load: ${CLIENTS} clients, serve at ${url} (pid ${servePid}), long-poll wait ${LONG_POLL_SECONDS} s (first wait spread over 1..${LONG_POLL_SECONDS} s so expiries are steady), idle window ${IDLE_SECONDS} s`);
  const rssBefore = await rssMiB([servePid]);

  // --- serve: long-poll clients -------------------------------------------------------------
  const loops: Array<Promise<void>> = [];
  const t0 = performance.now();
  for (const c of clients) {
    loops.push(
      (async () => {
        // The first wait is spread so holds end at a steady rate, as in a fleet that started over time.
        // (The first request has no ETag and is answered at once; the second is the first held one.)
        const spread = 1 + Math.floor(Math.random() * LONG_POLL_SECONDS);
        for (let n = 0; !stopping.signal.aborted; n++) {
          const wait = n < 2 ? spread : LONG_POLL_SECONDS - Math.floor(Math.random() * (LONG_POLL_SECONDS / 16));
          try {
            await pull(dispatcher, `${url}/v1/nodes/${c.nodeId}/desired`, c, wait, c.token, stopping.signal);
          } catch {
            if (stopping.signal.aborted) return;
            await sleep(1000);
          }
        }
      })(),
    );
  }
  await Promise.all(clients.map((c) => seen(c, 1)));
  const connectS = (performance.now() - t0) / 1000;
  for (let i = 0; i < 200 && (await held()) < CLIENTS * 0.97; i++) await sleep(100);
  console.log(`serve-load: all ${CLIENTS} clients have generation 1 after ${connectS.toFixed(1)} s; held now ${await held()}`);
  const rssHeld = await rssMiB([servePid]);

  const cpu0 = await cpuSeconds([servePid]);
  const req0 = clients.reduce((n, c) => n + c.requests, 0);
  await sleep(IDLE_SECONDS * 1000);
  const idleCpu = (await cpuSeconds([servePid])) - cpu0;
  const idleReqs = clients.reduce((n, c) => n + c.requests, 0) - req0;
  const cpuPerIdleMinute = (idleCpu * 60) / IDLE_SECONDS;

  console.log(`serve-load: idle window done; one-document changes`);
  // One document changes (20 times, one random node each).
  const oneLat: number[] = [];
  for (let i = 0; i < ONE_CHANGES; i++) {
    const c = clients[Math.floor(Math.random() * clients.length)] as Client;
    const g = c.generation + 1;
    const at = performance.now();
    const res = await adminCall('PUT', `/v1/nodes/${c.nodeId}/desired`, doc(c.nodeId, g));
    if (res.status !== 200) throw new Error(`PUT answered ${res.status}: ${res.text}`);
    oneLat.push((await seen(c, g)) - at);
    await sleep(100);
  }

  console.log(`serve-load: all documents change`);
  // All 2,000 change: PUT every document (50 in flight), each client's latency from its own PUT.
  const allLat: number[] = [];
  const allStart = performance.now();
  const cpuAll0 = await cpuSeconds([servePid]);
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < clients.length) {
        const c = clients[next++] as Client;
        const g = c.generation + 1;
        const at = performance.now();
        const res = await adminCall('PUT', `/v1/nodes/${c.nodeId}/desired`, doc(c.nodeId, g));
        if (res.status !== 200) throw new Error(`PUT answered ${res.status}`);
        void seen(c, g).then((t) => allLat.push(t - at));
      }
    }),
  );
  for (let i = 0; i < 300 && allLat.length < clients.length; i++) await sleep(100);
  const allS = (performance.now() - allStart) / 1000;
  const allCpu = (await cpuSeconds([servePid])) - cpuAll0;

  console.log(`serve-load: status intake`);
  // Status intake: one report per node (2,000 reports, as per heartbeat), 100 in flight.
  const report = (nodeId: string, seq: number) =>
    JSON.stringify({
      apiVersion: 'persys.dev/v1',
      kind: 'StatusReport',
      nodeId,
      seq,
      agentVersion: '0.1.0',
      observedGeneration: 2,
      sentAt: new Date().toISOString(),
      node: { hostname: nodeId, labels: {}, capacity: { cpus: 4, memoryBytes: 8589934592 }, usage: { cpus: 0.3 }, runtimes: { docker: 'up', libvirt: 'up' } },
      sync: { lastPullAt: new Date().toISOString(), lastSuccessAt: new Date().toISOString(), lastError: null },
      workloads: ['web', 'api', 'db', 'cache', 'worker'].map((id) => ({ id, type: 'container', revision: '2', desiredState: 'running', actualState: 'running', phase: 'Running', message: 'running', container: { exitCode: null, restartCount: 0 } })),
    });
  const intakeLat: number[] = [];
  const cpuIn0 = await cpuSeconds([servePid]);
  const inStart = performance.now();
  let ni = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (ni < clients.length) {
        const c = clients[ni++] as Client;
        const at = performance.now();
        const res = await adminCall('POST', `/v1/nodes/${c.nodeId}/status`, report(c.nodeId, 1), c.token);
        if (res.status !== 200) throw new Error(`status answered ${res.status}: ${res.text.slice(0, 200)}`);
        intakeLat.push(performance.now() - at);
      }
    }),
  );
  const inS = (performance.now() - inStart) / 1000;
  const inCpu = (await cpuSeconds([servePid])) - cpuIn0;
  const rssAfter = await rssMiB([servePid]);

  // Bytes on the wire per exchange (TLS included), for the cost figures.
  const port = Number(new URL(url).port);
  const probe = clients[0] as Client;
  const reportBody = report(probe.nodeId, 2);
  const auth = `Authorization: Bearer ${probe.token}\r\n`;
  const getReq = (extra: string) => `GET /v1/nodes/${probe.nodeId}/desired HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\naccept: application/json\r\naccept-encoding: identity\r\n${auth}${extra}\r\n`;
  const serveWire = await measureWireBytes('127.0.0.1', port, ca, [
    getReq(''),
    getReq(`if-none-match: ${probe.etag ?? ''}\r\nprefer: wait=1\r\n`),
    `POST /v1/nodes/${probe.nodeId}/status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\ncontent-type: application/json\r\n${auth}content-length: ${Buffer.byteLength(reportBody)}\r\n\r\n${reportBody}`,
  ]);

  stopping.abort();
  await Promise.allSettled(loops);
  serveProc.kill('SIGTERM');
  await once(serveProc, 'exit');

  console.log(`serve-load: nginx, static polling every ${STATIC_POLL_SECONDS} s`);
  // --- nginx: the same clients, static polling -----------------------------------------------
  const root = join(workDir, 'static');
  await mkdir(join(root, 'nodes'), { recursive: true, mode: 0o755 });
  for (const name of await readdir(join(serveDir, 'nodes'))) await copyFile(join(serveDir, 'nodes', name), join(root, 'nodes', name));
  const nginx = await startNginx({ dir: join(workDir, 'nginx'), root, certFile: pki.serverCert, keyFile: pki.serverKey });
  nginxStop = nginx.stop;
  const nginxPids = async () => {
    const master = Number((await readFile(join(workDir as string, 'nginx', 'nginx.pid'), 'utf8')).trim());
    return [master, ...(await childrenOf(master))];
  };
  const staticStop = new AbortController();
  setMaxListeners(4 * CLIENTS + 1000, staticStop.signal);
  const nginxDispatcher = new Agent({ connections: CLIENTS + 200, connect: { ca, timeout: 30_000 }, keepAliveTimeout: 120_000 });
  for (const c of clients) {
    c.etag = null;
    c.generation = 0;
    c.requests = 0;
  }
  const setStatic = async (c: Client, g: number) => {
    const f = join(root, 'nodes', `${c.nodeId}.json`);
    await writeFile(`${f}.tmp`, doc(c.nodeId, g));
    await rename(`${f}.tmp`, f);
  };
  // Every client starts at generation 2 (where serve left them).
  for (const c of clients) await setStatic(c, 2);
  const staticLoops = clients.map(async (c) => {
    // Spread start, then one request per interval (+-10 % jitter), like the agent against a static host.
    await sleep(Math.random() * STATIC_POLL_SECONDS * 1000);
    while (!staticStop.signal.aborted) {
      try {
        await pull(nginxDispatcher, `${nginx.origin}/nodes/${c.nodeId}.json`, c, 0, null, staticStop.signal);
      } catch {
        if (staticStop.signal.aborted) return;
      }
      await sleep(STATIC_POLL_SECONDS * 1000 * (0.9 + 0.2 * Math.random()));
    }
  });
  await Promise.all(clients.map((c) => seen(c, 2)));
  const nPids = await nginxPids();
  const nginxRss = await rssMiB(nPids);
  const ncpu0 = await cpuSeconds(nPids);
  const nreq0 = clients.reduce((n, c) => n + c.requests, 0);
  await sleep(IDLE_SECONDS * 1000);
  const nginxIdleCpu = (await cpuSeconds(nPids)) - ncpu0;
  const nginxIdleReqs = clients.reduce((n, c) => n + c.requests, 0) - nreq0;
  console.log(`serve-load: nginx idle window done; changes`);
  // One change: 20 nodes changed at once (each alone in its file), each client's pickup measured.
  const pick = clients.slice(0, ONE_CHANGES);
  const nOneStart = performance.now();
  await Promise.all(pick.map((c) => setStatic(c, 3)));
  const nOneLat = await Promise.all(pick.map(async (c) => (await seen(c, 3)) - nOneStart));
  // All change.
  const nAllStart = performance.now();
  for (const c of clients) await setStatic(c, 4);
  const nAllLat = await Promise.all(clients.map(async (c) => (await seen(c, 4)) - nAllStart));
  const nginxRssAfter = await rssMiB(await nginxPids());
  const first = clients[0] as Client;
  const nginxWire = await measureWireBytes('127.0.0.1', nginx.port, ca, [
    `GET /nodes/${first.nodeId}.json HTTP/1.1\r\nHost: 127.0.0.1:${nginx.port}\r\naccept: application/json\r\naccept-encoding: identity\r\nif-none-match: ${first.etag ?? ''}\r\nprefer: wait=90\r\n\r\n`,
  ]);
  staticStop.abort();
  await nginxDispatcher.close().catch(() => undefined);
  await Promise.allSettled(staticLoops);

  // --- figures ------------------------------------------------------------------------------
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  const lines = [
    `serve-load results (${CLIENTS} clients, loopback HTTPS, ${((Date.now() - started) / 1000).toFixed(0)} s run)`,
    `  serve RSS: ${rssBefore.toFixed(1)} MiB at start, ${rssHeld.toFixed(1)} MiB with ${CLIENTS} requests held, ${rssAfter.toFixed(1)} MiB after ${CLIENTS} reports stored`,
    `  serve CPU per idle minute: ${cpuPerIdleMinute.toFixed(2)} CPU-s (measured ${idleCpu.toFixed(2)} CPU-s over ${IDLE_SECONDS} s, x${(60 / IDLE_SECONDS).toFixed(1)}; ${idleReqs} held requests expired and were re-issued in the window)`,
    `  serve wake latency, one document changes (${ONE_CHANGES} times): p50 ${ms(pct(oneLat, 50))}, p95 ${ms(pct(oneLat, 95))}`,
    `  serve wake latency, all ${CLIENTS} change (PUT each, 50 in flight, ${allS.toFixed(1)} s for the batch, ${allCpu.toFixed(2)} CPU-s): p50 ${ms(pct(allLat, 50))}, p95 ${ms(pct(allLat, 95))} (${allLat.length} woke)`,
    `  serve status intake: ${CLIENTS} reports in ${inS.toFixed(2)} s = ${(CLIENTS / inS).toFixed(0)} reports/s (100 in flight), p50 ${ms(pct(intakeLat, 50))}, p95 ${ms(pct(intakeLat, 95))}, ${inCpu.toFixed(2)} CPU-s`,
    `  nginx (static, poll every ${STATIC_POLL_SECONDS} s) RSS: ${nginxRss.toFixed(1)} MiB (master + worker), ${nginxRssAfter.toFixed(1)} MiB at the end`,
    `  nginx CPU per idle minute: ${((nginxIdleCpu * 60) / IDLE_SECONDS).toFixed(2)} CPU-s (measured ${nginxIdleCpu.toFixed(2)} CPU-s over ${IDLE_SECONDS} s, x${(60 / IDLE_SECONDS).toFixed(1)}; ${nginxIdleReqs} polls in the window)`,
    `  nginx pickup latency, one document changes (${ONE_CHANGES} nodes): p50 ${ms(pct(nOneLat, 50))}, p95 ${ms(pct(nOneLat, 95))}`,
    `  nginx pickup latency, all ${CLIENTS} change: p50 ${ms(pct(nAllLat, 50))}, p95 ${ms(pct(nAllLat, 95))}`,
    `  wire bytes (TLS included): serve handshake ${serveWire.handshake} B; GET 200 (document ${doc(probe.nodeId, 9).length} B) ${serveWire.exchanges[0]} B; held GET answered 304 ${serveWire.exchanges[1]} B; status POST (report ${Buffer.byteLength(reportBody)} B, 5 workloads) ${serveWire.exchanges[2]} B`,
    `  wire bytes (TLS included): nginx handshake ${nginxWire.handshake} B; conditional GET answered 304 ${nginxWire.exchanges[0]} B`,
    `  ratios: wake p50 nginx/serve one change ${(pct(nOneLat, 50) / Math.max(1, pct(oneLat, 50))).toFixed(0)}x; all change ${(pct(nAllLat, 50) / Math.max(1, pct(allLat, 50))).toFixed(0)}x; idle CPU serve/nginx ${(idleCpu / Math.max(0.01, nginxIdleCpu)).toFixed(2)}x; RSS serve/nginx ${(rssHeld / nginxRss).toFixed(2)}x`,
  ];
  console.log(lines.join('\n'));
  await dispatcher.close().catch(() => undefined);
}

main()
  .catch((err: unknown) => {
    console.error(`serve-load: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanup();
    clearTimeout(hardStop);
  });
