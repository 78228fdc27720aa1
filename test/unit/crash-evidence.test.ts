import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { exitError, isCrashLooping, newRecord, phaseFromObserved, withObserved } from '../../src/reconcile/records.js';
import { containerType } from '../../src/runtimes/docker/type.js';
import { parseExitCode } from '../../src/runtimes/docker/docker-runtime.js';
import type { ObservedWorkload } from '../../src/runtimes/runtime.js';
import type { Workload } from '../../src/spec/desired-state.js';

const NOW = new Date('2025-06-01T12:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const o = (x: Partial<ObservedWorkload>): ObservedWorkload => ({
  workloadId: 'w',
  type: 'container',
  runtime: 'docker',
  runtimeId: 'c1',
  name: 'p-w',
  revision: 'r1',
  specHash: 'h',
  state: 'running',
  ...x,
});

describe('crash evidence', () => {
  it('restarting is CrashLoop; running after a restart is CrashLoop for 10 s, then Running', () => {
    assert.equal(phaseFromObserved(o({ state: 'restarting', exitCode: 3, restartCount: 4 }), 'running', NOW).phase, 'CrashLoop');
    assert.equal(phaseFromObserved(o({ restartCount: 4, startedAt: ago(2_000) }), 'running', NOW).phase, 'CrashLoop');
    assert.equal(phaseFromObserved(o({ restartCount: 4, startedAt: ago(11_000) }), 'running', NOW).phase, 'Running');
    assert.equal(phaseFromObserved(o({ restartCount: 0, startedAt: ago(1_000) }), 'running', NOW).phase, 'Running');
    assert.equal(phaseFromObserved(o({}), 'running', NOW).phase, 'Running', 'without inspect facts: Running');
    assert.ok(isCrashLooping(o({ state: 'restarting' }), NOW));
  });

  it('exited: Completed with 0, Failed otherwise (OOMKilled named); Stopped when desired stopped', () => {
    assert.equal(phaseFromObserved(o({ state: 'exited', exitCode: 0 }), 'running', NOW).phase, 'Completed');
    const oom = phaseFromObserved(o({ state: 'exited', exitCode: 137, oomKilled: true }), 'running', NOW);
    assert.deepEqual([oom.phase, oom.message], ['Failed', 'exited with code 137 (OOMKilled)']);
    assert.equal(phaseFromObserved(o({ state: 'exited', exitCode: 137 }), 'stopped', NOW).phase, 'Stopped');
  });

  it('exitError: OUT_OF_MEMORY beats the exit code, CRASH_LOOP for a loop, CONTAINER_EXITED for a plain non-zero exit, none for 0', () => {
    assert.equal(exitError(o({ state: 'exited', exitCode: 137, oomKilled: true }), false)?.code, 'OUT_OF_MEMORY');
    const loop = exitError(o({ state: 'restarting', exitCode: 3, restartCount: 2 }), true);
    assert.equal(loop?.code, 'CRASH_LOOP');
    assert.equal(loop?.message, 'exited with code 3; restarted 2 times by the restart policy');
    assert.deepEqual(loop?.details, { exitCode: 3, restartCount: 2 });
    assert.equal(exitError(o({ state: 'exited', exitCode: 3 }), false)?.message, 'exited with code 3');
    assert.equal(exitError(o({ state: 'exited', exitCode: 0 }), false), null);
    assert.equal(exitError(o({ restartCount: 1 }), true, 5)?.message, 'exited with code 5; restarted 1 time by the restart policy', 'the last known code');
  });

  it('a crash-looping container seen running keeps the last exit code it was seen with', () => {
    const w = { id: 'w', type: 'container', spec: { image: 'x:1' } } as Workload;
    let r = withObserved(newRecord(w, NOW), o({ state: 'restarting', exitCode: 3, restartCount: 2 }), containerType);
    assert.equal(r.evidence?.exitCode, 3);
    r = withObserved(r, o({ state: 'running', exitCode: null, restartCount: 3 }), containerType);
    assert.equal(r.evidence?.exitCode, 3);
    assert.equal(r.evidence?.restartCount, 3);
    // A healthy restart with no restarts behind it clears it.
    r = withObserved(r, o({ state: 'running', exitCode: null, restartCount: 0, runtimeId: 'c2' }), containerType);
    assert.equal(r.evidence?.exitCode, null);
  });

  it('the list Status of a restarting container carries its exit code', () => {
    assert.equal(parseExitCode('Restarting (3) Less than a second ago'), 3);
    assert.equal(parseExitCode('Exited (137) 2 seconds ago'), 137);
  });
});
