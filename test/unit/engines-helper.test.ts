import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ENGINE_NAMES,
  decideEngine,
  dockerSocketPath,
  findExecutable,
  parseRequiredEngines,
  testNodeId,
} from '../helpers/engines.js';

describe('testNodeId', () => {
  it('is `${prefix}-${pid}-${6 hex}`', () => {
    const id = testNodeId('test');
    assert.match(id, new RegExp(`^test-${process.pid}-[0-9a-f]{6}$`));
    assert.match(testNodeId('test-docker'), /^test-docker-\d+-[0-9a-f]{6}$/);
  });

  it('never repeats within a process', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 2_000; i++) ids.add(testNodeId('test'));
    assert.equal(ids.size, 2_000);
  });

  it('rejects an empty prefix', () => {
    assert.throws(() => testNodeId(''), /prefix/);
  });
});

describe('parseRequiredEngines', () => {
  it('is empty when unset or blank', () => {
    assert.equal(parseRequiredEngines(undefined).size, 0);
    assert.equal(parseRequiredEngines('').size, 0);
    assert.equal(parseRequiredEngines(' , ,').size, 0);
  });

  it('reads a comma list, ignoring case and spaces', () => {
    assert.deepEqual([...parseRequiredEngines('docker')], ['docker']);
    assert.deepEqual([...parseRequiredEngines(' Docker , libvirt,,nginx ')].sort(), ['docker', 'libvirt', 'nginx']);
  });

  it('expands all (and *) to every engine', () => {
    assert.deepEqual([...parseRequiredEngines('all')].sort(), [...ENGINE_NAMES].sort());
    assert.deepEqual([...parseRequiredEngines('ALL')].sort(), [...ENGINE_NAMES].sort());
    assert.deepEqual([...parseRequiredEngines('*')].sort(), [...ENGINE_NAMES].sort());
  });

  it('rejects unknown names so a typo cannot turn a requirement into a skip', () => {
    assert.throws(() => parseRequiredEngines('docker,dokcer'), /unknown engine 'dokcer'/);
  });
});

describe('decideEngine', () => {
  const down = { ok: false, reason: 'no answer from /var/run/docker.sock' };
  const up = { ok: true, reason: 'docker answers' };

  it('runs the suite when the engine is available, required or not', () => {
    assert.equal(decideEngine('docker', up, undefined), false);
    assert.equal(decideEngine('docker', up, 'docker'), false);
  });

  it('skips with the reason when the engine is missing and not required', () => {
    assert.equal(decideEngine('docker', down, undefined), 'engine docker unavailable: no answer from /var/run/docker.sock');
    assert.equal(typeof decideEngine('docker', down, 'libvirt,nginx'), 'string');
  });

  it('throws when the engine is missing and required by name or by all', () => {
    const expected = {
      message: 'engine docker is required by PERSYS_REQUIRE_ENGINES but unavailable: no answer from /var/run/docker.sock',
    };
    assert.throws(() => decideEngine('docker', down, 'docker'), expected);
    assert.throws(() => decideEngine('docker', down, 'libvirt, docker'), expected);
    assert.throws(() => decideEngine('docker', down, 'all'), expected);
  });
});

describe('dockerSocketPath', () => {
  it('defaults to /var/run/docker.sock', () => {
    assert.equal(dockerSocketPath({}), '/var/run/docker.sock');
    assert.equal(dockerSocketPath({ DOCKER_HOST: '' }), '/var/run/docker.sock');
  });

  it('follows a unix:// DOCKER_HOST', () => {
    assert.equal(dockerSocketPath({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' }), '/run/user/1000/docker.sock');
  });

  it('reports a non-unix DOCKER_HOST as an error', () => {
    assert.ok(dockerSocketPath({ DOCKER_HOST: 'tcp://127.0.0.1:2375' }) instanceof Error);
  });
});

describe('findExecutable', () => {
  it('finds sh and not a made-up binary', async () => {
    assert.ok((await findExecutable('sh')) !== undefined);
    assert.equal(await findExecutable('persys-no-such-binary-7f3a', '/usr/bin:/bin'), undefined);
  });
});
