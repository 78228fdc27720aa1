import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { validateCommand } from '../../src/cli/validate.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(...args: string[]): Promise<Run> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  stderr.on('data', (b: Buffer) => err.push(b));
  const code = await validateCommand(args, { stdout, stderr });
  return { code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
}

const valid = {
  apiVersion: 'persys.dev/v1',
  kind: 'DesiredState',
  nodeId: 'edge-7',
  generation: 42,
  workloads: [
    { id: 'web', type: 'container', spec: { image: 'nginx:1.27-alpine' } },
    { id: 'worker', type: 'container', spec: { image: 'busybox:1.36' } },
  ],
};

describe('persys-agent validate', () => {
  let dir: string;
  const file = (name: string, content: string): string => {
    const p = path.join(dir, name);
    writeFileSync(p, content);
    return p;
  };

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'persys-validate-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a valid document: exit 0 and a one-line summary', async () => {
    const f = file('ok.json', JSON.stringify(valid));
    const r = await run(f);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${f}: valid (2 workloads, generation 42)\n`);
    assert.equal(r.stderr, '');
  });

  it('says "1 workload" and "0 workloads"', async () => {
    const one = file('one.json', JSON.stringify({ ...valid, workloads: [valid.workloads[0]] }));
    assert.equal((await run(one)).stdout, `${one}: valid (1 workload, generation 42)\n`);
    const none = file('none.json', JSON.stringify({ ...valid, generation: 0, workloads: [] }));
    assert.equal((await run(none)).stdout, `${none}: valid (0 workloads, generation 0)\n`);
  });

  it('the shipped examples are valid', async () => {
    for (const name of ['desired-state.json', 'desired-state.full.json']) {
      const r = await run(path.join(root, 'examples', name));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /: valid \(3 workloads, generation \d+\)\n$/);
    }
  });

  it('an invalid document: exit 1 and every error as "path: message"', async () => {
    const doc = structuredClone(valid) as typeof valid & { extra?: boolean };
    doc.extra = true;
    (doc.workloads[1] as { id: string }).id = 'web';
    (doc.workloads[0]!.spec as Record<string, unknown>).ports = [{ hostPort: '8080', containerPort: 80 }];
    const f = file('bad.json', JSON.stringify(doc));
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.equal(
      r.stdout,
      [
        'workloads[0].spec.ports[0].hostPort: must be a number, got string',
        'extra: unknown field',
        'workloads[1].id: duplicate workload id (already used by workloads[0])',
        '',
      ].join('\n'),
    );
    assert.equal(r.stderr, `${f}: invalid (3 errors)\n`);
  });

  it('--json: the errors as a JSON array ([] when valid)', async () => {
    const bad = file('bad2.json', JSON.stringify({ ...valid, generation: -1 }));
    const r = await run('--json', bad);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout), [{ path: 'generation', message: 'must not be negative' }]);
    assert.equal(r.stderr, '');

    const ok = file('ok2.json', JSON.stringify(valid));
    const r2 = await run(ok, '--json');
    assert.equal(r2.code, 0);
    assert.deepEqual(JSON.parse(r2.stdout), []);
  });

  it('a missing file: exit 1 and the reason', async () => {
    const f = path.join(dir, 'nope.json');
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `${f}: cannot read: no such file\n`);
  });

  it('a directory: exit 1', async () => {
    const d = path.join(dir, 'sub');
    mkdirSync(d);
    const r = await run(d);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `${d}: cannot read: is a directory\n`);
  });

  it('an unreadable file: exit 1', { skip: process.getuid?.() === 0 ? 'root reads any file' : false }, async () => {
    const f = file('secret.json', '{}');
    chmodSync(f, 0o000);
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `${f}: cannot read: permission denied\n`);
  });

  const syntax: [string, string, string][] = [
    ['a missing value', '{"a":}', 'unexpected "}", expected a value at line 1, column 6'],
    ['a trailing comma', '{\n  "apiVersion": "persys.dev/v1",\n}\n', "trailing comma before '}' at line 3, column 1"],
    ['a missing comma', '{\n  "a": 1\n  "b": 2\n}', `unexpected "\\"", expected ',' or '}' (a comma missing?) at line 3, column 3`],
    ['single quotes', "{'a': 1}", 'property names must use double quotes at line 1, column 2'],
    ['a cut-off document', '{"workloads": [', 'unexpected end of input, expected a value at line 1, column 16'],
    ['text after the document', '{}\n}', 'unexpected "}" after the end of the JSON value at line 2, column 1'],
    ['an empty file', '', 'the file is empty'],
    ['YAML', 'apiVersion: persys.dev/v1\n', 'unexpected "a", expected a value at line 1, column 1'],
    ['a raw newline in a string', '{"a": "x\ny"}', 'control character (such as a raw line break) in a string; write it as an escape like \\n at line 1, column 9'],
  ];
  for (const [label, text, reason] of syntax) {
    it(`not JSON (${label}): exit 1 with the position`, async () => {
      const f = file('syntax.json', text);
      const r = await run(f);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `${f}: not valid JSON: ${reason}\n`);
      assert.equal(r.stdout, '');
    });
  }

  it('not JSON with --json: the reason as a JSON array on stdout', async () => {
    const f = file('syntax2.json', '{"a":}');
    const r = await run(f, '--json');
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout), [{ path: '(file)', message: 'not valid JSON: unexpected "}", expected a value at line 1, column 6' }]);
  });

  it('a byte-order mark is accepted', async () => {
    const f = file('bom.json', `\uFEFF${JSON.stringify(valid)}`);
    assert.equal((await run(f)).code, 0);
  });

  it('deeply nested garbage does not crash the position finder', async () => {
    const f = file('deep.json', '['.repeat(200_000));
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `${f}: not valid JSON: unexpected end of input, expected a value at line 1, column 200001\n`);
  });

  it('a huge invalid document is not echoed', async () => {
    const f = file('huge.json', `{"nodeId": "${'x'.repeat(1_000_000)}", }`);
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.length < 300, `stderr is ${r.stderr.length} characters`);
  });

  it('a JSON document that is not an object', async () => {
    const f = file('array.json', '[]');
    const r = await run(f);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '(root): must be an object, got array\n');
  });

  it('--help prints usage and exits 0', async () => {
    for (const flag of ['--help', '-h']) {
      const r = await run(flag);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^usage: persys-agent validate FILE \[--json\]/);
      assert.equal(r.stderr, '');
    }
  });

  it('no FILE: exit 2 with usage', async () => {
    const r = await run();
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /FILE is missing/);
    assert.match(r.stderr, /usage: persys-agent validate FILE/);
  });

  it('an unknown option or two files: exit 2 with usage', async () => {
    const r = await run('--yaml', 'x.json');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option "--yaml"/);
    const r2 = await run('a.json', 'b.json');
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /one FILE at a time/);
  });

  it('"--" ends the options, so a file may start with a dash', async () => {
    const f = file('-dash.json', JSON.stringify(valid));
    const r = await run('--', f.replace(/.*\//, ''));
    // Relative to the cwd, so not found here; what matters is that it was taken as a file.
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^-dash\.json: cannot read: no such file\n$/);
    const r2 = await run('--', f);
    assert.equal(r2.code, 0);
  });
});
