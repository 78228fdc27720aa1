/**
 * Update locks and maintenance windows (issue 15, docs/updates.md) end to end: the built CLI as a real
 * process against the real dockerd and a local HTTPS fleet server. A restarting update waits while a
 * lock file exists or outside a window, says why in the status report, and is applied once the lock is
 * gone or the window opens; a new workload is never held.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { AgentProcess } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer, type JsonObject } from '../helpers/fleet-server.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const skip = await requireEngine('docker');
const IMAGE = 'persys-test/busybox:1';

interface ReportWorkload {
  id: string;
  phase: string;
  runtimeId?: string;
  message?: string;
  update?: { waiting: string; reason: string; until?: string };
  error?: { code: string; message: string } | null;
}
interface Report extends JsonObject {
  seq: number;
  workloads: ReportWorkload[];
}
const asReport = (r: JsonObject) => r as Report;
const wl = (r: Report, id: string) => r.workloads.find((w) => w.id === id);

function container(id: string, env: Record<string, string>, extra: Record<string, unknown> = {}) {
  return { id, type: 'container', ...extra, spec: { image: IMAGE, stopTimeoutSeconds: 1, env } };
}

/** A daily cron for the minute that starts at least 20 s from now (UTC), so the window is shut at first. */
function nextMinuteCron(): { cron: string; opensAt: Date } {
  const at = new Date(Math.ceil((Date.now() + 20_000) / 60_000) * 60_000);
  return { cron: `${at.getUTCMinutes()} ${at.getUTCHours()} * * *`, opensAt: at };
}

