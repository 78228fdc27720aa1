/**
 * The garbage collector's series (src/gc/metrics.ts) pass `promtool check metrics`, every kind present
 * from the start, with counts after removals.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';

import { registerGcMetrics } from '../../src/gc/metrics.js';
import { GC_KINDS } from '../../src/gc/select.js';
import { requireEngine } from '../helpers/engines.js';
import { promtoolCheckMetrics } from '../helpers/prometheus.js';

const skip = await requireEngine('prometheus');

describe('gc metrics', { skip, timeout: 60_000 }, () => {
  it('promtool check metrics is clean; every kind has a series', async () => {
    const registry = new Registry();
    const m = registerGcMetrics(registry);
    m.removed('orphan', 0);
    m.removed('image', 2048);
    m.failed('image');
    m.passDone({ ok: true, durationMs: 12, engineCalls: 5, at: new Date() });
    const text = await registry.metrics();
    const lint = await promtoolCheckMetrics(text);
    assert.equal(lint.code, 0, `promtool check metrics:\n${lint.output}\n${text}`);
    for (const k of GC_KINDS) assert.match(text, new RegExp(`persys_gc_removed_total\\{kind="${k}"\\}`));
    assert.match(text, /persys_gc_freed_bytes_total\{kind="image"\} 2048/);
    assert.match(text, /persys_gc_last_run_engine_calls 5/);
  });
});
