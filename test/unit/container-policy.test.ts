import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WorkloadError } from '../../src/errors/index.js';
import { assertPolicy, configurePolicyContext, DANGEROUS_CAPABILITIES, imageRegistry, policyViolations, resolveRealpath, vmPolicyViolations, type Policy } from '../../src/policy/container-policy.js';
import type { Workload } from '../../src/spec/desired-state.js';
import { validateDesiredState } from '../../src/spec/validate.js';

const deny: Policy = {
  requireResourceRequests: false,
  allowedStoragePrefixes: [],
  allowPrivileged: false,
  allowHostPaths: false,
  allowHostNetwork: false,
  allowedHostPathPrefixes: [],
  allowedCapabilities: [],
  allowUnconfinedSeccomp: false,
  allowUnconfinedApparmor: false,
  allowedBridges: [],
};
const c = (spec: Record<string, unknown>): Workload => ({ id: 'w', type: 'container', spec: { image: 'x', ...spec } }) as Workload;
const vm = (networks: unknown[]): Workload => ({ id: 'v', type: 'vm', spec: { vcpus: 1, memoryMiB: 64, networks } }) as Workload;
const bind = (source: string) => ({ volumes: [{ type: 'bind', source, target: '/m' }] });

// Real directories: the symlink cases resolve on the file system, not on strings.
const root = realpathSync(mkdtempSync(join(tmpdir(), 'persys-policy-')));
after(() => rmSync(root, { recursive: true, force: true }));
const allowed = join(root, 'allowed');
const stateDir = join(root, 'state');
mkdirSync(join(allowed, 'sub'), { recursive: true });
mkdirSync(stateDir);
symlinkSync('/etc', join(allowed, 'etc-link'));
symlinkSync('/', join(allowed, 'root-link'));
symlinkSync('/proc/self', join(allowed, 'proc-link'));
symlinkSync(join(allowed, 'sub'), join(allowed, 'inside-link'));
symlinkSync(join(root, 'elsewhere'), join(allowed, 'outside-link'));
symlinkSync(stateDir, join(allowed, 'state-link'));
symlinkSync(join(allowed, 'etc-link'), join(allowed, 'chain-link'));
mkdirSync(join(root, 'elsewhere'));
const ctx = { stateDir };
const hostPaths: Policy = { ...deny, allowHostPaths: true, allowedHostPathPrefixes: [allowed] };
const anyPath: Policy = { ...deny, allowHostPaths: true };

interface Case {
  name: string;
  w: Workload;
  policy: Policy;
  /** Expected violations as regexes, in order; [] for allowed. */
  expect: RegExp[];
}

