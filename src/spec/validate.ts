import * as v from 'valibot';
import { desiredStateDocument, type DesiredStateDocument } from './desired-state.js';
import { reservedKeyIssues, reshapedIssues, type FidelityIssue } from './fidelity.js';
import { unsupportedDocumentFields } from './unsupported-fields.js';

export interface ValidationIssue {
  /** JSON path like `workloads[2].spec.ports[0].hostPort`, or `(root)`. */
  path: string;
  message: string;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; issues: ValidationIssue[] };

const ROOT = '(root)';
/** Longest object key or quoted value shown in a path or message; longer ones are cut with "…". */
const MAX_SHOWN = 64;

function cut(s: string): string {
  return s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN - 1)}…` : s;
}

function pathOf(issue: v.BaseIssue<unknown>): string {
  return formatPath((issue.path ?? []).map((item) => item.key));
}

/** `["workloads", 2, "spec", "env", "a b"]` -> `workloads[2].spec.env["a b"]`. */
export function formatPath(keys: readonly unknown[]): string {
  let out = '';
  for (const key of keys) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string') {
      const bare = key.length <= MAX_SHOWN && /^[A-Za-z_$][\w$]*$/.test(key);
      out += bare ? (out ? `.${key}` : key) : `[${JSON.stringify(cut(key))}]`;
    }
  }
  return out || ROOT;
}

/** What a value is, in the words of a message: "string", "number", "array", "null", ... */
function kindOf(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'array';
  return typeof x;
}

/** A short, escaped rendering of a received value (never a whole hostile string). */
function preview(x: unknown): string {
  if (typeof x === 'string') return JSON.stringify(cut(x));
  if (typeof x === 'number' || typeof x === 'boolean' || x === null) return String(x);
  if (Array.isArray(x)) return 'an array';
  return `${kindOf(x) === 'object' ? 'an' : 'a'} ${kindOf(x)}`;
}

const TYPE_WORDS: Record<string, string> = {
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  Object: 'an object',
  Array: 'an array',
  null: 'null',
  bigint: 'a number',
};

const OBJECT_SCHEMAS = new Set(['object', 'strict_object', 'loose_object', 'object_with_rest']);

/** valibot's default message for an issue starts like "Invalid type: ..." / "Invalid key: ...". */
const isDefaultMessage = (issue: v.BaseIssue<unknown>) => /^Invalid [\w ]+: /.test(issue.message);

/** Rewrites valibot's generic messages into short ones; custom messages from the schemas are kept. */
function messageOf(issue: v.BaseIssue<unknown>): string {
  const last = issue.path?.[issue.path.length - 1];
  // A required key is missing: valibot says 'Invalid key: Expected "vcpus" but received undefined'.
  if (issue.kind === 'schema' && OBJECT_SCHEMAS.has(issue.type) && issue.received === 'undefined' && last !== undefined && issue.expected === `"${String(last.key)}"`) {
    return 'required';
  }
  // A key a strict object does not know: 'Invalid key: Expected never but received "foo"'.
  if (issue.kind === 'schema' && issue.type === 'strict_object' && issue.expected === 'never') return 'unknown field';
  if (!isDefaultMessage(issue)) return issue.message;

  if (issue.kind === 'schema') {
    const expected = issue.expected ?? '';
    const word = TYPE_WORDS[expected];
    if (word !== undefined) return `must be ${word}, got ${kindOf(issue.input)}`;
    if (/^\(.*\)$/.test(expected)) {
      const options = expected.slice(1, -1).split(' | ').map((o) => TYPE_WORDS[o] ?? o);
      return `must be one of ${options.join(', ')}, got ${preview(issue.input)}`;
    }
    if (expected) return `must be ${expected}, got ${preview(issue.input)}`;
  }
  if (issue.kind === 'validation') {
    if (issue.type === 'integer') return 'must be an integer';
    if (issue.type === 'iso_timestamp') return 'must be an ISO 8601 timestamp';
  }
  // Anything else: keep valibot's words, but never echo a long hostile value.
  return issue.received.length > MAX_SHOWN ? issue.message.split(issue.received).join(cut(issue.received)) : issue.message;
}

/**
 * Drops a message's leading field name when the path already says it:
 * `workloads[1].spec.ports[0].hostPort` + "hostPort must be between 1 and 65535" -> "must be between 1 and 65535".
 */
function withoutSubject(path: string, message: string): string {
  const space = message.indexOf(' ');
  if (space <= 0 || path === ROOT) return message;
  const subject = message.slice(0, space);
  const generic = path.replace(/\[\d+\]/g, '[]');
  const rest = message.slice(space + 1);
  if (!/^(?:must|is|has|needs)\b/.test(rest)) return message; // "pool name must ..." names a thing, not the field
  if (generic === subject || generic.endsWith(`.${subject}`) || (subject.startsWith('[') && generic.endsWith(subject))) return rest;
  return message;
}

/** Flattens valibot issues to one line each, path first; identical lines are reported once. */
export function flattenIssues(issues: readonly v.BaseIssue<unknown>[]): ValidationIssue[] {
  const out: ValidationIssue[] = [];
  for (const issue of issues) {
    const path = pathOf(issue);
    let message = withoutSubject(path, messageOf(issue));
    // A schema's own type message ("x must be a number") also learns what it got.
    const word = issue.kind === 'schema' ? TYPE_WORDS[issue.expected ?? ''] : undefined;
    if (word !== undefined && message === `must be ${word}`) message += `, got ${kindOf(issue.input)}`;
    out.push({ path, message });
  }
  const seen = new Set<string>();
  return out.filter((i) => {
    const k = `${i.path}\u0000${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function validateWith<S extends v.GenericSchema>(schema: S, input: unknown): ValidationResult<v.InferOutput<S>> {
  // valibot's object schemas accept arrays (an array is an object); a document never is one.
  if (Array.isArray(input) && schema.type.includes('object')) {
    return { ok: false, issues: [{ path: ROOT, message: 'must be an object, got array' }] };
  }
  const r = v.safeParse(schema, input, { abortEarly: false });
  // Reserved keys are reported even beside schema issues: valibot skips them silently.
  const reserved = reservedKeyIssues(input).map(fromFidelity);
  if (!r.success) {
    const flat = flattenIssues(r.issues);
    const named = new Set(flat.map((i) => i.path));
    return { ok: false, issues: [...flat, ...reserved.filter((i) => !named.has(i.path))] };
  }
  const seen = new Set(reserved.map((i) => i.path));
  const issues = [...reserved, ...reshapedIssues(input, r.output).map(fromFidelity).filter((i) => !seen.has(i.path))];
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, value: r.output };
}

const fromFidelity = (i: FidelityIssue): ValidationIssue => ({ path: formatPath(i.path), message: i.message });

/** The schema, plus the fields this version cannot honour yet (a document using one is rejected, naming the path). */
export function validateDesiredState(input: unknown): ValidationResult<DesiredStateDocument> {
  const r = validateWith(desiredStateDocument, input);
  const unsupported = unsupportedDocumentFields(input).map((f) => ({ path: f.key, message: f.reason }));
  if (unsupported.length === 0) return r;
  return { ok: false, issues: [...(r.ok ? [] : r.issues), ...unsupported] };
}

export function formatIssues(issues: readonly ValidationIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.message}`).join('\n');
}
