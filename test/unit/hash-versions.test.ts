import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { plan } from '../../src/reconcile/planner.js';
import { retryResetKey } from '../../src/reconcile/records.js';
import { hashCanonical, pruneCanonical } from '../../src/runtimes/canonical-json.js';
import { composeType } from '../../src/runtimes/compose/type.js';
import { ownLabels } from '../../src/runtimes/docker/container-config.js';
import { containerType } from '../../src/runtimes/docker/type.js';
import { domainDefinition } from '../../src/runtimes/libvirt/definition.js';
import { vmType } from '../../src/runtimes/libvirt/type.js';
import { BUILTIN_TYPES } from '../../src/runtimes/registry.js';
import { LABELS, hashVersionOf, type ObservedWorkload } from '../../src/runtimes/runtime.js';
import type { ComposeWorkload, ContainerWorkload, DesiredStateDocument, VmWorkload, Workload } from '../../src/spec/desired-state.js';
import type { WorkloadRecord } from '../../src/store/types.js';

/*
 * Hash versions (docs/hash-versions.md): every engine object carries the version its spec hash was
 * computed under. A golden hash pins each version of each type: a change to a form that is already
 * out in fleets must be a new version, never an edit. Objects of an older version are judged under
 * that version's rules, so an upgrade recreates nothing.
 */

const NOW = new Date('2025-06-01T12:00:00.000Z');

const vm: VmWorkload = {
  id: 'vm1',
  type: 'vm',
  revision: '1',
  spec: {
    vcpus: 2,
    memoryMiB: 2048,
    disks: [{ name: 'root', sizeBytes: 10737418240, image: { path: '/srv/images/debian.qcow2' }, bus: 'virtio' }],
    networks: [{ network: 'default', mac: '52:54:00:AA:BB:CC' }],
    login: { username: 'debian', generatePassword: false },
  },
};
/** The same VM as another publisher spells it: every default written out, or left away. */
const vmSpelledOut: VmWorkload = {
  ...vm,
  spec: {
    vcpus: 2,
    memoryMiB: 2048,
    machine: 'pc',
    firmware: 'bios',
    cpuMode: 'default',
    vnc: false,
    shutdownTimeoutSeconds: 60,
    disks: [{ name: 'root', sizeBytes: 10737418240, image: { path: '/srv/images/debian.qcow2', format: 'qcow2' }, reclaimPolicy: 'delete' }],
    networks: [{ network: 'default', mac: '52:54:00:aa:bb:cc', model: 'virtio' }],
    login: { username: 'debian' },
  },
};
const web: ContainerWorkload = { id: 'web', type: 'container', revision: 'r7', spec: { image: 'nginx:1.27', env: { A: '1' }, ports: [{ hostPort: 8080, containerPort: 80 }] } };
const shop: ComposeWorkload = { id: 'shop', type: 'compose', revision: '3', spec: { project: 'shop', composeYaml: 'services:\n  api:\n    image: x\n' } };

const hashAt = (w: Workload, version: number) => BUILTIN_TYPES.hashAt(w, version);

describe('hash versions: golden hashes per type and version', () => {
  it('container, version 1 (the current one)', () => {
    assert.equal(containerType.hashVersion, 1);
    assert.equal(hashAt(web, 1), 'sha256:f1a18a5fd79fc23c2a260b4a38ed684df1b33d955b09993f0975ad9916f920dc');
    assert.equal(hashAt(web, 1), BUILTIN_TYPES.hash(web));
  });

  it('vm, version 1: sorted keys, empties dropped, nothing folded (agents before hash versions)', () => {
    // What the agent before hash versions labelled domains with: the pruned spec, hashed.
    assert.equal(hashAt(vm, 1), 'sha256:50bef7e592a45cfd6577c524d35958b2a7a2f23606d914102b4c69a0499ea1a5');
    assert.equal(hashAt(vm, 1), hashCanonical('vm', pruneCanonical(vm.spec)));
    assert.notEqual(hashAt(vm, 1), hashAt(vmSpelledOut, 1), 'version 1 did not fold bus: virtio and the other defaults');
  });

  it('vm, version 2: defaults and spellings folded', () => {
    assert.equal(vmType.hashVersion, 2);
    assert.deepEqual(vmType.canonical(vm, 2), {
      disks: [{ image: { path: '/srv/images/debian.qcow2' }, name: 'root', sizeBytes: 10737418240 }],
      login: { username: 'debian' },
      memoryMiB: 2048,
      networks: [{ mac: '52:54:00:aa:bb:cc', network: 'default' }],
      vcpus: 2,
    });
    assert.equal(hashAt(vm, 2), 'sha256:21a694ed89a983c366cde370613704ac5e77eb31df271987be657ac02babf27e');
    assert.equal(hashAt(vm, 2), hashAt(vmSpelledOut, 2), 'bus: virtio and an absent bus are one spec');
    assert.equal(BUILTIN_TYPES.hash(vm), hashAt(vm, 2));
  });

  it('compose, version 1 (the spec as written) and 2 (per-service hashes, the current one)', () => {
    assert.equal(composeType.hashVersion, 2);
    assert.equal(hashAt(shop, 1), 'sha256:bff923d7b7f1e7902827064e927d8fb51eb07333fb51cdce441064c28b1de0d6');
    assert.equal(hashAt(shop, 1), hashCanonical('compose', pruneCanonical(shop.spec)));
    assert.equal(hashAt(shop, 2), 'sha256:226f0add6968d4270c142e2ee0616fa54b8d4f2d657cf5c15a32f4e31d86bc72');
    assert.deepEqual(BUILTIN_TYPES.canonical(shop), { project: 'shop', services: { api: 'sha256:f6ca67a1257d2d43d8ac365b9ebf25a8304e37d1837de729792c78ceb4b12688' } });
  });

  it('a version this agent does not know has no hash', () => {
    assert.equal(hashAt(vm, 3), undefined);
    assert.equal(hashAt(web, 0), undefined);
  });

  it('engine objects carry the version next to the hash; no label means version 1', () => {
    assert.equal(ownLabels(web, { nodeId: 'n', specHash: 'h' })[LABELS.hashVersion], '1');
    const def = domainDefinition({ workload: vm, nodeId: 'n', name: 'persys-vm1', specHash: 'h', domainType: 'qemu', disks: [], consoleLog: '/x.log' });
    assert.equal(def.metadata.labels[LABELS.hashVersion], '2');
    assert.equal(hashVersionOf(undefined), 1);
    assert.equal(hashVersionOf('2'), 2);
    assert.equal(hashVersionOf('junk'), 1);
  });
});

