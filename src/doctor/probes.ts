/**
 * `persys-agent doctor`: the probes. Each one looks at the host the way a person would before filing
 * a bug, and hands what it saw to the pure checks in checks.ts. Nothing here writes anything.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, readFile, stat, statfs } from 'node:fs/promises';
import { request } from 'node:http';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadConfig, type FlagValue } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors/index.js';
import { resolveNodeIdReadOnly } from '../identity/node-id.js';
import { formatIssues, validateDesiredState } from '../spec/validate.js';
import { createHttpClient, describeNetworkError, expandNodeIdTemplate, headerValue, readSnippet } from '../sync/http-client.js';
import {
  checkClock,
  checkDisk,
  checkSourceAnswer,
  checkSourceError,
  checkStateDir,
  fail,
  ok,
  skip,
  summarize,
  type CheckResult,
  type DoctorReport,
} from './checks.js';

const PROBE_TIMEOUT_MS = 10_000;

export interface DoctorOptions {
  configFile?: string;
  env: NodeJS.ProcessEnv;
  flags: Record<string, FlagValue>;
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const checks: CheckResult[] = [];
  let config: Config;
  try {
    config = loadConfig({ ...(opts.configFile ? { file: opts.configFile } : {}), env: opts.env, flags: opts.flags });
    checks.push(ok('config', opts.configFile ? `${opts.configFile} is valid` : 'no config file: embedded defaults (plus PERSYS_* and flags)'));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    checks.push(fail('config', err.issues.join('; '), `fix ${opts.configFile ?? 'the PERSYS_* variables or flags'} as said (schemas/config.schema.json lists every key)`));
    return summarize(checks);
  }

  let nodeId = config.nodeId ?? 'unknown';
  try {
    const id = await resolveNodeIdReadOnly({ ...(config.nodeId ? { override: config.nodeId } : {}), stateDir: config.stateDir });
    nodeId = id.nodeId;
    checks.push(ok('node id', `${id.nodeId} (from ${id.source})`));
  } catch (err) {
    checks.push(fail('node id', err instanceof Error ? err.message : String(err), 'set nodeId in the config (or PERSYS_NODE_ID)'));
  }

  checks.push(await probeStateDir(config.stateDir));
  checks.push(await probeDisk(config.stateDir));
  checks.push(...(await probeSource(config, nodeId)));
  checks.push(await probeDocker(config));
  checks.push(await probeLibvirt(config));
  return summarize(checks);
}

async function probeStateDir(path: string): Promise<CheckResult> {
  let st: { isDirectory: boolean; mode: number; uid: number } | null = null;
  try {
    const s = await stat(path);
    st = { isDirectory: s.isDirectory(), mode: s.mode, uid: s.uid };
  } catch {
    st = null;
  }
  let writable = false;
  if (st) writable = await access(path, fsConstants.W_OK).then(() => true, () => false);
  return checkStateDir({ path, stat: st, uid: process.getuid?.() ?? 0, writable });
}

/** Free space where the state dir is (or will be: its nearest existing parent). */
async function probeDisk(path: string): Promise<CheckResult> {
  let p = path;
  for (;;) {
    try {
      const s = await statfs(p);
      return checkDisk({ path: p, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize });
    } catch (err) {
      const parent = dirname(p);
      if (parent === p) return fail('disk space', `cannot read the file system of ${path}: ${describeNetworkError(err)}`, 'check the state dir path');
      p = parent;
    }
  }
}

