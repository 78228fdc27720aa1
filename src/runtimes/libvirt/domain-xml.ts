/**
 * Domain XML, built with fast-xml-parser's XMLBuilder (every text and attribute value escaped) from a
 * resolved definition, and read back from `virsh dumpxml`. Our labels and the facts removal and the
 * status report need later (disks and their reclaim policy, login, shutdown timeout) live in the
 * domain's `<metadata>` under our own namespace, so the domain itself is the truth after a restart.
 * Pure: unit-tested, and checked against libvirt's schema with virt-xml-validate.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

import { WorkloadError } from '../../errors/index.js';
import { METADATA_NS, METADATA_PREFIX } from './ids.js';

export type DiskBus = 'virtio' | 'sata' | 'scsi' | 'ide';
export type NicModel = 'virtio' | 'e1000' | 'rtl8139';

export interface DomainDisk {
  name: string;
  file: string;
  format: 'qcow2' | 'raw';
  bus: DiskBus;
  reclaimPolicy: 'delete' | 'retain';
  /** Digest of the base image of an overlay ("sha256:<hex>"); absent for a new empty disk. */
  base?: string;
  sizeBytes?: number;
}

export interface DomainNic {
  kind: 'network' | 'bridge';
  source: string;
  mac: string;
  model: NicModel;
}

export interface DomainLogin {
  username: string;
  fingerprints: string[];
  reportPassword: boolean;
}

/** What we keep in `<metadata>`: enough to report, stop and remove the VM without the spec. */
export interface DomainMetadata {
  labels: Record<string, string>;
  shutdownTimeoutSeconds: number;
  disks: DomainDisk[];
  nics: DomainNic[];
  seedFile?: string;
  consoleLog?: string;
  vnc: boolean;
  login?: DomainLogin;
}

export interface DomainDefinition {
  name: string;
  uuid: string;
  domainType: 'kvm' | 'qemu';
  title?: string;
  memoryMiB: number;
  vcpus: number;
  machine: string;
  cpuMode?: 'host-passthrough' | 'host-model';
  firmware: 'bios' | 'uefi';
  boot?: { kernel: string; initrd?: string; cmdline?: string };
  disks: DomainDisk[];
  seedIso?: string;
  nics: DomainNic[];
  consoleLog: string;
  vnc: boolean;
  /** A virtio-serial channel for qemu-guest-agent (`virsh domifaddr --source agent`). */
  guestAgentChannel: boolean;
  metadata: DomainMetadata;
}

/** Characters XML 1.0 cannot carry at all, escaped or not (C0 controls but tab, CR, LF; U+FFFE/U+FFFF; lone surrogates). */
// eslint-disable-next-line no-control-regex
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkText(field: string, value: string): string {
  if (XML_INVALID.test(value)) {
    throw new WorkloadError('INVALID_SPEC', `${field} holds a character that XML cannot carry (a control character or a lone surrogate)`, {
      details: { field },
    });
  }
  return value;
}

function targetDevs(disks: readonly DomainDisk[], cdromBus: 'ide' | 'sata' | undefined): { disks: string[]; cdrom?: string } {
  const counters: Record<string, number> = { vd: 0, sd: 0, hd: 0 };
  const next = (prefix: 'vd' | 'sd' | 'hd') => {
    const n = counters[prefix] ?? 0;
    counters[prefix] = n + 1;
    if (n >= 26) throw new WorkloadError('INVALID_SPEC', `too many disks on one bus (${prefix}*)`);
    return `${prefix}${String.fromCharCode(97 + n)}`;
  };
  const prefixOf = (bus: DiskBus) => (bus === 'virtio' ? 'vd' : bus === 'ide' ? 'hd' : 'sd');
  const devs = disks.map((d) => next(prefixOf(d.bus)));
  let cdrom: string | undefined;
  if (cdromBus === 'ide') {
    // IDE has two channels with two units: hda..hdd. The seed takes the next free one.
    cdrom = next('hd');
    if ((counters.hd ?? 0) > 4) throw new WorkloadError('INVALID_SPEC', 'IDE holds at most 4 devices, and the cloud-init seed needs one of them');
  } else if (cdromBus === 'sata') {
    cdrom = next('sd');
  }
  if ((counters.hd ?? 0) > 4) throw new WorkloadError('INVALID_SPEC', 'IDE holds at most 4 disks');
  return cdrom === undefined ? { disks: devs } : { disks: devs, cdrom };
}

