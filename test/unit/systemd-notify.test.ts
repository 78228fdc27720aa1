import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { loadConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/log.js';
import { statusField, SystemdNotifier, underSystemdNotify, watchdogPingIntervalMs } from '../../src/systemd/notify.js';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

describe('sd_notify: pure parts', () => {
  it('the watchdog interval is half of WATCHDOG_USEC, only for our pid', () => {
    assert.equal(watchdogPingIntervalMs({ WATCHDOG_USEC: '60000000' }, 42), 30_000);
    assert.equal(watchdogPingIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '42' }, 42), 30_000);
    assert.equal(watchdogPingIntervalMs({ WATCHDOG_USEC: '60000000', WATCHDOG_PID: '7' }, 42), null);
    assert.equal(watchdogPingIntervalMs({ WATCHDOG_USEC: '1000' }, 42), 1, 'never 0 ms');
    for (const bad of [undefined, '', '0', '-5', 'abc', '1e9', '99999999999999999999']) {
      assert.equal(watchdogPingIntervalMs({ WATCHDOG_USEC: bad }, 42), null, String(bad));
    }
  });

  it('NOTIFY_SOCKET decides whether we run under Type=notify; STATUS is one line', () => {
    assert.equal(underSystemdNotify({ NOTIFY_SOCKET: '/run/systemd/notify' }), true);
    assert.equal(underSystemdNotify({ NOTIFY_SOCKET: '' }), false);
    assert.equal(underSystemdNotify({}), false);
    assert.equal(statusField('a\nb\r\nc'), 'STATUS=a b c');
    assert.equal(statusField('x'.repeat(500)).length, 'STATUS='.length + 200);
  });
});

describe('SystemdNotifier', () => {
  const make = (env: Record<string, string>) => {
    const sent: string[][] = [];
    const n = new SystemdNotifier({ env, logger: silentLogger(), pid: 42, send: async (f) => void sent.push([...f]) });
    return { n, sent };
  };

  it('does nothing outside systemd', async () => {
    const { n, sent } = make({ WATCHDOG_USEC: '20000' });
    assert.equal(n.active, false);
    assert.equal(n.watchdogIntervalMs, null);
    await n.ready('x');
    const ac = new AbortController();
    n.startWatchdog(ac.signal);
    await sleep(30);
    ac.abort();
    assert.deepEqual(sent, []);
  });

  it('sends READY=1 once, then only changed status texts, and STOPPING=1 at the end', async () => {
    const { n, sent } = make({ NOTIFY_SOCKET: '/run/systemd/notify' });
    await n.ready('reconciled generation 1: 0 workload(s)');
    await n.ready('reconciled generation 1: 0 workload(s)');
    await n.ready('reconciled generation 2: 1 workload(s)');
    await n.stopping();
    assert.deepEqual(sent, [
      ['READY=1', 'STATUS=reconciled generation 1: 0 workload(s)'],
      ['STATUS=reconciled generation 2: 1 workload(s)'],
      ['STOPPING=1', 'STATUS=shutting down'],
    ]);
  });

  it('readyAtLatest sends READY=1 when the first cycle takes too long, and not again after it', async () => {
    const { n, sent } = make({ NOTIFY_SOCKET: '/run/systemd/notify' });
    n.readyAtLatest(10, 'started; the first reconcile is still running');
    await sleep(40);
    await n.ready('reconciled generation 1: 0 workload(s)');
    assert.deepEqual(sent, [['READY=1', 'STATUS=started; the first reconcile is still running'], ['STATUS=reconciled generation 1: 0 workload(s)']]);
  });

  it('pings WATCHDOG=1 on the interval until the signal aborts', async () => {
    const { n, sent } = make({ NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '20000', WATCHDOG_PID: '42' });
    assert.equal(n.watchdogIntervalMs, 10);
    const ac = new AbortController();
    n.startWatchdog(ac.signal);
    await sleep(80);
    ac.abort();
    const count = sent.length;
    assert.ok(count >= 2, `only ${count} pings in 80 ms at 10 ms`);
    assert.ok(sent.every((f) => f.length === 1 && f[0] === 'WATCHDOG=1'));
    await sleep(40);
    assert.equal(sent.length, count, 'pings after abort');
  });

  it('a failing send is logged, never thrown', async () => {
    const n = new SystemdNotifier({ env: { NOTIFY_SOCKET: '/x' }, logger: silentLogger(), send: () => Promise.reject(new Error('boom')) });
    await n.ready('x');
    assert.deepEqual(n.sent, []);
  });
});

describe('stateDir under systemd', () => {
  const load = (env: NodeJS.ProcessEnv, flags: Record<string, string> = {}) => loadConfig({ env, flags, cwd: '/work/cwd' });

  it('$STATE_DIRECTORY is the default (its first entry)', () => {
    assert.equal(load({ STATE_DIRECTORY: '/var/lib/persys-agent' }).stateDir, '/var/lib/persys-agent');
    assert.equal(load({ STATE_DIRECTORY: '/var/lib/persys-agent:/var/lib/other' }).stateDir, '/var/lib/persys-agent');
    assert.equal(load({ STATE_DIRECTORY: '' }).stateDir, '/work/cwd/.persys-agent');
    assert.equal(load({}).stateDir, '/work/cwd/.persys-agent');
  });

  it('PERSYS_STATE_DIR and --stateDir still win over it', () => {
    assert.equal(load({ STATE_DIRECTORY: '/var/lib/persys-agent', PERSYS_STATE_DIR: '/srv/state' }).stateDir, '/srv/state');
    assert.equal(load({ STATE_DIRECTORY: '/var/lib/persys-agent' }, { stateDir: '/opt/s' }).stateDir, '/opt/s');
  });
});
