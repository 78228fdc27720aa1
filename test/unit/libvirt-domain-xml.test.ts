/**
 * Domain XML for representative VM specs (parsed through the real schema), hostile strings included,
 * each checked against libvirt's own RelaxNG schema with `virt-xml-validate` and read back.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import * as v from 'valibot';

import { WorkloadError } from '../../src/errors/index.js';
import { domainDefinition } from '../../src/runtimes/libvirt/definition.js';
import { buildDomainXml, cdromBusFor, parseDomainXml, type DomainDefinition, type DomainDisk } from '../../src/runtimes/libvirt/domain-xml.js';
import { derivedMac, domainName, domainUuid, instanceId, METADATA_NS } from '../../src/runtimes/libvirt/ids.js';
import { LABELS } from '../../src/runtimes/runtime.js';
import { vmWorkload, type VmWorkload } from '../../src/spec/desired-state.js';
import { decideEngine, findExecutable, REQUIRE_ENGINES_ENV } from '../helpers/engines.js';

const run = promisify(execFile);
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUKJwQKe7iM1d0PHLMi7ahm5BPkn5ShvY8ztOyaBsCx alice@example';

const validator = await findExecutable('virt-xml-validate');
const skipValidate = decideEngine(
  'libvirt',
  validator ? { ok: true, reason: validator } : { ok: false, reason: 'virt-xml-validate not found (apt-get install libxml2-utils libvirt-clients; scripts/testbed/libvirt.sh)' },
  process.env[REQUIRE_ENGINES_ENV],
);

function vm(spec: Record<string, unknown>, extra: Record<string, unknown> = {}): VmWorkload {
  return v.parse(vmWorkload, { id: 'vm1', type: 'vm', revision: 'r1', spec: { vcpus: 1, memoryMiB: 128, ...spec }, ...extra });
}

function definition(w: VmWorkload, disks: DomainDisk[] = [], extra: Partial<Parameters<typeof domainDefinition>[0]> = {}): DomainDefinition {
  return domainDefinition({
    workload: w,
    nodeId: 'edge-7',
    name: domainName('persys-', w.id),
    specHash: 'sha256:abc',
    domainType: 'qemu',
    disks,
    seedIso: '/var/lib/persys/vms/persys-vm1/seed.iso',
    consoleLog: '/var/lib/persys/console/persys-vm1.log',
    ...extra,
  });
}

const disk = (name: string, bus: DomainDisk['bus'] = 'virtio', extra: Partial<DomainDisk> = {}): DomainDisk => ({
  name,
  file: `/var/lib/persys/vms/persys-vm1/disk-${name}.qcow2`,
  format: 'qcow2',
  bus,
  reclaimPolicy: 'delete',
  ...extra,
});

let dir: string;
let n = 0;
async function validate(xml: string): Promise<void> {
  const file = join(dir, `dom-${n++}.xml`);
  await writeFile(file, xml);
  try {
    await run(validator ?? 'virt-xml-validate', [file, 'domain'], { timeout: 30_000 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    assert.fail(`virt-xml-validate rejected the XML: ${e.stderr ?? ''}${e.stdout ?? ''}${e.message}\n${xml}`);
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'persys-domxml-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('stable identities', () => {
  it('derives one UUID per node + workload, in RFC 4122 layout', () => {
    const a = domainUuid('edge-7', 'vm1');
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(domainUuid('edge-7', 'vm1'), a);
    assert.notEqual(domainUuid('edge-8', 'vm1'), a);
    assert.notEqual(domainUuid('edge-7', 'vm2'), a);
  });

  it('derives MACs in the 52:54:00 range, stable per node, workload and NIC index', () => {
    const m = derivedMac('edge-7', 'vm1', 0);
    assert.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.equal(derivedMac('edge-7', 'vm1', 0), m);
    assert.notEqual(derivedMac('edge-7', 'vm1', 1), m);
    assert.notEqual(derivedMac('edge-7', 'vm2', 0), m);
  });

  it('makes an instance-id that changes with the revision and the spec', () => {
    assert.equal(instanceId('vm1', 'r1', 'sha256:0123456789abcdef'), 'iid-vm1-r1-0123456789ab');
    assert.notEqual(instanceId('vm1', 'r2', 'sha256:0123456789abcdef'), instanceId('vm1', 'r1', 'sha256:0123456789abcdef'));
    assert.notEqual(instanceId('vm1', 'r1', 'sha256:ffff'), instanceId('vm1', 'r1', 'sha256:0123'));
  });
});

describe('domain XML', { skip: skipValidate }, () => {
  it('minimal VM: no disks, no NICs, seed on IDE, serial console logged', async () => {
    const def = definition(vm({}));
    const xml = buildDomainXml(def);
    await validate(xml);
    assert.match(xml, /<domain type="qemu">/);
    assert.match(xml, /<name>persys-vm1<\/name>/);
    assert.match(xml, new RegExp(`<uuid>${domainUuid('edge-7', 'vm1')}</uuid>`));
    assert.match(xml, /<memory unit="MiB">128<\/memory>/);
    assert.match(xml, /<type arch="x86_64" machine="pc">hvm<\/type>/);
    assert.match(xml, /<boot dev="hd"\/>/);
    assert.match(xml, /<disk type="file" device="cdrom">[\s\S]*<target dev="hda" bus="ide"\/>[\s\S]*<readonly\/>/);
    assert.match(xml, /<log file="\/var\/lib\/persys\/console\/persys-vm1.log" append="on"\/>/);
    assert.match(xml, /org\.qemu\.guest_agent\.0/);
    assert.doesNotMatch(xml, /graphics/);
  });

  it('representative VM: direct boot, overlay + data disks, network and bridge NICs, login, VNC on loopback', async () => {
    const w = vm({
      vcpus: 2,
      memoryMiB: 2048,
      hostname: 'web-1',
      cpuMode: 'host-model',
      boot: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0 root=/dev/vda1' },
      disks: [
        { name: 'root', image: { path: '/var/lib/libvirt/images/base.qcow2' }, sizeBytes: 10737418240 },
        { name: 'data', sizeBytes: 1073741824, bus: 'scsi', reclaimPolicy: 'retain' },
      ],
      networks: [{ network: 'default' }, { bridge: 'br0', mac: '52:54:00:AA:BB:CC', model: 'e1000' }],
      login: { username: 'alice', sshAuthorizedKeys: [ED25519], generatePassword: true },
      vnc: true,
      shutdownTimeoutSeconds: 30,
    });
    const def = definition(w, [disk('root', 'virtio', { base: 'sha256:00ff' }), disk('data', 'scsi', { reclaimPolicy: 'retain' })], {
      kernel: '/var/lib/persys/boot/sha256-k',
      initrd: '/var/lib/persys/boot/sha256-i',
      domainType: 'kvm',
    });
    const xml = buildDomainXml(def);
    await validate(xml);
    assert.match(xml, /<domain type="kvm">/);
    assert.match(xml, /<vcpu placement="static">2<\/vcpu>/);
    assert.match(xml, /<cpu mode="host-model"\/>/);
    assert.match(xml, /<kernel>\/var\/lib\/persys\/boot\/sha256-k<\/kernel>/);
    assert.match(xml, /<cmdline>console=ttyS0 root=\/dev\/vda1<\/cmdline>/);
    assert.doesNotMatch(xml, /<boot dev=/);
    assert.match(xml, /<target dev="vda" bus="virtio"\/>/);
    assert.match(xml, /<target dev="sda" bus="scsi"\/>/);
    assert.match(xml, new RegExp(`<mac address="${derivedMac('edge-7', 'vm1', 0)}"/>\\s*<source network="default"/>`));
    assert.match(xml, /<mac address="52:54:00:aa:bb:cc"\/>\s*<source bridge="br0"\/>\s*<model type="e1000"\/>/);
    assert.match(xml, /<graphics type="vnc" port="-1" autoport="yes" listen="127.0.0.1">\s*<listen type="address" address="127.0.0.1"\/>/);

    const parsed = parseDomainXml(xml);
    assert.equal(parsed.name, 'persys-vm1');
    assert.deepEqual(parsed.macs, [derivedMac('edge-7', 'vm1', 0), '52:54:00:aa:bb:cc']);
    const m = parsed.metadata;
    assert.ok(m);
    assert.equal(m.labels[LABELS.workloadId], 'vm1');
    assert.equal(m.labels[LABELS.nodeId], 'edge-7');
    assert.equal(m.labels[LABELS.revision], 'r1');
    assert.equal(m.labels[LABELS.managed], 'true');
    assert.equal(m.shutdownTimeoutSeconds, 30);
    assert.deepEqual(m.disks, def.disks);
    assert.equal(m.vnc, true);
    assert.deepEqual(m.login, { username: 'alice', reportPassword: false, fingerprints: ['SHA256:v1BC32e7zcvYQyrdGBTEdifP7BDK2y0INI1sVdKgbr8'] });
  });

  it('q35 puts the seed on SATA; UEFI asks libvirt for EFI firmware', async () => {
    const def = definition(vm({ machine: 'q35', firmware: 'uefi' }));
    const xml = buildDomainXml(def);
    await validate(xml);
    assert.equal(cdromBusFor('pc-q35-7.2'), 'sata');
    assert.equal(cdromBusFor('pc-i440fx-7.2'), 'ide');
    assert.match(xml, /<os firmware="efi">/);
    assert.match(xml, /<target dev="sda" bus="sata"\/>/);
  });

  it('escapes hostile strings (quotes, <, >, &, ..) everywhere and reads them back unchanged', async () => {
    const hostile = `"'<x>&amp;</x>../..&#x41;]]>`;
    const w = vm({ boot: { kernel: '/boot/vmlinuz', cmdline: `console=ttyS0 ${hostile} init="/bin/sh -c 'a && b < c'"` } }, { revision: 'r1' });
    const def = definition(w, [disk('root')], { kernel: `/srv/a b/&<k>'"../../etc`, domainType: 'qemu' });
    def.title = `title ${hostile}`;
    def.metadata.labels[LABELS.revision] = hostile;
    def.metadata.labels['x.hostile'] = `</persys:label><inject/>${hostile}`;
    def.metadata.seedFile = `/seed/${hostile}`;
    const xml = buildDomainXml(def);
    await validate(xml);
    assert.doesNotMatch(xml, /<inject\/>/);
    assert.doesNotMatch(xml, /<x>/);
    const parsed = parseDomainXml(xml);
    assert.equal(parsed.metadata?.labels[LABELS.revision], hostile);
    assert.equal(parsed.metadata?.labels['x.hostile'], `</persys:label><inject/>${hostile}`);
    assert.equal(parsed.metadata?.seedFile, `/seed/${hostile}`);
  });

  it('refuses characters XML cannot carry instead of writing broken XML', () => {
    const w = vm({ boot: { kernel: '/boot/vmlinuz', cmdline: 'console=ttyS0 \u0001' } });
    assert.throws(
      () => buildDomainXml(definition(w, [], { kernel: '/k' })),
      (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC' && /boot\.cmdline/.test(err.message),
    );
  });

  it('refuses more devices than IDE holds', () => {
    const w = vm({});
    assert.throws(
      () => buildDomainXml(definition(w, [disk('a', 'ide'), disk('b', 'ide'), disk('c', 'ide'), disk('d', 'ide')])),
      (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC',
    );
  });

  it('metadata lives under our own namespace', () => {
    const xml = buildDomainXml(definition(vm({})));
    assert.match(xml, new RegExp(`<persys:workload xmlns:persys="${METADATA_NS.replace(/[.]/g, '\\.')}">`));
  });

  it('reads metadata whatever prefix libvirt kept for our namespace, and ignores foreign metadata', () => {
    const xml = `<domain type='kvm'><name>x</name><uuid>u</uuid><metadata>
      <other:thing xmlns:other="https://example.com/x"><other:label key="a">b</other:label></other:thing>
      <p2:workload xmlns:p2="${METADATA_NS}"><p2:label key="${LABELS.workloadId}">vm9</p2:label><p2:label key="${LABELS.revision}"/><p2:shutdown timeoutSeconds="7"/></p2:workload>
      </metadata><devices><interface type='network'><mac address='52:54:00:01:02:03'/></interface><graphics type='vnc' port='5901'/></devices></domain>`;
    const p = parseDomainXml(xml);
    assert.equal(p.metadata?.labels[LABELS.workloadId], 'vm9');
    assert.equal(p.metadata?.labels[LABELS.revision], '');
    assert.equal(p.metadata?.shutdownTimeoutSeconds, 7);
    assert.equal(p.vncPort, 5901);
    assert.equal(parseDomainXml(`<domain type='kvm'><name>y</name><uuid>u</uuid></domain>`).metadata, undefined);
  });
});
