import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import * as v from 'valibot';

import { ConfigError } from '../errors/index.js';
import { unsupportedConfigKeys } from './unsupported.js';
import { flattenIssues } from '../spec/validate.js';
import { configSchema, type Config } from './schema.js';

/**
 * Loads the agent's configuration from four layers, later ones winning:
 *   schema defaults < JSON config file < PERSYS_* environment < CLI flags.
 *
 * The list of keys is not written down here: it is derived by walking `configSchema`, so a key
 * added to the schema is at once settable from the file, the environment and a flag, and
 * `configEnvNames()` (used by docs and tests) stays complete.
 */

export type FlagValue = string | boolean | undefined;

export interface LoadConfigOptions {
  /** Path of a JSON config file. When given it must exist. */
  file?: string;
  env: NodeJS.ProcessEnv;
  /**
   * Config flags by dotted key name (`{ 'source.url': '...' }`). The CLI parser keeps command
   * options (`--config`, `--desired`, `--json`) apart, so any other name here is a mistyped or
   * unknown key and is reported, never ignored.
   */
  flags: Record<string, FlagValue>;
  /** Base for relative paths that did not come from the file (default: process.cwd()). */
  cwd?: string;
}

// --- the schema walk ---------------------------------------------------------------------------

/** `json`: an array of objects (maintenance.windows), given as a JSON array in the environment or a flag. */
export type LeafKind = 'string' | 'number' | 'boolean' | 'string[]' | 'json';

export interface ConfigLeaf {
  /** Dotted key path, e.g. `source.pollIntervalSeconds`. */
  path: string;
  keys: readonly string[];
  kind: LeafKind;
  /** `PERSYS_` + UPPER_SNAKE of the path. */
  envName: string;
}

/** The parts of a valibot schema object the walk needs; everything else is ignored. */
interface SchemaNode {
  type: string;
  wrapped?: unknown;
  entries?: Record<string, unknown>;
  item?: unknown;
}

const isSchemaNode = (x: unknown): x is SchemaNode =>
  typeof x === 'object' && x !== null && typeof (x as { type?: unknown }).type === 'string';

/** Wrappers that only change optionality: the value's own type is inside. */
const WRAPPER_TYPES = new Set(['optional', 'exact_optional', 'nullable', 'nullish', 'non_optional', 'non_nullable', 'non_nullish', 'undefinedable']);
const OBJECT_TYPES = new Set(['object', 'strict_object', 'loose_object']);

export const toUpperSnake = (key: string): string =>
  key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z])([A-Z][a-z])/g, '$1_$2')
    .toUpperCase();

export const envNameOf = (keys: readonly string[]): string => `PERSYS_${keys.map(toUpperSnake).join('_')}`;

function walk(node: unknown, keys: string[], out: ConfigLeaf[]): void {
  if (!isSchemaNode(node)) throw new Error(`config schema walk: no schema at ${keys.join('.') || '(root)'}`);
  // `v.pipe(x, ...)` spreads x's own properties, so a piped optional still exposes `wrapped`.
  if (WRAPPER_TYPES.has(node.type)) return walk(node.wrapped, keys, out);
  if (OBJECT_TYPES.has(node.type) && node.entries) {
    for (const [key, child] of Object.entries(node.entries)) walk(child, [...keys, key], out);
    return;
  }
  let kind: LeafKind;
  switch (node.type) {
    case 'string':
    case 'picklist':
      kind = 'string';
      break;
    case 'number':
      kind = 'number';
      break;
    case 'boolean':
      kind = 'boolean';
      break;
    case 'array': {
      const item = node.item;
      if (isSchemaNode(item) && item.type === 'string') {
        kind = 'string[]';
        break;
      }
      if (isSchemaNode(item) && OBJECT_TYPES.has(item.type)) {
        kind = 'json';
        break;
      }
      throw new Error(`config schema walk: ${keys.join('.')} is an array of something other than strings; teach load.ts to coerce it`);
    }
    default:
      // Failing loudly at import time (and so in the unit tests) beats a key that env/flags cannot set.
      throw new Error(`config schema walk: ${keys.join('.')} has type ${node.type}; teach load.ts to coerce it`);
  }
  out.push({ path: keys.join('.'), keys, kind, envName: envNameOf(keys) });
}

