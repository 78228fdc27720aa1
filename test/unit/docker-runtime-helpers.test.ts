import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  demuxDockerLogs,
  mapDockerState,
  parseDockerEvent,
  parseExitCode,
  tailLines,
} from '../../src/runtimes/docker/docker-runtime.js';
import { LABELS } from '../../src/runtimes/runtime.js';

function frame(stream: 1 | 2, text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const header = Buffer.alloc(8);
  header.writeUInt8(stream, 0);
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

describe('parseExitCode', () => {
  it('reads the code from a list Status', () => {
    assert.equal(parseExitCode('Exited (3) 2 minutes ago'), 3);
    assert.equal(parseExitCode('Exited (0) Less than a second ago'), 0);
    assert.equal(parseExitCode('Exited (137) About an hour ago'), 137);
    assert.equal(parseExitCode('Exited (-1) 5 seconds ago'), -1);
  });
  it('is undefined for other states', () => {
    assert.equal(parseExitCode('Up 5 seconds'), undefined);
    assert.equal(parseExitCode('Created'), undefined);
    assert.equal(parseExitCode(''), undefined);
  });
});

describe('mapDockerState', () => {
  it('maps every Docker state', () => {
    assert.equal(mapDockerState('created'), 'created');
    assert.equal(mapDockerState('running'), 'running');
    assert.equal(mapDockerState('paused'), 'paused');
    assert.equal(mapDockerState('restarting'), 'restarting');
    assert.equal(mapDockerState('exited'), 'exited');
    assert.equal(mapDockerState('dead'), 'unknown');
    assert.equal(mapDockerState('removing'), 'unknown');
    assert.equal(mapDockerState('RUNNING'), 'running');
  });
});

describe('demuxDockerLogs', () => {
  it('joins stdout and stderr frames in order', () => {
    const buf = Buffer.concat([frame(1, 'out\n'), frame(2, 'err\n'), frame(1, 'more\n')]);
    assert.equal(demuxDockerLogs(buf), 'out\nerr\nmore\n');
  });
  it('takes TTY (raw) output as text', () => {
    assert.equal(demuxDockerLogs(Buffer.from('plain text\nline 2\n')), 'plain text\nline 2\n');
  });
  it('survives a truncated last frame', () => {
    const whole = frame(1, 'abcdef');
    assert.equal(demuxDockerLogs(whole.subarray(0, whole.length - 2)), 'abcd');
  });
  it('keeps multi-byte characters split across frames', () => {
    const euro = Buffer.from('€', 'utf8');
    const a = Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 1]), euro.subarray(0, 1)]);
    const b = Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 2]), euro.subarray(1)]);
    assert.equal(demuxDockerLogs(Buffer.concat([a, b])), '€');
  });
});

describe('tailLines', () => {
  it('splits lines and drops the final newline', () => {
    assert.deepEqual(tailLines('a\nb\n'), ['a', 'b']);
    assert.deepEqual(tailLines('a\r\nb'), ['a', 'b']);
    assert.deepEqual(tailLines(''), []);
  });
  it('caps at the byte budget and drops the partial first line', () => {
    const text = Array.from({ length: 1000 }, (_, i) => `line ${String(i).padStart(4, '0')}`).join('\n');
    const lines = tailLines(text, 100);
    assert.ok(Buffer.byteLength(lines.join('\n')) <= 100);
    assert.equal(lines.at(-1), 'line 0999');
    for (const l of lines) assert.match(l, /^line \d{4}$/);
  });
  it('keeps the cut of a single over-long line', () => {
    const lines = tailLines('x'.repeat(20_000));
    assert.equal(lines.length, 1);
    assert.ok(Buffer.byteLength(lines[0] ?? '') <= 8 * 1024);
  });
});

describe('parseDockerEvent', () => {
  const die = {
    status: 'die',
    id: 'abc',
    Type: 'container',
    Action: 'die',
    Actor: { ID: 'abc', Attributes: { [LABELS.workloadId]: 'web', [LABELS.type]: 'container', exitCode: '3', name: 't-web' } },
    time: 1,
  };
  it('maps an event of ours', () => {
    assert.deepEqual(parseDockerEvent(JSON.stringify(die)), { workloadId: 'web', action: 'die', runtimeId: 'abc' });
  });
  it('ignores compose containers, foreign containers, other types and garbage', () => {
    const compose = { ...die, Actor: { ID: 'abc', Attributes: { [LABELS.workloadId]: 'shop', [LABELS.type]: 'compose' } } };
    assert.equal(parseDockerEvent(JSON.stringify(compose)), undefined);
    assert.equal(parseDockerEvent(JSON.stringify({ ...die, Actor: { ID: 'abc', Attributes: {} } })), undefined);
    assert.equal(parseDockerEvent(JSON.stringify({ ...die, Type: 'network' })), undefined);
    assert.equal(parseDockerEvent('not json'), undefined);
    assert.equal(parseDockerEvent('[1,2]'), undefined);
  });
});
