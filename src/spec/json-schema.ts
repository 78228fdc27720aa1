import * as v from 'valibot';
import { toJsonSchema, type ConversionConfig, type JsonSchema, type OverrideActionContext } from '@valibot/to-json-schema';
import { configSchema } from '../config/schema.js';
import { desiredStateDocument } from './desired-state.js';
import { statusReport } from './status-report.js';
import { RESERVED_OBJECT_KEYS } from './fidelity.js';

/**
 * JSON Schema (draft 2020-12) of the three documents, generated from the valibot schemas, which stay
 * the source of truth. `npm run schemas` writes them to schemas/; a unit test keeps those files current.
 *
 * What the converter cannot express:
 * - `v.check` actions: the common ones ('..' in names and paths, NUL, the reserved label prefix) are
 *   recognised by probing the check function and become a `not: {pattern}` that rejects the same strings;
 *   every check's message is also appended to the description. Any other check is only documented.
 * - `v.rawCheck` (the uniqueness of workload ids): skipped; the schema's description states the rule.
 * - `v.ip`: becomes `anyOf: [{format: ipv4}, {format: ipv6}]`.
 * Formats used: date-time, ipv4, ipv6, uri (see JSON_SCHEMA_FORMATS for validators matching valibot's).
 */

export type SchemaName = 'desired-state' | 'status-report' | 'config';
export const SCHEMA_NAMES: readonly SchemaName[] = ['desired-state', 'status-report', 'config'];
export const SCHEMA_BASE_URL = 'https://persys.dev/schemas/';
export const schemaFileName = (name: SchemaName): string => `${name}.schema.json`;

const TITLES: Record<SchemaName, string> = {
  'desired-state': 'persys-agent desired state',
  'status-report': 'persys-agent status report',
  config: 'persys-agent configuration',
};

/** For schemas whose valibot root carries no description (wrapping configSchema in a pipe would change its shape). */
const ROOT_DESCRIPTIONS: Partial<Record<SchemaName, string>> = {
  config:
    "The agent's configuration file (JSON). Every key can also be set as PERSYS_<UPPER_SNAKE> (e.g. source.pollIntervalSeconds -> " +
    'PERSYS_SOURCE_POLL_INTERVAL_SECONDS); flags override the environment, the environment overrides the file, and the file ' +
    'overrides the defaults shown here.',
};

/**
 * Validators for the `format` keywords the schemas use, agreeing with the valibot actions they come from
 * (for Ajv: `ajv.addFormat(name, fn)`; Ajv in strict mode refuses unknown formats).
 */
export const JSON_SCHEMA_FORMATS: Readonly<Record<string, (s: string) => boolean>> = {
  'date-time': (s) => v.is(v.pipe(v.string(), v.isoTimestamp()), s),
  ipv4: (s) => v.is(v.pipe(v.string(), v.ipv4()), s),
  ipv6: (s) => v.is(v.pipe(v.string(), v.ipv6()), s),
  uri: (s) => v.is(v.pipe(v.string(), v.url()), s),
};

/**
 * String checks we know how to say in JSON Schema. A check function is translated to `not: {pattern}` only
 * when it agrees with the pattern on every probe below, so a changed check falls back to "documented only"
 * instead of producing a schema that disagrees with valibot.
 */
const CHECK_PATTERNS: readonly string[] = [
  '\\.\\.', // contains '..' anywhere (safe names)
  '(?:^|/)\\.\\.(?:/|$)', // has a '..' path segment (paths)
  '\\u0000', // contains NUL
  '^dev\\.persys\\.', // reserved label prefix
];
const CHECK_PROBES: readonly string[] = [
  '', 'a', 'ab', 'a.b', 'a..b', '..', '...', '.', '/', '/..', '/../a', '/a/..', '/a/../b', '/a/..b', '/a..', '/a/b/c',
  'a/../b', '../a', 'a\0b', '\0', '/a\0', 'dev.persys.x', 'dev.persys', 'x.dev.persys.y', 'dev-persys.x', 'Dev.persys.x',
];

function patternForCheck(requirement: (input: string) => unknown): string | undefined {
  for (const pattern of CHECK_PATTERNS) {
    const re = new RegExp(pattern, 'u');
    try {
      if (CHECK_PROBES.every((p) => requirement(p) === !re.test(p))) return pattern;
    } catch {
      return undefined; // not a check on strings
    }
  }
  return undefined;
}

function isPredicate(x: unknown): x is (input: string) => unknown {
  return typeof x === 'function';
}

function sentence(message: string): string {
  const s = message.trim();
  // Capitalise a plain first word ("workload id ..."), not a field path ("volumes[].source ...").
  const cap = /^[a-z]+(?:\s|$)/.test(s) ? s.charAt(0).toUpperCase() + s.slice(1) : s;
  return /[.!?]$/.test(cap) ? cap : `${cap}.`;
}

