import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { interpolateString, interpolateTree } from '../../src/runtimes/compose/interpolate.js';

const env = { A: 'alpha', EMPTY: '', N: '5' };

describe('compose interpolation', () => {
  const cases: [string, string][] = [
    ['plain', 'plain'],
    ['${A}', 'alpha'],
    ['$A-x', 'alpha-x'],
    ['${MISSING}', ''],
    ['${MISSING:-dflt}', 'dflt'],
    ['${EMPTY:-dflt}', 'dflt'],
    ['${EMPTY-dflt}', ''],
    ['${MISSING-dflt}', 'dflt'],
    ['${A:+alt}', 'alt'],
    ['${MISSING:+alt}', ''],
    ['$$A', '$A'],
    ['$${A}', '${A}'],
    ['cost: 5$', 'cost: 5$'],
    ['${MISSING:-${A}}', 'alpha'],
    ['port ${N}:${N}0', 'port 5:50'],
  ];
  for (const [input, want] of cases) {
    it(`${JSON.stringify(input)} -> ${JSON.stringify(want)}`, () => assert.equal(interpolateString(input, env), want));
  }

  it('${VAR:?err} and ${VAR?err} fail with the author\'s message', () => {
    assert.throws(() => interpolateString('${MISSING:?set MISSING please}', env), /required variable MISSING is missing: set MISSING please/);
    assert.throws(() => interpolateString('${EMPTY:?no}', env), /required variable EMPTY is empty: no/);
    assert.equal(interpolateString('${EMPTY?no}', env), '');
    assert.equal(interpolateString('${A:?no}', env), 'alpha');
  });

  it('an unterminated or nameless ${ is an error', () => {
    assert.throws(() => interpolateString('${A', env), /unterminated/);
    assert.throws(() => interpolateString('${:-x}', env), /a variable name is needed/);
  });

  it('walks values (not keys), leaves x-* alone, and reports errors with their path', () => {
    const errors: { path: string; message: string }[] = [];
    const out = interpolateTree({ services: { api: { image: 'x:${N}', environment: ['K=${A}'], '${A}': 1 } }, 'x-anchor': '${MISSING:?no}' }, env, errors);
    assert.deepEqual(out, { services: { api: { image: 'x:5', environment: ['K=alpha'], '${A}': 1 } }, 'x-anchor': '${MISSING:?no}' });
    assert.deepEqual(errors, []);
    interpolateTree({ services: { api: { ports: ['${P:?port needed}'] } } }, env, errors);
    assert.deepEqual(errors, [{ path: 'services.api.ports[0]', message: 'required variable P is missing: port needed' }]);
  });

  it('never reads the agent\'s own environment', () => {
    process.env.PERSYS_TEST_LEAK = 'leaked';
    try {
      assert.equal(interpolateString('${PERSYS_TEST_LEAK}', {}), '');
    } finally {
      delete process.env.PERSYS_TEST_LEAK;
    }
  });
});