function doc(workloads: Workload[]): DesiredStateDocument {
  return { apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads };
}
/** An object as the agent before hash versions made it: spec-hash label of version 1, no hash-version label. */
function oldObject(w: Workload, runtime: string): ObservedWorkload {
  const o: ObservedWorkload = { workloadId: w.id, type: w.type, runtime, runtimeId: `rt-${w.id}`, name: `persys-${w.id}`, revision: w.revision, specHash: hashAt(w, 1), state: 'running' };
  return o;
}
function record(w: Workload, specHash: string | undefined): WorkloadRecord {
  return {
    id: w.id,
    type: w.type,
    revision: w.revision,
    specHash,
    desiredState: 'running',
    phase: 'Running',
    actualState: 'running',
    message: '',
    runtimeId: `rt-${w.id}`,
    error: null,
    retry: { attempts: 0, nextRetryAt: null, gaveUp: false, resetKey: retryResetKey(w, BUILTIN_TYPES.hash(w)) },
    failures: [],
    updatedAt: NOW.toISOString(),
    phaseSince: NOW.toISOString(),
  };
}

describe('hash versions: objects of the previous version after an upgrade', () => {
  const up = { container: true, vm: true, compose: true };

  it('nothing is recreated: VMs and containers made by the agent before hash versions are adopted', () => {
    const ws = [vm, web];
    const p = plan({ desired: doc(ws), records: {}, observed: ws.map((w) => oldObject(w, w.type === 'vm' ? 'libvirt' : 'docker')), runtimeUp: up, now: NOW });
    assert.deepEqual(p.steps.map((s) => `${s.kind} ${s.workloadId}`), ['adopt vm1', 'adopt web']);
  });

  it('with the records of the old agent: noop, and a VM spelled out with bus: virtio is still not recreated', () => {
    // The old agent hashed vmSpelledOut under version 1 and labelled the domain so; the new one folds it.
    const ws = [vmSpelledOut];
    const records = { vm1: record(vmSpelledOut, hashAt(vmSpelledOut, 1)) };
    const p = plan({ desired: doc(ws), records, observed: [oldObject(vmSpelledOut, 'libvirt')], runtimeUp: up, now: NOW });
    assert.deepEqual(p.steps.map((s) => `${s.kind} ${s.workloadId}`), ['noop vm1']);
  });

  it('a real change is still a change under the old rules: recreate, labelled with the new version', () => {
    const changed: VmWorkload = { ...vm, spec: { ...vm.spec, vcpus: 4 } };
    const p = plan({ desired: doc([changed]), records: {}, observed: [oldObject(vm, 'libvirt')], runtimeUp: up, now: NOW });
    const s = p.steps[0];
    assert.equal(s?.kind, 'recreate');
    assert.equal(s?.kind === 'recreate' ? s.hashVersion : 0, 2);
  });

  it('an object of a version this agent does not know (a newer agent) is judged by revision only', () => {
    const o = { ...oldObject(vm, 'libvirt'), specHash: 'sha256:from-a-newer-agent', hashVersion: 9 };
    assert.equal(plan({ desired: doc([vm]), records: {}, observed: [o], runtimeUp: up, now: NOW }).steps[0]?.kind, 'adopt');
    const bumped = { ...vm, revision: '2' };
    assert.equal(plan({ desired: doc([bumped]), records: {}, observed: [o], runtimeUp: up, now: NOW }).steps[0]?.kind, 'recreate');
  });
});
