import { readFile, stat } from 'node:fs/promises';
import { validateDesiredState, type ValidationIssue } from '../spec/validate.js';

/** `persys-agent validate FILE [--json]`: checks a desired-state document and prints every error with its path. */

export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export const VALIDATE_USAGE = `usage: persys-agent validate FILE [--json]

Checks a desired-state document (JSON) against the schema and prints every error as "path: message".

options:
  --json       print the errors as a JSON array of {"path", "message"} ([] when valid)
  -h, --help   print this help

exit status: 0 valid, 1 invalid, unreadable or not JSON, 2 usage error
`;

/** The largest file the command reads (the agent's own limit for a fetched document is lower). */
const MAX_FILE_BYTES = 256 * 1024 * 1024;

export async function validateCommand(args: string[], io: CommandIo): Promise<number> {
  let json = false;
  const files: string[] = [];
  let optionsDone = false;
  for (const arg of args) {
    if (!optionsDone && arg === '--') optionsDone = true;
    else if (!optionsDone && (arg === '--help' || arg === '-h')) {
      io.stdout.write(VALIDATE_USAGE);
      return 0;
    } else if (!optionsDone && arg === '--json') json = true;
    else if (!optionsDone && arg.startsWith('-') && arg !== '-') return usageError(io, `unknown option ${JSON.stringify(arg)}`);
    else files.push(arg);
  }
  if (files.length === 0) return usageError(io, 'FILE is missing');
  if (files.length > 1) return usageError(io, `one FILE at a time (got ${files.length})`);
  const file = files[0] as string;

  const loaded = await load(file);
  if (!loaded.ok) {
    if (json) io.stdout.write(`${JSON.stringify([{ path: '(file)', message: loaded.reason }], null, 2)}\n`);
    else io.stderr.write(`${file}: ${loaded.reason}\n`);
    return 1;
  }

  const result = validateDesiredState(loaded.value);
  if (result.ok) {
    if (json) io.stdout.write('[]\n');
    else {
      const n = result.value.workloads.length;
      io.stdout.write(`${file}: valid (${n} workload${n === 1 ? '' : 's'}, generation ${result.value.generation})\n`);
    }
    return 0;
  }
  printIssues(io, file, result.issues, json);
  return 1;
}

function usageError(io: CommandIo, reason: string): number {
  io.stderr.write(`persys-agent validate: ${reason}\n\n${VALIDATE_USAGE}`);
  return 2;
}

