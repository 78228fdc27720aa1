/**
 * The built CLI's one-shot commands as a user runs them: exit codes and what they print.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { runCli } from '../helpers/agent-process.js';
import { cleanupDockerByLabel, requireEngine, testNodeId } from '../helpers/engines.js';

const dockerSkip = await requireEngine('docker');

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, env, 60_000);

const doc = (nodeId: string, workloads: unknown[], generation = 1) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId, generation, workloads });

describe('persys-agent one-shot commands', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('version and --help answer with exit 0', async () => {
    const v = await cli(['version']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^persys-agent \d+\.\d+\.\d+/);
    for (const c of ['run', 'plan', 'validate']) {
      const h = await cli([c, '--help']);
      assert.equal(h.code, 0, `${c} --help`);
      assert.match(h.stdout, new RegExp(`usage: persys-agent ${c}`, "i"));
    }
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
  });

  it('validate names the path of every error and exits 1', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(
      file,
      JSON.stringify(
        doc('edge-1', [
          { id: 'web', type: 'container', spec: { image: 'nginx:1.27', ports: [{ containerPort: 70000 }] } },
          { id: 'Bad_ID', type: 'container', spec: { image: 'x' } },
          { id: 'vm1', type: 'vm', spec: { vcpus: 0 } },
        ]),
      ),
    );
    const r = await cli(['validate', file]);
    assert.equal(r.code, 1);
    const out = r.stdout + r.stderr;
    assert.match(out, /workloads\[0\]\.spec\.ports\[0\]\.containerPort/);
    assert.match(out, /workloads\[1\]\.id/);
    assert.match(out, /workloads\[2\]\.spec\.vcpus/);
    assert.match(out, /workloads\[2\]\.spec\.memoryMiB: required/);
    const good = join(dir, 'good.json');
    await writeFile(good, JSON.stringify(doc('edge-1', [{ id: 'web', type: 'container', spec: { image: 'nginx:1.27' } }])));
    const ok = await cli(['validate', good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /valid/);
  });

  it('a bad config exits 2 and names every bad key and where it came from', async () => {
    const cfg = join(dir, 'config.json');
    await writeFile(cfg, JSON.stringify({ reconcile: { concurrency: 0 }, source: { pollIntervalSeconds: 'often' } }));
    const r = await cli(['run', '--config', cfg, '--metrics.listen=nowhere'], { PERSYS_RECONCILE_INTERVAL_SECONDS: '-1' });
    assert.equal(r.code, 2, r.stderr);
    for (const key of ['reconcile.concurrency', 'source.pollIntervalSeconds', 'metrics.listen', 'reconcile.intervalSeconds']) {
      assert.match(r.stderr, new RegExp(key.replace('.', '\\.')), `names ${key}`);
    }
    assert.match(r.stderr, /PERSYS_RECONCILE_INTERVAL_SECONDS/);
  });

  describe('plan against the real dockerd', { skip: dockerSkip }, () => {
    const nodeId = testNodeId('test-plan');
    const prefix = `t-${nodeId}-`;
    const docker = new Docker({ socketPath: '/var/run/docker.sock' });
    after(async () => {
      await cleanupDockerByLabel(nodeId);
    });

    it('prints steps with reasons and changes nothing', async () => {
      // One container exists already, with a spec hash that does not match the document.
      const existing = await docker.createContainer({
        name: `${prefix}old`,
        Image: 'persys-test/busybox:1',
        Labels: {
          'dev.persys.managed': 'true',
          'dev.persys.node-id': nodeId,
          'dev.persys.workload-id': 'old',
          'dev.persys.type': 'container',
          'dev.persys.spec-hash': 'sha256:0000',
        },
        HostConfig: { NetworkMode: 'none' },
      });
      const desired = join(dir, 'plan.json');
      await writeFile(
        desired,
        JSON.stringify(
          doc(nodeId, [
            { id: 'new', type: 'container', spec: { image: 'persys-test/busybox:1' } },
            { id: 'old', type: 'container', spec: { image: 'persys-test/busybox:1', env: { A: '1' } } },
            { id: 'vm1', type: 'vm', spec: { vcpus: 1, memoryMiB: 64 } },
          ]),
        ),
      );
      const env = { PERSYS_NODE_ID: nodeId, PERSYS_STATE_DIR: join(dir, 'plan-state'), PERSYS_DOCKER_NAME_PREFIX: prefix, PERSYS_LIBVIRT_ENABLED: 'false' };
      const r = await cli(['plan', '--desired', desired], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /create\s+new\s+.*not found on engine|create\s+new\s+.*new workload/);
      assert.match(r.stdout, /recreate\s+old\s+.*spec hash/);
      assert.match(r.stdout, /vm1.*RUNTIME_UNAVAILABLE/);
      const j = await cli(['plan', '--desired', desired, '--json'], env);
      assert.equal(j.code, 0, j.stderr);
      const parsed = JSON.parse(j.stdout) as { steps: { kind: string; workloadId: string; reason: string }[] };
      assert.deepEqual(
        parsed.steps.map((s) => `${s.kind} ${s.workloadId}`).sort(),
        ['create new', 'recreate old'],
      );
      assert.ok(parsed.steps.every((s) => s.reason.length > 0));
      // Nothing changed: the old container is still there, untouched, and nothing new was created.
      const list = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
      assert.deepEqual(list.map((c) => c.Id), [existing.id]);
    });

    it('shows POLICY_DENIED for a privileged container (a deny step, not a create), and touches nothing', async () => {
      const desired = join(dir, 'plan-policy.json');
      await writeFile(
        desired,
        JSON.stringify(
          doc(nodeId, [
            { id: 'priv', type: 'container', spec: { image: 'persys-test/busybox:1', security: { privileged: true } } },
            { id: 'hostnet', type: 'container', spec: { image: 'persys-test/busybox:1', network: { mode: 'host' } } },
            { id: 'fine', type: 'container', spec: { image: 'persys-test/busybox:1' } },
          ]),
        ),
      );
      const env = { PERSYS_NODE_ID: nodeId, PERSYS_STATE_DIR: join(dir, 'plan-policy-state'), PERSYS_DOCKER_NAME_PREFIX: prefix, PERSYS_LIBVIRT_ENABLED: 'false' };
      const before = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
      const j = await cli(['plan', '--desired', desired, '--json'], env);
      assert.equal(j.code, 0, j.stderr);
      const parsed = JSON.parse(j.stdout) as { steps: { kind: string; target: string; workloadId: string; reason: string; code?: string; violations?: string[] }[] };
      const byId = new Map(parsed.steps.map((s) => [s.workloadId, s]));
      assert.equal(byId.get('priv')?.kind, 'deny');
      assert.equal(byId.get('priv')?.code, 'POLICY_DENIED');
      assert.equal(byId.get('priv')?.target, 'workload');
      assert.deepEqual(byId.get('priv')?.violations, ['spec.security.privileged: privileged containers are denied on this host (policy.allowPrivileged)']);
      assert.match(byId.get('priv')?.reason ?? '', /^POLICY_DENIED: spec\.security\.privileged/);
      assert.equal(byId.get('hostnet')?.kind, 'deny');
      assert.equal(byId.get('fine')?.kind, 'create');
      const text = await cli(['plan', '--desired', desired], env);
      assert.match(text.stdout, /deny\s+priv\s+POLICY_DENIED: spec\.security\.privileged/);
      // Allowed by the host's config: planned as a create.
      const allowed = await cli(['plan', '--desired', desired, '--json'], { ...env, PERSYS_POLICY_ALLOW_PRIVILEGED: 'true' });
      assert.equal((JSON.parse(allowed.stdout) as typeof parsed).steps.find((s) => s.workloadId === 'priv')?.kind, 'create');
      const after = await docker.listContainers({ all: true, filters: { label: [`dev.persys.node-id=${nodeId}`] } });
      assert.deepEqual(after.map((c) => c.Id).sort(), before.map((c) => c.Id).sort(), 'nothing changed on the engine');
    });
  });
});