describe('update locks and maintenance windows, end to end', { skip, timeout: 400_000 }, () => {
  const nodeId = testNodeId('test-updates');
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  let dir: string;
  let stateDir: string;
  let server: FleetServer;
  let agent: AgentProcess | undefined;
  let generation = 0;

  const publish = (workloads: unknown[], extra: Record<string, unknown> = {}) =>
    server.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: ++generation, ...extra, workloads });
  const mark = () => Math.max(0, ...server.reports(nodeId).map((r) => asReport(r).seq));
  const waitReport = (what: string, pred: (r: Report) => boolean, timeoutMs = 60_000, since = mark()) =>
    server.waitForReport(nodeId, (r) => asReport(r).seq > since && pred(asReport(r)), timeoutMs).then(asReport, (err: unknown) => {
      throw new Error(`${what}: ${String(err)}\n--- agent log ---\n${agent?.dump() ?? ''}`);
    });
  const containerOf = async (id: string) => {
    const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`, `dev.persys.workload-id=${id}`] } });
    assert.equal(list.length, 1, `one container for ${id}`);
    const info = await docker.getContainer(list[0]!.Id).inspect();
    return { id: info.Id, env: info.Config.Env ?? [], running: info.State.Running };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-updates-'));
    stateDir = join(dir, 'state');
    const pki = await makeThrowawayCa(dir);
    server = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
    const configPath = join(dir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        nodeId,
        stateDir,
        logLevel: 'info',
        source: { url: server.sourceUrl, caFile: pki.caCert, pollIntervalSeconds: 1 },
        status: { url: server.statusUrl, heartbeatSeconds: 5, debounceMs: 100 },
        reconcile: { intervalSeconds: 2 },
        retry: { initialDelaySeconds: 1, maxDelaySeconds: 2 },
        metrics: { listen: '127.0.0.1:0' },
        docker: { namePrefix: `t-${nodeId}-` },
      }),
    );
    publish([container('a', { MODE: 'one' })]);
    agent = AgentProcess.start(['run', '--config', configPath]);
    await waitReport('a Running', (r) => wl(r, 'a')?.phase === 'Running', 90_000, 0);
  });

  after(async () => {
    await agent?.stop('SIGTERM').catch(() => undefined);
    await cleanupDockerByLabel(nodeId).catch(() => undefined);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('holds an env change while <stateDir>/locks/<id>.lock exists, and applies it once the lock is removed', async () => {
    const before = await containerOf('a');
    const lock = join(stateDir, 'locks', 'a.lock');
    await mkdir(join(stateDir, 'locks'), { recursive: true });
    // Our own pid: a live process, so the lock is not stale.
    await writeFile(lock, `${process.pid}\n`);
    publish([container('a', { MODE: 'two' })]);
    const held = await waitReport('a held by its lock', (r) => wl(r, 'a')?.update?.waiting === 'update-lock');
    assert.match(wl(held, 'a')?.update?.reason ?? '', /update lock .*a\.lock/);
    assert.equal(wl(held, 'a')?.phase, 'Running', 'the previous revision keeps running');
    // Several reconcile passes (interval 2 s) later, still the same container.
    await new Promise((r) => setTimeout(r, 6_000));
    const during = await containerOf('a');
    assert.equal(during.id, before.id, 'not recreated while locked');
    assert.ok(during.env.includes('MODE=one'));

    await rm(lock);
    await waitReport('a updated after the lock went', (r) => wl(r, 'a')?.phase === 'Running' && wl(r, 'a')?.update === undefined && wl(r, 'a')?.runtimeId !== before.id);
    const now = await containerOf('a');
    assert.notEqual(now.id, before.id);
    assert.ok(now.env.includes('MODE=two'), `env applied: ${now.env.join(' ')}`);
  });

  it('a lock holding the pid of a gone process is stale: ignored, with a WARN', async () => {
    const before = await containerOf('a');
    // A pid far above any pid_max default, so it belongs to no process.
    await writeFile(join(stateDir, 'locks', 'a.lock'), '4194000\n');
    publish([container('a', { MODE: 'three' })]);
    await waitReport('a updated despite the stale lock', (r) => wl(r, 'a')?.phase === 'Running' && wl(r, 'a')?.runtimeId !== before.id);
    assert.ok((await containerOf('a')).env.includes('MODE=three'));
    assert.match(agent?.dump() ?? '', /stale/i, 'a WARN names the stale lock');
    await rm(join(stateDir, 'locks', 'a.lock'));
  });

  it('outside a maintenance window an env change waits, a new workload does not, and the window applies it', async () => {
    const before = await containerOf('a');
    const { cron, opensAt } = nextMinuteCron();
    const maintenance = { windows: [{ cron, durationMinutes: 1, timezone: 'UTC' }] };
    publish([container('a', { MODE: 'four' }, { update: { window: 'maintenance' } }), container('b', { MODE: 'new' })], { maintenance });
    const held = await waitReport('a waits for the window, b is created', (r) => wl(r, 'a')?.update?.waiting === 'maintenance-window' && wl(r, 'b')?.phase === 'Running');
    const u = wl(held, 'a')?.update;
    assert.match(u?.reason ?? '', /waiting for the maintenance window at /);
    assert.equal(new Date(u?.until ?? '').getTime(), opensAt.getTime(), `until is the window's start (${opensAt.toISOString()})`);
    assert.equal((await containerOf('a')).id, before.id, 'not recreated outside the window');
    assert.ok(Date.now() < opensAt.getTime(), 'the wait was seen before the window opened');

    const applied = await waitReport('a updated in the window', (r) => wl(r, 'a')?.phase === 'Running' && wl(r, 'a')?.runtimeId !== before.id, 150_000);
    assert.equal(wl(applied, 'a')?.update, undefined);
    assert.ok(Date.now() >= opensAt.getTime(), 'applied only once the window opened');
    assert.ok((await containerOf('a')).env.includes('MODE=four'));
  });

  it('lockTimeoutSeconds with onLockTimeout: fail gives UPDATE_LOCKED and the old container keeps running', async () => {
    const before = await containerOf('a');
    await writeFile(join(stateDir, 'locks', 'a.lock'), `${process.pid}\n`);
    publish([container('a', { MODE: 'five' }, { update: { window: 'any', lockTimeoutSeconds: 3, onLockTimeout: 'fail' } }), container('b', { MODE: 'new' })]);
    const failed = await waitReport('a UPDATE_LOCKED', (r) => wl(r, 'a')?.error?.code === 'UPDATE_LOCKED', 60_000);
    assert.match(wl(failed, 'a')?.error?.message ?? '', /lock/);
    const now = await containerOf('a');
    assert.equal(now.id, before.id, 'the previous revision keeps running');
    assert.ok(now.running);
    assert.ok(now.env.includes('MODE=four'));
    await rm(join(stateDir, 'locks', 'a.lock'));
  });
});
