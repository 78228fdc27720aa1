/**
 * The alerting artefacts hold together: every alert has a runbook and every runbook's alert exists
 * (both directions); every alert carries severity, summary, description, a runbook_url into
 * docs/runbooks/ and a `for:` that rides out a lost poll; rules and dashboard read only series the
 * agent documents; the dashboard has the panels, targets and variables the issue asks for.
 * (promtool and a real Prometheus check the same files in test/integration/alerts-*.test.ts.)
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { ERROR_CODES } from '../../src/errors/codes.js';
import {
  METRICS_DOC,
  RUNBOOK_BASE,
  alertRules,
  allRules,
  dashboardQueries,
  durationSeconds,
  labelValuesQuery,
  loadDashboard,
  metricNames,
  runbookFiles,
  substitute,
} from '../helpers/alerting.js';

/** Series other helpers add this session under agreed names (trust: signed-document expiry). */
const AGREED_UPCOMING = new Set(['persys_desired_state_expired', 'persys_desired_state_expiry_timestamp_seconds']);
/** Series that Prometheus and the Pushgateway make, not the agent. */
const NOT_THE_AGENTS = new Set(['up', 'push_time_seconds', 'push_failure_time_seconds', 'ALERTS']);

/** Metric names documented in docs/metrics.md (histograms count with their _bucket/_sum/_count). */
function documentedMetrics(): Set<string> {
  const doc = readFileSync(METRICS_DOC, 'utf8');
  const names = new Set<string>();
  for (const m of doc.matchAll(/`(persys_[a-z0-9_]+)`/g)) names.add(m[1]!);
  // A row "`persys_a_b_size_bytes`, `..._free_bytes`" names siblings: "..." is the first name less as
  // many trailing segments as the sibling's suffix has.
  for (const line of doc.split('\n')) {
    const first = /`(persys_[a-z0-9_]+)`/.exec(line)?.[1];
    if (!first) continue;
    for (const m of line.matchAll(/`\.\.\._([a-z0-9_]+)`/g)) {
      const suffix = m[1]!.split('_');
      names.add([...first.split('_').slice(0, -suffix.length), ...suffix].join('_'));
    }
  }
  for (const n of [...names]) for (const s of ['_bucket', '_sum', '_count']) names.add(`${n}${s}`);
  return names;
}

const ERROR_CODES_SET = new Set(Object.keys(ERROR_CODES));
const SECTIONS = ['## Meaning', '## Confirm on the host', '## Usual causes', '## What to do', '## Fixed when'];

