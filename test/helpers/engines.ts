/**
 * Test helpers for suites that use real engines (Docker, libvirt, Prometheus, nginx).
 *
 * Usage in a suite:
 *
 *   const skip = await requireEngine('docker');
 *   describe('docker runtime', { skip }, () => { ... });
 *
 * `requireEngine` returns `false` when the engine answers, a skip reason when it does not, and throws
 * when `PERSYS_REQUIRE_ENGINES` (a comma list, or `all`) names the engine: CI (`npm run test:all`)
 * sets it so that a missing engine fails the run instead of silently skipping it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { request } from 'node:http';
import { delimiter, join } from 'node:path';

export const ENGINE_NAMES = ['docker', 'libvirt', 'prometheus', 'pushgateway', 'nginx', 'postgres', 'chromium', 'systemd'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export interface EngineStatus {
  ok: boolean;
  reason: string;
}

export const REQUIRE_ENGINES_ENV = 'PERSYS_REQUIRE_ENGINES';
const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
const PING_TIMEOUT_MS = 2_000;
const DOCKER_API_TIMEOUT_MS = 30_000;

const LABEL_MANAGED = 'dev.persys.managed';
const LABEL_NODE_ID = 'dev.persys.node-id';

function isEngineName(value: string): value is EngineName {
  return (ENGINE_NAMES as readonly string[]).includes(value);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------
// PERSYS_REQUIRE_ENGINES parsing (pure)
// ---------------------------------------------------------------------------------------------

/**
 * Parses the value of PERSYS_REQUIRE_ENGINES: a comma (or whitespace) separated list of engine
 * names, case-insensitive, or `all` / `*`. Empty or unset means none. An unknown name throws, so a
 * typo cannot silently turn a required engine into a skipped one.
 */
export function parseRequiredEngines(raw: string | undefined): ReadonlySet<EngineName> {
  const required = new Set<EngineName>();
  if (raw === undefined) return required;
  const tokens = raw
    .split(/[,\s]+/)
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
  for (const token of tokens) {
    if (token === 'all' || token === '*') {
      for (const name of ENGINE_NAMES) required.add(name);
    } else if (isEngineName(token)) {
      required.add(token);
    } else {
      throw new Error(
        `${REQUIRE_ENGINES_ENV} names unknown engine '${token}' (known: ${ENGINE_NAMES.join(', ')}, all)`,
      );
    }
  }
  return required;
}

/**
 * The decision behind `requireEngine`, without any I/O: `false` to run the suite, a string to skip
 * it with that reason; throws when the engine is unavailable but required.
 */
export function decideEngine(name: EngineName, status: EngineStatus, requireRaw: string | undefined): string | false {
  if (status.ok) return false;
  if (parseRequiredEngines(requireRaw).has(name)) {
    throw new Error(`engine ${name} is required by ${REQUIRE_ENGINES_ENV} but unavailable: ${status.reason}`);
  }
  return `engine ${name} unavailable: ${status.reason}`;
}

// ---------------------------------------------------------------------------------------------
// Engine probes
// ---------------------------------------------------------------------------------------------

/**
 * The unix socket the Docker helpers talk to: DOCKER_HOST when it is a `unix://` address, else
 * /var/run/docker.sock. Returns an Error for a DOCKER_HOST that is not a unix socket.
 */
export function dockerSocketPath(env: NodeJS.ProcessEnv = process.env): string | Error {
  const host = env.DOCKER_HOST?.trim();
  if (host === undefined || host === '') return DEFAULT_DOCKER_SOCKET;
  if (host.startsWith('unix://')) {
    const path = host.slice('unix://'.length);
    return path === '' ? DEFAULT_DOCKER_SOCKET : path;
  }
  return new Error(`DOCKER_HOST=${host} is not a unix:// socket; the test helpers only support unix sockets`);
}

interface HttpResult {
  status: number;
  body: string;
}

