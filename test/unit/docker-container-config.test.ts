import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as v from 'valibot';

import { containerName, ownLabels, toCreateOptions } from '../../src/runtimes/docker/container-config.js';
import { LABELS } from '../../src/runtimes/runtime.js';
import { containerWorkload, type ContainerWorkload } from '../../src/spec/desired-state.js';

const ctx = { nodeId: 'edge-7', specHash: 'abc123', namePrefix: 'persys-' };

/** Parsed through the real schema, so the tests cannot drift from what a document may hold. */
function workload(spec: Record<string, unknown>, extra: Record<string, unknown> = {}): ContainerWorkload {
  return v.parse(containerWorkload, { id: 'web', type: 'container', revision: 'r7', spec, ...extra });
}

describe('toCreateOptions: minimal spec', () => {
  const opts = toCreateOptions(workload({ image: 'nginx:1.27' }), ctx);

  it('names the container prefix + workload id', () => {
    assert.equal(opts.name, 'persys-web');
    assert.equal(containerName('t-node-', 'db'), 't-node-db');
  });

  it('sets the image and nothing the spec did not ask for', () => {
    assert.equal(opts.Image, 'nginx:1.27');
    for (const key of ['Cmd', 'Entrypoint', 'Env', 'ExposedPorts', 'Healthcheck', 'User', 'WorkingDir', 'Hostname', 'StopSignal', 'StopTimeout']) {
      assert.equal(key in opts, false, `${key} should be absent`);
    }
    assert.deepEqual(opts.HostConfig, { RestartPolicy: { Name: 'unless-stopped' } });
  });

  it('labels it as ours: managed, node, workload, revision, spec hash, type', () => {
    assert.deepEqual(opts.Labels, {
      [LABELS.managed]: 'true',
      [LABELS.nodeId]: 'edge-7',
      [LABELS.workloadId]: 'web',
      [LABELS.revision]: 'r7',
      [LABELS.specHash]: 'abc123',
      [LABELS.hashVersion]: '1',
      [LABELS.type]: 'container',
    });
  });

  it('omits the revision label when the workload has no revision', () => {
    const w = v.parse(containerWorkload, { id: 'x', type: 'container', spec: { image: 'a:1' } });
    assert.equal(LABELS.revision in ownLabels(w, ctx), false);
    assert.equal(toCreateOptions(w, ctx).Labels?.[LABELS.revision], undefined);
  });

  it('is deterministic and does not share arrays with the spec', () => {
    const w = workload({ image: 'a:1', command: ['x'], env: { B: '2', A: '1' } });
    const a = toCreateOptions(w, ctx);
    const b = toCreateOptions(w, ctx);
    assert.deepEqual(a, b);
    a.Cmd?.push('mutated');
    assert.deepEqual(w.spec.command, ['x']);
  });
});

describe('toCreateOptions: process', () => {
  it('maps command to Cmd and entrypoint to Entrypoint', () => {
    const o = toCreateOptions(workload({ image: 'a:1', command: ['-c', 'echo hi'], entrypoint: ['/bin/sh'] }), ctx);
    assert.deepEqual(o.Cmd, ['-c', 'echo hi']);
    assert.deepEqual(o.Entrypoint, ['/bin/sh']);
  });

  it('keeps an empty entrypoint (it clears the image default)', () => {
    const o = toCreateOptions(workload({ image: 'a:1', entrypoint: [] }), ctx);
    assert.deepEqual(o.Entrypoint, []);
  });

  it('maps env to sorted K=V strings, values verbatim (= and spaces included)', () => {
    const o = toCreateOptions(workload({ image: 'a:1', env: { ZED: 'last', A: '1', URL: 'a=b c', EMPTY: '' } }), ctx);
    assert.deepEqual(o.Env, ['A=1', 'EMPTY=', 'URL=a=b c', 'ZED=last']);
  });

  it('maps user, workingDir, hostname, stopSignal and stopTimeoutSeconds', () => {
    const o = toCreateOptions(
      workload({ image: 'a:1', user: '1000:1000', workingDir: '/srv', hostname: 'web-1', stopSignal: 'SIGQUIT', stopTimeoutSeconds: 30 }),
      ctx,
    );
    assert.equal(o.User, '1000:1000');
    assert.equal(o.WorkingDir, '/srv');
    assert.equal(o.Hostname, 'web-1');
    assert.equal(o.StopSignal, 'SIGQUIT');
    assert.equal(o.StopTimeout, 30);
  });

  it('keeps a stop timeout of 0', () => {
    assert.equal(toCreateOptions(workload({ image: 'a:1', stopTimeoutSeconds: 0 }), ctx).StopTimeout, 0);
  });
});

