/**
 * promtool (from the prometheus package, scripts/testbed/prometheus.sh) checks the shipped alerting:
 * `promtool check rules` is clean, `promtool test rules` runs deploy/prometheus/tests/ (each alert
 * fires when it should, not on a healthy node, not after one lost poll, push, scrape or write), and
 * `promtool check config` accepts the example configuration together with the rules it loads.
 */
import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { describe, it } from 'node:test';

import { PROMETHEUS_EXAMPLE, RULES_FILE, RULES_TEST_FILE, alertRules } from '../helpers/alerting.js';
import { requireEngine } from '../helpers/engines.js';
import { promtool } from '../helpers/prometheus.js';

const skip = await requireEngine('prometheus');

describe('promtool on the shipped rules', { skip, timeout: 120_000 }, () => {
  it('check rules: clean, every rule found', async () => {
    const r = await promtool(['check', 'rules', RULES_FILE]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS: \d+ rules found/);
    assert.doesNotMatch(r.output, /WARN|FAILED|lint/i, r.output);
  });

  it('test rules: every alert fires when it should and only then', async () => {
    const r = await promtool(['test', 'rules', RULES_TEST_FILE], { cwd: dirname(RULES_TEST_FILE) });
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });

  it('the test file covers every alert, firing and quiet', async () => {
    const { parse } = await import('yaml');
    const { readFile } = await import('node:fs/promises');
    const doc = parse(await readFile(RULES_TEST_FILE, 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const cases = doc.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const a of alertRules()) {
      const mine = cases.filter((c) => c.alertname === a.alert);
      assert.ok(mine.some((c) => c.exp_alerts.length > 0), `${a.alert}: a case where it fires`);
      assert.ok(mine.some((c) => c.exp_alerts.length === 0), `${a.alert}: a case where it does not fire yet`);
    }
  });

  it('check config: the example configuration and the rules it loads', async () => {
    const r = await promtool(['check', 'config', PROMETHEUS_EXAMPLE]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });
});