const LEAVES: readonly ConfigLeaf[] = (() => {
  const out: ConfigLeaf[] = [];
  walk(configSchema, [], out);
  const seen = new Map<string, string>();
  for (const leaf of out) {
    const other = seen.get(leaf.envName);
    if (other) throw new Error(`config keys ${other} and ${leaf.path} both map to ${leaf.envName}`);
    seen.set(leaf.envName, leaf.path);
  }
  return out;
})();
const LEAF_BY_PATH = new Map(LEAVES.map((l) => [l.path, l]));
const LEAF_BY_ENV = new Map(LEAVES.map((l) => [l.envName, l]));

/** Every config key as its dotted path, in schema order. */
export const configLeaves = (): readonly ConfigLeaf[] => LEAVES;
/** Every `PERSYS_*` name that sets a config key, in schema order. */
export const configEnvNames = (): string[] => LEAVES.map((l) => l.envName);

/**
 * `PERSYS_*` variables that are not config keys but are legitimately present in an agent's
 * environment (test harness and dev switches). Anything else starting with PERSYS_ is a typo
 * or a removed key, and is refused rather than silently ignored.
 */
const ENV_ALLOW_EXACT = new Set(['PERSYS_REQUIRE_ENGINES', 'PERSYS_LOG_PRETTY', 'PERSYS_SKIP_BUILD']);
// PERSYS_SKIP_* / PERSYS_TESTBED_* are exported by scripts/test*.sh and reach e2e runs of the CLI.
const ENV_ALLOW_PREFIXES = ['PERSYS_TEST_', 'PERSYS_TESTBED_', 'PERSYS_SKIP_'];
export const isAllowedNonConfigEnv = (name: string): boolean =>
  ENV_ALLOW_EXACT.has(name) || ENV_ALLOW_PREFIXES.some((p) => name.startsWith(p));

/**
 * Keys whose values are file-system paths, resolved to absolute paths when loaded so later code
 * never depends on the cwd. `trust.publicKeys` entries are PEM text or paths; only paths are resolved.
 */
const PATH_KEYS = [
  'stateDir',
  'source.caFile',
  'source.certFile',
  'source.keyFile',
  'source.tokenFile',
  'status.caFile',
  'status.certFile',
  'status.keyFile',
  'status.tokenFile',
  'docker.socketPath',
] as const;
const PATH_LIST_KEYS = ['trust.publicKeys'] as const;
export const configPathKeys = (): readonly string[] => [...PATH_KEYS, ...PATH_LIST_KEYS];

// --- layering ------------------------------------------------------------------------------------

type Plain = Record<string, unknown>;
const isPlain = (x: unknown): x is Plain => typeof x === 'object' && x !== null && !Array.isArray(x);

interface Origin {
  layer: 'file' | 'env' | 'flag';
  /** Human text for error messages, e.g. `from PERSYS_X="0"`. */
  text: string;
  /** Directory relative paths are resolved against. */
  baseDir: string;
}

/** Values can be long (PEM keys); an error line only needs enough to recognise them. */
const shown = (s: string): string => JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);

interface Collected {
  raw: Plain;
  origins: Map<string, Origin>;
  issues: { path: string; message: string; origin?: Origin }[];
}

/** Sets a nested value; a non-object already in the way (from the file) is kept so its own error is reported. */
function setPath(target: Plain, keys: readonly string[], value: unknown): void {
  let cur = target;
  for (const key of keys.slice(0, -1)) {
    const next = cur[key];
    if (next === undefined) {
      const fresh: Plain = {};
      cur[key] = fresh;
      cur = fresh;
    } else if (isPlain(next)) {
      cur = next;
    } else {
      return;
    }
  }
  const last = keys[keys.length - 1];
  if (last !== undefined) cur[last] = value;
}

