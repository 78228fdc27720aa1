/**
 * The cloud-init NoCloud seed of a VM: `meta-data` (instance-id that follows the revision,
 * local-hostname, extra keys), `user-data` (the spec's, with the login merged in as cloud-config),
 * and `network-config` / `vendor-data` when the spec gives them; written to an ISO 9660 image with
 * volume id `cidata` by genisoimage. Rendering is pure and unit-tested; only writeSeedIso touches disk.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import YAML from 'yaml';

import { WorkloadError } from '../../errors/index.js';
import type { VmSpec } from '../../spec/vm.js';
import { runTool, ToolError } from './exec.js';

/** Bound of the seed's files together; the ISO adds little on top. */
export const MAX_SEED_BYTES = 1024 * 1024;
/** Bound of the ISO genisoimage writes (files + ISO 9660/Joliet/Rock Ridge structures). */
export const MAX_SEED_ISO_BYTES = 4 * 1024 * 1024;

export const SEED_FILE_NAMES = ['user-data', 'meta-data', 'network-config', 'vendor-data'] as const;
export type SeedFileName = (typeof SEED_FILE_NAMES)[number];
export type SeedFiles = { 'user-data': string; 'meta-data': string } & Partial<Record<'network-config' | 'vendor-data', string>>;

export interface SeedInput {
  instanceId: string;
  hostname: string;
  cloudInit?: VmSpec['cloudInit'];
  login?: VmSpec['login'];
  /** Generated password for login.username (login.generatePassword). */
  password?: string;
}

/** Sudo rule of the login user: the person who gets the VM administers it. */
const LOGIN_SUDO = 'ALL=(ALL) NOPASSWD:ALL';

/** MIME types cloud-init recognises by the first line of a user-data part. */
const PART_TYPES: readonly (readonly [string, string])[] = [
  ['#cloud-config-archive', 'text/cloud-config-archive'],
  ['#cloud-config', 'text/cloud-config'],
  ['#cloud-boothook', 'text/cloud-boothook'],
  ['#part-handler', 'text/part-handler'],
  ['#include-once', 'text/x-include-once-url'],
  ['#include', 'text/x-include-url'],
  ['#upstart-job', 'text/upstart-job'],
  ['#!', 'text/x-shellscript'],
  ['## template: jinja', 'text/jinja2'],
];

function invalid(message: string): WorkloadError {
  return new WorkloadError('INVALID_SPEC', message, { details: { operation: 'cloud-init' } });
}

export function renderMetaData(input: Pick<SeedInput, 'instanceId' | 'hostname' | 'cloudInit'>): string {
  const extra = input.cloudInit?.metaData ?? {};
  const doc: Record<string, string> = { 'instance-id': input.instanceId, 'local-hostname': input.hostname };
  for (const k of Object.keys(extra).sort()) {
    if (k === 'instance-id' || k === 'local-hostname') continue;
    doc[k] = extra[k] ?? '';
  }
  return YAML.stringify(doc, { lineWidth: 0 });
}

type UserEntry = Record<string, unknown> & { name?: unknown };

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The cloud-config user entry for the login, merged into an entry of the same name when the spec has one. */
function mergeUsers(existing: unknown, login: NonNullable<VmSpec['login']>, password: string | undefined): unknown[] {
  let users: unknown[];
  if (existing === undefined || existing === null) users = ['default'];
  else if (Array.isArray(existing)) users = [...existing];
  else if (typeof existing === 'string') users = existing.split(',').map((s) => s.trim()).filter((s) => s !== '');
  else if (isMap(existing)) users = [existing];
  else throw invalid('userData: cloud-config "users" must be a list');

  const keys = (login.sshAuthorizedKeys ?? []).map((k) => k.trim());
  const ours: UserEntry = {
    name: login.username,
    shell: '/bin/bash',
    sudo: LOGIN_SUDO,
    lock_passwd: password === undefined,
  };
  if (keys.length > 0) ours.ssh_authorized_keys = [...keys];
  if (password !== undefined) ours.plain_text_passwd = password;

  const at = users.findIndex((u) => u === login.username || (isMap(u) && u.name === login.username));
  const found = at >= 0 ? users[at] : undefined;
  if (isMap(found)) {
    // The spec's own entry keeps its settings; the login adds its keys and password.
    const theirs = Array.isArray(found.ssh_authorized_keys) ? found.ssh_authorized_keys.filter((k): k is string => typeof k === 'string') : [];
    const merged: UserEntry = { ...ours, ...found };
    const allKeys = [...new Set([...theirs, ...keys])];
    if (allKeys.length > 0) merged.ssh_authorized_keys = allKeys;
    if (password !== undefined) {
      merged.plain_text_passwd = password;
      merged.lock_passwd = false;
    }
    users[at] = merged;
  } else if (at >= 0) {
    users[at] = ours;
  } else {
    users.push(ours);
  }
  return users;
}

function loginCloudConfig(base: Record<string, unknown>, login: NonNullable<VmSpec['login']>, password: string | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base, users: mergeUsers(base.users, login, password) };
  if (password !== undefined && out.ssh_pwauth === undefined) out.ssh_pwauth = true;
  return out;
}

const CLOUD_CONFIG_HEADER = '#cloud-config\n';

function firstLine(s: string): string {
  const nl = s.indexOf('\n');
  return (nl === -1 ? s : s.slice(0, nl)).replace(/\r$/, '').trim();
}

function partType(body: string): string | undefined {
  const line = firstLine(body);
  if (line === '#cloud-config') return 'text/cloud-config';
  for (const [prefix, type] of PART_TYPES) if (line.startsWith(prefix) && prefix !== '#cloud-config') return type;
  return undefined;
}

