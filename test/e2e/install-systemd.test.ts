/**
 * install.sh and the unit under a real systemd: a container of the local dockerd whose PID 1 is
 * systemd (scripts/testbed/systemd.sh). The agent inside runs with Docker and libvirt disabled and a
 * file:// desired state: what is proven here is the installer, the unit, READY/WATCHDOG and restarts.
 * One step then turns Docker on, with the host's docker.sock mounted read-only into the container:
 * the hardened unit (ProtectSystem=strict, capability bounding set, system call filter) still lets
 * the agent run a container on the real dockerd, and uninstall leaves that workload running.
 */
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { sh } from '../helpers/systemd-container.js';
import { INSTALL_SH, nodeTarball, packAgent, removeTestContainers, repackWithVersion, SystemdContainer } from '../helpers/systemd-container.js';

const skip = (await requireEngine('docker')) || (await requireEngine('systemd'));
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const PROPS = ['ActiveState', 'SubState', 'MainPID', 'NRestarts', 'StatusText', 'Result', 'WatchdogTimestampMonotonic'];

describe('install.sh under a real systemd', { skip }, () => {
  const runId = testNodeId('test-install');
  let dir: string;
  let box: SystemdContainer;
  const state = () => box.show('persys-agent', PROPS);

  /** Polls until `pred` holds for the unit's properties (bounded). */
  async function waitFor(what: string, pred: (p: Record<string, string>) => boolean, timeoutMs = 45_000): Promise<Record<string, string>> {
    const deadline = Date.now() + timeoutMs;
    let last: Record<string, string> = {};
    while (Date.now() < deadline) {
      last = await state();
      if (pred(last)) return last;
      await sleep(500);
    }
    throw new Error(`${what}: not within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
  }

  const installInBox = (...args: string[]) =>
    box.exec(['bash', '/mnt/install/install.sh', '--node-tarball', '/mnt/node.tgz', ...args], 300_000);

  before(async () => {
    dir = await mkdtemp('/var/tmp/persys-install-systemd-');
    await chmod(dir, 0o755);
    const tarball = await packAgent(dir);
    await copyFile(tarball, join(dir, 'agent.tgz'));
    await repackWithVersion(tarball, '0.1.1-upgrade.1', dir);
    await copyFile(INSTALL_SH, join(dir, 'install.sh'));
    const config = { nodeId: runId, source: { url: 'file:///mnt/install/desired.json', pollIntervalSeconds: 5 }, docker: { enabled: false }, libvirt: { enabled: false }, metrics: { listen: 'off' } };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    await writeFile(join(dir, 'desired.json'), JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: runId, generation: 1, workloads: [] }));
    box = await SystemdContainer.start(runId, { '/mnt/install': dir, '/mnt/node.tgz': await nodeTarball(), '/run/docker.sock': '/var/run/docker.sock' });
  });
  after(async () => {
    await removeTestContainers(runId);
    await cleanupDockerByLabel(runId);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('installs, enables and starts the unit; systemctl start returns once READY=1 is sent after the first reconcile', async () => {
    const r = await installInBox('--tarball', '/mnt/install/agent.tgz', '--config', '/mnt/install/config.json');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /systemctl start persys-agent/);
    assert.equal((await box.exec(['systemctl', 'is-active', 'persys-agent'])).stdout.trim(), 'active');
    assert.equal((await box.exec(['systemctl', 'is-enabled', 'persys-agent'])).stdout.trim(), 'enabled');
    const p = await state();
    // StatusText is sent with READY=1 once the first cycle ran; Type=notify is "active" only after READY.
    assert.match(p.StatusText ?? '', /^reconciled generation (1|none): 0 workload\(s\)$/);
    assert.equal(p.NRestarts, '0');
    assert.notEqual(p.MainPID, '0');
  });

  it('systemd-analyze verify is clean and security prints the exposure of the installed unit', async () => {
    const v = await box.exec(['systemd-analyze', 'verify', '/etc/systemd/system/persys-agent.service']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stderr.trim(), '', `verify complained:\n${v.stderr}`);
    const s = await box.exec(['systemd-analyze', 'security', '--no-pager', 'persys-agent.service']);
    const m = /Overall exposure level for persys-agent\.service: (\d+\.\d+) (\w+)/.exec(s.stdout);
    assert.ok(m, s.stdout + s.stderr);
    console.log(`# systemd-analyze security (live, in the systemd container): ${m[1]} ${m[2]}`);
    assert.ok(Number(m[1]) <= 4.0);
  });

  it('logs JSON lines to the journal, keeps state in $STATE_DIRECTORY (0700) and writes nothing next to its working directory', async () => {
    await waitFor('the agent picked up generation 1', (p) => p.StatusText === 'reconciled generation 1: 0 workload(s)');
    const j = await box.exec(['journalctl', '-u', 'persys-agent', '-o', 'cat', '--no-pager']);
    const json = j.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const start = json.find((l) => l.msg === 'persys-agent starting');
    assert.ok(start, `no start line in the journal:\n${j.stdout}`);
    assert.equal(start.stateDir, '/var/lib/persys-agent');
    assert.equal(start.nodeId, runId);
    assert.ok(json.some((l) => l.msg === 'new desired state' && l.generation === 1), j.stdout);
    const ls = await box.exec(['stat', '-c', '%a', '/var/lib/persys-agent']);
    assert.equal(ls.stdout.trim(), '700');
    assert.equal((await box.exec(['test', '-f', '/var/lib/persys-agent/state.json'])).code, 0);
    assert.equal((await box.exec(['test', '-e', '/.persys-agent'])).code, 1, 'a state dir next to the working directory');
    const st = await box.exec(['persys-agent', 'status']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`node ${runId} .*generation 1`));
  });

  it('a second install with the same inputs changes nothing and does not restart', async () => {
    const before = await state();
    const r = await installInBox('--tarball', '/mnt/install/agent.tgz', '--config', '/mnt/install/config.json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /No change detected/);
    assert.equal((await state()).MainPID, before.MainPID);
  });

  it('sends WATCHDOG=1 at half of WatchdogSec, and a hung agent is killed by the watchdog and restarted', async () => {
    await box.exec(['mkdir', '-p', '/etc/systemd/system/persys-agent.service.d']);
    await box.exec(['sh', '-c', 'printf "[Service]\\nWatchdogSec=4\\n" >/etc/systemd/system/persys-agent.service.d/50-test.conf && systemctl daemon-reload']);
    assert.equal((await box.exec(['systemctl', 'restart', 'persys-agent'])).code, 0);
    const a = await state();
    await sleep(5000);
    const b = await state();
    assert.ok(Number(b.WatchdogTimestampMonotonic) > Number(a.WatchdogTimestampMonotonic), `no watchdog ping in 5 s: ${a.WatchdogTimestampMonotonic} -> ${b.WatchdogTimestampMonotonic}`);
    assert.equal(b.MainPID, a.MainPID, 'pings must keep it alive');
    // SIGSTOP: the event loop stops, the pings stop, systemd's watchdog fires.
    await box.exec(['kill', '-STOP', b.MainPID ?? '0']);
    const c = await waitFor('restarted after the watchdog fired', (p) => p.ActiveState === 'active' && p.MainPID !== b.MainPID && p.MainPID !== '0');
    assert.equal(Number(c.NRestarts), Number(b.NRestarts) + 1);
    const j = await box.exec(['journalctl', '-u', 'persys-agent', '--no-pager', '-o', 'cat']);
    assert.match(j.stdout, /Watchdog timeout \(limit 4s\)/);
    await box.exec(['sh', '-c', 'rm -rf /etc/systemd/system/persys-agent.service.d && systemctl daemon-reload']);
  });

  it('systemctl restart works, and a kill -9 of the agent is restarted by systemd', async () => {
    const a = await state();
    assert.equal((await box.exec(['systemctl', 'restart', 'persys-agent'])).code, 0);
    const b = await state();
    assert.equal(b.ActiveState, 'active');
    assert.notEqual(b.MainPID, a.MainPID);
    await box.exec(['kill', '-9', b.MainPID ?? '0']);
    const c = await waitFor('restarted after kill -9 (RestartSec=5)', (p) => p.ActiveState === 'active' && p.MainPID !== b.MainPID && p.MainPID !== '0');
    assert.equal(Number(c.NRestarts), Number(b.NRestarts) + 1);
    assert.match(c.StatusText ?? '', /^reconciled generation 1/);
  });

  it('an upgrade swaps current and restarts the agent on the new version; the config stays', async () => {
    const cfgBefore = (await box.exec(['sha256sum', '/etc/persys-agent/config.json'])).stdout;
    const a = await state();
    const r = await installInBox('--tarball', '/mnt/install/persys-agent-0.1.1-upgrade.1.tgz');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /current -> 0\.1\.1-upgrade\.1 \(was 0\.1\.0\)/);
    assert.match(r.stdout, /systemctl restart persys-agent/);
    const b = await waitFor('active on the new version', (p) => p.ActiveState === 'active' && p.MainPID !== a.MainPID);
    assert.ok(b);
    assert.equal((await box.exec(['readlink', '/opt/persys-agent/current'])).stdout.trim(), '0.1.1-upgrade.1');
    assert.equal((await box.exec(['sha256sum', '/etc/persys-agent/config.json'])).stdout, cfgBefore);
    const v = await box.exec(['persys-agent', 'version']);
    assert.match(v.stdout, /^persys-agent 0\.1\.1-upgrade\.1 \(node v22\./);
  });

  it('with Docker on, the hardened unit runs a container on the real dockerd (docker.sock mounted read-only)', async () => {
    const workload = { id: 'w1', type: 'container', revision: '1', desiredState: 'running', spec: { image: 'persys-test/busybox:1', command: ['sleep', '3600'], network: { mode: 'none' } } };
    await writeFile(join(dir, 'desired-docker.json'), JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: runId, generation: 2, workloads: [workload] }));
    // As an operator would: edit the kept config, restart.
    const cfg = { nodeId: runId, source: { url: 'file:///mnt/install/desired-docker.json', pollIntervalSeconds: 5 }, docker: { socketPath: '/run/docker.sock' }, libvirt: { enabled: false }, metrics: { listen: 'off' } };
    await writeFile(join(dir, 'config-docker.json'), JSON.stringify(cfg));
    assert.equal((await box.exec(['sh', '-c', 'cp /mnt/install/config-docker.json /etc/persys-agent/config.json && systemctl restart persys-agent'])).code, 0);
    await waitFor('one workload reconciled', (p) => p.StatusText === 'reconciled generation 2: 1 workload(s)', 90_000);
    const deadline = Date.now() + 60_000;
    let running = '';
    while (Date.now() < deadline) {
      running = (await sh('/usr/bin/docker', ['ps', '-q', '--filter', `label=dev.persys.node-id=${runId}`, '--filter', 'status=running'])).stdout.trim();
      if (running) break;
      await sleep(500);
    }
    assert.ok(running, 'no running container of the node on the host dockerd');
    const st = await box.exec(['persys-agent', 'status']);
    assert.match(st.stdout, /w1 .*Running/, st.stdout);
  });

  it('uninstall stops and removes the unit (none left), keeps config, state and the running workload', async () => {
    const r = await box.exec(['persys-agent-uninstall.sh']);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const files = await box.exec(['systemctl', 'list-unit-files', '--no-legend', 'persys-agent.service']);
    assert.equal(files.stdout.trim(), '', `unit still known: ${files.stdout}`);
    assert.notEqual((await box.exec(['systemctl', 'cat', 'persys-agent'])).code, 0);
    assert.notEqual((await box.exec(['pgrep', '-f', 'persys-agent/current'])).code, 0, 'the agent still runs');
    assert.equal((await box.exec(['test', '-e', '/opt/persys-agent'])).code, 1);
    assert.equal((await box.exec(['test', '-f', '/etc/persys-agent/config.json'])).code, 0);
    assert.equal((await box.exec(['test', '-f', '/var/lib/persys-agent/state.json'])).code, 0);
    const left = await sh('/usr/bin/docker', ['ps', '-q', '--filter', `label=dev.persys.node-id=${runId}`, '--filter', 'status=running']);
    assert.notEqual(left.stdout.trim(), '', 'uninstall (without --remove-workloads) must leave workloads running');
  });
});