/** Records the file as the origin of every path it mentions, so errors deep inside it can be attributed. */
function recordFileOrigins(value: unknown, keys: string[], origin: Origin, origins: Map<string, Origin>): void {
  origins.set(keys.join('.'), origin);
  if (isPlain(value)) for (const [k, child] of Object.entries(value)) recordFileOrigins(child, [...keys, k], origin, origins);
}

type Coerced = { ok: true; value: unknown } | { ok: false; message: string };

/** Env and flag values are strings; turn them into the leaf's type. */
function coerce(leaf: ConfigLeaf, input: string | boolean): Coerced {
  if (typeof input === 'boolean') {
    if (leaf.kind === 'boolean') return { ok: true, value: input };
    return { ok: false, message: 'needs a value' };
  }
  const s = input.trim();
  switch (leaf.kind) {
    case 'string':
      // Strings are kept verbatim (a path may legitimately end in a space; unlikely, but not ours to change).
      return { ok: true, value: input };
    case 'number': {
      const n = s === '' ? Number.NaN : Number(s);
      return Number.isFinite(n) ? { ok: true, value: n } : { ok: false, message: 'must be a number' };
    }
    case 'boolean': {
      const l = s.toLowerCase();
      if (l === 'true' || l === '1') return { ok: true, value: true };
      if (l === 'false' || l === '0') return { ok: true, value: false };
      return { ok: false, message: 'must be true, false, 1 or 0' };
    }
    case 'string[]': {
      if (s.startsWith('[')) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(s);
        } catch (err) {
          return { ok: false, message: `is not a valid JSON array (${(err as Error).message})` };
        }
        if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return { ok: true, value: parsed };
        return { ok: false, message: 'must be a JSON array of strings' };
      }
      return { ok: true, value: s.split(',').map((x) => x.trim()).filter((x) => x !== '') };
    }
    case 'json': {
      // The schema checks the items; here it only has to be JSON.
      try {
        return { ok: true, value: JSON.parse(s) as unknown };
      } catch (err) {
        return { ok: false, message: `is not valid JSON (${(err as Error).message})` };
      }
    }
  }
}

function readFileLayer(file: string, cwd: string, out: Collected): void {
  const abs = resolve(cwd, file);
  const fileIssue = (message: string) => out.issues.push({ path: '', message: `config file ${abs}: ${message}` });
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    fileIssue(code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : (err as Error).message);
    return;
  }
  let parsed: unknown;
  try {
    // A UTF-8 BOM (some Windows editors) is not a JSON syntax error worth failing over.
    parsed = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    fileIssue(`invalid JSON: ${(err as Error).message}`);
    return;
  }
  if (!isPlain(parsed)) {
    fileIssue('must contain a JSON object');
    return;
  }
  const origin: Origin = { layer: 'file', text: `from ${abs}`, baseDir: dirname(abs) };
  out.raw = structuredClone(parsed);
  recordFileOrigins(parsed, [], origin, out.origins);
}

function envLayer(env: NodeJS.ProcessEnv, cwd: string, out: Collected): void {
  const unknown: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('PERSYS_')) continue;
    const value = env[name];
    const leaf = LEAF_BY_ENV.get(name);
    if (!leaf) {
      if (!isAllowedNonConfigEnv(name)) unknown.push(name);
      continue;
    }
    // Empty means unset, so `PERSYS_X=` in an EnvironmentFile does not wipe a file value.
    // (An array is cleared explicitly with `[]`.)
    if (value === undefined || value.trim() === '') continue;
    const origin: Origin = { layer: 'env', text: `from ${name}=${shown(value)}`, baseDir: cwd };
    const c = coerce(leaf, value);
    out.origins.set(leaf.path, origin);
    if (c.ok) setPath(out.raw, leaf.keys, c.value);
    else out.issues.push({ path: leaf.path, message: c.message, origin });
  }
  for (const name of unknown) {
    out.issues.push({ path: name, message: `unknown environment variable (no such config key)${suggest(name)}` });
  }
}