describe('toCreateOptions: ports', () => {
  it('exposes and publishes with HostIp, HostPort as a string and tcp by default', () => {
    const o = toCreateOptions(
      workload({
        image: 'a:1',
        ports: [
          { hostPort: 8080, containerPort: 80 },
          { hostIp: '127.0.0.1', hostPort: 8443, containerPort: 443, protocol: 'tcp' },
          { hostPort: 5353, containerPort: 53, protocol: 'udp' },
          { hostIp: '::1', hostPort: 9000, containerPort: 9000, protocol: 'sctp' },
        ],
      }),
      ctx,
    );
    assert.deepEqual(o.ExposedPorts, { '80/tcp': {}, '443/tcp': {}, '53/udp': {}, '9000/sctp': {} });
    assert.deepEqual(o.HostConfig?.PortBindings, {
      '80/tcp': [{ HostIp: '', HostPort: '8080' }],
      '443/tcp': [{ HostIp: '127.0.0.1', HostPort: '8443' }],
      '53/udp': [{ HostIp: '', HostPort: '5353' }],
      '9000/sctp': [{ HostIp: '::1', HostPort: '9000' }],
    });
  });

  it('binds one container port on several host addresses', () => {
    const o = toCreateOptions(
      workload({
        image: 'a:1',
        ports: [
          { hostIp: '127.0.0.1', hostPort: 8080, containerPort: 80 },
          { hostIp: '::1', hostPort: 8080, containerPort: 80 },
        ],
      }),
      ctx,
    );
    assert.deepEqual(o.ExposedPorts, { '80/tcp': {} });
    assert.deepEqual(o.HostConfig?.PortBindings, {
      '80/tcp': [
        { HostIp: '127.0.0.1', HostPort: '8080' },
        { HostIp: '::1', HostPort: '8080' },
      ],
    });
  });

  it('only exposes a port without hostPort (never a random host port)', () => {
    const o = toCreateOptions(workload({ image: 'a:1', ports: [{ containerPort: 9090 }] }), ctx);
    assert.deepEqual(o.ExposedPorts, { '9090/tcp': {} });
    assert.equal(o.HostConfig?.PortBindings, undefined);
    assert.equal(o.HostConfig?.PublishAllPorts, undefined);
  });
});

describe('toCreateOptions: volumes', () => {
  it('maps bind, named volume and tmpfs to Mounts', () => {
    const o = toCreateOptions(
      workload({
        image: 'a:1',
        volumes: [
          { type: 'bind', source: '/srv/conf', target: '/etc/app', readOnly: true },
          { type: 'bind', source: '/srv/logs', target: '/var/log/app' },
          { type: 'volume', source: 'data', target: '/var/lib/app' },
          { type: 'volume', source: 'cache', target: '/cache', readOnly: true },
          { type: 'tmpfs', target: '/run', sizeBytes: 1048576 },
          { type: 'tmpfs', target: '/tmp' },
        ],
      }),
      ctx,
    );
    assert.deepEqual(o.HostConfig?.Mounts, [
      { Type: 'bind', Source: '/srv/conf', Target: '/etc/app', ReadOnly: true },
      { Type: 'bind', Source: '/srv/logs', Target: '/var/log/app', ReadOnly: false },
      { Type: 'volume', Source: 'data', Target: '/var/lib/app', ReadOnly: false },
      { Type: 'volume', Source: 'cache', Target: '/cache', ReadOnly: true },
      { Type: 'tmpfs', Source: '', Target: '/run', TmpfsOptions: { SizeBytes: 1048576, Mode: 0o1777 } },
      { Type: 'tmpfs', Source: '', Target: '/tmp' },
    ]);
    // Binds would silently create a missing host directory; Mounts fails instead.
    assert.equal(o.HostConfig?.Binds, undefined);
  });
});

describe('toCreateOptions: resources', () => {
  it('maps cpus to NanoCpus, memory, swap, shares and pids limit', () => {
    const o = toCreateOptions(
      workload({ image: 'a:1', resources: { cpus: 0.5, memoryBytes: 268435456, memorySwapBytes: 536870912, cpuShares: 512, pidsLimit: 100 } }),
      ctx,
    );
    assert.equal(o.HostConfig?.NanoCpus, 500_000_000);
    assert.equal(o.HostConfig?.Memory, 268435456);
    assert.equal(o.HostConfig?.MemorySwap, 536870912);
    assert.equal(o.HostConfig?.CpuShares, 512);
    assert.equal(o.HostConfig?.PidsLimit, 100);
  });

  it('gives an integer NanoCpus for fractions that are not exact in binary', () => {
    for (const cpus of [0.1, 0.3, 1.7, 0.01, 2.675]) {
      const n = toCreateOptions(workload({ image: 'a:1', resources: { cpus } }), ctx).HostConfig?.NanoCpus;
      assert.ok(Number.isInteger(n), `${cpus} -> ${String(n)}`);
      assert.equal(n, Math.round(cpus * 1e9));
    }
  });

  it('passes -1 (unlimited swap) through', () => {
    assert.equal(toCreateOptions(workload({ image: 'a:1', resources: { memorySwapBytes: -1 } }), ctx).HostConfig?.MemorySwap, -1);
  });
});

