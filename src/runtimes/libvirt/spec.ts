import * as v from 'valibot';
import { nonEmptyString, positiveInt, safeName, workloadSchema } from '../../spec/common.js';

const d = v.description;

const noDotDot = (p: string) => !p.split('/').includes('..');

const sha256 = v.pipe(v.string(), v.regex(/^[a-f0-9]{64}$/, 'sha256 must be 64 lower-case hex digits'));

const imageSource = v.union(
  [
    v.strictObject({
      path: v.pipe(
        v.string(),
        v.startsWith('/', 'image.path must be absolute'),
        v.check((p) => !p.split('/').includes('..'), "image.path must not contain '..'"),
        d('Local base image (qcow2 or raw) on the host.'),
      ),
      sha256: v.pipe(v.optional(sha256), d('Expected digest; checked when given.')),
      format: v.pipe(v.optional(v.picklist(['qcow2', 'raw'], 'image.format must be qcow2 or raw')), d('Default qcow2.')),
    }),
    v.strictObject({
      url: v.pipe(v.string(), v.url('image.url must be a URL'), v.startsWith('https://', 'image.url must be https://'), d('Base image to download.')),
      sha256: v.pipe(sha256, d('Required digest of the download; images are cached by digest.')),
      format: v.pipe(v.optional(v.picklist(['qcow2', 'raw'], 'image.format must be qcow2 or raw')), d('Default qcow2.')),
    }),
  ],
  'image needs either {path} or {url, sha256}',
);

/** OpenSSH public key lines: type, base64 blob, optional comment (what authorized_keys holds). */
export const SSH_PUBLIC_KEY_PATTERN = /^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( [^\r\n]*)?\s*$/;

const disk = v.strictObject({
  name: v.pipe(safeName('disk name'), d('Disk name; the file lives in the agent\'s storage directory.')),
  sizeBytes: v.pipe(v.optional(positiveInt('disks[].sizeBytes')), d('Size of a new disk or of the overlay.')),
  image: v.pipe(v.optional(imageSource), d('Base image; the disk is a copy-on-write overlay on it.')),
  bus: v.pipe(v.optional(v.picklist(['virtio', 'sata', 'scsi', 'ide'], 'disks[].bus must be virtio, sata, scsi or ide')), d('Default virtio.')),
  pool: v.pipe(
    v.optional(safeName('disks[].pool')),
    d(
      'A storagePools[] entry of type libvirt: the disk is a qcow2 volume of sizeBytes in that pool (`<workload id>.<disk name>.qcow2`), ' +
        'admitted against the pool\'s capacity, grown in place when sizeBytes grows (online while the VM runs), never shrunk; ' +
        'on removal of the VM reclaimPolicy decides whether the volume stays (docs/storage.md).',
    ),
  ),
  volume: v.pipe(
    v.optional(safeName('disks[].volume')),
    d(
      'A volumes[] entry of the document, in a storage pool of type libvirt, attached as this disk (qcow2). Its size and ' +
        'reclaimPolicy are the volume\'s: the storage layer creates, grows (online while the VM runs) and keeps or deletes it, never ' +
        'the VM. The VM starts once the volume is Ready; no other workload may use the volume (docs/storage.md).',
    ),
  ),
  reclaimPolicy: v.pipe(v.optional(v.picklist(['delete', 'retain'], 'reclaimPolicy must be delete or retain')), d('On removal; default delete.')),
});
const checkedDisk = v.pipe(
  disk,
  v.check((x) => x.sizeBytes !== undefined || x.image !== undefined || x.volume !== undefined, 'a disk needs sizeBytes (a new empty disk), image (an overlay on a base image) or volume (a volumes[] entry)'),
  v.check(
    (x) => x.volume === undefined || (x.sizeBytes === undefined && x.image === undefined && x.pool === undefined && x.reclaimPolicy === undefined),
    'a disk with volume takes its size, pool and reclaimPolicy from that volume; sizeBytes, image, pool and reclaimPolicy are not allowed with it',
  ),
  v.check((x) => x.pool === undefined || x.sizeBytes !== undefined, 'a disk with pool needs sizeBytes (the size of its volume)'),
  v.check((x) => x.pool === undefined || x.image === undefined, 'a disk with pool is a new empty volume; image is not supported with pool'),
);

const nic = v.union(
  [
    v.strictObject({
      network: v.pipe(safeName('network name'), d('A libvirt network.')),
      mac: v.pipe(v.optional(v.pipe(v.string(), v.mac48('mac must be a MAC address'))), d('Default derived from the workload id.')),
      model: v.pipe(v.optional(v.picklist(['virtio', 'e1000', 'rtl8139'], 'model must be virtio, e1000 or rtl8139')), d('Default virtio.')),
    }),
    v.strictObject({
      bridge: v.pipe(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,15}$/, 'bridge must be an interface name')), d('A host bridge.')),
      mac: v.pipe(v.optional(v.pipe(v.string(), v.mac48('mac must be a MAC address'))), d('Default derived from the workload id.')),
      model: v.pipe(v.optional(v.picklist(['virtio', 'e1000', 'rtl8139'], 'model must be virtio, e1000 or rtl8139')), d('Default virtio.')),
    }),
  ],
  'networks[] needs either {network} or {bridge}',
);

