/**
 * install.sh as an operator runs it, into a scratch root (--root DIR) on this machine: first install,
 * a second run that changes nothing, an upgrade between two local tarballs, --dry-run, uninstall,
 * --purge and the refusals. Also the linters: shellcheck and systemd-analyze (verify runs inside the
 * real systemd, in install-systemd.test.ts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';
import { makeThrowawayCa } from '../helpers/tls.js';
import { INSTALL_SH, nodeTarball, packAgent, repackWithVersion, sh, UNIT_FILE, type ExecResult } from '../helpers/systemd-container.js';

const skip = await requireEngine('systemd');
const dockerSkip = await requireEngine('docker');
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const dockerPs = async (nodeId: string, all = false): Promise<string[]> =>
  (await sh('/usr/bin/docker', ['ps', '-q', ...(all ? ['-a'] : []), '--filter', `label=dev.persys.node-id=${nodeId}`])).stdout.split('\n').filter((x) => x !== '');

/** Every path under dir with its type, mode, size, mtime and inode: equal snapshots = nothing written. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      out.set(p.slice(dir.length), `${st.mode}:${st.size}:${st.mtimeMs}:${st.ino}`);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

describe('install.sh into --root DIR', { skip }, () => {
  let dir: string;
  let tarball: string;
  let upgrade: string;
  let node: string;
  const install = (root: string, ...args: string[]): Promise<ExecResult> =>
    sh('bash', [INSTALL_SH, '--root', root, '--node-tarball', node, ...args], { timeoutMs: 300_000 });

  before(async () => {
    dir = await mkdtemp('/var/tmp/persys-install-test-');
    await chmod(dir, 0o755);
    tarball = await packAgent(dir);
    upgrade = await repackWithVersion(tarball, '0.1.1-upgrade.1', dir);
    node = await nodeTarball();
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shellcheck finds nothing in install.sh, the scripts it writes and the testbed script', async () => {
    const root = await mkdtemp(join(dir, 'sc-'));
    const r = await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/nodes/{nodeId}.json');
    assert.equal(r.code, 0, r.stderr);
    const files = [INSTALL_SH, join(root, 'usr/local/bin/persys-agent-uninstall.sh'), join(root, 'usr/local/bin/persys-agent'), join(import.meta.dirname, '../../scripts/testbed/systemd.sh')];
    const sc = await sh('shellcheck', files);
    assert.equal(sc.code, 0, `shellcheck:\n${sc.stdout}${sc.stderr}`);
    assert.equal(sc.stdout, '');
  });

  it('systemd-analyze security rates the unit 4.0 or better (OK)', async () => {
    const r = await sh('systemd-analyze', ['security', '--offline=true', UNIT_FILE]);
    const m = /Overall exposure level for persys-agent\.service: (\d+\.\d+) (\w+)/.exec(r.stdout);
    assert.ok(m, `no exposure line in:\n${r.stdout}\n${r.stderr}`);
    console.log(`# systemd-analyze security --offline=true: exposure ${m[1]} ${m[2]}`);
    assert.ok(Number(m[1]) <= 4.0, `exposure ${m[1]} ${m[2]}: the goal is <= 4.0 OK`);
  });

  it('first install lays out code, node, config, state dir, CLI, uninstaller and unit; a second run changes nothing', async () => {
    const root = await mkdtemp(join(dir, 'twice-'));
    const first = await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/nodes/{nodeId}.json', '--node-id', 'edge-7');
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /--root: not touching systemd/);
    assert.equal(await readlink(join(root, 'opt/persys-agent/current')), '0.1.0');
    assert.match(await readlink(join(root, 'opt/persys-agent/bin/node')), /^\.\.\/node\/v22\.\d+\.\d+\/bin\/node$/);
    const cfgStat = await stat(join(root, 'etc/persys-agent/config.json'));
    assert.equal(cfgStat.mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(await readFile(join(root, 'etc/persys-agent/config.json'), 'utf8')), {
      nodeId: 'edge-7',
      source: { url: 'https://fleet.example/nodes/{nodeId}.json' },
    });
    assert.equal((await stat(join(root, 'etc/persys-agent'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(root, 'var/lib/persys-agent'))).mode & 0o777, 0o700);
    assert.equal(await readFile(join(root, 'etc/systemd/system/persys-agent.service'), 'utf8'), await readFile(UNIT_FILE, 'utf8'));
    // The installed code runs with the installed node (bundled dependencies, no npm on the host).
    const v = await sh(join(root, 'opt/persys-agent/bin/node'), [join(root, 'opt/persys-agent/current/dist/src/cli/main.js'), 'version']);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /^persys-agent 0\.1\.0 \(node v22\./);

    const before2 = await snapshot(root);
    const second = await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/nodes/{nodeId}.json', '--node-id', 'edge-7');
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /No change detected/);
    assert.deepEqual(await snapshot(root), before2, 'the second run wrote something');
  });

  it('an upgrade swaps `current` atomically, keeps config and state, and keeps the previous version', async () => {
    const root = await mkdtemp(join(dir, 'upgrade-'));
    assert.equal((await install(root, '--tarball', tarball, '--source-url', 'file:///var/lib/persys-agent/desired.json')).code, 0);
    const config = await readFile(join(root, 'etc/persys-agent/config.json'));
    await writeFile(join(root, 'var/lib/persys-agent/state.json'), '{"kept":true}\n');
    // A reader that resolves `current` every few ms while the upgrade runs: it must never miss.
    const reader = spawn('bash', ['-c', `misses=0; n=0; while [ ! -e "$1/stop" ]; do n=$((n+1)); [ -e "$1/opt/persys-agent/current/package.json" ] || misses=$((misses+1)); sleep 0.002; done; echo "$n $misses"`, 'reader', root]);
    let readerOut = '';
    reader.stdout.on('data', (c: Buffer) => (readerOut += c.toString()));
    const readerDone = new Promise<void>((res) => reader.on('close', () => res()));
    const up = await install(root, '--tarball', upgrade);
    await writeFile(join(root, 'stop'), '');
    await readerDone;
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /current -> 0\.1\.1-upgrade\.1 \(was 0\.1\.0\)/);
    assert.equal(await readlink(join(root, 'opt/persys-agent/current')), '0.1.1-upgrade.1');
    assert.deepEqual(await readFile(join(root, 'etc/persys-agent/config.json')), config);
    assert.equal(await readFile(join(root, 'var/lib/persys-agent/state.json'), 'utf8'), '{"kept":true}\n');
    assert.ok((await stat(join(root, 'opt/persys-agent/0.1.0'))).isDirectory(), 'the previous version is kept for a rollback');
    const [reads, misses] = readerOut.trim().split(' ').map(Number);
    assert.ok((reads ?? 0) > 0, `the reader ran (${readerOut})`);
    assert.equal(misses, 0, `current was missing in ${misses} of ${reads} reads during the upgrade`);

    // A different config on a later run goes beside the kept one as config.json.new.
    const other = await install(root, '--tarball', upgrade, '--source-url', 'https://other.example/{nodeId}.json');
    assert.equal(other.code, 0, other.stderr);
    assert.match(other.stderr, /kept .*config\.json as it is; the new config is in .*config\.json\.new/);
    assert.deepEqual(await readFile(join(root, 'etc/persys-agent/config.json')), config);
    assert.match(await readFile(join(root, 'etc/persys-agent/config.json.new'), 'utf8'), /other\.example/);
  });

  it('--dry-run prints what it would do and writes nothing (fresh root and upgrade)', async () => {
    const root = await mkdtemp(join(dir, 'dry-'));
    const empty = await snapshot(root);
    const r = await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/{nodeId}.json', '--dry-run');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /dry run: nothing will be changed/);
    assert.match(r.stdout, /would: install persys-agent 0\.1\.0/);
    assert.match(r.stdout, /would: write .*config\.json/);
    assert.deepEqual(await snapshot(root), empty);

    assert.equal((await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/{nodeId}.json')).code, 0);
    const installed = await snapshot(root);
    const up = await install(root, '--tarball', upgrade, '--dry-run');
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /would: current -> 0\.1\.1-upgrade\.1/);
    assert.deepEqual(await snapshot(root), installed);
  });

  it('uninstall removes code, unit and CLI and keeps config and state; --purge removes those too', async () => {
    const root = await mkdtemp(join(dir, 'uninstall-'));
    assert.equal((await install(root, '--tarball', tarball, '--source-url', 'https://fleet.example/{nodeId}.json')).code, 0);
    await writeFile(join(root, 'var/lib/persys-agent/state.json'), '{}');
    const un = await sh('bash', [join(root, 'usr/local/bin/persys-agent-uninstall.sh')]);
    assert.equal(un.code, 0, un.stderr);
    for (const gone of ['opt/persys-agent', 'etc/systemd/system/persys-agent.service', 'usr/local/bin/persys-agent', 'usr/local/bin/persys-agent-uninstall.sh']) {
      await assert.rejects(lstat(join(root, gone)), { code: 'ENOENT' }, `${gone} still there`);
    }
    assert.ok((await stat(join(root, 'etc/persys-agent/config.json'))).isFile());
    assert.ok((await stat(join(root, 'var/lib/persys-agent/state.json'))).isFile());

    assert.equal((await install(root, '--tarball', tarball)).code, 0, 'reinstall over the kept config');
    const purge = await sh('bash', [join(root, 'usr/local/bin/persys-agent-uninstall.sh'), '--purge']);
    assert.equal(purge.code, 0, purge.stderr);
    for (const gone of ['etc/persys-agent', 'var/lib/persys-agent', 'opt/persys-agent']) {
      await assert.rejects(lstat(join(root, gone)), { code: 'ENOENT' }, `${gone} still there after --purge`);
    }
  });

  it('--version V downloads the package from an npm registry (a loopback HTTPS one here); latest by default', async (t) => {
    const pkiDir = await mkdtemp(join(dir, 'pki-'));
    const pki = await makeThrowawayCa(pkiDir);
    const served: string[] = [];
    const files: Record<string, string> = { '/persys-agent/-/persys-agent-0.1.0.tgz': tarball, '/persys-agent/-/persys-agent-0.1.1-upgrade.1.tgz': upgrade };
    const server = createServer({ cert: await readFile(pki.serverCert), key: await readFile(pki.serverKey) }, (req, res) => {
      served.push(req.url ?? '');
      if (req.url === '/fleet/agent-config.json') {
        res.end(JSON.stringify({ source: { url: 'https://fleet.example/{nodeId}.json' }, docker: { enabled: false } }));
        return;
      }
      if (req.url === '/persys-agent/latest') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ name: 'persys-agent', version: '0.1.0' }));
        return;
      }
      const file = files[req.url ?? ''];
      if (!file) {
        res.statusCode = 404;
        res.end();
        return;
      }
      void readFile(file).then((b) => res.end(b));
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    t.after(() => new Promise<void>((res) => server.close(() => res())));
    const registry = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const root = await mkdtemp(join(dir, 'registry-'));
    const env = { ...process.env, CURL_CA_BUNDLE: pki.caCert };
    const run = (...args: string[]) => sh('bash', [INSTALL_SH, '--root', root, '--node-tarball', node, '--registry', registry, ...args], { env, timeoutMs: 300_000 });
    const latest = await run('--config', `${registry}/fleet/agent-config.json`);
    assert.equal(latest.code, 0, latest.stderr);
    assert.deepEqual(JSON.parse(await readFile(join(root, 'etc/persys-agent/config.json'), 'utf8')), { source: { url: 'https://fleet.example/{nodeId}.json' }, docker: { enabled: false } });
    assert.match(latest.stdout, /downloading persys-agent 0\.1\.0 from https:\/\/127\.0\.0\.1/);
    assert.equal(await readlink(join(root, 'opt/persys-agent/current')), '0.1.0');
    const pinned = await run('--version', '0.1.1-upgrade.1');
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.equal(await readlink(join(root, 'opt/persys-agent/current')), '0.1.1-upgrade.1');
    assert.deepEqual(served.sort(), ['/fleet/agent-config.json', '/persys-agent/-/persys-agent-0.1.0.tgz', '/persys-agent/-/persys-agent-0.1.1-upgrade.1.tgz', '/persys-agent/latest']);
    const missing = await run('--version', '9.9.9');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot download persys-agent 9\.9\.9 from/);
    const plain = await run('--version', '0.1.0', '--registry', 'http://registry.example');
    assert.equal(plain.code, 2);
    assert.match(plain.stderr, /--registry must be https:\/\//);
    const plainConfig = await run('--version', '0.1.0', '--config', 'http://fleet.example/agent.json');
    assert.equal(plainConfig.code, 2);
    assert.match(plainConfig.stderr, /--config must be a file or an https:\/\/ URL/);
  });

  it('uninstall --remove-workloads has the agent remove its workloads first (real dockerd)', { skip: dockerSkip }, async (t) => {
    const nodeId = testNodeId('test-install-rm');
    t.after(() => cleanupDockerByLabel(nodeId));
    const root = await mkdtemp(join(dir, 'rmwl-'));
    const desired = join(dir, `${nodeId}.json`);
    const workload = { id: 'w1', type: 'container', revision: '1', desiredState: 'running', spec: { image: 'persys-test/busybox:1', command: ['sleep', '3600'], network: { mode: 'none' } } };
    await writeFile(desired, JSON.stringify({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 4, workloads: [workload] }));
    const config = join(dir, `${nodeId}-config.json`);
    await writeFile(config, JSON.stringify({ nodeId, source: { url: `file://${desired}` }, libvirt: { enabled: false }, metrics: { listen: 'off' } }));
    assert.equal((await install(root, '--tarball', tarball, '--config', config)).code, 0);
    // The installed agent runs (as the service would) and starts the workload.
    const env = { ...process.env, STATE_DIRECTORY: join(root, 'var/lib/persys-agent') };
    const agent = spawn(join(root, 'opt/persys-agent/bin/node'), [join(root, 'opt/persys-agent/current/dist/src/cli/main.js'), 'run', '--config', join(root, 'etc/persys-agent/config.json')], { env, stdio: 'ignore' });
    const exited = new Promise<void>((res) => agent.on('exit', () => res()));
    try {
      const deadline = Date.now() + 90_000;
      while ((await dockerPs(nodeId)).length === 0 && Date.now() < deadline) await sleep(500);
      assert.equal((await dockerPs(nodeId)).length, 1, 'the agent did not start the workload within 90 s');
    } finally {
      agent.kill('SIGTERM');
      await exited;
    }
    assert.equal((await dockerPs(nodeId)).length, 1, 'stopping the agent leaves the workload running');
    const un = await sh('bash', [join(root, 'usr/local/bin/persys-agent-uninstall.sh'), '--remove-workloads'], { timeoutMs: 400_000 });
    assert.equal(un.code, 0, `${un.stdout}\n${un.stderr}`);
    assert.match(un.stdout, new RegExp(`removing the workloads of node ${nodeId}`));
    assert.match(un.stdout, /all workloads removed/);
    assert.deepEqual(await dockerPs(nodeId, true), [], 'a container of the node is left');
    await assert.rejects(lstat(join(root, 'opt/persys-agent')), { code: 'ENOENT' });
  });

  it('refuses clearly: not root, http:// source, no systemd, unsupported distro, no source on a first install', async () => {
    const root = await mkdtemp(join(dir, 'refuse-'));
    const untouched = await snapshot(root);
    // Really not root: the script runs as nobody.
    const copy = join(dir, 'install-as-nobody.sh');
    await cp(INSTALL_SH, copy);
    await chmod(copy, 0o755);
    const nobody = await sh('bash', [copy, '--root', root, '--tarball', tarball, '--source-url', 'https://x.example/'], { uid: 65534, gid: 65534 });
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /must run as root/);

    const http = await install(root, '--tarball', tarball, '--source-url', 'http://fleet.example/{nodeId}.json');
    assert.equal(http.code, 2);
    assert.match(http.stderr, /--source-url http:\/\/fleet\.example\/\{nodeId\}\.json is plain http:\/\/: use https:\/\//);

    // This machine has no systemd as PID 1: without --root the installer refuses (--dry-run for safety).
    const noSystemd = await sh('bash', [INSTALL_SH, '--tarball', tarball, '--source-url', 'https://x.example/', '--dry-run']);
    assert.equal(noSystemd.code, 1);
    assert.match(noSystemd.stderr, /systemd is not running on this host .*Use --no-systemd/);

    // The target root's os-release decides the distro.
    const alpine = await mkdtemp(join(dir, 'alpine-'));
    await mkdir(join(alpine, 'etc'));
    await writeFile(join(alpine, 'etc/os-release'), 'NAME="Alpine Linux"\nID=alpine\n');
    const distro = await install(alpine, '--tarball', tarball, '--source-url', 'https://x.example/');
    assert.equal(distro.code, 1);
    assert.match(distro.stderr, /unsupported distribution 'alpine'/);

    const noSource = await install(root, '--tarball', tarball);
    assert.equal(noSource.code, 2);
    assert.match(noSource.stderr, /a first install needs --source-url URL or --config FILE\|URL/);
    assert.deepEqual(await snapshot(root), untouched, 'a refused install wrote something');

    // A config the agent would refuse (a typo) is refused by the installer, with the key, before code or config are in place.
    const typoRoot = await mkdtemp(join(dir, 'typo-'));
    const typo = join(dir, 'typo.json');
    await writeFile(typo, JSON.stringify({ source: { url: 'https://x.example/' }, sorce: 1 }));
    const bad = await install(typoRoot, '--tarball', tarball, '--config', typo);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /is not valid for persys-agent 0\.1\.0: .*\n.*sorce: unknown key/);
    await assert.rejects(lstat(join(typoRoot, 'opt/persys-agent/current')), { code: 'ENOENT' });
    await assert.rejects(lstat(join(typoRoot, 'etc/persys-agent/config.json')), { code: 'ENOENT' });
  });
});