describe('toCreateOptions: restart policy', () => {
  it('defaults to unless-stopped', () => {
    assert.deepEqual(toCreateOptions(workload({ image: 'a:1' }), ctx).HostConfig?.RestartPolicy, { Name: 'unless-stopped' });
  });

  for (const name of ['no', 'always', 'unless-stopped'] as const) {
    it(`maps ${name}`, () => {
      assert.deepEqual(toCreateOptions(workload({ image: 'a:1', restartPolicy: name }), ctx).HostConfig?.RestartPolicy, { Name: name });
    });
  }

  it('maps on-failure with MaximumRetryCount', () => {
    const o = toCreateOptions(workload({ image: 'a:1', restartPolicy: 'on-failure', restartMaxRetries: 5 }), ctx);
    assert.deepEqual(o.HostConfig?.RestartPolicy, { Name: 'on-failure', MaximumRetryCount: 5 });
  });

  it('maps on-failure without a cap', () => {
    const o = toCreateOptions(workload({ image: 'a:1', restartPolicy: 'on-failure' }), ctx);
    assert.deepEqual(o.HostConfig?.RestartPolicy, { Name: 'on-failure' });
  });
});

describe('toCreateOptions: labels', () => {
  it('merges the user labels with ours', () => {
    const o = toCreateOptions(workload({ image: 'a:1', labels: { team: 'edge', 'com.example/tier': 'web' } }), ctx);
    assert.equal(o.Labels?.team, 'edge');
    assert.equal(o.Labels?.['com.example/tier'], 'web');
    assert.equal(o.Labels?.[LABELS.managed], 'true');
    assert.equal(o.Labels?.[LABELS.specHash], 'abc123');
  });

  it('never lets a label override ours, even if one slipped past the schema', () => {
    const w = workload({ image: 'a:1' });
    const forged: ContainerWorkload = { ...w, spec: { ...w.spec, labels: { [LABELS.nodeId]: 'other-node', [LABELS.managed]: 'false' } } };
    const o = toCreateOptions(forged, ctx);
    assert.equal(o.Labels?.[LABELS.nodeId], 'edge-7');
    assert.equal(o.Labels?.[LABELS.managed], 'true');
  });
});

describe('toCreateOptions: healthcheck', () => {
  it('maps the test and converts seconds to nanoseconds', () => {
    const o = toCreateOptions(
      workload({
        image: 'a:1',
        healthcheck: { test: ['CMD-SHELL', 'wget -q -O- http://localhost/ || exit 1'], intervalSeconds: 10, timeoutSeconds: 2.5, retries: 4, startPeriodSeconds: 30 },
      }),
      ctx,
    );
    assert.deepEqual(o.Healthcheck, {
      Test: ['CMD-SHELL', 'wget -q -O- http://localhost/ || exit 1'],
      Interval: 10_000_000_000,
      Timeout: 2_500_000_000,
      Retries: 4,
      StartPeriod: 30_000_000_000,
    });
  });

  it('leaves unset timings to the engine defaults', () => {
    const o = toCreateOptions(workload({ image: 'a:1', healthcheck: { test: ['NONE'] } }), ctx);
    assert.deepEqual(o.Healthcheck, { Test: ['NONE'] });
  });
});

describe('toCreateOptions: network', () => {
  it('maps mode, dns and extra hosts', () => {
    const o = toCreateOptions(
      workload({ image: 'a:1', network: { mode: 'none', dns: ['10.0.0.2', '10.0.0.3'], extraHosts: ['db.local:10.0.0.9'] } }),
      ctx,
    );
    assert.equal(o.HostConfig?.NetworkMode, 'none');
    assert.deepEqual(o.HostConfig?.Dns, ['10.0.0.2', '10.0.0.3']);
    assert.deepEqual(o.HostConfig?.ExtraHosts, ['db.local:10.0.0.9']);
  });

  it('maps a named network', () => {
    assert.equal(toCreateOptions(workload({ image: 'a:1', network: { mode: 'backend' } }), ctx).HostConfig?.NetworkMode, 'backend');
  });

  it('leaves the engine default when no mode is given', () => {
    assert.equal(toCreateOptions(workload({ image: 'a:1', network: {} }), ctx).HostConfig?.NetworkMode, undefined);
  });
});