/** q35 machines have no IDE controller: their cdrom goes on SATA. */
export function cdromBusFor(machine: string): 'ide' | 'sata' {
  return /q35/.test(machine) ? 'sata' : 'ide';
}

const P = METADATA_PREFIX;

function metadataNode(m: DomainMetadata): Record<string, unknown> {
  const node: Record<string, unknown> = {
    '@_xmlns:persys': METADATA_NS,
    [`${P}:label`]: Object.keys(m.labels)
      .sort()
      .map((k) => ({ '@_key': checkText(`label ${k}`, k), '#text': checkText(`label ${k}`, m.labels[k] ?? '') })),
    [`${P}:shutdown`]: { '@_timeoutSeconds': String(m.shutdownTimeoutSeconds) },
    [`${P}:disk`]: m.disks.map((d) => ({
      '@_name': d.name,
      '@_file': checkText(`disk ${d.name} file`, d.file),
      '@_format': d.format,
      '@_bus': d.bus,
      '@_reclaim': d.reclaimPolicy,
      ...(d.base !== undefined ? { '@_base': d.base } : {}),
      ...(d.sizeBytes !== undefined ? { '@_sizeBytes': String(d.sizeBytes) } : {}),
    })),
    [`${P}:nic`]: m.nics.map((n) => ({ '@_kind': n.kind, '@_source': checkText('network source', n.source), '@_mac': n.mac, '@_model': n.model })),
    [`${P}:vnc`]: { '@_enabled': m.vnc ? 'true' : 'false' },
  };
  if (m.seedFile !== undefined) node[`${P}:seed`] = { '@_file': checkText('seed file', m.seedFile) };
  if (m.consoleLog !== undefined) node[`${P}:console`] = { '@_file': checkText('console log', m.consoleLog) };
  if (m.login) {
    node[`${P}:login`] = {
      '@_username': checkText('login.username', m.login.username),
      '@_reportPassword': m.login.reportPassword ? 'true' : 'false',
      [`${P}:fingerprint`]: m.login.fingerprints.map((f) => checkText('fingerprint', f)),
    };
  }
  return node;
}

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
  processEntities: true,
  // Without this an attribute whose value is "true" is written bare (<x enabled/>), which is not XML.
  suppressBooleanAttributes: false,
});

