/** `persys-agent validate` checks the compose file inside a document, naming the compose path. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';

import { validateCommand } from '../../src/cli/validate.js';

async function validate(doc: unknown, ...flags: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const file = path.join(dir, `d${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(doc));
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (b: Buffer) => (out += b.toString()));
  stderr.on('data', (b: Buffer) => (err += b.toString()));
  const code = await validateCommand([...flags, file], { stdout, stderr });
  return { code, stdout: out, stderr: err };
}

const dir = mkdtempSync(path.join(tmpdir(), 'persys-compose-validate-'));
const doc = (composeYaml: string) => ({
  apiVersion: 'persys.dev/v1',
  kind: 'DesiredState',
  nodeId: 'edge-1',
  generation: 3,
  workloads: [{ id: 'shop', type: 'compose', spec: { project: 'shop', composeYaml, env: { TAG: '1' } } }],
});

describe('persys-agent validate on compose workloads', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a valid compose file passes', async () => {
    const r = await validate(doc('services:\n  api:\n    image: "busybox:${TAG}"\n    depends_on: [db]\n  db:\n    image: busybox\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /valid \(1 workload, generation 3\)/);
  });

  it('a required variable that is missing is named with its path and message', async () => {
    const r = await validate(doc('services:\n  db: { image: "pg:${PG_TAG:?PG_TAG must be set}" }\n'));
    assert.equal(r.code, 1);
    assert.match(r.stdout + r.stderr, /workloads\[0\]\.spec\.composeYaml: services\.db\.image: required variable PG_TAG is missing: PG_TAG must be set/);
  });

  it('an unsupported key, a build-only service and a cycle are each named by path', async () => {
    const yaml = `
services:
  api: { image: x, devices: ["/dev/null:/dev/null"], depends_on: [web] }
  web: { image: x, depends_on: [api] }
  builder: { build: . }
`;
    const r = await validate(doc(yaml), '--json');
    assert.equal(r.code, 1);
    const issues = JSON.parse(r.stdout) as { path: string; message: string }[];
    const messages = issues.map((i) => i.message);
    for (const i of issues) assert.equal(i.path, 'workloads[0].spec.composeYaml');
    assert.ok(messages.includes('services.api.devices: not supported'), JSON.stringify(messages));
    assert.ok(messages.some((m) => m.startsWith('services.builder: has only `build`')), JSON.stringify(messages));
    assert.ok(messages.some((m) => /cycle/.test(m) && /api -> web -> api|web -> api -> web/.test(m)), JSON.stringify(messages));
  });
});
