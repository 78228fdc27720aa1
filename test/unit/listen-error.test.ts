/**
 * A listener that cannot be opened (metrics port in use, a socket path that is too long or not a
 * socket) is one line naming the address and the config key, so `persys-agent run` can exit 2
 * with it instead of printing a raw EADDRINUSE stack (issue 16, family 6).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';

import { startApiServer } from '../../src/api/server.js';
import { isUsageProblem } from '../../src/cli/run.js';
import { silentLogger } from '../../src/log.js';
import { parseListen, startMetricsServer } from '../../src/metrics/server.js';
import { listenError, ListenError, UNIX_SOCKET_PATH_MAX } from '../../src/util/listen-error.js';

const handlers = { status: () => ({}), retry: () => Promise.resolve(undefined), sync: () => Promise.resolve({}) };

describe('listen errors', () => {
  let holder: Server;
  let port: number;
  let dir: string;
  before(async () => {
    holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    port = (holder.address() as { port: number }).port;
    dir = await mkdtemp(join(tmpdir(), 'persys-listen-'));
  });
  after(async () => {
    await new Promise<void>((r) => holder.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('a metrics port in use: one line with the address, the key and what to do; a usage problem for run', async () => {
    const err = await startMetricsServer(`127.0.0.1:${port}`, { registry: new Registry(), alive: () => true, ready: () => Promise.resolve({}), logger: silentLogger() }).then(
      () => assert.fail('listened on a port in use'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ListenError);
    assert.equal(err.code, 'EADDRINUSE');
    assert.equal(err.key, 'metrics.listen');
    assert.equal(
      err.message,
      `cannot listen on 127.0.0.1:${port} (metrics.listen): the address is already in use (EADDRINUSE): another process listens there; stop what holds it, or set metrics.listen (PERSYS_METRICS_LISTEN) to a free host:port or "off"`,
    );
    assert.ok(!err.message.includes('\n'));
    assert.ok(isUsageProblem(err));
    assert.ok(!isUsageProblem(new Error('a real crash')));
  });

  it('a port above 65535 is refused before listen() throws a RangeError', () => {
    assert.throws(() => parseListen('127.0.0.1:70000'), (e: unknown) => e instanceof ListenError && /port 70000 is above 65535/.test(e.message) && e.message.includes('(metrics.listen)'));
  });

  it('errno codes read as reasons; an unknown error keeps its own message', () => {
    const e = (code: string) => Object.assign(new Error(`listen ${code}`), { code });
    assert.match(listenError('metrics.listen', '10.255.255.1:9464', e('EADDRNOTAVAIL'), 'fix').message, /^cannot listen on 10\.255\.255\.1:9464 \(metrics\.listen\): no interface of this host has that address \(EADDRNOTAVAIL\); fix$/);
    assert.match(listenError('metrics.listen', 'nosuch.invalid:1', e('ENOTFOUND'), 'fix').message, /the host name does not resolve \(ENOTFOUND\)/);
    assert.equal(listenError('k', 'a', new Error('odd'), 'fix').message, 'cannot listen on a (k): odd; fix');
    assert.equal(listenError('k', 'a', new Error('odd'), 'fix').code, undefined);
  });

  it('a local API socket path too long for sun_path is refused (node would silently truncate it)', async () => {
    const long = join(dir, 'd'.repeat(UNIX_SOCKET_PATH_MAX), 'agent.sock');
    const err = await startApiServer(long, handlers, silentLogger()).then(
      () => assert.fail('listened'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ListenError);
    assert.equal(err.key, 'stateDir');
    assert.match(err.message, /the path is \d+ bytes, a unix socket path may have at most 107; use a shorter stateDir$/);
  });

  it('a file that is not a socket where the socket goes is refused, named, and left alone', async () => {
    const path = join(dir, 'agent.sock');
    await writeFile(path, 'not a socket');
    const err = await startApiServer(path, handlers, silentLogger()).then(
      () => assert.fail('listened'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ListenError);
    assert.match(err.message, /^cannot listen on .*agent\.sock \(the local API socket in stateDir\): it exists and is not a socket/);
  });
});