/**
 * Under systemd, `StateDirectory=` hands the service its directory as $STATE_DIRECTORY (a colon
 * list when several are named; the first is ours). It is the default stateDir there, below the
 * file, PERSYS_STATE_DIR and --stateDir, so the agent writes nothing next to its working directory.
 */
function systemdStateDirectory(env: NodeJS.ProcessEnv, out: Collected): void {
  const dir = env.STATE_DIRECTORY?.split(':')[0]?.trim();
  if (!dir || out.raw.stateDir !== undefined) return;
  out.raw.stateDir = dir;
  out.origins.set('stateDir', { layer: 'env', text: `from STATE_DIRECTORY=${shown(dir)} (systemd)`, baseDir: '/' });
}

const suggest = (envName: string): string => nearest(envName, LEAF_BY_ENV.keys());
const suggestFlag = (flag: string): string => {
  const s = nearest(flag, LEAF_BY_PATH.keys());
  return s ? s.replace(/did you mean (\S+)\?$/, 'did you mean --$1?') : '';
};

/** Points at the nearest known name for a likely typo. */
function nearest(envName: string, names: Iterable<string>): string {
  let best: { name: string; d: number } | null = null;
  for (const name of names) {
    // A truncated name (PERSYS_SOURCE_POLL_INTERVAL) is as likely a slip as a misspelt one.
    const d = name.startsWith(envName) || envName.startsWith(name) ? 1 : editDistance(envName, name);
    if (!best || d < best.d) best = { name, d };
  }
  return best && best.d <= 3 ? `; did you mean ${best.name}?` : '';
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] ?? 0;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] ?? 0;
      prev[j] = Math.min(up + 1, (prev[j - 1] ?? 0) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length] ?? 0;
}

function flagLayer(flags: Record<string, FlagValue>, cwd: string, out: Collected): void {
  for (const name of Object.keys(flags).sort()) {
    const value = flags[name];
    if (value === undefined) continue;
    const leaf = LEAF_BY_PATH.get(name);
    if (!leaf) {
      out.issues.push({ path: `--${name}`, message: `unknown option (no such config key)${suggestFlag(name)}` });
      continue;
    }
    const origin: Origin = { layer: 'flag', text: typeof value === 'boolean' ? `from --${name}` : `from --${name}=${shown(value)}`, baseDir: cwd };
    const c = coerce(leaf, value);
    out.origins.set(leaf.path, origin);
    if (c.ok) setPath(out.raw, leaf.keys, c.value);
    else out.issues.push({ path: leaf.path, message: c.message, origin });
  }
}

function originOf(keys: readonly (string | number)[], origins: Map<string, Origin>): Origin | undefined {
  // Array indexes are not recorded; the array's own key carries the origin.
  const strKeys = keys.filter((k): k is string => typeof k === 'string');
  for (let i = strKeys.length; i >= 0; i--) {
    const o = origins.get(strKeys.slice(0, i).join('.'));
    if (o) return o;
  }
  return undefined;
}

/** Schema messages repeat the key ("source.url must be ..."); the line already starts with it. */
function stripKeyPrefix(message: string, path: string): string {
  return message.startsWith(`${path} `) ? message.slice(path.length + 1) : message;
}

function isPemText(s: string): boolean {
  return s.includes('-----BEGIN');
}

