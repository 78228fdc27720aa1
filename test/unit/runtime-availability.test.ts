import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import pino from 'pino';

import { RuntimeAvailabilityLog } from '../../src/reconcile/runtime-availability.js';
import type { RuntimeHealth, RuntimeName } from '../../src/runtimes/runtime.js';

function capture() {
  const lines: { level: number; msg: string; reason?: string }[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
  return { logger, lines };
}

const runtimes = [
  { name: 'docker' as const, types: [{ type: 'container' }, { type: 'compose' }] },
  { name: 'libvirt' as const, types: [{ type: 'vm' }] },
];
const h = (docker: RuntimeHealth, libvirt: RuntimeHealth = { up: true, reason: '' }) =>
  new Map<RuntimeName, RuntimeHealth>([
    ['docker', docker],
    ['libvirt', libvirt],
  ]);
const down = (reason: string): RuntimeHealth => ({ up: false, reason });
const up: RuntimeHealth = { up: true, reason: '', version: '20.10' };

describe('RuntimeAvailabilityLog', () => {
  it('a needed runtime that is down: one WARN with the reason, however many cycles; one INFO when it is back', () => {
    const { logger, lines } = capture();
    const log = new RuntimeAvailabilityLog(logger);
    const desired = [{ id: 'web', type: 'container' as const }];
    for (let i = 0; i < 5; i++) log.note(h(down('connect ENOENT /run/nope.sock')), runtimes, desired);
    assert.deepEqual(lines.map((l) => [l.level, l.msg]), [[40, 'docker is down: connect ENOENT /run/nope.sock; 1 desired workload(s) need it']]);
    log.note(h(up), runtimes, desired);
    log.note(h(up), runtimes, desired);
    assert.deepEqual(lines.slice(1).map((l) => [l.level, l.msg]), [[30, 'docker is up again']]);
    // A second outage is reported again.
    log.note(h(down('connection refused')), runtimes, desired);
    assert.equal(lines.length, 3);
    assert.equal(lines[2]!.level, 40);
  });

  it('a runtime no desired workload needs is quiet; it is reported once a workload needs it', () => {
    const { logger, lines } = capture();
    const log = new RuntimeAvailabilityLog(logger);
    log.note(h(up, down('libvirtd not running')), runtimes, [{ id: 'web', type: 'container' }]);
    assert.equal(lines.length, 0);
    log.note(h(up, down('libvirtd not running')), runtimes, [{ id: 'vm1', type: 'vm' }]);
    assert.deepEqual(lines.map((l) => l.msg), ['libvirt is down: libvirtd not running; 1 desired workload(s) need it']);
  });
});
