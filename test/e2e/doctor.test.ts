/**
 * `persys-agent doctor` as a person runs it (the built CLI), against a real HTTPS fleet server with a
 * bearer token and the real dockerd: a healthy host passes every check, and each broken thing (bad
 * token, unknown CA, state dir open to others, invalid document, docker socket gone) fails its own
 * check with the fix.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { CLI } from '../helpers/agent-process.js';
import { requireEngine, testNodeId } from '../helpers/engines.js';
import { startFleetServer, type FleetServer } from '../helpers/fleet-server.js';
import { makeThrowawayCa, opensslSkipReason, type ThrowawayPki } from '../helpers/tls.js';

const run = promisify(execFile);
const skip = (await requireEngine('docker')) || (await opensslSkipReason());

interface Check {
  name: string;
  status: 'ok' | 'fail' | 'skip';
  detail: string;
  fix?: string;
}

async function doctor(args: string[]): Promise<{ code: number; stdout: string; report?: { ok: boolean; checks: Check[] } }> {
  let code = 0;
  let stdout = '';
  try {
    ({ stdout } = await run(process.execPath, [CLI, 'doctor', ...args], { timeout: 60_000 }));
  } catch (err) {
    const e = err as { code?: number; stdout?: string };
    code = typeof e.code === 'number' ? e.code : -1;
    stdout = e.stdout ?? '';
  }
  return { code, stdout, ...(args.includes('--json') ? { report: JSON.parse(stdout) as { ok: boolean; checks: Check[] } } : {}) };
}

const byName = (checks: Check[], name: string): Check => {
  const c = checks.find((x) => x.name === name);
  assert.ok(c, `no ${name} check in ${JSON.stringify(checks)}`);
  return c;
};

describe('persys-agent doctor', { skip }, () => {
  const nodeId = testNodeId('test-doctor');
  let dir: string;
  let pki: ThrowawayPki;
  let fleet: FleetServer;
  let stateDir: string;
  let config: Record<string, unknown>;
  const writeConfig = async (name: string, c: Record<string, unknown>) => {
    const file = join(dir, name);
    await writeFile(file, JSON.stringify(c));
    return file;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-doctor-'));
    await mkdir(join(dir, 'pki'));
    pki = await makeThrowawayCa(join(dir, 'pki'));
    fleet = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey }, requireToken: 'good-token' });
    fleet.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 3, workloads: [] });
    await writeFile(join(dir, 'token'), 'good-token\n');
    await writeFile(join(dir, 'bad-token'), 'wrong\n');
    stateDir = join(dir, 'state');
    await mkdir(stateDir, { mode: 0o700 });
    config = { nodeId, stateDir, source: { url: fleet.sourceUrl, caFile: pki.caCert, tokenFile: join(dir, 'token') }, libvirt: { enabled: false } };
  });
  after(async () => {
    await fleet?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a healthy host: every check ok (libvirt skipped as disabled), exit 0, text and --json', async () => {
    const file = await writeConfig('good.json', config);
    const r = await doctor(['--config', file, '--json']);
    assert.equal(r.code, 0, r.stdout);
    const checks = r.report!.checks;
    assert.equal(r.report!.ok, true);
    assert.deepEqual(checks.map((c) => c.name), ['config', 'node id', 'state dir', 'disk space', 'source', 'clock', 'docker', 'libvirt']);
    assert.match(byName(checks, 'source').detail, /valid desired state, generation 3, 0 workload\(s\)/);
    assert.match(byName(checks, 'clock').detail, /^[01] s (ahead of|behind) 127\.0\.0\.1:\d+$/);
    assert.match(byName(checks, 'docker').detail, /^dockerd \S+ \(API 1\.\d+\) on \/var\/run\/docker\.sock$/);
    assert.equal(byName(checks, 'libvirt').status, 'skip');
    assert.equal(byName(checks, 'node id').detail, `${nodeId} (from override)`);
    // The request carried the configured token (the server would have answered 401 otherwise).
    assert.ok(fleet.requests({ nodeId, kind: 'document' }).some((q) => q.status === 200));

    const text = await doctor(['--config', file]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^ok {4}config {6}.*is valid$/m);
    assert.match(text.stdout, /^skip {2}libvirt .*disabled by config/m);
    assert.match(text.stdout, /all checks passed\n$/);
  });

  it('each broken thing fails its own check with the fix, exit 1', async () => {
    const badToken = await doctor(['--config', await writeConfig('bad-token.json', { ...config, source: { ...(config.source as object), tokenFile: join(dir, 'bad-token') } }), '--json']);
    assert.equal(badToken.code, 1);
    const src = byName(badToken.report!.checks, 'source');
    assert.equal(src.status, 'fail');
    assert.match(src.detail, /answered 401/);
    assert.match(src.fix ?? '', /source\.tokenFile/);
    assert.ok(!badToken.stdout.includes('wrong'), 'the token must not be printed');

    const noCa = await doctor(['--config', await writeConfig('no-ca.json', { ...config, source: { url: fleet.sourceUrl, tokenFile: join(dir, 'token') } }), '--json']);
    assert.match(byName(noCa.report!.checks, 'source').fix ?? '', /source\.caFile/);

    await chmod(stateDir, 0o755);
    const open = await doctor(['--config', await writeConfig('good.json', config), '--json']);
    await chmod(stateDir, 0o700);
    assert.equal(open.code, 1);
    assert.equal(byName(open.report!.checks, 'state dir').fix, `chmod 700 ${stateDir}`);

    fleet.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 'x', workloads: [] });
    const invalid = await doctor(['--config', await writeConfig('good.json', config), '--json']);
    fleet.setDocument(nodeId, { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation: 3, workloads: [] });
    assert.match(byName(invalid.report!.checks, 'source').detail, /desired state is invalid: .*generation/);

    const noDocker = await doctor(['--config', await writeConfig('no-docker.json', { ...config, docker: { socketPath: join(dir, 'no.sock') } }), '--json']);
    const d = byName(noDocker.report!.checks, 'docker');
    assert.equal(d.status, 'fail');
    assert.match(d.fix ?? '', /start dockerd .*docker\.enabled=false/);

    const badConfig = await doctor(['--config', await writeConfig('bad.json', { source: { pollIntervalSeconds: 'often' } })]);
    assert.equal(badConfig.code, 1);
    assert.match(badConfig.stdout, /^fail {2}config {2}source\.pollIntervalSeconds: .*must be a number/m);
  });
});
