import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { WorkloadError, type ErrorCode } from '../../src/errors/index.js';
import {
  cannotStartAgain,
  dockerErrorMessage,
  dockerStatusCode,
  translateDockerError,
  type DockerErrorContext,
} from '../../src/runtimes/docker/translate-error.js';

/** The shape docker-modem rejects with when the engine answered with an error status. */
function engineErr(statusCode: number, message: string, reason = 'server error'): Error {
  return Object.assign(new Error(`(HTTP code ${statusCode}) ${reason} - ${message} `), {
    reason,
    statusCode,
    json: { message },
  });
}

/** The shape Node gives for a socket that cannot be reached. */
function socketErr(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, errno: -2, syscall: 'connect', address: '/var/run/docker.sock' });
}

interface Case {
  name: string;
  err: unknown;
  context: DockerErrorContext;
  code: ErrorCode;
  message: string;
}

const cases: Case[] = [
  // --- images
  {
    name: 'create: No such image',
    err: engineErr(404, 'No such image: persys-test/nope:1', 'no such container'),
    context: 'create',
    code: 'IMAGE_NOT_FOUND',
    message: 'No such image: persys-test/nope:1',
  },
  {
    name: 'pull: manifest unknown',
    err: engineErr(404, 'manifest for nginx:9.9 not found: manifest unknown: manifest unknown'),
    context: 'pull',
    code: 'IMAGE_NOT_FOUND',
    message: 'manifest for nginx:9.9 not found: manifest unknown: manifest unknown',
  },
  {
    name: 'pull: Docker Hub "pull access denied" for a missing repository',
    err: engineErr(
      404,
      "pull access denied for persys-test/does-not-exist, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
    ),
    context: 'pull',
    code: 'IMAGE_NOT_FOUND',
    message:
      "pull access denied for persys-test/does-not-exist, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
  },
  {
    name: 'pull: registry name unknown',
    err: engineErr(500, 'name unknown: repository name not known to registry'),
    context: 'pull',
    code: 'IMAGE_NOT_FOUND',
    message: 'name unknown: repository name not known to registry',
  },
  {
    name: 'pull: unauthorized',
    err: engineErr(500, 'Head "https://ghcr.io/v2/acme/private/manifests/1": unauthorized'),
    context: 'pull',
    code: 'REGISTRY_AUTH_FAILED',
    message: 'Head "https://ghcr.io/v2/acme/private/manifests/1": unauthorized',
  },
  {
    name: 'pull: authentication required wins over "pull access denied"',
    err: engineErr(500, "pull access denied for reg.local/x, repository does not exist or may require 'docker login': unauthorized: authentication required"),
    context: 'pull',
    code: 'REGISTRY_AUTH_FAILED',
    message: "pull access denied for reg.local/x, repository does not exist or may require 'docker login': unauthorized: authentication required",
  },
  {
    name: 'pull: DNS failure (no registry reachable), as seen on the testbed',
    err: engineErr(500, 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host'),
    context: 'pull',
    code: 'IMAGE_PULL_FAILED',
    message: 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host',
  },
  {
    name: 'pull: registry refuses the connection (engine message, not our socket)',
    err: engineErr(500, 'Get "http://localhost:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused'),
    context: 'pull',
    code: 'IMAGE_PULL_FAILED',
    message: 'Get "http://localhost:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
  },
  {
    name: 'pull: registry timeout stays a pull failure',
    err: engineErr(500, 'Get "https://reg.local/v2/": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)'),
    context: 'pull',
    code: 'IMAGE_PULL_FAILED',
    message: 'Get "https://reg.local/v2/": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)',
  },
  {
    name: 'pull: rate limit',
    err: engineErr(500, 'toomanyrequests: You have reached your pull rate limit.'),
    context: 'pull',
    code: 'IMAGE_PULL_FAILED',
    message: 'toomanyrequests: You have reached your pull rate limit.',
  },
  {
    name: 'pull: an error line from the progress stream (no status code)',
    err: Object.assign(new Error('manifest unknown'), { json: { errorDetail: { message: 'manifest unknown' }, error: 'manifest unknown' } }),
    context: 'pull',
    code: 'IMAGE_NOT_FOUND',
    message: 'manifest unknown',
  },
  {
    name: 'pull: a streaming endpoint error (docker-modem leaves json null and decorates the message)',
    err: Object.assign(
      new Error(
        '(HTTP code 500) server error - Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host ',
      ),
      { reason: 'server error', statusCode: 500, json: null },
    ),
    context: 'pull',
    code: 'IMAGE_PULL_FAILED',
    message: 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host',
  },
  // --- ports
  {
    name: 'start: port taken by another container',
    err: engineErr(
      500,
      'driver failed programming external connectivity on endpoint t-web (c359e2d0a955): Bind for 127.0.0.1:18999 failed: port is already allocated',
    ),
    context: 'start',
    code: 'PORT_CONFLICT',
    message: 'driver failed programming external connectivity on endpoint t-web (c359e2d0a955): Bind for 127.0.0.1:18999 failed: port is already allocated',
  },
  {
    name: 'start: port taken by a host process',
    err: engineErr(
      500,
      'driver failed programming external connectivity on endpoint t-web (abc): Error starting userland proxy: listen tcp4 127.0.0.1:8080: bind: address already in use',
    ),
    context: 'start',
    code: 'PORT_CONFLICT',
    message:
      'driver failed programming external connectivity on endpoint t-web (abc): Error starting userland proxy: listen tcp4 127.0.0.1:8080: bind: address already in use',
  },
  // --- mounts
  {
    name: 'create: bind source missing',
    err: engineErr(400, 'invalid mount config for type "bind": bind source path does not exist: /nonexistent/dir', 'bad parameter'),
    context: 'create',
    code: 'MOUNT_FAILED',
    message: 'invalid mount config for type "bind": bind source path does not exist: /nonexistent/dir',
  },
  {
    name: 'start: runc cannot mount (no such file or directory)',
    err: engineErr(
      500,
      'failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/srv/x" to rootfs at "/data": stat /srv/x: no such file or directory: unknown',
    ),
    context: 'start',
    code: 'MOUNT_FAILED',
    message:
      'failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/srv/x" to rootfs at "/data": stat /srv/x: no such file or directory: unknown',
  },
  {
    name: 'start: mount source path cannot be created',
    err: engineErr(500, "error while creating mount source path '/ro/x': mkdir /ro: read-only file system"),
    context: 'start',
    code: 'MOUNT_FAILED',
    message: "error while creating mount source path '/ro/x': mkdir /ro: read-only file system",
  },
  // --- disk
  {
    name: 'pull: no space left on device',
    err: engineErr(500, 'failed to register layer: write /var/lib/docker/overlay2/x/diff/usr/bin/app: no space left on device'),
    context: 'pull',
    code: 'NO_SPACE',
    message: 'failed to register layer: write /var/lib/docker/overlay2/x/diff/usr/bin/app: no space left on device',
  },
  {
    name: 'create: no space left on device',
    err: engineErr(500, 'mkdir /var/lib/docker/overlay2/abc-init: no space left on device'),
    context: 'create',
    code: 'NO_SPACE',
    message: 'mkdir /var/lib/docker/overlay2/abc-init: no space left on device',
  },
  // --- the engine is not there
  {
    name: 'socket missing (ENOENT)',
    err: socketErr('ENOENT', 'connect ENOENT /var/run/docker.sock'),
    context: 'list',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'connect ENOENT /var/run/docker.sock',
  },
  {
    name: 'daemon down (ECONNREFUSED)',
    err: socketErr('ECONNREFUSED', 'connect ECONNREFUSED /var/run/docker.sock'),
    context: 'inspect',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'connect ECONNREFUSED /var/run/docker.sock',
  },
  {
    name: 'no permission on the socket (EACCES)',
    err: socketErr('EACCES', 'connect EACCES /var/run/docker.sock'),
    context: 'create',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'connect EACCES /var/run/docker.sock',
  },
  {
    name: 'daemon went away mid-request',
    err: socketErr('ECONNRESET', 'socket hang up'),
    context: 'stop',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'socket hang up',
  },
  // --- a dockerd shutting down (20.10, stopped during starts): it answers, but it is going away
  {
    name: 'start while dockerd shuts down: libnetwork store closed',
    err: engineErr(500, 'failed to update store for object type *libnetwork.endpoint: open : no such file or directory'),
    context: 'start',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'failed to update store for object type *libnetwork.endpoint: open : no such file or directory',
  },
  {
    name: 'start while dockerd shuts down: sandbox state store closed',
    err: engineErr(500, 'failed to update the store state of sandbox: failed to update store for object type *libnetwork.sbState: open : no such file or directory'),
    context: 'start',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'failed to update the store state of sandbox: failed to update store for object type *libnetwork.sbState: open : no such file or directory',
  },
  {
    name: 'start while dockerd shuts down: containerd connection closing',
    err: engineErr(500, 'transport is closing: unavailable'),
    context: 'start',
    code: 'RUNTIME_UNAVAILABLE',
    message: 'transport is closing: unavailable',
  },
  // --- time
  {
    name: 'aborted request',
    err: Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' }),
    context: 'pull',
    code: 'TIMEOUT',
    message: 'The operation was aborted',
  },
  {
    name: 'AbortSignal.timeout reason',
    err: new DOMException('The operation was aborted due to timeout', 'TimeoutError'),
    context: 'create',
    code: 'TIMEOUT',
    message: 'The operation was aborted due to timeout',
  },
  {
    name: 'engine deadline outside a pull',
    err: engineErr(500, 'context deadline exceeded'),
    context: 'stop',
    code: 'TIMEOUT',
    message: 'context deadline exceeded',
  },
  // --- spec problems the engine finds
  {
    name: 'start: command not in the image',
    err: engineErr(
      400,
      'failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/nope": stat /nope: no such file or directory: unknown',
      'bad parameter',
    ),
    context: 'start',
    code: 'INVALID_SPEC',
    message:
      'failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "/nope": stat /nope: no such file or directory: unknown',
  },
  {
    name: 'start: executable file not found in $PATH',
    err: engineErr(400, 'OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "nope": executable file not found in $PATH: unknown'),
    context: 'start',
    code: 'INVALID_SPEC',
    message: 'OCI runtime create failed: container_linux.go:380: starting container process caused: exec: "nope": executable file not found in $PATH: unknown',
  },
  {
    name: 'create: more CPUs than the host has',
    err: engineErr(400, 'Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available', 'bad parameter'),
    context: 'create',
    code: 'INSUFFICIENT_RESOURCES',
    message: 'Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available',
  },
  {
    name: 'create: other bad parameter',
    err: engineErr(400, 'Minimum memory limit allowed is 6MB', 'bad parameter'),
    context: 'create',
    code: 'INVALID_SPEC',
    message: 'Minimum memory limit allowed is 6MB',
  },
  // --- everything else
  {
    name: 'create: name conflict',
    err: engineErr(409, 'Conflict. The container name "/t-web" is already in use by container "abc". You have to remove (or rename) that container to be able to reuse that name.', 'conflict'),
    context: 'create',
    code: 'INTERNAL',
    message: 'Conflict. The container name "/t-web" is already in use by container "abc". You have to remove (or rename) that container to be able to reuse that name.',
  },
  {
    name: 'start: No such container',
    err: engineErr(404, 'No such container: abc', 'no such container'),
    context: 'start',
    code: 'INTERNAL',
    message: 'No such container: abc',
  },
  {
    name: 'a plain string',
    err: 'something odd',
    context: 'list',
    code: 'INTERNAL',
    message: 'something odd',
  },
];

describe('translateDockerError', () => {
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, () => {
      const e = translateDockerError(c.err, c.context);
      assert.ok(e instanceof WorkloadError);
      assert.equal(e.code, c.code);
      // The engine's exact words, not dockerode's "(HTTP code ...) ..." decoration.
      assert.equal(e.message, c.message);
      assert.equal(e.details?.operation, c.context);
      assert.equal(e.cause, c.err);
    });
  }

  it('records the HTTP status in details when the engine answered', () => {
    const e = translateDockerError(engineErr(404, 'No such image: x:1'), 'create');
    assert.equal(e.details?.statusCode, 404);
    assert.equal(translateDockerError(socketErr('ENOENT', 'connect ENOENT /x'), 'list').details?.statusCode, undefined);
  });

  it('takes the transient flag and user message from the code table', () => {
    assert.equal(translateDockerError(engineErr(500, 'x: port is already allocated'), 'start').transient, true);
    assert.equal(translateDockerError(engineErr(404, 'No such image: x:1'), 'create').transient, false);
    assert.match(translateDockerError(engineErr(404, 'No such image: x:1'), 'create').userMessage, /image/i);
  });

  it('passes a WorkloadError through untouched', () => {
    const original = new WorkloadError('PORT_CONFLICT', 'already classified');
    assert.equal(translateDockerError(original, 'start'), original);
  });

  it('does not mistake an engine ENOENT-like message for a missing socket', () => {
    // The engine answered (status 500): this is not RUNTIME_UNAVAILABLE even though the text says "no such file".
    const e = translateDockerError(Object.assign(engineErr(500, 'open /etc/foo: no such file or directory'), { code: 'ENOENT' }), 'inspect');
    assert.equal(e.code, 'INTERNAL');
  });
});