function printIssues(io: CommandIo, file: string, issues: readonly ValidationIssue[], json: boolean): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(issues.map(({ path, message }) => ({ path, message })), null, 2)}\n`);
    return;
  }
  io.stdout.write(issues.map((i) => `${i.path}: ${i.message}\n`).join(''));
  io.stderr.write(`${file}: invalid (${issues.length} error${issues.length === 1 ? '' : 's'})\n`);
}

type Loaded = { ok: true; value: unknown } | { ok: false; reason: string };

async function load(file: string): Promise<Loaded> {
  let text: string;
  try {
    const st = await stat(file);
    if (st.isDirectory()) return { ok: false, reason: 'cannot read: is a directory' };
    if (st.size > MAX_FILE_BYTES) return { ok: false, reason: `cannot read: larger than ${MAX_FILE_BYTES / (1024 * 1024)} MiB` };
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { ok: false, reason: `cannot read: ${describeFsError(err)}` };
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte-order mark some editors write
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, reason: `not valid JSON: ${describeJsonError(text, err)}` };
  }
}

function describeFsError(err: unknown): string {
  const code = err instanceof Error && 'code' in err ? String(err.code) : '';
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}

/** Where and why JSON.parse failed, as "<reason> at line L, column C" (V8's own message does not always say where). */
export function describeJsonError(text: string, err: unknown): string {
  let found: JsonSyntaxError | undefined;
  try {
    scanJson(text);
  } catch (e) {
    if (e instanceof JsonSyntaxError) found = e;
  }
  if (found === undefined) {
    // Not expected (the scanner follows RFC 8259 like JSON.parse); never echo the document itself.
    const message = err instanceof Error ? err.message : String(err);
    return message.length > 120 ? `${message.slice(0, 119)}…` : message;
  }
  if (found.reason === EMPTY) return EMPTY;
  const { line, column } = lineColumn(text, found.offset);
  return `${found.reason} at line ${line}, column ${column}`;
}

const EMPTY = 'the file is empty';

class JsonSyntaxError extends Error {
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(reason);
  }
}

function lineColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

function showChar(ch: string): string {
  return JSON.stringify(ch);
}

/** Walks the text as JSON and throws a JsonSyntaxError at the first error; iterative, so deep nesting is fine. */
function scanJson(text: string): void {
  let pos = 0;
  const n = text.length;
  const fail = (reason: string, at = pos): never => {
    throw new JsonSyntaxError(at, reason);
  };
  const ws = () => {
    while (pos < n) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) pos++;
      else break;
    }
  };
  const unexpected = (what: string): never => (pos >= n ? fail(`unexpected end of input, expected ${what}`) : fail(`unexpected ${showChar(text.charAt(pos))}, expected ${what}`));
  const string = () => {
    pos++; // opening quote
    for (;;) {
      if (pos >= n) fail('unterminated string');
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        pos++;
        return;
      }
      if (c < 0x20) fail('control character (such as a raw line break) in a string; write it as an escape like \\n');
      if (c === 0x5c) {
        const e = text.charAt(pos + 1);
        if ('"\\/bfnrt'.includes(e) && e !== '') pos += 2;
        else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(text.slice(pos + 2, pos + 6))) pos += 6;
        else fail('invalid escape in a string');
      } else pos++;
    }
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  // A value starts here; containers push their kind and are closed by the loop below.
  const stack: ('{' | '[')[] = [];
  const value = (): void => {
    ws();
    const ch = text.charAt(pos);
    if (ch === '{' || ch === '[') {
      stack.push(ch);
      pos++;
      return;
    }
    if (ch === '"') return string();
    for (const word of ['true', 'false', 'null']) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return;
      }
    }
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (m !== null && m[0] !== '' && m[0] !== '-') {
      pos += m[0].length;
      return;
    }
    if (ch === "'") fail('strings must use double quotes');
    unexpected('a value');
  };
  const key = () => {
    ws();
    if (text.charAt(pos) !== '"') {
      if (text.charAt(pos) === "'") fail('property names must use double quotes');
      unexpected('a property name in double quotes');
    }
    string();
    ws();
    if (text.charAt(pos) !== ':') unexpected("':'");
    pos++;
  };

  ws();
  if (pos >= n) fail(EMPTY);
  value();
  // After an opened container: either it closes at once, or its first member follows.
  let justOpened = stack.length > 0;
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    ws();
    const close = top === '{' ? '}' : ']';
    if (justOpened) {
      justOpened = false;
      if (text.charAt(pos) === close) {
        pos++;
        stack.pop();
        continue;
      }
      if (top === '{') key();
      const depth = stack.length;
      value();
      justOpened = stack.length > depth;
      continue;
    }
    const ch = text.charAt(pos);
    if (ch === close) {
      pos++;
      stack.pop();
      continue;
    }
    if (ch !== ',') unexpected(`',' or '${close}'${ch === '"' || ch === '{' || ch === '[' ? ' (a comma missing?)' : ''}`);
    pos++;
    ws();
    if (text.charAt(pos) === close) fail(`trailing comma before '${close}'`, pos);
    if (top === '{') key();
    const depth = stack.length;
    value();
    justOpened = stack.length > depth;
  }
  ws();
  if (pos < n) fail(`unexpected ${showChar(text.charAt(pos))} after the end of the JSON value`);
}
