import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { policyViolations } from '../../src/policy/container-policy.js';
import type { Workload } from '../../src/spec/desired-state.js';

const deny = { allowPrivileged: false, allowHostPaths: false, allowHostNetwork: false, allowedHostPathPrefixes: [] as string[] };
const c = (spec: Record<string, unknown>): Workload => ({ id: 'w', type: 'container', spec: { image: 'x', ...spec } }) as Workload;

describe('container policy', () => {
  it('allows an ordinary container under the default-deny policy', () => {
    assert.deepEqual(policyViolations(c({ volumes: [{ type: 'volume', source: 'data', target: '/d' }, { type: 'tmpfs', target: '/t' }] }), deny), []);
  });
  it('denies privileged, host network and host paths, naming each field', () => {
    const v = policyViolations(c({ security: { privileged: true }, network: { mode: 'host' }, volumes: [{ type: 'tmpfs', target: '/t' }, { type: 'bind', source: '/etc', target: '/e' }] }), deny);
    assert.equal(v.length, 3);
    assert.match(v[0]!, /^spec\.security\.privileged: .*policy\.allowPrivileged/);
    assert.match(v[1]!, /^spec\.network\.mode: .*policy\.allowHostNetwork/);
    assert.match(v[2]!, /^spec\.volumes\[1\]\.source: host path \/etc .*policy\.allowHostPaths/);
  });
  it('allows what the host allows, and keeps host paths under the allowed prefixes', () => {
    const allow = { ...deny, allowPrivileged: true, allowHostNetwork: true, allowHostPaths: true, allowedHostPathPrefixes: ['/srv/data'] };
    assert.deepEqual(policyViolations(c({ security: { privileged: true }, network: { mode: 'host' }, volumes: [{ type: 'bind', source: '/srv/data/a', target: '/a' }] }), allow), []);
    assert.deepEqual(policyViolations(c({ volumes: [{ type: 'bind', source: '/srv/data', target: '/a' }] }), allow), []);
    const outside = policyViolations(c({ volumes: [{ type: 'bind', source: '/srv/database', target: '/a' }] }), allow);
    assert.match(outside[0] ?? '', /not under policy\.allowedHostPathPrefixes/);
  });
  it('ignores other workload types', () => {
    assert.deepEqual(policyViolations({ id: 'v', type: 'vm', spec: { vcpus: 1, memoryMiB: 64 } } as Workload, deny), []);
  });
});