async function probeSource(config: Config, nodeId: string): Promise<CheckResult[]> {
  const template = config.source.url;
  if (!template) return [skip('source', 'no source.url: desired state comes from the local file given to `run --desired`'), skip('clock', 'no server to compare against')];
  const url = expandNodeIdTemplate(template, nodeId);
  if (url.startsWith('file:')) {
    const path = fileURLToPath(url);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      return [fail('source', `cannot read ${path}: ${describeNetworkError(err)}`, `write the desired state to ${path}, or fix source.url`), skip('clock', 'file:// source: no server to compare against')];
    }
    return [validity(text, url), skip('clock', 'file:// source: no server to compare against')];
  }
  let client;
  try {
    client = createHttpClient({
      ...(config.source.caFile ? { caFile: config.source.caFile } : {}),
      ...(config.source.certFile ? { certFile: config.source.certFile } : {}),
      ...(config.source.keyFile ? { keyFile: config.source.keyFile } : {}),
      ...(config.source.tokenFile ? { tokenFile: config.source.tokenFile } : {}),
      allowInsecureHttp: config.source.allowInsecureHttp,
      timeoutMs: PROBE_TIMEOUT_MS,
    });
  } catch (err) {
    return [fail('source', err instanceof Error ? err.message : String(err), 'fix the source.* credential files named above'), skip('clock', 'source not reachable')];
  }
  const shown = template.replaceAll('{nodeId}', nodeId);
  try {
    const answer = await client.request(new URL(url), { method: 'GET', signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 2) }, async (res) => {
      const at = Date.now();
      const body = res.statusCode === 200 ? await res.body.text() : await readSnippet(res.body);
      return { status: res.statusCode, date: headerValue(res.headers, 'date'), at, body };
    });
    const source = checkSourceAnswer(answer.status, shown, nodeId, config.source.tokenFile !== undefined);
    const result = answer.status === 200 && source.status === 'ok' ? validity(answer.body, shown) : source;
    return [result, checkClock(answer.date, answer.at, new URL(url).host)];
  } catch (err) {
    return [checkSourceError(describeNetworkError(err), shown), skip('clock', 'source not reachable')];
  } finally {
    await client.close();
  }
}

function validity(text: string, url: string): CheckResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail('source', `${url}: the desired state is not JSON (${err instanceof Error ? err.message : String(err)})`, 'fix the document at the source; the agent keeps the last good one meanwhile');
  }
  // A signed document (DSSE envelope) is checked by the agent with its keys; here only its shape.
  if (typeof doc === 'object' && doc !== null && 'payloadType' in doc) return ok('source', `${url}: a signed document (DSSE envelope)`);
  const v = validateDesiredState(doc);
  if (!v.ok) return fail('source', `${url}: the desired state is invalid: ${formatIssues(v.issues).split('\n').join('; ')}`, 'fix the document at the source (persys-agent validate FILE shows every error)');
  return ok('source', `${url}: valid desired state, generation ${v.value.generation}, ${v.value.workloads.length} workload(s)`);
}

function dockerGet(socketPath: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: PROBE_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c.length + body.length < 65536 ? c : ''));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function probeDocker(config: Config): Promise<CheckResult> {
  if (!config.docker.enabled) return skip('docker', 'disabled by config (docker.enabled=false)');
  const sock = config.docker.socketPath;
  try {
    const ping = await dockerGet(sock, '/_ping');
    if (ping.status !== 200) return fail('docker', `${sock}: /_ping answered ${ping.status}`, 'see dockerd\'s log (journalctl -u docker)');
    const v = await dockerGet(sock, '/version');
    const info = JSON.parse(v.body) as { Version?: string; ApiVersion?: string };
    return ok('docker', `dockerd ${info.Version ?? '?'} (API ${info.ApiVersion ?? '?'}) on ${sock}`);
  } catch (err) {
    const msg = describeNetworkError(err);
    const fix = /EACCES|EPERM/.test(msg) ? `run as root (the agent does), or join the docker group to run doctor` : 'start dockerd (systemctl start docker), or set docker.enabled=false';
    return fail('docker', `${sock}: ${msg}`, fix);
  }
}

function probeLibvirt(config: Config): Promise<CheckResult> {
  if (!config.libvirt.enabled) return Promise.resolve(skip('libvirt', 'disabled by config (libvirt.enabled=false)'));
  const uri = config.libvirt.uri;
  return new Promise((resolve) => {
    execFile('virsh', ['-c', uri, 'version'], { timeout: PROBE_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (!err) {
        const hv = /Running hypervisor: (.+)/.exec(stdout)?.[1]?.trim();
        resolve(ok('libvirt', `${uri}${hv ? `: ${hv}` : ''}`));
        return;
      }
      const reason = (stderr.trim().split('\n').pop() ?? '') || err.message;
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      resolve(
        fail(
          'libvirt',
          missing ? 'virsh not found' : `${uri}: ${reason}`,
          missing ? 'install libvirt-clients (apt-get install libvirt-clients), or set libvirt.enabled=false' : 'start libvirtd (systemctl start libvirtd), or set libvirt.enabled=false',
        ),
      );
    });
  });
}
