import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { canonicalSpec, hashCanonical, specHash, stableStringify } from '../../src/reconcile/canonical.js';
import { CONTAINER_SPEC_FIELDS, canonicalContainerSpec, normalizeImageRef } from '../../src/runtimes/docker/canonical.js';
import { containerType } from '../../src/runtimes/docker/type.js';
import { vmType } from '../../src/runtimes/libvirt/type.js';

/** Container specs are worded by the container type; anything else (VM-shaped objects) by the VM type. */
const describeSpecChanges = (a: unknown, b: unknown): string[] =>
  (typeof b === 'object' && b !== null && 'image' in b ? containerType : vmType).describeChanges(a, b);
import type { ContainerSpec } from '../../src/spec/container.js';
import type { ComposeWorkload, ContainerWorkload, VmWorkload, Workload } from '../../src/spec/desired-state.js';

const container = (spec: ContainerSpec, extra: Partial<Omit<ContainerWorkload, 'type' | 'spec'>> = {}): ContainerWorkload => ({
  id: 'web',
  type: 'container',
  spec,
  ...extra,
});
const hashOf = (spec: ContainerSpec): string => specHash(container(spec));

describe('normalizeImageRef', () => {
  const cases: [string, string][] = [
    ['nginx', 'docker.io/library/nginx:latest'],
    ['nginx:1.27', 'docker.io/library/nginx:1.27'],
    ['library/nginx', 'docker.io/library/nginx:latest'],
    ['docker.io/nginx', 'docker.io/library/nginx:latest'],
    ['index.docker.io/library/nginx:latest', 'docker.io/library/nginx:latest'],
    ['registry-1.docker.io/library/nginx:1', 'docker.io/library/nginx:1'],
    ['me/app', 'docker.io/me/app:latest'],
    ['ghcr.io/org/app:v1', 'ghcr.io/org/app:v1'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/app', 'localhost:5000/app:latest'],
    ['registry.local:5000/team/app:2.0', 'registry.local:5000/team/app:2.0'],
    ['nginx@sha256:0123', 'docker.io/library/nginx@sha256:0123'],
    ['nginx:1.27@sha256:0123', 'docker.io/library/nginx:1.27@sha256:0123'],
    ['ghcr.io/org/app@sha256:ff', 'ghcr.io/org/app@sha256:ff'],
  ];
  for (const [input, want] of cases) {
    it(`${input} -> ${want}`, () => assert.equal(normalizeImageRef(input), want));
  }
  it('is idempotent', () => {
    for (const [input] of cases) assert.equal(normalizeImageRef(normalizeImageRef(input)), normalizeImageRef(input));
  });
});

describe('specHash: equal specs hash equal', () => {
  const base: ContainerSpec = { image: 'nginx:1.27' };
  const pairs: [string, ContainerSpec, ContainerSpec][] = [
    ['image short vs fully qualified', { image: 'nginx' }, { image: 'docker.io/library/nginx:latest' }],
    ['image latest implied', { image: 'nginx' }, { image: 'nginx:latest' }],
    ['image via index.docker.io', { image: 'nginx:1.27' }, { image: 'index.docker.io/library/nginx:1.27' }],
    ['image library/ prefix', { image: 'library/redis:7' }, { image: 'redis:7' }],
    ['pullPolicy is not part of the hash', { ...base, pullPolicy: 'Always' }, { ...base, pullPolicy: 'Never' }],
    ['pullPolicy absent vs set', base, { ...base, pullPolicy: 'IfNotPresent' }],
    ['env key order', { ...base, env: { A: '1', B: '2' } }, { ...base, env: { B: '2', A: '1' } }],
    ['empty env vs none', { ...base, env: {} }, base],
    ['empty command/entrypoint vs none', { ...base, command: [], entrypoint: [] }, base],
    ['empty ports/volumes vs none', { ...base, ports: [], volumes: [] }, base],
    ['empty labels vs none', { ...base, labels: {} }, base],
    ['port protocol tcp is the default', { ...base, ports: [{ containerPort: 80, hostPort: 8080, protocol: 'tcp' }] }, { ...base, ports: [{ containerPort: 80, hostPort: 8080 }] }],
    ['port hostIp spelled in upper case', { ...base, ports: [{ containerPort: 80, hostPort: 8080, hostIp: 'FD00::1' }] }, { ...base, ports: [{ containerPort: 80, hostPort: 8080, hostIp: 'fd00::1' }] }],
    [
      'port order',
      { ...base, ports: [{ containerPort: 443, hostPort: 8443 }, { containerPort: 80, hostPort: 8080 }, { containerPort: 53, protocol: 'udp' }] },
      { ...base, ports: [{ containerPort: 53, protocol: 'udp' }, { containerPort: 80, hostPort: 8080 }, { containerPort: 443, hostPort: 8443 }] },
    ],
    ['duplicate port entries', { ...base, ports: [{ containerPort: 80, hostPort: 8080 }, { containerPort: 80, hostPort: 8080, protocol: 'tcp' }] }, { ...base, ports: [{ containerPort: 80, hostPort: 8080 }] }],
    ['restartPolicy unless-stopped is the default', { ...base, restartPolicy: 'unless-stopped' }, base],
    ['restartMaxRetries ignored without on-failure', { ...base, restartPolicy: 'always', restartMaxRetries: 3 }, { ...base, restartPolicy: 'always' }],
    ['restartMaxRetries 0 with on-failure', { ...base, restartPolicy: 'on-failure', restartMaxRetries: 0 }, { ...base, restartPolicy: 'on-failure' }],
    ['stopSignal TERM == SIGTERM', { ...base, stopSignal: 'TERM' }, { ...base, stopSignal: 'SIGTERM' }],
    ['stopSignal 15 == SIGTERM', { ...base, stopSignal: '15' }, { ...base, stopSignal: 'SIGTERM' }],
    ['stopTimeoutSeconds 10 is the default', { ...base, stopTimeoutSeconds: 10 }, base],
    ['capabilities CAP_ prefix, order, duplicates', { ...base, security: { capAdd: ['CAP_NET_ADMIN', 'SYS_TIME', 'NET_ADMIN'] } }, { ...base, security: { capAdd: ['SYS_TIME', 'NET_ADMIN'] } }],
    ['privileged false == absent', { ...base, security: { privileged: false } }, base],
    ['readOnlyRootfs/noNewPrivileges false == absent', { ...base, security: { readOnlyRootfs: false, noNewPrivileges: false } }, base],
    ['mount readOnly false == absent', { ...base, volumes: [{ type: 'volume', source: 'data', target: '/data', readOnly: false }] }, { ...base, volumes: [{ type: 'volume', source: 'data', target: '/data' }] }],
    [
      'mount order',
      { ...base, volumes: [{ type: 'tmpfs', target: '/tmp' }, { type: 'volume', source: 'data', target: '/data' }] },
      { ...base, volumes: [{ type: 'volume', source: 'data', target: '/data' }, { type: 'tmpfs', target: '/tmp' }] },
    ],
    ['mount target trailing slash', { ...base, volumes: [{ type: 'volume', source: 'data', target: '/data/' }] }, { ...base, volumes: [{ type: 'volume', source: 'data', target: '/data' }] }],
    ['network mode bridge is the default', { ...base, network: { mode: 'bridge' } }, base],
    ['empty dns/extraHosts', { ...base, network: { dns: [], extraHosts: [] } }, base],
    ['resources empty object', { ...base, resources: {} }, base],
    ['cpuShares 1024 is Docker\'s default', { ...base, resources: { cpuShares: 1024 } }, base],
    ['healthcheck defaults', { ...base, healthcheck: { test: ['CMD', 'true'], intervalSeconds: 30, timeoutSeconds: 30, retries: 3, startPeriodSeconds: 0 } }, { ...base, healthcheck: { test: ['CMD', 'true'] } }],
    ['logging options key order', { ...base, logging: { driver: 'local', options: { 'max-size': '10m', 'max-file': '3' } } }, { ...base, logging: { driver: 'local', options: { 'max-file': '3', 'max-size': '10m' } } }],
    ['workingDir trailing slash', { ...base, workingDir: '/app/' }, { ...base, workingDir: '/app' }],
    ['top-level key order', { env: { A: '1' }, image: 'nginx:1.27' }, { image: 'nginx:1.27', env: { A: '1' } }],
  ];
  for (const [name, a, b] of pairs) {
    it(name, () => assert.equal(hashOf(a), hashOf(b)));
  }
  it('has at least 15 pairs', () => assert.ok(pairs.length >= 15));

  it('ignores revision, desiredState, retry, retryToken and id', () => {
    const a = container(base);
    const b = container(base, { id: 'other', revision: 'r9', desiredState: 'stopped', retry: { maxAttempts: 2 }, retryToken: 't' });
    assert.equal(specHash(a), specHash(b));
  });
});

describe('specHash: different specs hash differently', () => {
  const base: ContainerSpec = { image: 'nginx:1.27' };
  const pairs: [string, ContainerSpec, ContainerSpec][] = [
    ['image tag', { image: 'nginx:1.26' }, { image: 'nginx:1.27' }],
    ['image registry', { image: 'nginx:1.27' }, { image: 'ghcr.io/library/nginx:1.27' }],
    ['image digest', { image: 'nginx@sha256:aa' }, { image: 'nginx@sha256:bb' }],
    ['env value', { ...base, env: { A: '1' } }, { ...base, env: { A: '2' } }],
    ['env empty string vs absent key', { ...base, env: { A: '' } }, base],
    ['command order', { ...base, command: ['a', 'b'] }, { ...base, command: ['b', 'a'] }],
    ['dns order matters', { ...base, network: { dns: ['1.1.1.1', '8.8.8.8'] } }, { ...base, network: { dns: ['8.8.8.8', '1.1.1.1'] } }],
    ['extraHosts order matters', { ...base, network: { extraHosts: ['a:1.1.1.1', 'b:2.2.2.2'] } }, { ...base, network: { extraHosts: ['b:2.2.2.2', 'a:1.1.1.1'] } }],
    // Absent binds IPv4 and IPv6 (HostIp ""); an explicit 0.0.0.0 binds IPv4 only.
    ['hostIp 0.0.0.0 vs absent', { ...base, ports: [{ containerPort: 80, hostPort: 80, hostIp: '0.0.0.0' }] }, { ...base, ports: [{ containerPort: 80, hostPort: 80 }] }],
    ['hostIp 0.0.0.0 vs ::', { ...base, ports: [{ containerPort: 80, hostPort: 80, hostIp: '0.0.0.0' }] }, { ...base, ports: [{ containerPort: 80, hostPort: 80, hostIp: '::' }] }],
    ['protocol tcp vs udp', { ...base, ports: [{ containerPort: 53 }] }, { ...base, ports: [{ containerPort: 53, protocol: 'udp' }] }],
    ['restartPolicy always vs default', { ...base, restartPolicy: 'always' }, base],
    ['on-failure retries', { ...base, restartPolicy: 'on-failure', restartMaxRetries: 3 }, { ...base, restartPolicy: 'on-failure', restartMaxRetries: 5 }],
    ['privileged true vs absent', { ...base, security: { privileged: true } }, base],
    ['memory', { ...base, resources: { memoryBytes: 268435456 } }, { ...base, resources: { memoryBytes: 536870912 } }],
    ['stopTimeoutSeconds 30 vs default', { ...base, stopTimeoutSeconds: 30 }, base],
    ['stopSignal', { ...base, stopSignal: 'SIGINT' }, { ...base, stopSignal: 'SIGTERM' }],
    ['capAdd vs capDrop', { ...base, security: { capAdd: ['NET_ADMIN'] } }, { ...base, security: { capDrop: ['NET_ADMIN'] } }],
    ['mount readOnly', { ...base, volumes: [{ type: 'volume', source: 'd', target: '/d', readOnly: true }] }, { ...base, volumes: [{ type: 'volume', source: 'd', target: '/d' }] }],
    ['label value', { ...base, labels: { team: 'a' } }, { ...base, labels: { team: 'b' } }],
  ];
  for (const [name, a, b] of pairs) {
    it(name, () => assert.notEqual(hashOf(a), hashOf(b)));
  }
  it('has at least 10 pairs', () => assert.ok(pairs.length >= 10));

  it('an env variable named __proto__ counts', () => {
    const env: Record<string, string> = {};
    Object.defineProperty(env, '__proto__', { value: 'x', enumerable: true, writable: true, configurable: true });
    assert.notEqual(hashOf({ ...base, env }), hashOf(base));
    assert.deepEqual(Object.keys((canonicalContainerSpec({ ...base, env }).env ?? {})), ['__proto__']);
  });

  it('type is part of the hash', () => {
    const vm: VmWorkload = { id: 'x', type: 'vm', spec: { vcpus: 1, memoryMiB: 512 } };
    const compose: ComposeWorkload = { id: 'x', type: 'compose', spec: { project: 'p', composeYaml: 'services:\n  app:\n    image: x\n' } };
    assert.notEqual(specHash(vm), specHash(compose));
    assert.match(specHash(vm), /^sha256:[0-9a-f]{64}$/);
  });
});

describe('golden hash', () => {
  it('of the design example container is pinned (a change here recreates every container in the fleet)', () => {
    const w: ContainerWorkload = {
      id: 'web',
      type: 'container',
      revision: 'r7',
      desiredState: 'running',
      spec: { image: 'nginx:1.27', env: { A: '1' }, ports: [{ hostPort: 8080, containerPort: 80 }], resources: { cpus: 0.5, memoryBytes: 268435456 } },
      retry: { maxAttempts: 5, initialDelaySeconds: 5, maxDelaySeconds: 300 },
      retryToken: 't1',
    };
    assert.deepEqual(canonicalSpec(w), {
      image: 'docker.io/library/nginx:1.27',
      env: { A: '1' },
      ports: [{ containerPort: 80, hostPort: 8080 }],
      resources: { cpus: 0.5, memoryBytes: 268435456 },
    });
    assert.equal(specHash(w), 'sha256:88478d541057067598d8f8c8cf0f06c3867dbf0d65641c012ac147de6b112ee9');
  });
});

describe('canonical form', () => {
  it('drops defaults and empties entirely', () => {
    const c = canonicalContainerSpec({
      image: 'nginx',
      pullPolicy: 'Always',
      env: {},
      ports: [],
      restartPolicy: 'unless-stopped',
      stopTimeoutSeconds: 10,
      security: { privileged: false, capAdd: [] },
      network: { mode: 'bridge', dns: [] },
      resources: {},
    });
    assert.deepEqual(c, { image: 'docker.io/library/nginx:latest' });
  });

  it('memoises per workload object and freezes the result', () => {
    const w = container({ image: 'nginx', env: { A: '1' } });
    assert.equal(canonicalSpec(w), canonicalSpec(w));
    assert.ok(Object.isFrozen(canonicalSpec(w)));
    assert.ok(!Object.isFrozen(w.spec), 'the input is never frozen');
  });

  it('a fresh copy of the same workload is answered by the content cache; other content is not', () => {
    const w = container({ image: 'nginx', env: { CACHE: 'test' } });
    const copy = structuredClone(w);
    assert.equal(canonicalSpec(copy), canonicalSpec(w));
    const changed = container({ image: 'nginx', env: { CACHE: 'other' } });
    assert.notEqual(specHash(changed), specHash(w));
  });

  it('compose and VM specs: sorted keys, empties dropped', () => {
    const a: Workload = { id: 'v', type: 'vm', spec: { vcpus: 2, memoryMiB: 1024, disks: [], networks: [{ network: 'default' }] } };
    const b: Workload = { id: 'v', type: 'vm', spec: { networks: [{ network: 'default' }], memoryMiB: 1024, vcpus: 2 } };
    assert.equal(specHash(a), specHash(b));
    assert.equal(stableStringify(canonicalSpec(a)), '{"memoryMiB":1024,"networks":[{"network":"default"}],"vcpus":2}');
    // A compose app's canonical form is its services' hashes (test/unit/compose-canonical.test.ts has the rest).
    const c: Workload = { id: 's', type: 'compose', spec: { project: 'p', composeYaml: 'services:\n  b: {image: x}\n  a: {image: y}\n', env: {}, profiles: [] } };
    assert.deepEqual(Object.keys((canonicalSpec(c) as { services: object }).services), ['a', 'b']);
  });

  it('a full container spec comes out with sorted keys at every level (the fast hashing path)', () => {
    const full: Required<ContainerSpec> = {
      image: 'nginx',
      pullPolicy: 'Always',
      command: ['a'],
      entrypoint: ['b'],
      env: { Z: '1', A: '2' },
      ports: [{ containerPort: 53, hostPort: 53, hostIp: '127.0.0.1', protocol: 'udp' }],
      volumes: [
        { type: 'bind', source: '/srv', target: '/srv', readOnly: true },
        { type: 'tmpfs', target: '/tmp', sizeBytes: 1024 },
      ],
      resources: { cpus: 1, memoryBytes: 64 * 1024 * 1024, memorySwapBytes: -1, cpuShares: 512, pidsLimit: 100 },
      restartPolicy: 'on-failure',
      restartMaxRetries: 3,
      labels: { b: '1', a: '2' },
      healthcheck: { test: ['CMD', 'true'], intervalSeconds: 5, timeoutSeconds: 2, retries: 1, startPeriodSeconds: 1 },
      user: '1000:1000',
      workingDir: '/app',
      hostname: 'h',
      network: { mode: 'host', dns: ['1.1.1.1'], extraHosts: ['a:1.2.3.4'] },
      security: { privileged: true, capAdd: ['NET_ADMIN'], capDrop: ['ALL'], readOnlyRootfs: true, noNewPrivileges: true, seccompProfile: 's', apparmorProfile: 'p' },
      logging: { driver: 'local', options: { b: '1', a: '2' } },
      stopSignal: 'INT',
      stopTimeoutSeconds: 5,
    };
    const c = canonicalContainerSpec(full);
    assert.equal(JSON.stringify(c), stableStringify(c));
    const hashed = Object.entries(CONTAINER_SPEC_FIELDS).filter(([, what]) => what === 'hashed').map(([k]) => k);
    assert.deepEqual(Object.keys(c).sort(), hashed.sort(), 'every field marked hashed reaches the canonical form');
    assert.deepEqual(Object.keys(full).sort(), Object.keys(CONTAINER_SPEC_FIELDS).sort(), 'the fixture sets every field');
  });

  it('hashCanonical does not depend on key order, numeric-looking keys included', () => {
    assert.equal(hashCanonical('container', { b: 1, a: { d: 1, c: 2 } }), hashCanonical('container', { a: { c: 2, d: 1 }, b: 1 }));
    assert.equal(
      hashCanonical('container', canonicalContainerSpec({ image: 'x', labels: { '10': 'a', '9': 'b' } })),
      hashCanonical('container', { image: 'docker.io/library/x:latest', labels: { '9': 'b', '10': 'a' } }),
    );
  });

  it('stableStringify sorts keys at every level', () => {
    assert.equal(stableStringify({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[2,{"y":2,"z":1}]},"b":1}');
  });
});

describe('describeSpecChanges', () => {
  const c = (spec: ContainerSpec) => canonicalContainerSpec(spec);

  it('returns nothing for equal specs', () => {
    assert.deepEqual(describeSpecChanges(c({ image: 'nginx' }), c({ image: 'nginx:latest' })), []);
  });

  it('image change shows both references', () => {
    assert.deepEqual(describeSpecChanges(c({ image: 'nginx:1.26' }), c({ image: 'nginx:1.27' })), [
      'image changed (docker.io/library/nginx:1.26 -> docker.io/library/nginx:1.27)',
    ]);
  });

  it('env keys added, changed, removed', () => {
    const reasons = describeSpecChanges(c({ image: 'x', env: { FOO: 'a', BAZ: 'z' } }), c({ image: 'x', env: { FOO: 'b', BAR: 'y' } }));
    assert.deepEqual(reasons, ['env BAR added', 'env BAZ removed', 'env FOO changed']);
  });

  it('env appears or vanishes entirely', () => {
    assert.deepEqual(describeSpecChanges(c({ image: 'x' }), c({ image: 'x', env: { A: '1' } })), ['env A added']);
    assert.deepEqual(describeSpecChanges(c({ image: 'x', env: { A: '1' } }), c({ image: 'x' })), ['env A removed']);
  });

  it('lists are named, not printed', () => {
    assert.deepEqual(describeSpecChanges(c({ image: 'x', command: ['--password=hunter2'] }), c({ image: 'x', command: ['--password=swordfish'] })), ['command changed']);
    assert.deepEqual(describeSpecChanges(c({ image: 'x', ports: [{ containerPort: 80 }] }), c({ image: 'x', ports: [{ containerPort: 81 }] })), ['ports changed']);
  });

  it('nested scalars carry their path and short values', () => {
    assert.deepEqual(describeSpecChanges(c({ image: 'x', resources: { memoryBytes: 268435456 } }), c({ image: 'x', resources: { memoryBytes: 536870912 } })), [
      'resources.memoryBytes changed (268435456 -> 536870912)',
    ]);
    assert.deepEqual(describeSpecChanges(c({ image: 'x' }), c({ image: 'x', restartPolicy: 'no' })), ['restartPolicy changed (default -> no)']);
    assert.deepEqual(describeSpecChanges(c({ image: 'x', security: { privileged: true } }), c({ image: 'x' })), ['security.privileged changed (true -> default)']);
  });

  it('several changes come in key order', () => {
    const reasons = describeSpecChanges(
      c({ image: 'a', command: ['x'], env: { A: '1' } }),
      c({ image: 'b', command: ['y'], env: { A: '2' }, stopTimeoutSeconds: 30 }),
    );
    assert.deepEqual(reasons, ['command changed', 'env A changed', 'image changed (docker.io/library/a:latest -> docker.io/library/b:latest)', 'stopTimeoutSeconds changed (default -> 30)']);
  });

  it('long values are not printed', () => {
    const long = 'x'.repeat(200);
    assert.deepEqual(describeSpecChanges(c({ image: 'x', user: 'a' }), { ...c({ image: 'x' }), user: long }), ['user changed']);
  });

  it('non-object input says only "spec changed"', () => {
    assert.deepEqual(describeSpecChanges(undefined, c({ image: 'x' })), ['spec changed']);
    assert.deepEqual(describeSpecChanges('old', { a: 1 }), ['spec changed']);
  });

  it('never includes env, label or log-option values', () => {
    const secrets = ['s3cr3t-value-1', 'p4ss', 'tok_abcdef', 'hunter2'];
    const before = c({ image: 'x', env: { DB_PASSWORD: secrets[0] as string, KEEP: secrets[3] as string }, labels: { owner: secrets[1] as string }, logging: { driver: 'splunk', options: { 'splunk-token': secrets[2] as string } } });
    const after = c({ image: 'x', env: { DB_PASSWORD: 'other', NEW: secrets[3] as string }, labels: { owner: 'x' }, logging: { driver: 'splunk', options: { 'splunk-token': 'y' } } });
    const reasons = describeSpecChanges(before, after);
    assert.deepEqual(reasons, ['env DB_PASSWORD changed', 'env KEEP removed', 'env NEW added', 'labels owner changed', 'logging.options splunk-token changed']);
    const text = reasons.join('\n');
    for (const s of [...secrets, 'other']) assert.ok(!text.includes(s), `reason leaks ${s}`);
  });

  it('VM cloud-init and secret-looking keys are named only', () => {
    const reasons = describeSpecChanges({ vcpus: 1, cloudInit: { userData: 'pw: a' }, login: { username: 'u' } }, { vcpus: 2, cloudInit: { userData: 'pw: b' }, login: { username: 'v' } });
    assert.deepEqual(reasons, ['cloudInit.userData changed', 'login.username changed', 'vcpus changed (1 -> 2)']);
  });
});