function unixHttp(socketPath: string, method: string, path: string, timeoutMs: number): Promise<HttpResult> {
  return new Promise<HttpResult>((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: { Host: 'docker' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${path} on ${socketPath} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

async function dockerAvailable(): Promise<EngineStatus> {
  const socketPath = dockerSocketPath();
  if (socketPath instanceof Error) return { ok: false, reason: socketPath.message };
  try {
    const res = await unixHttp(socketPath, 'GET', '/_ping', PING_TIMEOUT_MS);
    if (res.status === 200 && res.body.trim() === 'OK') {
      return { ok: true, reason: `docker answers on ${socketPath}` };
    }
    return { ok: false, reason: `GET /_ping on ${socketPath} answered ${res.status} ${res.body.trim().slice(0, 200)}` };
  } catch (err) {
    return {
      ok: false,
      reason: `no answer from ${socketPath} (${errorMessage(err)}); run scripts/testbed/docker.sh as root`,
    };
  }
}

/** Absolute path of an executable found on PATH (plus /usr/sbin and /sbin), or undefined. */
export async function findExecutable(bin: string, pathEnv: string | undefined = process.env.PATH): Promise<string | undefined> {
  const dirs = (pathEnv ?? '').split(delimiter).filter((d) => d.length > 0);
  for (const extra of ['/usr/local/sbin', '/usr/sbin', '/sbin']) {
    if (!dirs.includes(extra)) dirs.push(extra);
  }
  for (const dir of dirs) {
    const candidate = join(dir, bin);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function binaryAvailable(bin: string, setupScript: string): Promise<EngineStatus> {
  const found = await findExecutable(bin);
  return found === undefined
    ? { ok: false, reason: `${bin} not found on PATH (install it with scripts/testbed/${setupScript})` }
    : { ok: true, reason: `${bin} at ${found}` };
}

function libvirtAvailable(): Promise<EngineStatus> {
  return new Promise<EngineStatus>((resolve) => {
    execFile('virsh', ['-c', 'qemu:///system', 'version'], { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err === null) {
        resolve({ ok: true, reason: 'virsh -c qemu:///system version succeeded' });
        return;
      }
      const detail = stderr.trim().split('\n').slice(-1)[0] ?? '';
      resolve({
        ok: false,
        reason: `virsh -c qemu:///system version failed (${err.message.split('\n')[0] ?? ''}${detail ? `: ${detail}` : ''}; run scripts/testbed/libvirt.sh as root)`,
      });
    });
  });
}

/** The testbed cluster's URL (scripts/testbed/postgres.sh writes it), or PERSYS_POSTGRES_URL. */
export async function postgresUrl(): Promise<string | undefined> {
  const fromEnv = process.env.PERSYS_POSTGRES_URL;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const file = join(process.env.PERSYS_TESTBED_DIR ?? '/var/tmp/persys-testbed', 'postgres.url');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

async function postgresAvailable(): Promise<EngineStatus> {
  const url = await postgresUrl();
  if (url === undefined) return { ok: false, reason: 'no PostgreSQL URL (run scripts/testbed/postgres.sh as root, or set PERSYS_POSTGRES_URL)' };
  const u = new URL(url);
  const port = Number(u.port || 5432);
  return new Promise<EngineStatus>((resolve) => {
    const socket = connect({ host: u.hostname, port, timeout: PING_TIMEOUT_MS });
    socket.once('connect', () => {
      socket.destroy();
      resolve({ ok: true, reason: `PostgreSQL answers on ${u.hostname}:${port}` });
    });
    const fail = (why: string) => {
      socket.destroy();
      resolve({ ok: false, reason: `PostgreSQL on ${u.hostname}:${port}: ${why} (run scripts/testbed/postgres.sh as root)` });
    };
    socket.once('timeout', () => fail('no answer'));
    socket.once('error', (err) => fail(err.message));
  });
}

/** Probes one engine; never throws. */
export async function engineAvailable(name: EngineName): Promise<EngineStatus> {
  switch (name) {
    case 'docker':
      return dockerAvailable();
    case 'libvirt':
      return libvirtAvailable();
    case 'prometheus':
      return binaryAvailable('prometheus', 'prometheus.sh');
    case 'pushgateway':
      return binaryAvailable('prometheus-pushgateway', 'prometheus.sh');
    case 'nginx':
      return binaryAvailable('nginx', 'nginx.sh');
    case 'postgres':
      return postgresAvailable();
    case 'chromium':
      return binaryAvailable('chromium', 'chromium.sh');
    case 'systemd':
      return (await import('./systemd-container.js')).systemdTestbedAvailable();
  }
}

/**
 * `false` when the engine is available (run the suite); otherwise a skip reason, or an Error thrown
 * when PERSYS_REQUIRE_ENGINES names the engine.
 */
export async function requireEngine(name: EngineName): Promise<string | false> {
  const status = await engineAvailable(name);
  return decideEngine(name, status, process.env[REQUIRE_ENGINES_ENV]);
}

// ---------------------------------------------------------------------------------------------
// Node ids and Docker cleanup
// ---------------------------------------------------------------------------------------------

const issuedNodeIds = new Set<string>();

/** `${prefix}-${pid}-${6 random hex}`; unique within this process. Use prefix `test` for tests. */
export function testNodeId(prefix: string): string {
  if (prefix.length === 0) throw new Error('testNodeId: prefix must not be empty');
  for (;;) {
    const id = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
    if (!issuedNodeIds.has(id)) {
      issuedNodeIds.add(id);
      return id;
    }
  }
}

async function dockerApi(method: string, path: string): Promise<HttpResult> {
  const socketPath = dockerSocketPath();
  if (socketPath instanceof Error) throw socketPath;
  return unixHttp(socketPath, method, path, DOCKER_API_TIMEOUT_MS);
}

async function dockerGetJson(path: string): Promise<unknown> {
  const res = await dockerApi('GET', path);
  if (res.status !== 200) throw new Error(`docker GET ${path}: ${res.status} ${res.body.trim()}`);
  const parsed: unknown = JSON.parse(res.body);
  return parsed;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringField(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  return typeof v === 'string' ? v : undefined;
}

function labelsOf(obj: Record<string, unknown>): Record<string, string> {
  const raw = obj.Labels;
  const out: Record<string, string> = {};
  if (!isRecord(raw)) return out;
  for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') out[k] = v;
  return out;
}

interface DockerObject {
  /** id for containers and networks, name for volumes */
  ref: string;
  labels: Record<string, string>;
  /** creation time in ms since the epoch, NaN when unknown */
  createdMs: number;
}

type DockerKind = 'container' | 'network' | 'volume';

async function listByLabel(kind: DockerKind, label: string): Promise<DockerObject[]> {
  const filters = encodeURIComponent(JSON.stringify({ label: [label] }));
  switch (kind) {
    case 'container': {
      const data = await dockerGetJson(`/containers/json?all=1&filters=${filters}`);
      if (!Array.isArray(data)) throw new Error('docker: unexpected /containers/json answer');
      return data.filter(isRecord).map((c) => ({
        ref: stringField(c, 'Id') ?? '',
        labels: labelsOf(c),
        createdMs: typeof c.Created === 'number' ? c.Created * 1000 : Number.NaN,
      }));
    }
    case 'network': {
      const data = await dockerGetJson(`/networks?filters=${filters}`);
      if (!Array.isArray(data)) throw new Error('docker: unexpected /networks answer');
      return data.filter(isRecord).map((n) => ({
        ref: stringField(n, 'Id') ?? '',
        labels: labelsOf(n),
        createdMs: Date.parse(stringField(n, 'Created') ?? ''),
      }));
    }
    case 'volume': {
      const data = await dockerGetJson(`/volumes?filters=${filters}`);
      const volumes = isRecord(data) && Array.isArray(data.Volumes) ? data.Volumes : [];
      return volumes.filter(isRecord).map((v) => ({
        ref: stringField(v, 'Name') ?? '',
        labels: labelsOf(v),
        createdMs: Date.parse(stringField(v, 'CreatedAt') ?? ''),
      }));
    }
  }
}

function removePath(kind: DockerKind, ref: string): string {
  const r = encodeURIComponent(ref);
  switch (kind) {
    case 'container':
      return `/containers/${r}?force=1&v=1`;
    case 'network':
      return `/networks/${r}`;
    case 'volume':
      return `/volumes/${r}?force=1`;
  }
}

/** Removes one object; a 404 (already gone) counts as success. Returns an error message or undefined. */
async function removeOne(kind: DockerKind, ref: string): Promise<string | undefined> {
  try {
    const res = await dockerApi('DELETE', removePath(kind, ref));
    if (res.status === 204 || res.status === 200 || res.status === 404) return undefined;
    return `${kind} ${ref.slice(0, 12)}: ${res.status} ${res.body.trim()}`;
  } catch (err) {
    return `${kind} ${ref.slice(0, 12)}: ${errorMessage(err)}`;
  }
}

export interface CleanupResult {
  containers: number;
  networks: number;
  volumes: number;
  errors: string[];
}

async function removeMatching(
  label: string,
  keep: (obj: DockerObject) => boolean,
): Promise<CleanupResult> {
  const result: CleanupResult = { containers: 0, networks: 0, volumes: 0, errors: [] };
  const order: Array<[DockerKind, 'containers' | 'networks' | 'volumes']> = [
    ['container', 'containers'],
    ['network', 'networks'],
    ['volume', 'volumes'],
  ];
  for (const [kind, counter] of order) {
    let objects: DockerObject[];
    try {
      objects = await listByLabel(kind, label);
    } catch (err) {
      result.errors.push(`listing ${kind}s: ${errorMessage(err)}`);
      continue;
    }
    for (const obj of objects) {
      if (obj.ref === '' || keep(obj)) continue;
      const error = await removeOne(kind, obj.ref);
      if (error === undefined) result[counter] += 1;
      else result.errors.push(error);
    }
  }
  return result;
}

/**
 * Force-removes every container, then network, then volume labelled
 * `dev.persys.node-id=<nodeId>` (use in `after()` of a suite). Throws if anything could not be removed.
 */
export async function cleanupDockerByLabel(nodeId: string): Promise<CleanupResult> {
  if (nodeId.length === 0) throw new Error('cleanupDockerByLabel: nodeId must not be empty');
  const result = await removeMatching(`${LABEL_NODE_ID}=${nodeId}`, () => false);
  if (result.errors.length > 0) {
    throw new Error(`cleanup of node ${nodeId} left resources behind:\n  ${result.errors.join('\n  ')}`);
  }
  return result;
}

/**
 * Best-effort removal of leftovers of failed earlier runs: everything labelled
 * `dev.persys.managed=true` whose node-id label starts with `prefix` (default `test-`) and that was
 * created more than `maxAgeMs` ago (default 30 minutes). Never throws for a removal that fails;
 * the failures are listed in the result.
 */
export async function cleanupStaleTestResources(prefix = 'test-', maxAgeMs = 30 * 60_000): Promise<CleanupResult> {
  if (prefix.length === 0) throw new Error('cleanupStaleTestResources: prefix must not be empty');
  const cutoff = Date.now() - maxAgeMs;
  return removeMatching(`${LABEL_MANAGED}=true`, (obj) => {
    const nodeId = obj.labels[LABEL_NODE_ID];
    const stale = nodeId !== undefined && nodeId.startsWith(prefix) && Number.isFinite(obj.createdMs) && obj.createdMs < cutoff;
    return !stale;
  });
}