const cases: Case[] = [
  { name: 'ordinary container', w: c({ volumes: [{ type: 'volume', source: 'data', target: '/d' }, { type: 'tmpfs', target: '/t' }] }), policy: deny, expect: [] },
  { name: 'privileged denied', w: c({ security: { privileged: true } }), policy: deny, expect: [/^spec\.security\.privileged: .*policy\.allowPrivileged/] },
  { name: 'privileged allowed', w: c({ security: { privileged: true } }), policy: { ...deny, allowPrivileged: true }, expect: [] },
  { name: 'privileged false', w: c({ security: { privileged: false } }), policy: deny, expect: [] },
  { name: 'host network denied', w: c({ network: { mode: 'host' } }), policy: deny, expect: [/^spec\.network\.mode: .*policy\.allowHostNetwork/] },
  { name: 'host network allowed', w: c({ network: { mode: 'host' } }), policy: { ...deny, allowHostNetwork: true }, expect: [] },
  { name: 'bridge network', w: c({ network: { mode: 'bridge' } }), policy: deny, expect: [] },
  { name: 'seccomp unconfined denied', w: c({ security: { seccompProfile: 'unconfined' } }), policy: deny, expect: [/^spec\.security\.seccompProfile: "unconfined" .*policy\.allowUnconfinedSeccomp/] },
  { name: 'seccomp Unconfined (case) denied', w: c({ security: { seccompProfile: 'Unconfined' } }), policy: deny, expect: [/policy\.allowUnconfinedSeccomp/] },
  { name: 'seccomp unconfined allowed', w: c({ security: { seccompProfile: 'unconfined' } }), policy: { ...deny, allowUnconfinedSeccomp: true }, expect: [] },
  { name: 'seccomp named profile', w: c({ security: { seccompProfile: 'default' } }), policy: deny, expect: [] },
  { name: 'apparmor unconfined denied', w: c({ security: { apparmorProfile: 'unconfined' } }), policy: deny, expect: [/^spec\.security\.apparmorProfile: "unconfined" .*policy\.allowUnconfinedApparmor/] },
  { name: 'apparmor unconfined allowed', w: c({ security: { apparmorProfile: 'unconfined' } }), policy: { ...deny, allowUnconfinedApparmor: true }, expect: [] },
  { name: 'apparmor docker-default', w: c({ security: { apparmorProfile: 'docker-default' } }), policy: deny, expect: [] },
  ...DANGEROUS_CAPABILITIES.flatMap((cap): Case[] => [
    { name: `capAdd ${cap} denied`, w: c({ security: { capAdd: ['CHOWN', cap] } }), policy: deny, expect: [new RegExp(`^spec\\.security\\.capAdd\\[1\\]: capability ${cap} is denied .*policy\\.allowedCapabilities`)] },
    { name: `capAdd ${cap} allowed`, w: c({ security: { capAdd: [cap] } }), policy: { ...deny, allowedCapabilities: [cap] }, expect: [] },
  ]),
  { name: 'capAdd CAP_SYS_ADMIN (prefixed) denied', w: c({ security: { capAdd: ['CAP_SYS_ADMIN'] } }), policy: deny, expect: [/capability CAP_SYS_ADMIN is denied/] },
  { name: 'capAdd CAP_SYS_ADMIN allowed as SYS_ADMIN', w: c({ security: { capAdd: ['CAP_SYS_ADMIN'] } }), policy: { ...deny, allowedCapabilities: ['SYS_ADMIN'] }, expect: [] },
  { name: 'allowing one cap does not allow another', w: c({ security: { capAdd: ['SYS_ADMIN', 'NET_ADMIN'] } }), policy: { ...deny, allowedCapabilities: ['NET_ADMIN'] }, expect: [/capAdd\[0\]: capability SYS_ADMIN/] },
  { name: 'harmless caps pass', w: c({ security: { capAdd: ['NET_BIND_SERVICE', 'CHOWN'] } }), policy: deny, expect: [] },
  { name: 'capDrop ALL is fine', w: c({ security: { capDrop: ['ALL'] } }), policy: deny, expect: [] },
  { name: 'registries unset: any image', w: c({ image: 'evil.example.com/x:1' }), policy: deny, expect: [] },
  { name: 'registry listed', w: c({ image: '127.0.0.1:5000/app:1' }), policy: { ...deny, allowedRegistries: ['127.0.0.1:5000'] }, expect: [] },
  { name: 'registry not listed', w: c({ image: 'evil.example.com/x:1' }), policy: { ...deny, allowedRegistries: ['127.0.0.1:5000'] }, expect: [/^spec\.image: image evil\.example\.com\/x:1 is from registry evil\.example\.com, which policy\.allowedRegistries/] },
  { name: 'docker hub short name is docker.io', w: c({ image: 'nginx:1.27' }), policy: { ...deny, allowedRegistries: ['docker.io'] }, expect: [] },
  { name: 'docker hub denied when not listed', w: c({ image: 'nginx:1.27' }), policy: { ...deny, allowedRegistries: ['ghcr.io'] }, expect: [/image nginx:1\.27 is from registry docker\.io/] },
  { name: 'registry path prefix allows its repos', w: c({ image: 'ghcr.io/acme/app@sha256:' + 'a'.repeat(64) }), policy: { ...deny, allowedRegistries: ['ghcr.io/acme'] }, expect: [] },
  { name: 'registry path prefix is not a string prefix', w: c({ image: 'ghcr.io/acmeevil/app:1' }), policy: { ...deny, allowedRegistries: ['ghcr.io/acme'] }, expect: [/registry ghcr\.io/] },
  { name: 'localhost registry', w: c({ image: 'localhost/app' }), policy: { ...deny, allowedRegistries: ['localhost'] }, expect: [] },
  { name: 'empty registry list denies all', w: c({ image: 'alpine' }), policy: { ...deny, allowedRegistries: [] }, expect: [/\(none\)/] },
  { name: 'host paths denied by default', w: c(bind('/srv/data')), policy: deny, expect: [/^spec\.volumes\[0\]\.source: host path \/srv\/data .*policy\.allowHostPaths/] },
  { name: 'host path under allowed prefix', w: c(bind(join(allowed, 'sub'))), policy: hostPaths, expect: [] },
  { name: 'the prefix itself', w: c(bind(allowed)), policy: hostPaths, expect: [] },
  { name: 'not under prefix', w: c(bind(join(root, 'elsewhere'))), policy: hostPaths, expect: [/is not under policy\.allowedHostPathPrefixes/] },
  { name: 'string-prefix sibling is not under', w: c(bind(`${allowed}-x`)), policy: hostPaths, expect: [/is not under policy\.allowedHostPathPrefixes/] },
  { name: 'symlink to /etc under allowed prefix', w: c(bind(join(allowed, 'etc-link'))), policy: hostPaths, expect: [/resolves to \/etc\) is denied: \/etc is always denied unless policy\.allowedHostPathPrefixes names it exactly/] },
  { name: 'path through a symlink to /etc', w: c(bind(join(allowed, 'etc-link', 'ssl'))), policy: hostPaths, expect: [/resolves to \/etc\/ssl\) is denied: \/etc is always denied/] },
  { name: 'chain of symlinks to /etc', w: c(bind(join(allowed, 'chain-link'))), policy: hostPaths, expect: [/resolves to \/etc\)/] },
  { name: 'symlink to /', w: c(bind(join(allowed, 'root-link'))), policy: hostPaths, expect: [/resolves to \/\) is denied: \/ is always denied/] },
  { name: 'symlink to /proc', w: c(bind(join(allowed, 'proc-link'))), policy: hostPaths, expect: [/resolves to \/proc\/\d+\) is denied: \/proc is always denied/] },
  { name: 'symlink staying inside the prefix', w: c(bind(join(allowed, 'inside-link'))), policy: hostPaths, expect: [] },
  { name: 'symlink leaving the prefix', w: c(bind(join(allowed, 'outside-link'))), policy: hostPaths, expect: [/resolves to .*elsewhere\) is not under policy\.allowedHostPathPrefixes/] },
  { name: 'symlink to the state dir', w: c(bind(join(allowed, 'state-link'))), policy: hostPaths, expect: [new RegExp(`${stateDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is always denied`)] },
  { name: 'a directory containing the state dir', w: c(bind(root)), policy: anyPath, expect: [/it contains .*(state|d\.sock), which is always denied/] },
  { name: 'not-yet-existing path under the prefix', w: c(bind(join(allowed, 'new', 'dir'))), policy: hostPaths, expect: [] },
  { name: 'not-yet-existing path through the /etc link', w: c(bind(join(allowed, 'etc-link', 'nope', 'x'))), policy: hostPaths, expect: [/resolves to \/etc\/nope\/x\)/] },
  { name: '/etc with any path allowed', w: c(bind('/etc')), policy: anyPath, expect: [/\/etc is always denied/] },
  { name: '/etc/passwd with any path allowed', w: c(bind('/etc/passwd')), policy: anyPath, expect: [/\/etc is always denied/] },
  { name: '/ with any path allowed', w: c(bind('/')), policy: anyPath, expect: [/host path \/ is denied/] },
  { name: '/proc', w: c(bind('/proc')), policy: anyPath, expect: [/\/proc is always denied/] },
  { name: '/sys/kernel', w: c(bind('/sys/kernel')), policy: anyPath, expect: [/\/sys is always denied/] },
  { name: '/dev', w: c(bind('/dev')), policy: anyPath, expect: [/\/dev is always denied/] },
  { name: '/root/.ssh', w: c(bind('/root/.ssh')), policy: anyPath, expect: [/\/root is always denied/] },
  { name: 'docker socket', w: c(bind('/var/run/docker.sock')), policy: anyPath, expect: [/docker\.sock is always denied/] },
  { name: 'a directory containing the docker socket', w: c(bind('/run')), policy: anyPath, expect: [/it contains \/run\/docker\.sock/] },
  { name: 'the configured docker socket', w: c(bind(join(root, 'sockdir', 'd.sock'))), policy: anyPath, expect: [/d\.sock is always denied/] },
  { name: '/etc named exactly', w: c(bind('/etc')), policy: { ...anyPath, allowedHostPathPrefixes: ['/etc'] }, expect: [] },
  { name: 'a path in /etc named exactly', w: c(bind('/etc/ssl/certs')), policy: { ...anyPath, allowedHostPathPrefixes: ['/etc/ssl'] }, expect: [] },
  { name: 'naming /etc/ssl does not open /etc', w: c(bind('/etc')), policy: { ...anyPath, allowedHostPathPrefixes: ['/etc/ssl'] }, expect: [/\/etc is always denied/] },
  { name: 'naming / opens only / itself', w: c(bind('/etc')), policy: { ...anyPath, allowedHostPathPrefixes: ['/'] }, expect: [/\/etc is always denied/] },
  { name: 'docker socket named exactly', w: c(bind('/var/run/docker.sock')), policy: { ...anyPath, allowedHostPathPrefixes: ['/var/run/docker.sock'] }, expect: [] },
  { name: 'ordinary dir with any path', w: c(bind(join(root, 'elsewhere'))), policy: anyPath, expect: [] },
  { name: 'second mount named by index', w: c({ volumes: [{ type: 'tmpfs', target: '/t' }, { type: 'bind', source: '/etc', target: '/e' }] }), policy: deny, expect: [/^spec\.volumes\[1\]\.source: host path \/etc .*policy\.allowHostPaths/] },
  {
    name: 'every violation at once',
    w: c({ image: 'evil.io/x', security: { privileged: true, capAdd: ['SYS_ADMIN'], seccompProfile: 'unconfined', apparmorProfile: 'unconfined' }, network: { mode: 'host' }, ...bind('/etc') }),
    policy: { ...deny, allowedRegistries: ['docker.io'] },
    expect: [/privileged/, /capAdd\[0\]/, /seccompProfile/, /apparmorProfile/, /network\.mode/, /spec\.image/, /volumes\[0\]/],
  },
  { name: 'vm: libvirt network allowed when unset', w: vm([{ network: 'default' }]), policy: deny, expect: [] },
  { name: 'vm: bridge denied by default', w: vm([{ bridge: 'br0' }]), policy: deny, expect: [/^spec\.networks\[0\]\.bridge: host bridge br0 is denied .*policy\.allowedBridges/] },
  { name: 'vm: bridge allowed', w: vm([{ bridge: 'br0' }]), policy: { ...deny, allowedBridges: ['br0'] }, expect: [] },
  { name: 'vm: other bridge still denied', w: vm([{ bridge: 'br0' }, { bridge: 'br1' }]), policy: { ...deny, allowedBridges: ['br0'] }, expect: [/networks\[1\]\.bridge: host bridge br1/] },
  { name: 'vm: network not listed', w: vm([{ network: 'lan' }]), policy: { ...deny, allowedNetworks: ['isolated'] }, expect: [/^spec\.networks\[0\]\.network: libvirt network lan is not in policy\.allowedNetworks/] },
  { name: 'vm: network listed', w: vm([{ network: 'isolated' }]), policy: { ...deny, allowedNetworks: ['isolated'] }, expect: [] },
];