/** Notes for the description ride in `$comment` during conversion (the description action overwrites
 * `description`), and are moved into the description afterwards. */
function addNote(schema: JsonSchema, note: string): JsonSchema {
  return { ...schema, $comment: schema.$comment ? `${schema.$comment}\n${note}` : note };
}

function overrideAction(ctx: OverrideActionContext): JsonSchema | null {
  const action: { type: string; requirement?: unknown; message?: unknown } = ctx.valibotAction;
  switch (action.type) {
    case 'check': {
      const message = typeof action.message === 'string' ? action.message : 'an additional rule';
      const requirement = action.requirement;
      const pattern = isPredicate(requirement) ? patternForCheck(requirement) : undefined;
      if (pattern === undefined) {
        return addNote(ctx.jsonSchema, `${sentence(message).slice(0, -1)} (checked by the agent; JSON Schema cannot express it).`);
      }
      const not: JsonSchema = { pattern };
      const combined: JsonSchema = ctx.jsonSchema.not === undefined ? not : { anyOf: [ctx.jsonSchema.not, not] };
      return addNote({ ...ctx.jsonSchema, not: combined }, sentence(message));
    }
    case 'raw_check':
      // Cross-field rules (unique workload ids); the schema's description states them.
      return { ...ctx.jsonSchema };
    case 'ip':
      return { ...ctx.jsonSchema, anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }] };
    default:
      return null;
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Moves notes into descriptions and drops empty `required` lists, recursively. */
function finish(node: Json): Json {
  if (Array.isArray(node)) return node.map(finish);
  if (node === null || typeof node !== 'object') return node;
  const out: { [key: string]: Json } = {};
  const comment = node.$comment;
  for (const [key, value] of Object.entries(node)) {
    if (key === '$comment' && typeof comment === 'string') continue;
    if (key === 'required' && Array.isArray(value) && value.length === 0) continue;
    // Keywords whose values are maps of names: recurse into the values, never treat the names as keywords.
    if ((key === 'properties' || key === '$defs' || key === 'patternProperties') && value && typeof value === 'object' && !Array.isArray(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([k, sub]) => [k, finish(sub)]));
      continue;
    }
    if (key === 'default' || key === 'const' || key === 'enum' || key === 'examples') {
      out[key] = value; // data, not schema
      continue;
    }
    out[key] = finish(value);
  }
  // A map with free keys (a valibot record) never takes these names: see src/spec/fidelity.ts.
  if (out.type === 'object' && out.additionalProperties !== undefined && out.additionalProperties !== false) {
    const names = out.propertyNames;
    const reserved: Json = { enum: [...RESERVED_OBJECT_KEYS] };
    if (names === undefined) out.propertyNames = { not: reserved };
    else if (names !== null && typeof names === 'object' && !Array.isArray(names)) {
      out.propertyNames = { ...names, not: names.not === undefined ? reserved : { anyOf: [names.not, reserved] } };
    }
  }
  if (typeof comment === 'string') {
    const notes = comment.split('\n').join(' ');
    const desc = node.description;
    out.description = typeof desc === 'string' && desc.length > 0 ? `${sentence(desc)} ${notes}` : notes;
  }
  return out;
}

function convert(name: SchemaName, schema: v.GenericSchema): Record<string, Json> {
  const config: ConversionConfig = {
    target: 'draft-2020-12',
    typeMode: 'input',
    errorMode: 'throw',
    overrideAction,
  };
  const raw = JSON.parse(JSON.stringify(toJsonSchema(schema, config))) as Json;
  const done = finish(raw);
  if (done === null || typeof done !== 'object' || Array.isArray(done)) throw new Error(`${name}: conversion did not give an object`);
  const { $schema, description, ...rest } = done;
  const rootDescription = description ?? ROOT_DESCRIPTIONS[name];
  if (typeof rootDescription !== 'string') throw new Error(`${name}: the document schema has no description`);
  return {
    $schema: $schema ?? 'https://json-schema.org/draft/2020-12/schema',
    $id: `${SCHEMA_BASE_URL}${schemaFileName(name)}`,
    title: TITLES[name],
    description: rootDescription,
    ...rest,
  };
}

/** The JSON Schemas of the desired-state document, the status report and the config file (input forms, defaults shown). */
export function buildJsonSchemas(): Record<SchemaName, object> {
  return {
    'desired-state': convert('desired-state', desiredStateDocument),
    'status-report': convert('status-report', statusReport),
    config: convert('config', configSchema),
  };
}

/** The file text for a schema: 2-space JSON and a final newline. */
export function renderJsonSchema(schema: object): string {
  return `${JSON.stringify(schema, null, 2)}\n`;
}