describe('dockerErrorMessage / dockerStatusCode', () => {
  it('prefers json.message over the decorated Error.message', () => {
    assert.equal(dockerErrorMessage(engineErr(404, 'No such container: x')), 'No such container: x');
  });

  it('reads a non-JSON body that docker-modem left as a Buffer or string', () => {
    assert.equal(dockerErrorMessage(Object.assign(new Error('(HTTP code 502) unexpected - '), { statusCode: 502, json: Buffer.from('Bad Gateway\n') })), 'Bad Gateway');
    assert.equal(dockerErrorMessage(Object.assign(new Error('x'), { json: 'page not found' })), 'page not found');
  });

  it('strips docker-modem\'s decoration when json is empty', () => {
    assert.equal(dockerErrorMessage(Object.assign(new Error('(HTTP code 404) no such image - No such image: a:1 '), { json: null })), 'No such image: a:1');
    assert.equal(dockerErrorMessage(new Error('(HTTP code 500) unexpected - a - b ')), 'a - b');
    assert.equal(dockerErrorMessage(new Error('(HTTP code 502) unexpected - ')), '(HTTP code 502) unexpected - ');
  });

  it('falls back to Error.message, strings and JSON', () => {
    assert.equal(dockerErrorMessage(new Error('boom')), 'boom');
    assert.equal(dockerErrorMessage('plain'), 'plain');
    assert.equal(dockerErrorMessage({ weird: 1 }), '{"weird":1}');
    assert.equal(dockerErrorMessage(Object.assign(new Error('fallback'), { json: { message: '' } })), 'fallback');
  });

  it('reads the status code only when it is a number', () => {
    assert.equal(dockerStatusCode(engineErr(304, '')), 304);
    assert.equal(dockerStatusCode({ statusCode: '304' }), undefined);
    assert.equal(dockerStatusCode(null), undefined);
  });
});

describe('cannotStartAgain', () => {
  const id = '088bcdf7b580aa11';
  it('is true for the two ways containerd keeps a dead start\'s id after dockerd restarted', () => {
    // Seen on the testbed's private dockerd stopped mid-start (test/faults/engine-restarts.test.ts).
    assert.equal(cannotStartAgain(`task ${id}: already exists`, id), true);
    assert.equal(cannotStartAgain('id already in use', id), true);
    assert.equal(cannotStartAgain(dockerErrorMessage(engineErr(500, 'id already in use')), id), true);
  });
  it('is false for a task of another container and for errors a retry or the spec can fix', () => {
    assert.equal(cannotStartAgain('task 1234: already exists', id), false);
    assert.equal(cannotStartAgain('endpoint with name t-w8 already exists in network none', id), false);
    assert.equal(cannotStartAgain('Bind for 127.0.0.1:18999 failed: port is already allocated', id), false);
    assert.equal(cannotStartAgain('transport is closing: unavailable', id), false);
    assert.equal(cannotStartAgain('the grid id already in useful state', id), false);
  });
});