export function buildDomainXml(def: DomainDefinition): string {
  checkText('name', def.name);
  const cdromBus = def.seedIso !== undefined ? cdromBusFor(def.machine) : undefined;
  const devs = targetDevs(def.disks, cdromBus);

  const os: Record<string, unknown> = {
    type: { '@_arch': 'x86_64', '@_machine': checkText('machine', def.machine), '#text': 'hvm' },
  };
  if (def.firmware === 'uefi') os['@_firmware'] = 'efi';
  if (def.boot) {
    os.kernel = checkText('boot.kernel', def.boot.kernel);
    if (def.boot.initrd !== undefined) os.initrd = checkText('boot.initrd', def.boot.initrd);
    if (def.boot.cmdline !== undefined && def.boot.cmdline !== '') os.cmdline = checkText('boot.cmdline', def.boot.cmdline);
  } else {
    os.boot = [{ '@_dev': 'hd' }, ...(def.seedIso !== undefined ? [{ '@_dev': 'cdrom' }] : [])];
  }

  const disks: Record<string, unknown>[] = def.disks.map((d, i) => ({
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': d.format, ...(d.bus === 'virtio' || d.bus === 'scsi' ? { '@_discard': 'unmap' } : {}) },
    source: { '@_file': checkText(`disk ${d.name} file`, d.file) },
    target: { '@_dev': devs.disks[i], '@_bus': d.bus },
    serial: checkText(`disk ${d.name} name`, d.name.slice(0, 20)),
  }));
  if (def.seedIso !== undefined && cdromBus !== undefined) {
    disks.push({
      '@_type': 'file',
      '@_device': 'cdrom',
      driver: { '@_name': 'qemu', '@_type': 'raw' },
      source: { '@_file': checkText('seed ISO', def.seedIso) },
      target: { '@_dev': devs.cdrom, '@_bus': cdromBus },
      readonly: '',
    });
  }

  const interfaces = def.nics.map((n) => ({
    '@_type': n.kind,
    mac: { '@_address': n.mac },
    source: n.kind === 'network' ? { '@_network': checkText('network', n.source) } : { '@_bridge': checkText('bridge', n.source) },
    model: { '@_type': n.model },
  }));

  const devices: Record<string, unknown> = {
    disk: disks,
    interface: interfaces,
    serial: { '@_type': 'pty', log: { '@_file': checkText('console log', def.consoleLog), '@_append': 'on' }, target: { '@_port': '0' } },
    console: { '@_type': 'pty', target: { '@_type': 'serial', '@_port': '0' } },
  };
  if (def.guestAgentChannel) devices.channel = { '@_type': 'unix', target: { '@_type': 'virtio', '@_name': 'org.qemu.guest_agent.0' } };
  if (def.vnc) {
    // Loopback only: a console is reached through an SSH tunnel, never from the network.
    devices.graphics = { '@_type': 'vnc', '@_port': '-1', '@_autoport': 'yes', '@_listen': '127.0.0.1', listen: { '@_type': 'address', '@_address': '127.0.0.1' } };
  }
  devices.memballoon = { '@_model': 'virtio' };
  devices.rng = { '@_model': 'virtio', backend: { '@_model': 'random', '#text': '/dev/urandom' } };

  const domain: Record<string, unknown> = {
    '@_type': def.domainType,
    name: def.name,
    uuid: def.uuid,
  };
  if (def.title !== undefined) domain.title = checkText('title', def.title);
  domain.metadata = { [`${P}:workload`]: metadataNode(def.metadata) };
  domain.memory = { '@_unit': 'MiB', '#text': String(def.memoryMiB) };
  domain.currentMemory = { '@_unit': 'MiB', '#text': String(def.memoryMiB) };
  domain.vcpu = { '@_placement': 'static', '#text': String(def.vcpus) };
  domain.os = os;
  domain.features = { acpi: '', apic: '' };
  if (def.cpuMode !== undefined) domain.cpu = { '@_mode': def.cpuMode };
  domain.clock = { '@_offset': 'utc' };
  domain.on_poweroff = 'destroy';
  domain.on_reboot = 'restart';
  domain.on_crash = 'destroy';
  domain.devices = devices;
  return `${builder.build({ domain }) as string}`.trimEnd() + '\n';
}

// ---------------------------------------------------------------------------------------------
// Reading `virsh dumpxml`
// ---------------------------------------------------------------------------------------------

export interface ParsedDomain {
  name: string;
  uuid: string;
  type: string;
  /** Our metadata, or undefined for a domain that is not ours. */
  metadata?: DomainMetadata;
  /** MACs of the domain's interfaces, in order. */
  macs: string[];
  /** The VNC port of a running domain with autoport (from the live XML). */
  vncPort?: number;
}

const ARRAYS = new Set(['disk', 'interface', 'graphics', 'label', 'nic', 'fingerprint']);

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => ARRAYS.has(name.includes(':') ? name.slice(name.indexOf(':') + 1) : name),
});

type Node = Record<string, unknown>;
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
const text = (v: unknown): string => (isNode(v) ? (str(v['#text']) ?? '') : (str(v) ?? ''));
const list = (v: unknown): Node[] => (Array.isArray(v) ? v.filter(isNode) : isNode(v) ? [v] : []);

/** Our `<metadata>` child, whatever prefix libvirt kept for our namespace. */
function findMetadata(meta: unknown): { node: Node; prefix: string } | undefined {
  if (!isNode(meta)) return undefined;
  for (const [key, value] of Object.entries(meta)) {
    const colon = key.indexOf(':');
    if (colon === -1) continue;
    const prefix = key.slice(0, colon);
    for (const n of list(value)) {
      if (n[`@_xmlns:${prefix}`] === METADATA_NS) return { node: n, prefix };
    }
  }
  return undefined;
}

