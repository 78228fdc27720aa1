import * as v from 'valibot';
import { duration, envName, labelKey, nonEmptyString, nonNegativeInt, port, positiveInt, safeName, workloadSchema } from '../../spec/common.js';

const d = v.description;

const imageRef = v.pipe(
  v.string(),
  v.minLength(1, 'image must not be empty'),
  v.maxLength(512, 'image is longer than 512'),
  v.regex(/^[a-z0-9][a-z0-9._\-/:@]*$/, 'image must be a reference like "repo/name:tag" or "name@sha256:<digest>" (lower case)'),
  d('Image reference: [registry/]repository[:tag][@digest]. A missing tag means "latest".'),
);

const portMapping = v.strictObject({
  hostIp: v.pipe(
    v.optional(v.pipe(v.string(), v.ip('hostIp must be an IPv4 or IPv6 address'))),
    d('Host address to bind; default all addresses (IPv4 and IPv6). Use 127.0.0.1 to keep a port local.'),
  ),
  hostPort: v.pipe(v.optional(port('hostPort')), d('Host port; omitted means the container port is not published.')),
  containerPort: v.pipe(port('containerPort'), d('Port inside the container.')),
  protocol: v.pipe(v.optional(v.picklist(['tcp', 'udp', 'sctp'], 'protocol must be tcp, udp or sctp')), d('Default tcp.')),
});

const absPath = (what: string) =>
  v.pipe(
    v.string(),
    v.startsWith('/', `${what} must be an absolute path`),
    v.maxLength(4096, `${what} is longer than 4096`),
    v.check((p) => !p.split('/').includes('..'), `${what} must not contain '..'`),
    v.check((p) => !p.includes('\0'), `${what} must not contain NUL`),
  );

const mount = v.variant('type', [
  v.strictObject({
    type: v.pipe(v.literal('bind'), d('A host path (denied unless the host policy allows host paths).')),
    source: v.pipe(absPath('volumes[].source'), d('Absolute host path.')),
    target: v.pipe(absPath('volumes[].target'), d('Absolute path in the container.')),
    readOnly: v.pipe(v.optional(v.boolean()), d('Mount read-only; default false.')),
  }),
  v.strictObject({
    type: v.pipe(v.literal('volume'), d('A named volume managed by the agent.')),
    source: v.pipe(safeName('volume name'), d('Volume name (see the document\'s "volumes").')),
    target: v.pipe(absPath('volumes[].target'), d('Absolute path in the container.')),
    readOnly: v.pipe(v.optional(v.boolean()), d('Mount read-only; default false.')),
  }),
  v.strictObject({
    type: v.pipe(v.literal('tmpfs'), d('An in-memory filesystem.')),
    target: v.pipe(absPath('volumes[].target'), d('Absolute path in the container.')),
    sizeBytes: v.pipe(v.optional(positiveInt('volumes[].sizeBytes')), d('Size cap in bytes.')),
  }),
], 'volumes[].type must be bind, volume or tmpfs');

const resources = v.strictObject({
  cpus: v.pipe(
    v.optional(v.pipe(v.number(), v.minValue(0.01, 'cpus must be at least 0.01'), v.maxValue(1024, 'cpus must be at most 1024'))),
    d('CPU limit in cores (fractions allowed).'),
  ),
  memoryBytes: v.pipe(v.optional(v.pipe(positiveInt('memoryBytes'), v.minValue(6 * 1024 * 1024, 'memoryBytes must be at least 6 MiB (Docker\'s minimum)'))), d('Memory limit in bytes.')),
  memorySwapBytes: v.pipe(
    v.optional(v.pipe(v.number(), v.integer('memorySwapBytes must be an integer'), v.minValue(-1, 'memorySwapBytes must be -1 (unlimited) or a byte count'))),
    d('Memory + swap limit in bytes; -1 for unlimited swap.'),
  ),
  cpuShares: v.pipe(v.optional(v.pipe(positiveInt('cpuShares'), v.minValue(2, 'cpuShares must be at least 2'), v.maxValue(262144, 'cpuShares must be at most 262144'))), d('Relative CPU weight.')),
  pidsLimit: v.pipe(v.optional(positiveInt('pidsLimit')), d('Maximum number of processes.')),
});

const healthcheck = v.strictObject({
  test: v.pipe(
    v.array(v.string()),
    v.minLength(1, 'healthcheck.test must not be empty'),
    d('Docker form: ["CMD", "prog", "arg"] or ["CMD-SHELL", "cmd"] or ["NONE"].'),
  ),
  intervalSeconds: v.pipe(v.optional(duration('healthcheck.intervalSeconds')), d('Default 30.')),
  timeoutSeconds: v.pipe(v.optional(duration('healthcheck.timeoutSeconds')), d('Default 30.')),
  retries: v.pipe(v.optional(positiveInt('healthcheck.retries')), d('Default 3.')),
  startPeriodSeconds: v.pipe(v.optional(duration('healthcheck.startPeriodSeconds')), d('Default 0.')),
});