function getPath(obj: Plain, keys: readonly string[]): unknown {
  let cur: unknown = obj;
  for (const k of keys) {
    if (!isPlain(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

/** Makes path keys absolute: against the file's directory when the value came from the file, else cwd. */
function resolvePaths(config: Config, origins: Map<string, Origin>, cwd: string): void {
  const root = config as unknown as Plain;
  for (const key of [...PATH_KEYS, ...PATH_LIST_KEYS]) {
    const keys = key.split('.');
    const value = getPath(root, keys);
    const base = origins.get(key)?.baseDir ?? cwd;
    if (typeof value === 'string') setPath(root, keys, isAbsolute(value) ? value : resolve(base, value));
    else if (Array.isArray(value))
      setPath(
        root,
        keys,
        value.map((x: unknown) => (typeof x === 'string' && !isPemText(x) && !isAbsolute(x) ? resolve(base, x) : x)),
      );
  }
}

/**
 * Loads and validates the configuration. Throws `ConfigError` listing every bad key with its path,
 * the reason and where the value came from, so one run shows everything to fix.
 */
export function loadConfig(opts: LoadConfigOptions): Config {
  const cwd = opts.cwd ?? process.cwd();
  const out: Collected = { raw: {}, origins: new Map(), issues: [] };
  if (opts.file !== undefined) readFileLayer(opts.file, cwd, out);
  envLayer(opts.env, cwd, out);
  flagLayer(opts.flags, cwd, out);
  systemdStateDirectory(opts.env, out);

  // A problem with the file itself comes first; key problems follow sorted by key.
  const fileLines = out.issues.filter((i) => i.path === '').map((i) => i.message);
  const lines: string[] = out.issues.filter((i) => i.path !== '').map((i) => `${i.path}: ${i.message}${i.origin ? ` (${i.origin.text})` : ''}`);
  const result = v.safeParse(configSchema, out.raw, { abortEarly: false });
  if (!result.success) {
    for (const issue of result.issues) {
      const flat = flattenIssues([issue])[0];
      if (!flat) continue;
      const keys = (issue.path ?? []).map((p) => p.key).filter((k): k is string | number => typeof k === 'string' || typeof k === 'number');
      // strictObject reports an unknown key as "Expected never"; say what it means.
      const unknownKey = issue.type === 'strict_object' && issue.expected === 'never';
      const message = unknownKey ? 'unknown key' : stripKeyPrefix(flat.message, flat.path);
      const origin = originOf(keys, out.origins);
      lines.push(`${flat.path}: ${message}${origin ? ` (${origin.text})` : ''}`);
    }
  }
  for (const u of unsupportedConfigKeys(out.raw)) {
    const origin = originOf(u.path.split('.'), out.origins);
    lines.push(`${u.path}: ${u.reason}${origin ? ` (${origin.text})` : ''}`);
  }
  if (fileLines.length > 0 || lines.length > 0 || !result.success) throw new ConfigError([...fileLines, ...[...new Set(lines)].sort()]);

  const config = result.output;
  resolvePaths(config, out.origins, cwd);
  return config;
}

// --- safe logging --------------------------------------------------------------------------------

const SENSITIVE_QUERY = /token|secret|password|passwd|key|sig|auth|credential/i;

/** URLs may carry credentials in userinfo or the query string; keep the rest for debugging. */
function redactUrl(s: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return s;
  }
  if (u.password) u.password = 'redacted';
  for (const name of [...u.searchParams.keys()]) if (SENSITIVE_QUERY.test(name)) u.searchParams.set(name, 'redacted');
  // URL-encoding turns `{nodeId}` into `%7BnodeId%7D`; put the template back so the log reads like the config.
  return u.toString().replace(/%7BnodeId%7D/g, '{nodeId}');
}

/**
 * The config in a form safe to log at startup. Tokens are never in the config (only
 * `source.tokenFile`, a path), so the remaining risk is credentials embedded in URLs; PEM keys are
 * public but long, so they are shortened.
 */
export function describeConfig(config: Config): Config {
  const copy = structuredClone(config);
  if (copy.source.url) copy.source.url = redactUrl(copy.source.url);
  if (copy.status.url) copy.status.url = redactUrl(copy.status.url);
  if (copy.metrics.push.url) copy.metrics.push.url = redactUrl(copy.metrics.push.url);
  copy.trust.publicKeys = copy.trust.publicKeys.map((k) => (isPemText(k) ? `<PEM key, ${k.length} chars>` : k));
  return copy;
}
