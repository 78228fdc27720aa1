import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';

import { ProgressWatchdog } from '../../src/reconcile/progress-watchdog.js';

describe('ProgressWatchdog', () => {
  it('never fires while progress keeps coming, however long the step takes; fires after `seconds` of silence', () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      let t = 0;
      const advance = (ms: number): void => {
        t += ms;
        mock.timers.tick(ms);
      };
      const w = new ProgressWatchdog(2, () => new Error('no progress for 2 s'), () => t);
      // 60 s of a slow pull reporting every 500 ms: thirty times the limit, never stuck.
      for (let i = 0; i < 120; i++) {
        advance(500);
        w.touch();
      }
      assert.equal(w.signal.aborted, false);
      advance(1999);
      assert.equal(w.signal.aborted, false);
      advance(1);
      assert.equal(w.signal.aborted, true);
      assert.equal((w.signal.reason as Error).message, 'no progress for 2 s');
      w.dispose();
    } finally {
      mock.timers.reset();
    }
  });

  it('dispose() stops it', () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      let t = 0;
      const w = new ProgressWatchdog(1, () => new Error('x'), () => t);
      w.dispose();
      t += 5000;
      mock.timers.tick(5000);
      assert.equal(w.signal.aborted, false);
    } finally {
      mock.timers.reset();
    }
  });
});
