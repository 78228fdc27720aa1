/**
 * Checks that a parsed document is the document as written.
 *
 * valibot's record and object schemas skip the keys `__proto__`, `prototype` and `constructor`
 * (to guard against prototype pollution) and accept an array wherever an object is expected (an
 * array is an object). Both turned accepted documents into something else: `env: {"constructor":
 * "x"}` validated and the container lacked the variable; `labels: ["x"]` became the label "0".
 * The published JSON Schema rejects both, so the agent must too, with the path.
 */

/** Object keys that plain JavaScript objects cannot hold as data without surprises. */
export const RESERVED_OBJECT_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype'];
const RESERVED = new Set(RESERVED_OBJECT_KEYS);

export interface FidelityIssue {
  /** Path segments from the root: object keys and array indexes. */
  path: (string | number)[];
  message: string;
}

const MAX_ISSUES = 100;

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** Every object key in `input` that is reserved, wherever it is. */
export function reservedKeyIssues(input: unknown): FidelityIssue[] {
  const out: FidelityIssue[] = [];
  const walk = (node: unknown, path: (string | number)[]): void => {
    if (out.length >= MAX_ISSUES) return;
    if (Array.isArray(node)) {
      node.forEach((item, i) => walk(item, [...path, i]));
      return;
    }
    if (!isObject(node)) return;
    for (const key of Object.keys(node)) {
      if (RESERVED.has(key)) {
        out.push({ path: [...path, key], message: `the key "${key}" is not allowed (reserved in JavaScript objects; it would be lost)` });
        continue;
      }
      walk(node[key], [...path, key]);
    }
  };
  walk(input, []);
  return out;
}

/**
 * Where `output` (what the schema produced) lost or reshaped part of `input`: an array that
 * became an object, or a key that vanished. Keys the schema added (defaults) are fine.
 */
export function reshapedIssues(input: unknown, output: unknown): FidelityIssue[] {
  const out: FidelityIssue[] = [];
  const walk = (a: unknown, b: unknown, path: (string | number)[]): void => {
    if (out.length >= MAX_ISSUES) return;
    if (Array.isArray(a)) {
      if (!Array.isArray(b)) {
        out.push({ path, message: 'must be an object, got array' });
        return;
      }
      a.forEach((item, i) => walk(item, b[i], [...path, i]));
      return;
    }
    if (!isObject(a)) return;
    if (!isObject(b)) {
      out.push({ path, message: 'must not be an object here' });
      return;
    }
    for (const key of Object.keys(a)) {
      if (!Object.prototype.hasOwnProperty.call(b, key)) {
        out.push({ path: [...path, key], message: 'was dropped by validation (not applied as written)' });
        continue;
      }
      walk(a[key], b[key], [...path, key]);
    }
  };
  walk(input, output, []);
  return out;
}