function readMetadata(node: Node, p: string): DomainMetadata {
  const labels: Record<string, string> = {};
  for (const l of list(node[`${p}:label`])) {
    const k = str(l['@_key']);
    if (k !== undefined) labels[k] = text(l);
  }
  const timeout = Number(str(list(node[`${p}:shutdown`])[0]?.['@_timeoutSeconds']) ?? '');
  const disks: DomainDisk[] = [];
  for (const d of list(node[`${p}:disk`])) {
    const name = str(d['@_name']);
    const file = str(d['@_file']);
    if (name === undefined || file === undefined) continue;
    const disk: DomainDisk = {
      name,
      file,
      format: d['@_format'] === 'raw' ? 'raw' : 'qcow2',
      bus: (['virtio', 'sata', 'scsi', 'ide'] as const).find((b) => b === d['@_bus']) ?? 'virtio',
      reclaimPolicy: d['@_reclaim'] === 'retain' ? 'retain' : 'delete',
    };
    const base = str(d['@_base']);
    if (base !== undefined) disk.base = base;
    const size = Number(str(d['@_sizeBytes']) ?? '');
    if (Number.isFinite(size) && size > 0) disk.sizeBytes = size;
    disks.push(disk);
  }
  const nics: DomainNic[] = [];
  for (const n of list(node[`${p}:nic`])) {
    const mac = str(n['@_mac']);
    const source = str(n['@_source']);
    if (mac === undefined || source === undefined) continue;
    nics.push({
      kind: n['@_kind'] === 'bridge' ? 'bridge' : 'network',
      source,
      mac,
      model: (['virtio', 'e1000', 'rtl8139'] as const).find((m) => m === n['@_model']) ?? 'virtio',
    });
  }
  const m: DomainMetadata = {
    labels,
    shutdownTimeoutSeconds: Number.isFinite(timeout) && timeout > 0 ? timeout : 60,
    disks,
    nics,
    vnc: str(list(node[`${p}:vnc`])[0]?.['@_enabled']) === 'true',
  };
  const seed = str(list(node[`${p}:seed`])[0]?.['@_file']);
  if (seed !== undefined) m.seedFile = seed;
  const consoleLog = str(list(node[`${p}:console`])[0]?.['@_file']);
  if (consoleLog !== undefined) m.consoleLog = consoleLog;
  const login = list(node[`${p}:login`])[0];
  const username = str(login?.['@_username']);
  if (login && username !== undefined) {
    m.login = {
      username,
      reportPassword: login['@_reportPassword'] === 'true',
      fingerprints: (Array.isArray(login[`${p}:fingerprint`]) ? (login[`${p}:fingerprint`] as unknown[]) : []).map(text).filter((f) => f !== ''),
    };
  }
  return m;
}

export function parseDomainXml(xml: string): ParsedDomain {
  let doc: unknown;
  try {
    doc = parser.parse(xml);
  } catch (err) {
    throw new WorkloadError('INTERNAL', `could not parse domain XML from libvirt: ${err instanceof Error ? err.message : String(err)}`);
  }
  const dom = isNode(doc) ? doc.domain : undefined;
  if (!isNode(dom)) throw new WorkloadError('INTERNAL', 'libvirt returned domain XML without a <domain> element');
  const out: ParsedDomain = { name: text(dom.name), uuid: text(dom.uuid), type: str(dom['@_type']) ?? '', macs: [] };
  const found = findMetadata(dom.metadata);
  if (found) out.metadata = readMetadata(found.node, found.prefix);
  const devices = isNode(dom.devices) ? dom.devices : {};
  for (const i of list(devices.interface)) {
    const mac = str(list(i.mac)[0]?.['@_address']);
    if (mac !== undefined) out.macs.push(mac.toLowerCase());
  }
  for (const g of list(devices.graphics)) {
    const port = Number(str(g['@_port']) ?? '');
    if (g['@_type'] === 'vnc' && Number.isInteger(port) && port > 0) out.vncPort = port;
  }
  return out;
}
