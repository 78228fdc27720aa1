/*
 * Compose Specification interpolation (the subset real files use): `$VAR`, `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`.
 * Variables come from the workload's `env` only (never from the agent's own environment: the host must
 * not leak into an app). Applied to every string value of the parsed YAML, not to keys (as compose does).
 */

export interface InterpolationError {
  path: string;
  message: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/** One string interpolated; throws an Error whose message is the compose-style reason. */
export function interpolateString(s: string, env: Readonly<Record<string, string>>): string {
  if (!s.includes('$')) return s;
  let out = '';
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const next = s[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (next === '{') {
      const end = closingBrace(s, i + 2);
      if (end === -1) throw new Error(`unterminated "\${" in ${JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s)}`);
      out += expand(s.slice(i + 2, end), env);
      i = end + 1;
      continue;
    }
    const m = NAME.exec(s.slice(i + 1));
    if (m) {
      out += env[m[0]] ?? '';
      i += 1 + m[0].length;
      continue;
    }
    // A lone "$" (end of string, or before a character that cannot start a name) stays as it is.
    out += '$';
    i++;
  }
  return out;
}

/** Index of the "}" closing a "${" whose body starts at `from`, allowing nested "${...}" in defaults. */
function closingBrace(s: string, from: number): number {
  let depth = 1;
  for (let i = from; i < s.length; i++) {
    if (s[i] === '$' && s[i + 1] === '{') {
      depth++;
      i++;
    } else if (s[i] === '}') {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

function expand(body: string, env: Readonly<Record<string, string>>): string {
  const m = NAME.exec(body);
  if (!m) throw new Error(`invalid interpolation "\${${body}}": a variable name is needed`);
  const name = m[0];
  const rest = body.slice(name.length);
  const value = Object.hasOwn(env, name) ? env[name] : undefined;
  if (rest === '') return value ?? '';
  const op = /^(:?[-?+])/.exec(rest)?.[1];
  if (op === undefined) throw new Error(`invalid interpolation "\${${body}}"`);
  const arg = rest.slice(op.length);
  const emptyCounts = op.startsWith(':');
  const unset = value === undefined || (emptyCounts && value === '');
  switch (op.replace(':', '')) {
    case '-':
      return unset ? interpolateString(arg, env) : (value as string);
    case '+':
      return unset ? '' : interpolateString(arg, env);
    default:
      // "?": a required variable; the message is the file author's (it never holds a value).
      if (unset) throw new Error(`required variable ${name} is ${value === undefined ? 'missing' : 'empty'}: ${interpolateString(arg, env) || 'no message'}`);
      return value as string;
  }
}

/**
 * Interpolates every string value of a parsed YAML tree (a fresh tree; the input is not touched).
 * Errors are collected with the path of the value (`services.api.environment.DB_HOST`).
 */
export function interpolateTree(node: unknown, env: Readonly<Record<string, string>>, errors: InterpolationError[], path = ''): unknown {
  if (typeof node === 'string') {
    try {
      return interpolateString(node, env);
    } catch (err) {
      errors.push({ path: path || '(root)', message: err instanceof Error ? err.message : String(err) });
      return node;
    }
  }
  if (Array.isArray(node)) return node.map((el, i) => interpolateTree(el, env, errors, `${path}[${i}]`));
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      // Extension fields (x-*) are for anchors and tools; they are not interpolated or validated.
      const value = k.startsWith('x-') ? v : interpolateTree(v, env, errors, path ? `${path}.${k}` : k);
      Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return node;
}