describe('alert rules and runbooks', () => {
  const alerts = alertRules();
  const runbooks = runbookFiles();

  it('has the alerts the issue lists', () => {
    const names = new Set(alerts.map((a) => a.alert));
    for (const n of [
      'PersysAgentDown',
      'PersysAgentPushStale',
      'PersysDesiredStateStale',
      'PersysDesiredStateRejected',
      'PersysDesiredStateExpired',
      'PersysDesiredStateExpiringSoon',
      'PersysStatusReportsFailing',
      'PersysWorkloadCrashLoop',
      'PersysWorkloadBackingOff',
      'PersysWorkloadFailed',
      'PersysWorkloadRolloutStuck',
      'PersysRuntimeDown',
      'PersysStoreWriteFailing',
      'PersysNodeIdConflict',
    ]) {
      assert.ok(names.has(n), `alert ${n} exists`);
    }
    assert.equal(names.size, alerts.length, 'alert names are unique');
  });

  it('every alert has a runbook file, and every runbook file names an existing alert', () => {
    const names = new Set(alerts.map((a) => a.alert));
    for (const a of alerts) assert.ok(runbooks.has(a.alert), `docs/runbooks/${a.alert}.md exists`);
    for (const file of runbooks.keys()) assert.ok(names.has(file), `docs/runbooks/${file}.md is for an alert that exists`);
  });

  it('every alert has severity, summary, description and a runbook_url into docs/runbooks/', () => {
    for (const a of alerts) {
      assert.ok(['critical', 'warning'].includes(a.labels?.severity ?? ''), `${a.alert}: severity critical or warning`);
      assert.ok((a.annotations?.summary ?? '').length > 10, `${a.alert}: summary`);
      assert.ok((a.annotations?.description ?? '').length > 40, `${a.alert}: description`);
      assert.equal(a.annotations?.runbook_url, `${RUNBOOK_BASE}${a.alert}.md`, `${a.alert}: runbook_url`);
      // The labels that say where to look: the instance or node in both texts, the workload where there is one.
      const text = `${a.annotations?.summary} ${a.annotations?.description}`;
      assert.match(text, /\$labels\.(instance|node_id)/, `${a.alert}: names the node`);
      if (a.expr.includes('workload_id')) assert.match(text, /\$labels\.workload_id/, `${a.alert}: names the workload`);
    }
  });

  it('every alert waits long enough to ride out one lost poll, push or scrape', () => {
    for (const a of alerts) {
      assert.ok(a.for, `${a.alert}: has for:`);
      assert.ok(durationSeconds(a.for) >= 300, `${a.alert}: for: ${a.for} is at least 5m`);
    }
  });

  it('every rule reads only series the agent documents (or Prometheus and the Pushgateway make)', () => {
    const documented = documentedMetrics();
    for (const r of allRules()) {
      for (const n of metricNames(r.expr)) {
        assert.ok(documented.has(n) || AGREED_UPCOMING.has(n) || NOT_THE_AGENTS.has(n), `${r.alert ?? r.record}: ${n} is in docs/metrics.md`);
      }
      assert.ok(/job="persys_(agent|pushgateway)"/.test(r.expr), `${r.alert ?? r.record}: selects the agents' job`);
    }
  });

  it('every runbook has the five sections and the ways to confirm on the host', () => {
    for (const [name, text] of runbooks) {
      assert.ok(text.startsWith(`# ${name}\n`), `${name}.md starts with its alert name`);
      let last = -1;
      for (const s of SECTIONS) {
        const at = text.indexOf(`\n${s}\n`);
        assert.ok(at > last, `${name}.md: section "${s}" present, in order`);
        last = at;
      }
      for (const needle of ['persys-agent status', 'persys-agent doctor', 'journalctl -u persys-agent']) {
        assert.ok(text.includes(needle), `${name}.md mentions ${needle}`);
      }
      assert.match(text, /Metrics?: .*(persys_|up\{|push_time_seconds)/, `${name}.md names the metric to look at`);
    }
  });

  it('workload runbooks name the exact error codes the agent reports', () => {
    const failedCodes = new Set([...(runbooks.get('PersysWorkloadFailed') ?? '').matchAll(/`([A-Z][A-Z_]{3,})`/g)].map((m) => m[1]));
    assert.ok(failedCodes.size >= 10, `PersysWorkloadFailed lists the terminal and spent-budget codes: ${[...failedCodes].join(' ')}`);
    for (const name of ['PersysWorkloadFailed', 'PersysWorkloadBackingOff', 'PersysWorkloadCrashLoop', 'PersysDesiredStateRejected', 'PersysDesiredStateStale']) {
      const text = runbooks.get(name) ?? '';
      for (const m of text.matchAll(/`([A-Z][A-Z_]{3,})`/g)) {
        assert.ok(ERROR_CODES_SET.has(m[1]!), `${name}.md: ${m[1]} is an error code of src/errors`);
      }
    }
  });
});

describe('the fleet dashboard', () => {
  const d = loadDashboard();
  const panels = d.panels.filter((p) => p.type !== 'row');

  it('is a Grafana dashboard with a uid, a title and a schema version', () => {
    assert.equal(d.uid, 'persys-agent-fleet');
    assert.ok(d.title.length > 0);
    assert.ok(Number.isInteger(d.schemaVersion) && d.schemaVersion >= 30);
  });

  it('has a data source variable and multi-value node and workload variables read from the agent series', () => {
    const byName = new Map(d.templating.list.map((v) => [v.name, v]));
    assert.equal(byName.get('datasource')?.type, 'datasource');
    for (const [name, label, metric] of [
      ['node', 'node_id', 'persys_node_info'],
      ['workload', 'workload_id', 'persys_workload_phase'],
    ] as const) {
      const v = byName.get(name);
      assert.ok(v, `variable ${name}`);
      assert.equal(v.type, 'query');
      assert.equal(v.multi, true);
      assert.equal(v.includeAll, true);
      assert.equal(v.allValue, '.*');
      const q = labelValuesQuery(v);
      assert.equal(q.label, label);
      assert.ok(q.selector.startsWith(metric), `${name} reads ${metric}`);
    }
  });

  it('has the panels the issue asks for', () => {
    const titles = panels.map((p) => p.title.toLowerCase());
    for (const want of [
      'nodes up',
      'agent versions',
      'desired generation',
      'workloads by phase',
      'errors by code',
      'pull and report success',
      'reconcile duration',
      'engine health',
      'host cpu',
      'host memory',
      'host disk',
      'workload cpu',
      'workload memory',
    ]) {
      assert.ok(titles.some((t) => t.includes(want)), `a panel for "${want}"`);
    }
  });

  it('every panel has a unique id, a place on the 24-column grid, the data source variable and targets', () => {
    const ids = new Set<number>();
    for (const p of d.panels) {
      assert.ok(!ids.has(p.id), `panel id ${p.id} unique`);
      ids.add(p.id);
      assert.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the grid`);
    }
    for (const p of panels) {
      assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: uses the data source variable`);
      assert.ok((p.targets ?? []).length > 0, `${p.title}: has targets`);
      const refIds = new Set((p.targets ?? []).map((t) => t.refId));
      assert.equal(refIds.size, p.targets?.length, `${p.title}: refIds unique`);
      for (const t of p.targets ?? []) assert.ok(t.expr.trim().length > 0, `${p.title}/${t.refId}: has an expression`);
    }
  });

  it('every agent panel filters by $node, per-workload panels by $workload, and reads documented series', () => {
    const documented = documentedMetrics();
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        const names = metricNames(t.expr);
        if (names.has('ALERTS')) continue;
        assert.ok(t.expr.includes('$node'), `${p.title}/${t.refId}: filtered by $node`);
        if ([...names].some((n) => n.startsWith('persys_workload_') && n !== 'persys_workloads')) {
          assert.ok(t.expr.includes('$workload'), `${p.title}/${t.refId}: filtered by $workload`);
        }
        for (const n of names) assert.ok(documented.has(n) || NOT_THE_AGENTS.has(n), `${p.title}: ${n} is in docs/metrics.md`);
      }
    }
  });

  it('substitutes Grafana variables the way the integration test runs them', () => {
    const vars = { node: 'a|b', workload: '.*', rateInterval: '1m' };
    assert.equal(substitute('rate(x{n=~"$node", w=~"${workload}"}[$__rate_interval])', vars), 'rate(x{n=~"a|b", w=~".*"}[1m])');
    for (const q of dashboardQueries(d, vars)) assert.ok(!q.expr.includes('$'), `${q.panel}/${q.refId}: no variable left: ${q.expr}`);
  });
});
