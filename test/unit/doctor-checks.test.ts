import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { checkClock, checkDisk, checkSourceAnswer, checkSourceError, checkStateDir, fail, formatReport, ok, skip, summarize } from '../../src/doctor/checks.js';

const dir = (mode: number, uid = 0) => ({ path: '/var/lib/persys-agent', stat: { isDirectory: true, mode: 0o40000 | mode, uid }, uid: 0, writable: true });

describe('doctor: state dir', () => {
  it('0700 and 0711 (libvirt traversal) owned by us are fine; an absent dir is made at start', () => {
    assert.equal(checkStateDir(dir(0o700)).status, 'ok');
    assert.equal(checkStateDir(dir(0o711)).status, 'ok');
    assert.equal(checkStateDir({ ...dir(0o700), stat: null }).status, 'ok');
  });
  it('readable by others, another owner, not a directory or read-only fail with the fix', () => {
    const open = checkStateDir(dir(0o755));
    assert.equal(open.status, 'fail');
    assert.match(open.detail, /mode 0755/);
    assert.equal(open.fix, 'chmod 700 /var/lib/persys-agent');
    const other = checkStateDir(dir(0o700, 1000));
    assert.equal(other.fix, 'chown 0 /var/lib/persys-agent');
    assert.equal(checkStateDir({ ...dir(0o700), stat: { isDirectory: false, mode: 0o100600, uid: 0 } }).status, 'fail');
    assert.match(checkStateDir({ ...dir(0o700), writable: false }).fix ?? '', /read-only/);
  });
});

describe('doctor: disk, clock, source', () => {
  const GiB = 1024 ** 3;
  it('disk: fails below 512 MiB or 5% free', () => {
    assert.equal(checkDisk({ path: '/', freeBytes: 10 * GiB, totalBytes: 100 * GiB }).status, 'ok');
    assert.equal(checkDisk({ path: '/', freeBytes: 0.4 * GiB, totalBytes: 1 * GiB }).status, 'fail');
    const low = checkDisk({ path: '/', freeBytes: 4 * GiB, totalBytes: 100 * GiB });
    assert.equal(low.status, 'fail');
    assert.match(low.detail, /4\.0 GiB free of 100\.0 GiB \(4\.0%\) at \//);
  });

  it('clock: skew from the Date header, 60 s allowed, rounding to whole seconds', () => {
    const now = Date.parse('2026-12-01T10:00:00.400Z');
    assert.equal(checkClock('Tue, 01 Dec 2026 10:00:00 GMT', now, 'fleet').status, 'ok');
    const ahead = checkClock('Tue, 01 Dec 2026 09:58:00 GMT', now, 'fleet');
    assert.equal(ahead.status, 'fail');
    assert.equal(ahead.detail, '120 s ahead of fleet');
    assert.match(ahead.fix ?? '', /timedatectl set-ntp true/);
    assert.equal(checkClock('Tue, 01 Dec 2026 10:00:59 GMT', now, 'fleet').detail, '59 s behind fleet');
    assert.equal(checkClock(undefined, now, 'fleet').status, 'skip');
    assert.equal(checkClock('yesterday-ish', now, 'fleet').status, 'skip');
  });

  it('source answers and errors say what to fix', () => {
    assert.equal(checkSourceAnswer(200, 'u', 'n', false).status, 'ok');
    assert.equal(checkSourceAnswer(304, 'u', 'n', false).status, 'ok');
    assert.match(checkSourceAnswer(401, 'u', 'n', true).fix ?? '', /source\.tokenFile holds/);
    assert.match(checkSourceAnswer(403, 'u', 'n', false).fix ?? '', /set source\.tokenFile/);
    assert.match(checkSourceAnswer(404, 'u', 'edge-7', false).fix ?? '', /publish a desired state for node edge-7/);
    assert.equal(checkSourceAnswer(503, 'u', 'n', false).status, 'fail');
    assert.match(checkSourceError('self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN)', 'u').fix ?? '', /source\.caFile/);
    assert.match(checkSourceError('getaddrinfo ENOTFOUND fleet.invalid', 'u').fix ?? '', /DNS/);
    assert.match(checkSourceError('connect ECONNREFUSED 127.0.0.1:1', 'u').fix ?? '', /server runs/);
  });
});

describe('doctor: report', () => {
  it('ok unless a check failed (skips do not fail); text has one line per check and the fix under a failure', () => {
    const r = summarize([ok('config', 'fine'), skip('libvirt', 'disabled'), fail('docker', '/var/run/docker.sock: ENOENT', 'start dockerd')]);
    assert.equal(r.ok, false);
    assert.equal(summarize([ok('a', 'b'), skip('c', 'd')]).ok, true);
    assert.equal(
      formatReport(r),
      ['ok    config   fine', 'skip  libvirt  disabled', 'fail  docker   /var/run/docker.sock: ENOENT', '               fix: start dockerd', '1 check(s) failed', ''].join('\n'),
    );
  });
});
