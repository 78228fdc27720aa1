import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors/index.js';
import { specHash } from '../../src/reconcile/canonical.js';
import type { Workload } from '../../src/spec/desired-state.js';
import { validateDesiredState } from '../../src/spec/validate.js';

const doc = (extra: Record<string, unknown>, workloads: unknown[] = []) => ({ apiVersion: 'persys.dev/v1', kind: 'DesiredState', nodeId: 'n1', generation: 1, workloads, ...extra });
const issues = (raw: unknown): string[] => {
  const r = validateDesiredState(raw);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};
const web = (update: unknown, volumes: unknown[] = []) => ({ id: 'web', type: 'container', update, spec: { image: 'nginx:1.27', volumes } });

describe('update spec fields', () => {
  it('accepts windows, update settings and a lock file inside a mount', () => {
    const raw = doc(
      { maintenance: { windows: [{ cron: '0 2 * * *', durationMinutes: 120, timezone: 'Europe/Berlin' }, { cron: '30 1 * * 6', durationMinutes: 30 }] } },
      [web({ window: 'maintenance', forceToken: 't1', lockTimeoutSeconds: 600, onLockTimeout: 'fail', lockFile: '/tmp/balena/updates.lock' }, [{ type: 'bind', source: '/srv/lock', target: '/tmp/balena' }])],
    );
    assert.deepEqual(issues(raw), []);
  });

  it('names a bad cron and a bad time zone with their path', () => {
    const got = issues(doc({ maintenance: { windows: [{ cron: '0 25 * * *', durationMinutes: 60 }, { cron: '0 2 * * *', durationMinutes: 60, timezone: 'Mars/Olympus' }] } }));
    assert.equal(got.length, 2, got.join('\n'));
    assert.match(got[0] ?? '', /^maintenance\.windows\[0\]\.cron: cron "0 25 \* \* \*" is not a valid cron pattern/);
    assert.match(got[1] ?? '', /^maintenance\.windows\[1\]\.timezone: .*not a time zone/);
  });

  it('refuses bad durations, windows values and timeout actions', () => {
    const got = issues(doc({ maintenance: { windows: [{ cron: '0 2 * * *', durationMinutes: 0 }] } }, [web({ window: 'never', onLockTimeout: 'maybe', lockTimeoutSeconds: -1 })]));
    assert.ok(got.some((l) => l.startsWith('maintenance.windows[0].durationMinutes: ')), got.join('\n'));
    assert.ok(got.some((l) => l.startsWith('workloads[0].update.window: ')), got.join('\n'));
    assert.ok(got.some((l) => l.startsWith('workloads[0].update.onLockTimeout: ')), got.join('\n'));
    assert.ok(got.some((l) => l.startsWith('workloads[0].update.lockTimeoutSeconds: ')), got.join('\n'));
  });

  it('refuses a lock file outside every mount, in a tmpfs, or on a non-container', () => {
    assert.match(issues(doc({}, [web({ lockFile: '/var/lock/x' }, [{ type: 'volume', source: 'data', target: '/data' }])]))[0] ?? '', /^workloads\[0\]\.update\.lockFile: .*not inside a bind or volume mount/);
    assert.match(issues(doc({}, [web({ lockFile: '/t/x' }, [{ type: 'tmpfs', target: '/t' }])]))[0] ?? '', /^workloads\[0\]\.update\.lockFile: /);
    // The mount's target itself is a directory, not a lock file under it.
    assert.match(issues(doc({}, [web({ lockFile: '/data' }, [{ type: 'volume', source: 'data', target: '/data' }])]))[0] ?? '', /^workloads\[0\]\.update\.lockFile: /);
    assert.deepEqual(issues(doc({}, [web({ lockFile: '/data/updates.lock' }, [{ type: 'volume', source: 'data', target: '/data' }])])), []);
    const vm = { id: 'v', type: 'vm', update: { lockFile: '/x/y' }, spec: { cpus: 1, memoryMiB: 256, image: { path: '/var/lib/libvirt/images/a.qcow2' } } };
    assert.ok(issues(doc({}, [vm])).some((l) => /^workloads\[0\]\.update\.lockFile: .*container workloads only/.test(l)), issues(doc({}, [vm])).join('\n'));
  });

  it('update settings are not part of the spec hash: changing them never restarts a workload', () => {
    const a = { id: 'w', type: 'container', spec: { image: 'nginx:1.27' } } as Workload;
    const b = { ...a, update: { window: 'maintenance', forceToken: 'x', lockTimeoutSeconds: 5, onLockTimeout: 'fail' } } as Workload;
    assert.equal(specHash(a), specHash(b));
  });
});

describe('update config keys', () => {
  const load = (env: NodeJS.ProcessEnv, flags = {}) => loadConfig({ env, flags, cwd: '/cwd' });

  it('defaults: no windows, no limit', () => {
    const c = load({});
    assert.deepEqual(c.maintenance.windows, []);
    assert.equal(c.update.maxParallel, 0);
  });

  it('maintenance.windows is a JSON array in the environment and in a flag', () => {
    const w = [{ cron: '0 3 * * *', durationMinutes: 60, timezone: 'America/New_York' }];
    assert.deepEqual(load({ PERSYS_MAINTENANCE_WINDOWS: JSON.stringify(w), PERSYS_UPDATE_MAX_PARALLEL: '2' }).maintenance.windows, w);
    assert.equal(load({ PERSYS_UPDATE_MAX_PARALLEL: '2' }).update.maxParallel, 2);
    assert.deepEqual(load({}, { 'maintenance.windows': JSON.stringify(w) }).maintenance.windows, w);
  });

  it('a bad cron or time zone in the config is refused with its path and origin', () => {
    try {
      load({ PERSYS_MAINTENANCE_WINDOWS: JSON.stringify([{ cron: 'every night', durationMinutes: 60 }, { cron: '0 2 * * *', durationMinutes: 60, timezone: 'Nowhere/Land' }]) });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      const text = err.issues.join('\n');
      assert.match(text, /maintenance\.windows\[0\]\.cron: cron "every night" is not a valid cron pattern/);
      assert.match(text, /maintenance\.windows\[1\]\.timezone: /);
      assert.match(text, /PERSYS_MAINTENANCE_WINDOWS/);
    }
    assert.throws(() => load({ PERSYS_MAINTENANCE_WINDOWS: '[{' }), /maintenance\.windows: is not valid JSON/);
  });
});