describe('toCreateOptions: security', () => {
  it('maps privileged, capabilities, read-only rootfs and security options', () => {
    const o = toCreateOptions(
      workload({
        image: 'a:1',
        security: {
          privileged: false,
          capAdd: ['NET_ADMIN'],
          capDrop: ['ALL'],
          readOnlyRootfs: true,
          noNewPrivileges: true,
          seccompProfile: 'unconfined',
          apparmorProfile: 'docker-default',
        },
      }),
      ctx,
    );
    const hc = o.HostConfig;
    assert.equal(hc?.Privileged, false);
    assert.deepEqual(hc?.CapAdd, ['NET_ADMIN']);
    assert.deepEqual(hc?.CapDrop, ['ALL']);
    assert.equal(hc?.ReadonlyRootfs, true);
    assert.deepEqual(hc?.SecurityOpt, ['no-new-privileges:true', 'seccomp=unconfined', 'apparmor=docker-default']);
  });

  it('maps privileged: true', () => {
    assert.equal(toCreateOptions(workload({ image: 'a:1', security: { privileged: true } }), ctx).HostConfig?.Privileged, true);
  });

  it('sends no SecurityOpt when no option is set, and none for noNewPrivileges: false', () => {
    const o = toCreateOptions(workload({ image: 'a:1', security: { noNewPrivileges: false } }), ctx);
    assert.equal(o.HostConfig?.SecurityOpt, undefined);
  });
});

describe('toCreateOptions: logging', () => {
  it('maps driver and options to LogConfig', () => {
    const o = toCreateOptions(workload({ image: 'a:1', logging: { driver: 'json-file', options: { 'max-size': '10m', 'max-file': '3' } } }), ctx);
    assert.deepEqual(o.HostConfig?.LogConfig, { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } });
  });

  it('sends an empty Config for a driver without options', () => {
    const o = toCreateOptions(workload({ image: 'a:1', logging: { driver: 'local' } }), ctx);
    assert.deepEqual(o.HostConfig?.LogConfig, { Type: 'local', Config: {} });
  });
});

describe('toCreateOptions: a full spec', () => {
  it('maps every field at once', () => {
    const o = toCreateOptions(
      workload({
        image: 'registry.local:5000/app@sha256:' + 'a'.repeat(64),
        pullPolicy: 'Never',
        command: ['serve'],
        entrypoint: ['/app'],
        env: { A: '1' },
        ports: [{ hostIp: '127.0.0.1', hostPort: 8080, containerPort: 80 }],
        volumes: [{ type: 'volume', source: 'data', target: '/data' }],
        resources: { cpus: 2, memoryBytes: 6 * 1024 * 1024, memorySwapBytes: -1, cpuShares: 1024, pidsLimit: 64 },
        restartPolicy: 'always',
        labels: { team: 'x' },
        healthcheck: { test: ['CMD', '/app', 'health'], intervalSeconds: 5 },
        user: 'app',
        workingDir: '/',
        hostname: 'h',
        network: { mode: 'bridge', dns: ['1.1.1.1'], extraHosts: ['a:1.2.3.4'] },
        security: { capDrop: ['NET_RAW'], noNewPrivileges: true },
        logging: { driver: 'journald' },
        stopSignal: 'SIGINT',
        stopTimeoutSeconds: 3,
      }),
      ctx,
    );
    assert.deepEqual(o, {
      name: 'persys-web',
      Image: 'registry.local:5000/app@sha256:' + 'a'.repeat(64),
      Cmd: ['serve'],
      Entrypoint: ['/app'],
      Env: ['A=1'],
      ExposedPorts: { '80/tcp': {} },
      Labels: {
        team: 'x',
        [LABELS.managed]: 'true',
        [LABELS.nodeId]: 'edge-7',
        [LABELS.workloadId]: 'web',
        [LABELS.specHash]: 'abc123',
        [LABELS.hashVersion]: '1',
        [LABELS.type]: 'container',
        [LABELS.revision]: 'r7',
      },
      Healthcheck: { Test: ['CMD', '/app', 'health'], Interval: 5_000_000_000 },
      User: 'app',
      WorkingDir: '/',
      Hostname: 'h',
      StopSignal: 'SIGINT',
      StopTimeout: 3,
      HostConfig: {
        PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }] },
        Mounts: [{ Type: 'volume', Source: 'data', Target: '/data', ReadOnly: false }],
        NanoCpus: 2_000_000_000,
        Memory: 6 * 1024 * 1024,
        MemorySwap: -1,
        CpuShares: 1024,
        PidsLimit: 64,
        RestartPolicy: { Name: 'always' },
        NetworkMode: 'bridge',
        Dns: ['1.1.1.1'],
        ExtraHosts: ['a:1.2.3.4'],
        CapDrop: ['NET_RAW'],
        SecurityOpt: ['no-new-privileges:true'],
        LogConfig: { Type: 'journald', Config: {} },
      },
    });
  });
});