const network = v.strictObject({
  mode: v.pipe(
    v.optional(v.pipe(v.string(), v.regex(/^(bridge|host|none|[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62})$/, 'network.mode must be bridge, host, none or a network name'))),
    d('bridge (default), host, none, or the name of a Docker network.'),
  ),
  dns: v.pipe(v.optional(v.array(v.pipe(v.string(), v.ip('network.dns entries must be IP addresses')))), d('DNS servers.')),
  extraHosts: v.pipe(
    v.optional(v.array(v.pipe(v.string(), v.regex(/^[A-Za-z0-9.-]+:[0-9A-Fa-f.:]+$/, 'network.extraHosts entries must be "host:ip"')))),
    d('Extra /etc/hosts entries as "host:ip".'),
  ),
});

const capability = v.pipe(v.string(), v.regex(/^(CAP_)?[A-Z_]+$|^ALL$/, 'capabilities are upper-case names like NET_ADMIN or ALL'));

const security = v.strictObject({
  privileged: v.pipe(v.optional(v.boolean()), d('Privileged container; denied unless the host policy allows it.')),
  capAdd: v.pipe(v.optional(v.array(capability)), d('Capabilities to add.')),
  capDrop: v.pipe(v.optional(v.array(capability)), d('Capabilities to drop.')),
  readOnlyRootfs: v.pipe(v.optional(v.boolean()), d('Mount the root filesystem read-only.')),
  noNewPrivileges: v.pipe(v.optional(v.boolean()), d('Set no-new-privileges.')),
  seccompProfile: v.pipe(v.optional(nonEmptyString('security.seccompProfile', 256)), d('"unconfined" or a profile name known to the engine.')),
  apparmorProfile: v.pipe(v.optional(nonEmptyString('security.apparmorProfile', 256)), d('AppArmor profile name.')),
});

const logging = v.strictObject({
  driver: v.pipe(v.string(), v.regex(/^[a-z0-9_-]{1,64}$/, 'logging.driver must be a driver name'), d('Docker log driver, e.g. json-file, local, journald.')),
  options: v.pipe(v.optional(v.record(v.string(), v.string())), d('Driver options, e.g. {"max-size": "10m"}.')),
});

export const containerSpec = v.strictObject({
  image: imageRef,
  pullPolicy: v.pipe(
    v.optional(v.picklist(['Always', 'IfNotPresent', 'Never'], 'pullPolicy must be Always, IfNotPresent or Never')),
    d('When to pull: Always, IfNotPresent (default, also for "latest": a fleet host must not depend on a registry to restart), Never. Not part of the spec hash.'),
  ),
  command: v.pipe(v.optional(v.array(v.string())), d('Arguments (Docker CMD); replaces the image default.')),
  entrypoint: v.pipe(v.optional(v.array(v.string())), d('Entrypoint; replaces the image default.')),
  env: v.pipe(v.optional(v.record(envName, v.pipe(v.string(), v.maxLength(131072, 'env value is longer than 128 KiB')))), d('Environment variables. Values are never logged.')),
  ports: v.pipe(v.optional(v.array(portMapping)), d('Published ports.')),
  volumes: v.pipe(v.optional(v.array(mount)), d('Mounts: bind (host path), volume (named), tmpfs.')),
  resources: v.pipe(v.optional(resources), d('Resource limits.')),
  restartPolicy: v.pipe(
    v.optional(v.picklist(['no', 'always', 'unless-stopped', 'on-failure'], 'restartPolicy must be no, always, unless-stopped or on-failure')),
    d("Docker restart policy; default unless-stopped, so containers survive an agent that is down."),
  ),
  restartMaxRetries: v.pipe(v.optional(nonNegativeInt('restartMaxRetries')), d('With on-failure: the retry cap.')),
  labels: v.pipe(v.optional(v.record(labelKey, v.string())), d('Extra container labels (dev.persys.* is reserved).')),
  healthcheck: v.pipe(v.optional(healthcheck), d('Container health check.')),
  user: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/, 'user must be "name", "uid" or "uid:gid"'))), d('User to run as.')),
  workingDir: v.pipe(v.optional(absPath('workingDir')), d('Working directory.')),
  hostname: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/, 'hostname must be a DNS name'))), d('Container hostname.')),
  network: v.pipe(v.optional(network), d('Networking.')),
  security: v.pipe(v.optional(security), d('Security options.')),
  logging: v.pipe(v.optional(logging), d('Log driver.')),
  stopSignal: v.pipe(v.optional(v.pipe(v.string(), v.regex(/^(SIG)?[A-Z0-9]+$|^[0-9]+$/, 'stopSignal must be a signal name like SIGTERM'))), d('Signal sent to stop the container; default the image\'s.')),
  stopTimeoutSeconds: v.pipe(v.optional(v.pipe(nonNegativeInt('stopTimeoutSeconds'), v.maxValue(3600, 'stopTimeoutSeconds must be at most 3600'))), d('Seconds between the stop signal and SIGKILL; default 10.')),
});
export type ContainerSpec = v.InferOutput<typeof containerSpec>;
export type PortMapping = v.InferOutput<typeof portMapping>;
export type Mount = v.InferOutput<typeof mount>;

export const containerWorkload = workloadSchema('container', containerSpec, {
  type: 'A single Docker container.',
  spec: 'Container settings (image, command, env, ports, mounts, limits, ...).',
});
export type ContainerWorkload = v.InferOutput<typeof containerWorkload>;