/** user-data: the spec's, with the login merged in (cloud-config) or added as a second MIME part (scripts). */
export function renderUserData(userData: string | undefined, login: VmSpec['login'], password: string | undefined, boundary?: string): string {
  if (!login) return userData ?? CLOUD_CONFIG_HEADER;
  if (userData === undefined || userData.trim() === '') {
    return CLOUD_CONFIG_HEADER + YAML.stringify(loginCloudConfig({}, login, password), { lineWidth: 0 });
  }
  if (firstLine(userData) === '#cloud-config') {
    let parsed: unknown;
    try {
      parsed = YAML.parse(userData, { maxAliasCount: 100 });
    } catch (err) {
      throw invalid(`userData is #cloud-config but not valid YAML: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (parsed !== null && parsed !== undefined && !isMap(parsed)) throw invalid('userData is #cloud-config but its YAML is not a mapping');
    return CLOUD_CONFIG_HEADER + YAML.stringify(loginCloudConfig(isMap(parsed) ? parsed : {}, login, password), { lineWidth: 0 });
  }
  if (/^content-type:\s*multipart\//i.test(userData.trimStart()) || /^mime-version:/i.test(userData.trimStart())) {
    throw invalid('userData is already a MIME multipart document: the agent cannot merge login into it; put the user into a #cloud-config part and leave login out, or give cloud-config userData');
  }
  const type = partType(userData);
  if (type === undefined) {
    throw invalid('userData must start with #cloud-config, #! (a script) or another cloud-init part header to be combined with login');
  }
  const b = boundary ?? `persys-${randomBytes(12).toString('hex')}`;
  if (userData.includes(b)) throw invalid('userData contains the MIME boundary; try again');
  const loginPart = CLOUD_CONFIG_HEADER + YAML.stringify(loginCloudConfig({}, login, password), { lineWidth: 0 });
  const part = (ctype: string, name: string, body: string) =>
    `--${b}\nContent-Type: ${ctype}; charset="utf-8"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\nContent-Disposition: attachment; filename="${name}"\n\n${body.endsWith('\n') ? body : `${body}\n`}`;
  return (
    `Content-Type: multipart/mixed; boundary="${b}"\nMIME-Version: 1.0\n\n` +
    part('text/cloud-config', 'persys-login.cfg', loginPart) +
    part(type, 'user-data', userData) +
    `--${b}--\n`
  );
}

/** Every file of the seed; throws INVALID_SPEC when they exceed MAX_SEED_BYTES together. */
export function renderSeed(input: SeedInput): SeedFiles {
  const files: SeedFiles = {
    'user-data': renderUserData(input.cloudInit?.userData, input.login, input.password),
    'meta-data': renderMetaData(input),
  };
  if (input.cloudInit?.networkConfig !== undefined) files['network-config'] = input.cloudInit.networkConfig;
  if (input.cloudInit?.vendorData !== undefined) files['vendor-data'] = input.cloudInit.vendorData;
  const total = Object.values(files).reduce((n, s) => n + Buffer.byteLength(s ?? '', 'utf8'), 0);
  if (total > MAX_SEED_BYTES) throw invalid(`the cloud-init seed is ${total} bytes, more than the ${MAX_SEED_BYTES} allowed`);
  return files;
}

export interface WriteSeedOptions {
  genisoimage: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Writes `files` into an ISO 9660 image (volume id cidata, Joliet + Rock Ridge) at `isoPath`, mode 0600
 * (it may hold a password; libvirt hands it to QEMU). Atomic: a temp dir and file, then a rename.
 */
export async function writeSeedIso(isoPath: string, files: SeedFiles, opts: WriteSeedOptions): Promise<void> {
  const stage = `${isoPath}.stage-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmpIso = `${stage}.iso`;
  await mkdir(stage, { mode: 0o700 });
  try {
    const names: string[] = [];
    for (const name of SEED_FILE_NAMES) {
      const body = files[name];
      if (body === undefined) continue;
      await writeFile(join(stage, name), body, { mode: 0o600 });
      names.push(name);
    }
    try {
      await runTool(
        opts.genisoimage,
        ['-output', tmpIso, '-volid', 'cidata', '-joliet', '-rock', '-input-charset', 'utf-8', '-quiet', ...names],
        { timeoutMs: opts.timeoutMs, signal: opts.signal, cwd: stage, label: 'genisoimage' },
      );
    } catch (err) {
      if (err instanceof ToolError && err.failure === 'aborted') throw new WorkloadError('TIMEOUT', err.message, { cause: err });
      if (err instanceof ToolError && err.failure === 'not-found') {
        throw new WorkloadError('RUNTIME_UNAVAILABLE', err.message, { cause: err, userMessage: 'genisoimage is not installed on this host; VMs with a cloud-init seed cannot be created.' });
      }
      throw new WorkloadError('VM_DEFINE_FAILED', err instanceof ToolError ? err.toolMessage : String(err), { cause: err, details: { operation: 'genisoimage' } });
    }
    const size = (await stat(tmpIso)).size;
    if (size > MAX_SEED_ISO_BYTES) throw invalid(`the cloud-init seed ISO is ${size} bytes, more than the ${MAX_SEED_ISO_BYTES} allowed`);
    await chmod(tmpIso, 0o600);
    await rename(tmpIso, isoPath);
  } finally {
    await rm(stage, { recursive: true, force: true });
    await rm(tmpIso, { force: true });
  }
}
