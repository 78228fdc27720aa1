import { hash } from 'node:crypto';

/*
 * Building blocks of canonical forms, shared by every workload type (each type's own form lives in
 * its runtime folder): JSON values with sorted keys, pruning of empties, the hash, and person-readable
 * differences between two canonical specs.
 */

export type CanonicalJson = string | number | boolean | null | CanonicalJson[] | { [key: string]: CanonicalJson };
export type CanonicalObject = { [key: string]: CanonicalJson };

/**
 * Assigns an own property even for the key "__proto__" (a valid env name), which a plain
 * assignment would turn into a prototype change, silently dropping the variable from the hash.
 */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

export function sortedRecord(r: Readonly<Record<string, string>> | undefined): Record<string, string> | undefined {
  if (!r) return undefined;
  const keys = Object.keys(r).sort();
  if (keys.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const k of keys) setOwn(out, k, r[k] as string);
  return out;
}

export function nonEmpty<T>(a: readonly T[] | undefined): T[] | undefined {
  return a && a.length > 0 ? [...a] : undefined;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Sorted keys; undefined, empty arrays and empty objects dropped. Array elements are kept even
 * when they prune to empty: a position in a list (a disk, a NIC) means something.
 */
export function pruneCanonical(value: unknown): CanonicalJson | undefined {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) {
    if (value.length === 0) return undefined;
    return value.map((el) => pruneCanonical(el) ?? (Array.isArray(el) ? [] : isPlainObject(el) ? {} : null));
  }
  if (isPlainObject(value)) {
    const out: CanonicalObject = {};
    for (const k of Object.keys(value).sort()) {
      const v = pruneCanonical(value[k]);
      if (v !== undefined) setOwn(out, k, v);
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
  return undefined;
}

/** JSON with object keys sorted at every level, so key order in the document never matters. */
export function stableStringify(value: unknown): string {
  if (value === undefined) return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : stableStringify(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const v = obj[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${stableStringify(v)}`);
  }
  return `{${parts.join(',')}}`;
}

/** True when every object in `v` has its keys in sorted order and no undefined values. */
function isSortedDeep(v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'object' || v === null) return true;
  if (Array.isArray(v)) {
    for (const el of v) if (!isSortedDeep(el)) return false;
    return true;
  }
  const rec = v as Record<string, unknown>;
  let prev: string | undefined;
  for (const k in rec) {
    if (!Object.prototype.hasOwnProperty.call(rec, k)) continue;
    if (prev !== undefined && prev >= k) return false;
    if (!isSortedDeep(rec[k])) return false;
    prev = k;
  }
  return true;
}

/** The hash input: type + canonical spec; never revision, desiredState, retry, retryToken or id. */
export function hashCanonical(type: string, canonical: unknown): string {
  // Same bytes either way: for sorted input, native JSON.stringify is stableStringify, only faster.
  const body = isSortedDeep(canonical) ? JSON.stringify({ spec: canonical, type }) : stableStringify({ spec: canonical, type });
  return `sha256:${hash('sha256', body, 'hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Person-readable differences
// ---------------------------------------------------------------------------------------------

/** How a type's changes are worded: which paths are maps and which subtrees may hold secrets. */
export interface ChangeWording {
  /** Maps whose keys are reported one by one ("env FOO changed"); their values are never shown. */
  maps: ReadonlySet<string>;
  /** Subtrees whose values may be secrets (env, tokens, cloud-init, logins): never shown. */
  secretPrefixes: readonly string[];
}
const NO_WORDING: ChangeWording = { maps: new Set(), secretPrefixes: [] };
const SECRET_KEY = /pass|secret|token|key|auth|cred/i;
const MAX_SHOWN = 64;

function isSecretPath(path: string, w: ChangeWording): boolean {
  if (w.secretPrefixes.some((p) => path === p || path.startsWith(`${p}.`))) return true;
  const last = path.slice(path.lastIndexOf('.') + 1);
  return SECRET_KEY.test(last);
}

/** Control characters (newlines, escapes) would break a one-line reason or a terminal. */
function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20 || s.charCodeAt(i) === 0x7f) return true;
  return false;
}

type Shown = { ok: true; text: string } | { ok: false };

/** A value is shown only when it is a scalar and short; absent fields read "default". */
function show(v: unknown): Shown {
  if (v === undefined) return { ok: true, text: 'default' };
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return { ok: true, text: String(v) };
  if (typeof v === 'string' && v.length <= MAX_SHOWN && !hasControlChar(v)) return { ok: true, text: v === '' ? '""' : v };
  return { ok: false };
}

/** Structural equality of JSON-like values (canonical specs hold nothing else). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(rb, k) || !deepEqual(ra[k], rb[k])) return false;
  }
  return true;
}

function describeMap(path: string, a: unknown, b: unknown, out: string[]): void {
  const ra = isPlainObject(a) ? a : {};
  const rb = isPlainObject(b) ? b : {};
  const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].sort();
  for (const k of keys) {
    const inA = Object.prototype.hasOwnProperty.call(ra, k);
    const inB = Object.prototype.hasOwnProperty.call(rb, k);
    if (inA && !inB) out.push(`${path} ${k} removed`);
    else if (!inA && inB) out.push(`${path} ${k} added`);
    else if (!deepEqual(ra[k], rb[k])) out.push(`${path} ${k} changed`);
  }
}

function describeAt(path: string, a: unknown, b: unknown, out: string[], w: ChangeWording): void {
  if (deepEqual(a, b)) return;
  if (w.maps.has(path) && (a === undefined || isPlainObject(a)) && (b === undefined || isPlainObject(b))) {
    describeMap(path, a, b, out);
    return;
  }
  if ((a === undefined || isPlainObject(a)) && (b === undefined || isPlainObject(b))) {
    const ra = a ?? {};
    const rb = b ?? {};
    const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])].sort();
    for (const k of keys) describeAt(path ? `${path}.${k}` : k, ra[k], rb[k], out, w);
    return;
  }
  // Scalars and lists. Lists are never printed: a command line can carry a password.
  if (!Array.isArray(a) && !Array.isArray(b) && !isSecretPath(path, w)) {
    const sa = show(a);
    const sb = show(b);
    if (sa.ok && sb.ok) {
      out.push(`${path} changed (${sa.text} -> ${sb.text})`);
      return;
    }
  }
  out.push(`${path} changed`);
}

/**
 * Reasons a person can read for the difference between two canonical specs, e.g.
 * `image changed (docker.io/library/nginx:1.26 -> docker.io/library/nginx:1.27)`, `env FOO added`.
 * Env and label values never appear (they may be secrets); other values only when short scalars.
 * Returns [] when the specs are equal.
 */
export function describeSpecChanges(oldCanonical: unknown, newCanonical: unknown, wording: ChangeWording = NO_WORDING): string[] {
  if (deepEqual(oldCanonical, newCanonical)) return [];
  if (!isPlainObject(oldCanonical) || !isPlainObject(newCanonical)) return ['spec changed'];
  const out: string[] = [];
  describeAt('', oldCanonical, newCanonical, out, wording);
  return out.length > 0 ? out : ['spec changed'];
}