const cloudInit = v.strictObject({
  userData: v.pipe(v.optional(v.pipe(v.string(), v.maxLength(256 * 1024, 'userData is larger than 256 KiB'))), d('user-data (#cloud-config or a script).')),
  metaData: v.pipe(
    v.optional(
      v.pipe(
        v.record(v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'metaData keys must be 1-64 characters of A-Z a-z 0-9 . _ -')), v.pipe(v.string(), v.maxLength(4096, 'metaData values are at most 4096 characters'))),
        v.check((m) => !Object.hasOwn(m, 'instance-id') && !Object.hasOwn(m, 'local-hostname'), 'metaData must not set instance-id (it follows the revision) or local-hostname (use hostname)'),
      ),
    ),
    d('Extra meta-data keys (instance-id and local-hostname are set by the agent).'),
  ),
  networkConfig: v.pipe(v.optional(v.pipe(v.string(), v.maxLength(64 * 1024, 'networkConfig is larger than 64 KiB'))), d('network-config (v1 or v2 YAML).')),
  vendorData: v.pipe(v.optional(v.pipe(v.string(), v.maxLength(64 * 1024, 'vendorData is larger than 64 KiB'))), d('vendor-data.')),
});

const login = v.strictObject({
  username: v.pipe(v.string(), v.regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'login.username must be a POSIX user name'), d('User created by cloud-init.')),
  sshAuthorizedKeys: v.pipe(
    v.optional(v.array(v.pipe(nonEmptyString('sshAuthorizedKeys[]', 16384), v.regex(SSH_PUBLIC_KEY_PATTERN, 'sshAuthorizedKeys[] must be an OpenSSH public key line (type, base64 key, optional comment)')))),
    d('Public keys for the user (OpenSSH authorized_keys lines); their SHA256 fingerprints are reported.'),
  ),
  generatePassword: v.pipe(v.optional(v.boolean()), d('Generate a password (kept in the store, mode 0600).')),
  reportPassword: v.pipe(v.optional(v.boolean()), d('Include the generated password in the status report.')),
});

export const vmSpec = v.strictObject({
  vcpus: v.pipe(positiveInt('vcpus'), v.maxValue(256, 'vcpus must be at most 256'), d('Virtual CPUs.')),
  memoryMiB: v.pipe(positiveInt('memoryMiB'), v.minValue(16, 'memoryMiB must be at least 16'), d('Memory in MiB.')),
  hostname: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/, 'hostname must be a DNS label'))), d('Guest hostname; default the workload id.')),
  domainType: v.pipe(v.optional(v.picklist(['auto', 'kvm', 'qemu'], 'domainType must be auto, kvm or qemu')), d('Overrides libvirt.domainType.')),
  machine: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[a-z0-9._-]{1,64}$/, 'machine must be a machine type like pc or q35'))), d('Machine type; default pc.')),
  cpuMode: v.pipe(v.optional(v.picklist(['host-passthrough', 'host-model', 'default'], 'cpuMode must be host-passthrough, host-model or default')), d('CPU mode.')),
  firmware: v.pipe(v.optional(v.picklist(['bios', 'uefi'], 'firmware must be bios or uefi')), d('Default bios.')),
  boot: v.pipe(
    v.optional(
      v.strictObject({
        kernel: v.pipe(v.string(), v.startsWith('/', 'boot.kernel must be absolute'), v.check(noDotDot, "boot.kernel must not contain '..'"), d('Kernel path for direct boot (under libvirt.allowedPathPrefixes).')),
        initrd: v.pipe(v.optional(v.pipe(v.string(), v.startsWith('/', 'boot.initrd must be absolute'), v.check(noDotDot, "boot.initrd must not contain '..'"))), d('Initrd path (under libvirt.allowedPathPrefixes).')),
        cmdline: v.pipe(v.optional(v.pipe(v.string(), v.maxLength(4096, 'boot.cmdline is longer than 4096'))), d('Kernel command line.')),
      }),
    ),
    d('Direct kernel boot.'),
  ),
  disks: v.pipe(
    v.optional(
      v.pipe(
        v.array(checkedDisk),
        v.maxLength(16, 'at most 16 disks'),
        v.check((ds) => new Set(ds.map((x) => x.name)).size === ds.length, 'disk names must be unique'),
      ),
    ),
    d('Disks, in boot order.'),
  ),
  networks: v.pipe(v.optional(v.pipe(v.array(nic), v.maxLength(8, 'at most 8 network interfaces'))), d('Network interfaces.')),
  cloudInit: v.pipe(v.optional(cloudInit), d('cloud-init NoCloud seed contents.')),
  login: v.pipe(v.optional(login), d('How a person logs in; reported in the status.')),
  vnc: v.pipe(v.optional(v.boolean()), d('Expose a VNC console on 127.0.0.1.')),
  shutdownTimeoutSeconds: v.pipe(v.optional(positiveInt('shutdownTimeoutSeconds')), d('ACPI shutdown wait before destroy; default 60.')),
});
export type VmSpec = v.InferOutput<typeof vmSpec>;

export const vmWorkload = workloadSchema('vm', vmSpec, {
  type: 'A libvirt virtual machine.',
  spec: 'Virtual machine settings (CPUs, memory, disks, networks, cloud-init, login).',
});
export type VmWorkload = v.InferOutput<typeof vmWorkload>;