describe('host policy table', () => {
  const pctx = { ...ctx, dockerSocket: join(root, 'sockdir', 'd.sock') };
  it(`has at least 60 cases (${cases.length})`, () => assert.ok(cases.length >= 60));
  for (const tc of cases) {
    it(tc.name, () => {
      const got = [...policyViolations(tc.w, tc.policy, pctx), ...vmPolicyViolations(tc.w, tc.policy)];
      assert.equal(got.length, tc.expect.length, `violations: ${JSON.stringify(got)}`);
      tc.expect.forEach((re, i) => assert.match(got[i]!, re));
    });
  }
});

describe('fields the container spec does not have cannot be set (no rule to walk around)', () => {
  const extras: [string, Record<string, unknown>][] = [
    ['devices', { devices: [{ hostPath: '/dev/sda' }] }],
    ['pid', { pid: 'host' }],
    ['ipc', { ipc: 'host' }],
    ['uts', { uts: 'host' }],
    ['userns', { userns: 'host' }],
    ['sysctls', { sysctls: { 'kernel.core_pattern': '|/x' } }],
    ['securityOpt', { securityOpt: ['seccomp=unconfined'] }],
    ['security.securityOpt', { security: { securityOpt: ['apparmor=unconfined'] } }],
    ['security.devices', { security: { devices: ['/dev/mem'] } }],
  ];
  for (const [field, extra] of extras) {
    it(field, () => {
      const doc = { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n', generation: 1, workloads: [{ id: 'w', type: 'container', spec: { image: 'x', ...extra } }] };
      const r = validateDesiredState(doc);
      assert.equal(r.ok, false, `${field} must be refused by the schema`);
    });
  }
});

describe('host policy helpers', () => {
  it('assertPolicy throws POLICY_DENIED with every violation, VM rules included', () => {
    assert.throws(
      () => assertPolicy(vm([{ bridge: 'br9' }]), deny),
      (e: unknown) => e instanceof WorkloadError && e.code === 'POLICY_DENIED' && /policy\.allowedBridges/.test(e.message),
    );
    assert.doesNotThrow(() => assertPolicy(c({}), deny));
  });
  it('callers without a context (the planner) use the host context set at start', () => {
    configurePolicyContext({ stateDir, docker: { socketPath: '/var/run/docker.sock', namePrefix: 'p-', enabled: true } });
    assert.match(policyViolations(c(bind(join(allowed, 'state-link'))), hostPaths)[0] ?? '', /state is always denied/);
  });
  it('parses image registries like Docker', () => {
    assert.deepEqual(imageRegistry('nginx'), { registry: 'docker.io', repository: 'library/nginx' });
    assert.deepEqual(imageRegistry('acme/app:1'), { registry: 'docker.io', repository: 'acme/app' });
    assert.deepEqual(imageRegistry('127.0.0.1:5000/a/b:2@sha256:00'), { registry: '127.0.0.1:5000', repository: 'a/b' });
    assert.deepEqual(imageRegistry('index.docker.io/library/x'), { registry: 'docker.io', repository: 'library/x' });
  });
  it('resolves a missing tail through its existing parent', () => {
    assert.equal(resolveRealpath(join(allowed, 'etc-link', 'a', 'b')), '/etc/a/b');
  });
});
