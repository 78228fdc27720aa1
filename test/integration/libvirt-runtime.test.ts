/**
 * The libvirt runtime against the real libvirtd (qemu:///system) with a real TCG guest (the host's
 * Debian kernel + a busybox initramfs, test/helpers/guest.ts) on an isolated libvirt network this suite
 * defines. The guest reads local-hostname from the seed ISO and uses it as its DHCP hostname, so the
 * lease proves the seed was attached and readable. No packet is ever sent to a guest: its address is
 * read from libvirt (domifaddr, net-dhcp-leases) only.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';

import { pino } from 'pino';
import { Agent as UndiciAgent } from 'undici';
import * as v from 'valibot';

import { WorkloadError } from '../../src/errors/index.js';
import { specHash } from '../../src/reconcile/canonical.js';
import { domainUuid } from '../../src/runtimes/libvirt/ids.js';
import { LibvirtRuntime } from '../../src/runtimes/libvirt/libvirt-runtime.js';
import { keyFingerprint } from '../../src/runtimes/libvirt/ssh-keys.js';
import type { ObservedWorkload, RuntimeEvent, RuntimeState } from '../../src/runtimes/runtime.js';
import { vmWorkload, type VmWorkload } from '../../src/spec/desired-state.js';
import { waitFor } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { buildTestGuest, type TestGuest } from '../helpers/guest.js';
import { cleanupLibvirtByNodeId, cleanupStaleLibvirtTestResources, createTestNetwork, dhcpLeases, domainNames, virsh, virshTry, type TestNetwork } from '../helpers/libvirt.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const run = promisify(execFile);
const skip = await requireEngine('libvirt');
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUKJwQKe7iM1d0PHLMi7ahm5BPkn5ShvY8ztOyaBsCx alice@example';
const MiB = 1024 * 1024;

const isCode = (code: string, message?: RegExp) => (err: unknown) =>
  err instanceof WorkloadError && err.code === code && (message === undefined || message.test(err.message));

describe('libvirt runtime on a real libvirtd with a TCG guest', { skip, timeout: 900_000 }, () => {
  const nodeId = testNodeId('test-lvrt');
  const hex = randomBytes(3).toString('hex');
  const prefix = `pt${hex}-`;
  const logger = pino({ level: process.env.PERSYS_TEST_LOG === '1' ? 'debug' : 'silent' });
  let dir: string;
  let guest: TestGuest;
  let net: TestNetwork;
  let rt: LibvirtRuntime;
  let https: Server | undefined;
  let httpsUrl = '';
  let httpsHits = 0;
  let baseImage: Buffer = Buffer.alloc(0);
  const changes: string[] = [];
  const events: RuntimeEvent[] = [];
  const eventsAbort = new AbortController();
  let eventsDone: Promise<void> | undefined;

  const vm = (id: string, spec: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): VmWorkload =>
    v.parse(vmWorkload, {
      id,
      type: 'vm',
      revision: '1',
      spec: {
        vcpus: 1,
        memoryMiB: 128,
        domainType: 'qemu',
        boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
        disks: [{ name: 'root', sizeBytes: 64 * MiB }],
        networks: [{ network: net.name }],
        shutdownTimeoutSeconds: 20,
        ...spec,
      },
      ...extra,
    });
  // What the executor keeps in each record: the runtime's state (the generated password).
  const states = new Map<string, RuntimeState>();
  const ctxOf = (w: VmWorkload, ms = 180_000) => ({ nodeId, specHash: specHash(w), runtimeState: states.get(w.id), signal: AbortSignal.timeout(ms) });
  const createOnly = async (w: VmWorkload): Promise<ObservedWorkload> => {
    const ctx = ctxOf(w);
    await rt.prepare(w, ctx);
    const created = await rt.create(w, ctx);
    if (created.runtimeState) states.set(w.id, created.runtimeState);
    return created;
  };
  const apply = async (w: VmWorkload): Promise<ObservedWorkload> => {
    const o = await createOnly(w);
    await rt.start(o, AbortSignal.timeout(60_000));
    return o;
  };
  const consoleLog = (name: string) => readFile(join(dir, 'state', 'libvirt', 'console', `${name}.log`), 'utf8').catch(() => '');
  const vmDir = (name: string) => join(dir, 'storage', 'vms', name);
  const exists = (p: string) => stat(p).then(() => true, () => false);

  before(async () => {
    await cleanupStaleLibvirtTestResources();
    dir = await mkdtemp(join(tmpdir(), 'persys-lvrt-'));
    // QEMU runs as libvirt-qemu: it must be able to reach the disks under the storage directory.
    await chmod(dir, 0o711);
    await mkdir(join(dir, 'images'), { mode: 0o755 });
    guest = await buildTestGuest();
    net = await createTestNetwork();

    // A base image and an HTTPS server (throwaway CA) that serves it, for the download path.
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'images', 'base.qcow2'), String(32 * MiB)]);
    baseImage = await readFile(join(dir, 'images', 'base.qcow2'));
    await mkdir(join(dir, 'pki'), { mode: 0o700 });
    const pki = await makeThrowawayCa(join(dir, 'pki'));
    https = createServer({ cert: await readFile(pki.serverCert), key: await readFile(pki.serverKey) }, (req, res) => {
      httpsHits++;
      if (req.url === '/base.qcow2') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': baseImage.length });
        res.end(baseImage);
      } else {
        res.writeHead(404).end('no such image');
      }
    });
    await new Promise<void>((r) => https!.listen(0, '127.0.0.1', r));
    httpsUrl = `https://127.0.0.1:${(https.address() as AddressInfo).port}`;
    const dispatcher = new UndiciAgent({ connect: { ca: await readFile(pki.caCert, 'utf8') } });

    rt = new LibvirtRuntime({
      uri: 'qemu:///system',
      nodeId,
      namePrefix: prefix,
      domainType: 'qemu',
      stateDir: join(dir, 'state'),
      storageDir: join(dir, 'storage'),
      allowedPathPrefixes: [guest.dir, join(dir, 'images')],
      ipWaitSeconds: 60,
      commandTimeoutSeconds: 60,
      downloadTimeoutSeconds: 60,
      logger,
      onVmChange: (id) => changes.push(id),
      dispatcher,
      addressPollMs: { fast: 1000, slow: 5000 },
    });
    eventsDone = rt.events(eventsAbort.signal, (e) => events.push(e)).catch(() => undefined);
  });

  after(async () => {
    eventsAbort.abort();
    await eventsDone;
    await rt?.close();
    await cleanupLibvirtByNodeId(nodeId).catch(() => undefined);
    for (const name of (await domainNames().catch(() => [] as string[])).filter((n) => n.startsWith(prefix))) {
      await virshTry('destroy', name);
      await virshTry('undefine', name, '--nvram');
    }
    await net?.remove();
    await new Promise<void>((r) => (https ? https.close(() => r()) : r()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('health is up with the daemon version; an unreachable libvirt is down with its exact message', async () => {
    const h = await rt.health();
    assert.equal(h.up, true, h.reason);
    assert.match(h.reason, /^libvirt \d+\.\d+\.\d+ .*domain type qemu$/);
    assert.ok((h.capacity?.cpus ?? 0) > 0);
    const down = new LibvirtRuntime({
      uri: 'qemu:///system?socket=/nonexistent/libvirt-sock',
      nodeId,
      namePrefix: prefix,
      domainType: 'auto',
      stateDir: join(dir, 'state-down'),
      allowedPathPrefixes: [],
      ipWaitSeconds: 60,
      commandTimeoutSeconds: 10,
      downloadTimeoutSeconds: 10,
      logger,
    });
    const dh = await down.health();
    await down.close();
    assert.equal(dh.up, false);
    assert.match(dh.reason, /Failed to connect socket to '\/nonexistent\/libvirt-sock'/);
  });

  let a: ObservedWorkload;
  let ip = '';
  const hostname = `seed-${hex}`;

  it('defines and starts the VM; its leased IPv4 and login are known within 60 s; the lease carries the seed hostname', async (t) => {
    const w = vm('a', { hostname, login: { username: 'alice', sshAuthorizedKeys: [KEY], generatePassword: true, reportPassword: true } });
    const started = Date.now();
    a = await apply(w);
    assert.equal(a.name, `${prefix}a`);
    assert.equal(a.runtimeId, domainUuid(nodeId, 'a'));
    const seen = await rt.observe();
    const mine = seen.find((o) => o.workloadId === 'a');
    assert.equal(mine?.state, 'running');
    assert.equal(mine?.revision, '1');
    assert.equal(mine?.specHash, specHash(w));

    const status = await waitFor('an IPv4 for vm a', () => {
      const s = rt.vmStatus('a', states.get('a'));
      return s?.interfaces[0]?.ips.some((x) => !x.includes(':')) ? s : undefined;
    }, 60_000, 500);
    const bootToIp = (Date.now() - started) / 1000;
    t.diagnostic(`boot-to-IP: ${bootToIp.toFixed(1)} s (define + start + DHCP under TCG)`);
    const iface = status.interfaces[0]!;
    assert.equal(iface.source, 'lease');
    ip = (iface.ips[0] ?? '').replace(/\/\d+$/, '');
    assert.ok(ip.startsWith(`${net.prefix}.`), `${ip} is in the test network`);
    assert.deepEqual(status.login?.sshKeyFingerprints, [keyFingerprint(KEY)]);
    assert.equal(status.login?.ssh, `ssh alice@${ip}`);
    assert.equal(status.login?.console, `virsh -c qemu:///system console ${prefix}a`);
    assert.match(status.login?.password ?? '', /^[A-Za-z0-9_-]{24}$/);
    assert.ok(changes.includes('a'), 'the address change was announced');

    const lease = await waitFor('the lease with the seed hostname', async () => (await dhcpLeases(net.name)).find((l) => l.mac === iface.mac), 30_000);
    assert.equal(lease.hostname, hostname, 'the guest took local-hostname from the seed ISO');
    assert.equal(lease.ip, ip);
    const log = await consoleLog(a.name);
    assert.match(log, new RegExp(`persys-guest: seed: instance-id=iid-a-1-[0-9a-f]{12} local-hostname=${hostname} files=meta-data,user-data`));

    const usage = await rt.usage();
    const u = usage.find((x) => x.workloadId === 'a');
    assert.ok((u?.cpuSeconds ?? 0) > 0, JSON.stringify(usage));
    assert.ok((u?.memoryBytes ?? 0) > 0);
    assert.ok(events.some((e) => e.workloadId === 'a' && e.action === 'started'), `a started event: ${JSON.stringify(events)}`);
  });

  it('stops with an ACPI shutdown the guest honours (no destroy needed)', async () => {
    const t0 = Date.now();
    await rt.stop(a, AbortSignal.timeout(60_000));
    const took = (Date.now() - t0) / 1000;
    assert.ok(took < 20, `stopped in ${took} s, before the 20 s timeout`);
    assert.equal((await rt.inspect(a))?.state, 'stopped');
    assert.match((await virsh('domstate', a.name, '--reason')).trim(), /^shut off \(shutdown\)$/);
    assert.match(await consoleLog(a.name), /persys-guest: power button, powering off/);
    await waitFor('the address is dropped', () => rt.vmStatus('a', states.get('a'))?.interfaces[0]?.ips.length === 0, 10_000);
    await rt.start(a, AbortSignal.timeout(60_000));
  });

  it('a revision change redefines the same domain, keeps its disk and password, and boots the new seed', async () => {
    const disk = join(vmDir(a.name), 'disk-root.qcow2');
    const inode = (await stat(disk)).ino;
    const password = rt.vmStatus('a', states.get('a'))?.login?.password;
    const w2 = vm('a', { hostname, login: { username: 'alice', sshAuthorizedKeys: [KEY], generatePassword: true, reportPassword: true } }, { revision: '2' });
    // What the executor does for a recreate: prepare the new spec, stop and remove the old domain, create and start.
    const ctx = ctxOf(w2);
    await rt.prepare(w2, ctx);
    await rt.stop(a, ctx.signal);
    await rt.remove(a, ctx.signal, 'replace');
    assert.equal((await stat(disk)).ino, inode, 'the disk survived the remove of a recreate');
    const b = await rt.create(w2, ctx);
    assert.equal(b.runtimeState?.data.password, states.get('a')?.data.password, 'create hands back the kept password');
    await rt.start(b, ctx.signal);
    assert.equal(b.runtimeId, a.runtimeId, 'same UUID: a redefinition');
    assert.equal(b.revision, '2');
    assert.equal((await stat(disk)).ino, inode, 'the disk was reused');
    await waitFor('the guest booted the revision-2 seed', async () => /instance-id=iid-a-2-/.test(await consoleLog(b.name)), 60_000, 500);
    await waitFor('an IPv4 again', () => rt.vmStatus('a', states.get('a'))?.interfaces[0]?.ips.length, 60_000, 500);
    assert.equal(rt.vmStatus('a', states.get('a'))?.login?.password, password, 'the generated password stays');
    assert.equal(rt.vmStatus('a', states.get('a'))?.interfaces[0]?.ips[0]?.replace(/\/\d+$/, ''), ip, 'the derived MAC keeps the lease');
    a = b;
  });

  it('a guest that ignores ACPI is destroyed after the shutdown timeout; one without an address gets VM_NO_IP and is still watched', async () => {
    // A second runtime on the same node with a short ipWait, so VM_NO_IP comes within the test.
    const changed: string[] = [];
    const quick = new LibvirtRuntime({
      uri: 'qemu:///system',
      nodeId,
      namePrefix: prefix,
      domainType: 'qemu',
      stateDir: join(dir, 'state'),
      storageDir: join(dir, 'storage'),
      allowedPathPrefixes: [guest.dir],
      ipWaitSeconds: 4,
      commandTimeoutSeconds: 60,
      downloadTimeoutSeconds: 60,
      logger,
      onVmChange: (id) => changed.push(id),
      addressPollMs: { fast: 1000, slow: 5000 },
    });
    try {
      const w = vm('s', { boot: { kernel: guest.kernel, initrd: guest.initrd, cmdline: `${guest.cmdline} persys.noacpi persys.nodhcp` }, shutdownTimeoutSeconds: 3 });
      const ctx = ctxOf(w);
      await quick.prepare(w, ctx);
      const s = await quick.create(w, ctx);
      await quick.start(s, ctx.signal);
      const warned = await waitFor('VM_NO_IP', () => quick.vmStatus('s')?.warning, 30_000, 250);
      assert.equal(warned.code, 'VM_NO_IP');
      assert.equal(warned.transient, true);
      assert.match(warned.message, /^no IPv4 address for 52:54:00(:[0-9a-f]{2}){3} \d+ s after start; looked in: agent \(.*\), lease, arp/);
      assert.ok(changed.includes('s'), 'the warning was announced');
      assert.deepEqual(quick.vmStatus('s')?.interfaces[0]?.ips, []);
      await waitFor('the guest is up and ignoring ACPI', async () => /acpid: disabled/.test(await consoleLog(s.name)), 60_000, 500);
      const t0 = Date.now();
      await quick.stop(s, AbortSignal.timeout(60_000));
      const took = (Date.now() - t0) / 1000;
      assert.ok(took >= 3 && took < 15, `destroyed after the 3 s timeout (took ${took} s)`);
      assert.match((await virsh('domstate', s.name, '--reason')).trim(), /^shut off \(destroyed\)$/);
      await quick.remove(s, AbortSignal.timeout(60_000), 'removed-from-desired');
    } finally {
      await quick.close();
    }
  });

  it('remove deletes the domain, its disks, seed and console log; a retained disk stays', async () => {
    const w = vm('b', { disks: [{ name: 'root', sizeBytes: 16 * MiB }, { name: 'keep', sizeBytes: 16 * MiB, reclaimPolicy: 'retain' }] }, { desiredState: 'stopped' });
    const b = await createOnly(w);
    assert.equal(b.state, 'created');
    assert.ok(await exists(join(vmDir(b.name), 'disk-root.qcow2')));
    assert.ok(await exists(join(vmDir(b.name), 'seed.iso')));
    await rt.remove(b, AbortSignal.timeout(60_000), 'removed-from-desired');
    assert.ok(!(await domainNames()).includes(b.name), 'domain undefined');
    assert.ok(!(await exists(join(vmDir(b.name), 'disk-root.qcow2'))), 'disk deleted');
    assert.ok(!(await exists(join(vmDir(b.name), 'seed.iso'))), 'seed deleted');
    assert.ok(await exists(join(vmDir(b.name), 'disk-keep.qcow2')), 'retained disk kept');
    assert.equal((await rt.observe()).some((o) => o.workloadId === 'b'), false);

    // Removing the running VM a (no recreate under way) takes its disk and console log too.
    await rt.remove(a, AbortSignal.timeout(60_000), 'removed-from-desired');
    assert.ok(!(await domainNames()).includes(a.name));
    assert.ok(!(await exists(vmDir(a.name))), 'the VM directory is gone');
    assert.equal(await consoleLog(a.name), '');
    assert.equal(rt.vmStatus('a', states.get('a')), undefined);
  });

  it('a start that libvirt refuses is VM_START_FAILED with its exact message', async () => {
    const w = vm('c', { networks: [{ network: `persys-no-such-net-${hex}` }] });
    const c = await createOnly(w);
    await assert.rejects(rt.start(c, AbortSignal.timeout(60_000)), isCode('VM_START_FAILED', new RegExp(`Network not found: no network with matching name 'persys-no-such-net-${hex}'`)));
    await rt.remove(c, AbortSignal.timeout(60_000), 'removed-from-desired');
  });

  it('a definition libvirt refuses is VM_DEFINE_FAILED with its exact message, and leaves no files', async () => {
    const name = `${prefix}d`;
    const foreign = join(dir, 'foreign.xml');
    await writeFile(foreign, `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>`);
    await virsh('define', foreign);
    try {
      await assert.rejects(createOnly(vm('d')), isCode('VM_DEFINE_FAILED', new RegExp(`domain '${name}' already exists with uuid`)));
      assert.ok(!(await exists(join(vmDir(name), 'disk-root.qcow2'))), 'the new disk was removed');
      assert.ok(!(await exists(join(vmDir(name), 'seed.iso'))), 'the seed was removed');
      assert.equal((await rt.observe()).some((o) => o.workloadId === 'd'), false, 'a foreign domain is never ours');
    } finally {
      await virshTry('undefine', name);
    }
  });

  it('host paths outside libvirt.allowedPathPrefixes are POLICY_DENIED', async () => {
    await assert.rejects(createOnly(vm('e', { boot: { kernel: '/etc/passwd' } })), isCode('POLICY_DENIED', /boot\.kernel \/etc\/passwd/));
    await assert.rejects(createOnly(vm('e', { disks: [{ name: 'root', image: { path: '/etc/hostname', format: 'raw' } }] })), isCode('POLICY_DENIED'));
    assert.equal((await domainNames()).includes(`${prefix}e`), false);
  });

  it('base images: a local one and an https one verified by sha256, cached by digest, disks are overlays', async () => {
    const digest = createHash('sha256').update(baseImage).digest('hex');
    const local = await createOnly(vm('f', { disks: [{ name: 'root', image: { path: join(dir, 'images', 'base.qcow2') } }] }, { desiredState: 'stopped' }));
    const cached = join(dir, 'storage', 'images', `sha256-${digest}.qcow2`);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', join(vmDir(local.name), 'disk-root.qcow2')])).stdout) as Record<string, unknown>;
    assert.equal(info['backing-filename'], cached);
    assert.equal(info['virtual-size'], 32 * MiB);
    assert.equal((await stat(cached)).mode & 0o777, 0o644);

    await rm(cached);
    const hits = httpsHits;
    const image = { url: `${httpsUrl}/base.qcow2`, sha256: digest };
    const g = await createOnly(vm('g', { disks: [{ name: 'root', image, sizeBytes: 48 * MiB }] }, { desiredState: 'stopped' }));
    assert.equal(httpsHits, hits + 1, 'downloaded once');
    assert.ok(await exists(cached));
    const ginfo = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', join(vmDir(g.name), 'disk-root.qcow2')])).stdout) as Record<string, unknown>;
    assert.equal(ginfo['virtual-size'], 48 * MiB);
    const h = await createOnly(vm('h', { disks: [{ name: 'root', image }] }, { desiredState: 'stopped' }));
    assert.equal(httpsHits, hits + 1, 'the second VM uses the cache');

    await assert.rejects(
      createOnly(vm('i', { disks: [{ name: 'root', image: { url: `${httpsUrl}/base.qcow2`, sha256: '0'.repeat(64) } }] })),
      (err: unknown) => isCode('IMAGE_PULL_FAILED', new RegExp(`sha256 of the download is ${digest}, the spec expects 0{64}`))(err) && (err as WorkloadError).transient === false,
    );
    await assert.rejects(createOnly(vm('i', { disks: [{ name: 'root', image: { url: `${httpsUrl}/missing.qcow2`, sha256: '1'.repeat(64) } }] })), isCode('IMAGE_NOT_FOUND', /HTTP 404/));
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', join(dir, 'images', 'base.qcow2'), join(dir, 'images', 'overlay.qcow2')]);
    await assert.rejects(createOnly(vm('i', { disks: [{ name: 'root', image: { path: join(dir, 'images', 'overlay.qcow2') } }] })), isCode('INVALID_SPEC', /backing file/));
    assert.equal((await domainNames()).includes(`${prefix}i`), false);
    for (const o of [local, g, h]) await rt.remove(o, AbortSignal.timeout(60_000), 'removed-from-desired');
  });
});
