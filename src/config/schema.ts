import * as v from 'valibot';
import { maintenanceWindows } from '../spec/maintenance.js';

const d = v.description;
const seconds = (what: string, min: number, max: number) =>
  v.pipe(
    v.number(`${what} must be a number`),
    v.minValue(min, `${what} must be at least ${min}`),
    v.maxValue(max, `${what} must be at most ${max}`),
  );
const int = (what: string, min: number, max: number) =>
  v.pipe(v.number(`${what} must be a number`), v.integer(`${what} must be an integer`), v.minValue(min, `${what} must be at least ${min}`), v.maxValue(max, `${what} must be at most ${max}`));
const path = (what: string) => v.pipe(v.string(`${what} must be a string`), v.minLength(1, `${what} must not be empty`));
const url = (what: string) =>
  v.pipe(v.string(`${what} must be a string`), v.regex(/^(https?|file):\/\//, `${what} must be an https://, http:// or file:// URL`));
const listen = (what: string) =>
  v.pipe(v.string(`${what} must be a string`), v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$|^off$/, `${what} must be host:port, [v6]:port or "off"`));

/**
 * The agent's configuration. Every key can also be set as PERSYS_<UPPER_SNAKE> (e.g.
 * source.pollIntervalSeconds -> PERSYS_SOURCE_POLL_INTERVAL_SECONDS); flags override env,
 * env overrides the file, the file overrides these defaults.
 */
export const configSchema = v.strictObject({
  nodeId: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/, 'nodeId must be 1-253 characters of A-Z a-z 0-9 . _ -'))), d('Overrides the derived node id.')),
  stateDir: v.pipe(v.optional(path('stateDir'), './.persys-agent'), d('Store, local API socket and caches (mode 0700). Default ./.persys-agent, or $STATE_DIRECTORY when systemd sets it (StateDirectory=).')),
  logLevel: v.pipe(v.optional(v.picklist(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'logLevel must be trace, debug, info, warn, error, fatal or silent'), 'info'), d('Log level.')),
  source: v.pipe(
    v.optional(
      v.strictObject({
        url: v.pipe(v.optional(url('source.url')), d('Desired-state URL; {nodeId} is replaced. Default: file:// of --desired.')),
        pollIntervalSeconds: v.pipe(v.optional(seconds('source.pollIntervalSeconds', 1, 86400), 30), d('Time between pulls (jittered).')),
        longPollSeconds: v.pipe(v.optional(seconds('source.longPollSeconds', 0, 3600), 0), d('Longest hold asked for with Prefer: wait=N (jittered down by up to 1/16); only an answer with Preference-Applied counts as held, a static host is polled every pollIntervalSeconds; 0 disables. Use 90 with persys-agent serve (its cap; CDNs cut held requests at ~100 s).')),
        timeoutSeconds: v.pipe(v.optional(seconds('source.timeoutSeconds', 1, 3600), 30), d('Request timeout (on top of longPollSeconds).')),
        maxBodyBytes: v.pipe(v.optional(int('source.maxBodyBytes', 1024, 256 * 1024 * 1024), 8 * 1024 * 1024), d('Largest desired-state body accepted.')),
        caFile: v.pipe(v.optional(path('source.caFile')), d('PEM CA bundle to trust for the source (replaces the system roots). Also used for status when status.caFile is not set.')),
        certFile: v.pipe(v.optional(path('source.certFile')), d('Client certificate (mTLS) for the source; re-read when it changes on disk.')),
        keyFile: v.pipe(v.optional(path('source.keyFile')), d('Client key (mTLS) for the source; re-read when it changes on disk.')),
        tokenFile: v.pipe(v.optional(path('source.tokenFile')), d('File holding the bearer token for the source (never logged); re-read when it changes and once after a 401.')),
        allowInsecureHttp: v.pipe(v.optional(v.boolean('source.allowInsecureHttp must be true or false'), false), d('Allow plain http:// to non-loopback hosts.')),
      }),
      {},
    ),
    d('Where desired state comes from.'),
  ),
  status: v.pipe(
    v.optional(
      v.strictObject({
        url: v.pipe(v.optional(url('status.url')), d('Where status reports are POSTed; {nodeId} is replaced. Default file://<stateDir>/status.json.')),
        heartbeatSeconds: v.pipe(v.optional(seconds('status.heartbeatSeconds', 1, 86400), 60), d('A report is sent at least this often.')),
        debounceMs: v.pipe(v.optional(int('status.debounceMs', 0, 60000), 500), d('Changes within this window are sent as one report.')),
        caFile: v.pipe(v.optional(path('status.caFile')), d('PEM CA bundle for the status endpoint. Default source.caFile.')),
        certFile: v.pipe(v.optional(path('status.certFile')), d('Client certificate (mTLS) for status. Default source.certFile, but only when status.url has the same origin as source.url.')),
        keyFile: v.pipe(v.optional(path('status.keyFile')), d('Client key (mTLS) for status; goes with status.certFile.')),
        tokenFile: v.pipe(v.optional(path('status.tokenFile')), d('Bearer token file for status. Default source.tokenFile, but only when status.url has the same origin as source.url (a token is never sent to another host).')),
      }),
      {},
    ),
    d('Status reporting.'),
  ),
  trust: v.pipe(
    v.optional(
      v.strictObject({
        publicKeys: v.pipe(v.optional(v.array(v.string()), []), d('Trusted ed25519 public keys (PEM or file paths); when set, documents must be DSSE envelopes signed by trust.threshold of them.')),
        threshold: v.pipe(v.optional(int('trust.threshold', 1, 64), 1), d('Distinct trusted keys that must have signed a document (at most the number of trusted keys).')),
        allowWildcardNode: v.pipe(v.optional(v.boolean('trust.allowWildcardNode must be true or false'), false), d('Accept nodeId "*" in signed documents (one document for many hosts).')),
      }),
      {},
    ),
    d('Desired-state signatures.'),
  ),
  reconcile: v.pipe(
    v.optional(
      v.strictObject({
        intervalSeconds: v.pipe(v.optional(seconds('reconcile.intervalSeconds', 1, 86400), 30), d('Periodic reconcile (drift repair).')),
        concurrency: v.pipe(v.optional(int('reconcile.concurrency', 1, 64), 4), d('Steps in flight at once.')),
        stuckSeconds: v.pipe(
          v.optional(seconds('reconcile.stuckSeconds', 1, 86400), 300),
          d('A step that makes no progress for this long (no phase change, no image-pull progress event: a pull that keeps receiving bytes is never stuck) is stuck: it is aborted and recovered (stop, start again), else removed and marked Failed (STUCK).'),
        ),
      }),
      {},
    ),
    d('The reconcile loop.'),
  ),
  shutdown: v.pipe(
    v.optional(
      v.strictObject({
        drainSeconds: v.pipe(
          v.optional(seconds('shutdown.drainSeconds', 0, 85), 30),
          d("On SIGTERM no new step starts; running steps may finish for this long, then they are aborted (an aborted create leaves nothing half made). At most 85, below systemd's 90 s stop timeout."),
        ),
      }),
      {},
    ),
    d('Shutdown.'),
  ),
  retry: v.pipe(
    v.optional(
      v.strictObject({
        maxAttempts: v.pipe(v.optional(int('retry.maxAttempts', 1, 1000), 10), d('Default attempts for transient failures.')),
        initialDelaySeconds: v.pipe(v.optional(seconds('retry.initialDelaySeconds', 0, 86400), 5), d('Default first backoff.')),
        maxDelaySeconds: v.pipe(v.optional(seconds('retry.maxDelaySeconds', 0, 86400), 300), d('Default backoff cap.')),
        multiplier: v.pipe(v.optional(seconds('retry.multiplier', 1, 10), 2), d('Default growth factor.')),
      }),
      {},
    ),
    d('Default retry policy of workloads.'),
  ),
  metrics: v.pipe(
    v.optional(
      v.strictObject({
        listen: v.pipe(v.optional(listen('metrics.listen'), '127.0.0.1:9464'), d('Address of /metrics, /healthz, /readyz; "off" disables.')),
        statsIntervalSeconds: v.pipe(
          v.optional(seconds('metrics.statsIntervalSeconds', 1, 3600), 15),
          d('How often per-workload usage (CPU, memory, network, block I/O, restarts) is read from the engines; scrapes read the cached values.'),
        ),
        push: v.pipe(
          v.optional(
            v.strictObject({
              url: v.pipe(v.optional(url('metrics.push.url')), d('Pushgateway base URL.')),
              intervalSeconds: v.pipe(v.optional(seconds('metrics.push.intervalSeconds', 1, 86400), 60), d('Push interval.')),
              deleteOnShutdown: v.pipe(v.optional(v.boolean(), false), d('Delete the group on a clean shutdown.')),
            }),
            {},
          ),
          d('Push to a Pushgateway.'),
        ),
      }),
      {},
    ),
    d('Metrics.'),
  ),
  docker: v.pipe(
    v.optional(
      v.strictObject({
        socketPath: v.pipe(v.optional(path('docker.socketPath'), '/var/run/docker.sock'), d('Docker Engine socket.')),
        namePrefix: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/, 'docker.namePrefix must be a container-name prefix')), 'persys-'), d('Container names are <namePrefix><workload id>.')),
        enabled: v.pipe(v.optional(v.boolean(), true), d('Use Docker at all.')),
      }),
      {},
    ),
    d('Docker runtime.'),
  ),
  libvirt: v.pipe(
    v.optional(
      v.strictObject({
        uri: v.pipe(v.optional(v.string(), 'qemu:///system'), d('libvirt connection URI.')),
        domainType: v.pipe(v.optional(v.picklist(['auto', 'kvm', 'qemu'], 'libvirt.domainType must be auto, kvm or qemu'), 'auto'), d('kvm, qemu (TCG) or auto.')),
        enabled: v.pipe(v.optional(v.boolean(), true), d('Use libvirt at all.')),
        namePrefix: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/, 'libvirt.namePrefix must be a domain-name prefix')), 'persys-'), d('Domain names are <namePrefix><workload id>.')),
        storageDir: v.pipe(v.optional(path('libvirt.storageDir')), d('VM disks, seed ISOs and the image cache. Default <stateDir>/libvirt; QEMU (libvirt-qemu) must be able to traverse it.')),
        allowedPathPrefixes: v.pipe(
          v.optional(v.array(v.pipe(v.string(), v.startsWith('/', 'libvirt.allowedPathPrefixes[] must be absolute'))), ['/var/lib/libvirt/images', '/var/lib/libvirt/boot']),
          d('Host directories a VM spec may name as boot.kernel, boot.initrd or disks[].image.path (files are copied into storageDir).'),
        ),
        ipWaitSeconds: v.pipe(v.optional(seconds('libvirt.ipWaitSeconds', 1, 86400), 120), d('After start, how long before a VM without an IPv4 gets the VM_NO_IP warning (it keeps looking).')),
        commandTimeoutSeconds: v.pipe(v.optional(seconds('libvirt.commandTimeoutSeconds', 1, 3600), 60), d('Bound of one virsh, qemu-img or genisoimage call.')),
        downloadTimeoutSeconds: v.pipe(v.optional(seconds('libvirt.downloadTimeoutSeconds', 1, 86400), 3600), d('Bound of one base-image download.')),
      }),
      {},
    ),
    d('libvirt runtime.'),
  ),
  policy: v.pipe(
    v.optional(
      v.strictObject({
        allowPrivileged: v.pipe(v.optional(v.boolean(), false), d('Allow privileged containers.')),
        allowHostPaths: v.pipe(v.optional(v.boolean(), false), d('Allow bind mounts of host paths.')),
        allowHostNetwork: v.pipe(v.optional(v.boolean(), false), d('Allow network mode host.')),
        allowedHostPathPrefixes: v.pipe(
          v.optional(v.array(v.pipe(v.string(), v.startsWith('/', 'policy.allowedHostPathPrefixes[] must be absolute'))), []),
          d('When allowHostPaths: bind sources (after symlinks are resolved) only under these prefixes (empty: any). The docker socket, /, /etc, /proc, /sys, /dev, /root and the state dir are denied unless a prefix names them (or a path in them) exactly.'),
        ),
        allowedCapabilities: v.pipe(
          v.optional(v.array(v.pipe(v.string(), v.regex(/^(CAP_)?[A-Z_]+$|^ALL$/, 'policy.allowedCapabilities[] are names like NET_ADMIN or ALL'))), []),
          d('Dangerous capabilities a container may add (ALL, SYS_ADMIN, SYS_MODULE, SYS_PTRACE, SYS_RAWIO, SYS_BOOT, NET_ADMIN, DAC_READ_SEARCH, SYS_TIME, BPF, PERFMON are denied otherwise).'),
        ),
        allowedRegistries: v.pipe(
          v.optional(v.array(v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9.:_-]*(\/[a-z0-9._-]+)*$/, 'policy.allowedRegistries[] are registry hosts like docker.io or 127.0.0.1:5000, optionally with a path')))),
          d('When set: images only from these registries (docker.io for Docker Hub); a host/path entry limits to that repository prefix. Unset: any registry.'),
        ),
        allowUnconfinedSeccomp: v.pipe(v.optional(v.boolean(), false), d('Allow security.seccompProfile "unconfined".')),
        allowUnconfinedApparmor: v.pipe(v.optional(v.boolean(), false), d('Allow security.apparmorProfile "unconfined".')),
        allowedBridges: v.pipe(v.optional(v.array(v.string()), []), d('Host bridges a VM may attach to (networks[].bridge); none by default.')),
        allowedNetworks: v.pipe(v.optional(v.array(v.string())), d('When set: the libvirt networks a VM may attach to (networks[].network). Unset: any libvirt network.')),
        allowedStoragePrefixes: v.pipe(
          v.optional(v.array(v.pipe(v.string(), v.startsWith('/', 'policy.allowedStoragePrefixes[] must be absolute'))), ['/var/lib/persys-agent/pools']),
          d('Storage pools (storagePools[].path) only under these directories; a pool elsewhere is POLICY_DENIED (docs/storage.md).'),
        ),
        requireResourceRequests: v.pipe(v.optional(v.boolean('policy.requireResourceRequests must be true or false'), false), d('Refuse workloads that request no CPU, memory or disk (admission needs requests to count).')),
      }),
      {},
    ),
    d('Host policy.'),
  ),
  gc: v.pipe(
    v.optional(
      v.strictObject({
        intervalSeconds: v.pipe(v.optional(seconds('gc.intervalSeconds', 1, 86400 * 7), 60), d('Time between garbage-collection passes (also run at once under DiskPressure, and by `persys-agent gc`).')),
        orphanGraceSeconds: v.pipe(
          v.optional(seconds('gc.orphanGraceSeconds', 1, 86400 * 30), 300),
          d('An engine object with our node label that no record and no desired workload claims is removed once it is this old, so a create in flight is never touched.'),
        ),
        failedRetentionSeconds: v.pipe(
          v.optional(seconds('gc.failedRetentionSeconds', 1, 86400 * 365), 3600),
          d('The record (error, failure history) of a failed workload the desired state dropped is kept this long, then forgotten.'),
        ),
        imageMinAgeSeconds: v.pipe(
          v.optional(seconds('gc.imageMinAgeSeconds', 1, 86400 * 365), 120),
          d('An image is removed only once no desired workload has referenced it for this long.'),
        ),
        imageHighThresholdPercent: v.pipe(
          v.optional(seconds('gc.imageHighThresholdPercent', 0, 100), 85),
          d('Image GC starts when the file system of the Docker data root is at least this full (percent used).'),
        ),
        imageLowThresholdPercent: v.pipe(
          v.optional(seconds('gc.imageLowThresholdPercent', 0, 100), 80),
          d('Image GC removes unreferenced images, oldest first, until usage is at or below this percent.'),
        ),
        replacedDiskRetentionSeconds: v.pipe(
          v.optional(seconds('gc.replacedDiskRetentionSeconds', 1, 86400 * 365), 86400),
          d('A VM disk file no longer named by the desired spec of its VM (left by a replaced revision) is kept this long after its last change.'),
        ),
      }),
      {},
    ),
    d('Garbage collection (docs/gc.md).'),
  ),
  maintenance: v.pipe(
    v.optional(
      v.strictObject({
        windows: v.pipe(
          v.optional(maintenanceWindows, []),
          d('Node-wide maintenance windows [{cron, durationMinutes, timezone}]; a document\'s maintenance.windows replaces them. As an environment variable or flag: a JSON array.'),
        ),
      }),
      {},
    ),
    d('Maintenance windows (docs/updates.md): updates that restart a running workload wait for one.'),
  ),
  update: v.pipe(
    v.optional(
      v.strictObject({
        maxParallel: v.pipe(
          v.optional(int('update.maxParallel', 0, 10000), 0),
          d('At most this many running workloads are restarted by updates in one pass; the rest wait for the next (0: no limit).'),
        ),
      }),
      {},
    ),
    d('Updates of running workloads (docs/updates.md).'),
  ),
  resources: v.pipe(
    v.optional(
      v.strictObject({
        reserved: v.pipe(
          v.optional(
            v.strictObject({
              cpus: v.pipe(v.optional(seconds('resources.reserved.cpus', 0, 1024), 0), d('Cores kept for the host.')),
              memoryBytes: v.pipe(v.optional(int('resources.reserved.memoryBytes', 0, Number.MAX_SAFE_INTEGER), 0), d('Memory kept for the host.')),
              diskBytes: v.pipe(v.optional(int('resources.reserved.diskBytes', 0, Number.MAX_SAFE_INTEGER), 0), d('Disk kept for the host.')),
            }),
            {},
          ),
          d('Reserved for the host and not allocatable: allocatable = capacity - reserved (docs/resources.md).'),
        ),
        overcommit: v.pipe(
          v.optional(
            v.strictObject({
              cpu: v.pipe(v.optional(seconds('resources.overcommit.cpu', 1, 100), 1), d('Factor on allocatable CPUs that requests may add up to (1: no overcommit).')),
              memory: v.pipe(v.optional(seconds('resources.overcommit.memory', 1, 100), 1), d('Factor on allocatable memory that requests may add up to. Default 1: memory is never overcommitted.')),
            }),
            {},
          ),
          d('How far the sum of requests may exceed what is allocatable.'),
        ),
        pressure: v.pipe(
          v.optional(
            v.strictObject({
              memoryAvailableBytes: v.pipe(v.optional(int('resources.pressure.memoryAvailableBytes', 0, Number.MAX_SAFE_INTEGER), 100 * 1024 * 1024), d('MemoryPressure below this much available memory (kubelet memory.available<100Mi).')),
              nodefsAvailablePercent: v.pipe(v.optional(seconds('resources.pressure.nodefsAvailablePercent', 0, 100), 10), d('DiskPressure below this share of free space on the state dir\'s file system (kubelet nodefs.available<10%).')),
              nodefsInodesFreePercent: v.pipe(v.optional(seconds('resources.pressure.nodefsInodesFreePercent', 0, 100), 5), d('DiskPressure below this share of free inodes there (kubelet nodefs.inodesFree<5%).')),
              imagefsAvailablePercent: v.pipe(v.optional(seconds('resources.pressure.imagefsAvailablePercent', 0, 100), 15), d('DiskPressure below this share of free space on Docker\'s data root (kubelet imagefs.available<15%).')),
              pidAvailablePercent: v.pipe(v.optional(seconds('resources.pressure.pidAvailablePercent', 0, 100), 10), d('PIDPressure below this share of free process ids (pid.available; the kubelet has no default, 0 switches it off).')),
              transitionPeriodSeconds: v.pipe(v.optional(seconds('resources.pressure.transitionPeriodSeconds', 1, 86400), 300), d('A condition clears only after this long without pressure (kubelet evictionPressureTransitionPeriod).')),
            }),
            {},
          ),
          d('Thresholds of the node conditions MemoryPressure, DiskPressure and PIDPressure (kubelet defaults).'),
        ),
        sampleIntervalSeconds: v.pipe(v.optional(seconds('resources.sampleIntervalSeconds', 1, 3600), 10), d('How often capacity, usage and the node conditions are read from the host.')),
      }),
      {},
    ),
    d('Host resources.'),
  ),
});

export type Config = v.InferOutput<typeof configSchema>;
export type ConfigInput = v.InferInput<typeof configSchema>;
