/**
 * The shipped alerting artefacts, read the way the tests need them: the Prometheus rules
 * (deploy/prometheus/persys-agent.rules.yml), the runbooks (docs/runbooks/<alert>.md) and the Grafana
 * dashboard (deploy/grafana/persys-agent-fleet.json), plus the substitution of the dashboard's
 * variables so its queries can be run against a real Prometheus.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const root = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

export const RULES_FILE = root('deploy/prometheus/persys-agent.rules.yml');
export const RULES_TEST_FILE = root('deploy/prometheus/tests/persys-agent.rules.test.yml');
export const PROMETHEUS_EXAMPLE = root('deploy/prometheus/prometheus.example.yml');
export const DASHBOARD_FILE = root('deploy/grafana/persys-agent-fleet.json');
export const RUNBOOKS_DIR = root('docs/runbooks');
export const METRICS_DOC = root('docs/metrics.md');
/** Where the rules' runbook_url values point: docs/runbooks/ as published. */
export const RUNBOOK_BASE = 'https://persys.dev/agent/docs/runbooks/';

export interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleGroup {
  name: string;
  rules: Rule[];
}

export function loadRules(): RuleGroup[] {
  const doc = parse(readFileSync(RULES_FILE, 'utf8')) as { groups: RuleGroup[] };
  return doc.groups;
}

export const allRules = (): Rule[] => loadRules().flatMap((g) => g.rules);
export const alertRules = (): (Rule & { alert: string })[] => allRules().filter((r): r is Rule & { alert: string } => typeof r.alert === 'string');

/** Runbook files by alert name (file name without .md), README.md left out. */
export function runbookFiles(): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of readdirSync(RUNBOOKS_DIR)) {
    if (!f.endsWith('.md') || f === 'README.md') continue;
    out.set(f.slice(0, -3), readFileSync(`${RUNBOOKS_DIR}/${f}`, 'utf8'));
  }
  return out;
}

/** Prometheus duration ("5m", "1h30m", "30s") in seconds. */
export function durationSeconds(d: string): number {
  const units: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
  let total = 0;
  let rest = d;
  for (const m of d.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) {
    total += Number(m[1]) * units[m[2]!]!;
    rest = rest.replace(m[0], '');
  }
  if (rest !== '' || d === '') throw new Error(`not a Prometheus duration: ${d}`);
  return total;
}

/** Metric names an expression reads (persys_*, the Prometheus and Pushgateway series), functions left out. */
export function metricNames(expr: string): Set<string> {
  const names = new Set<string>();
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  // Whole names only: not the persys_* inside a recording rule's level:metric:operation name.
  for (const m of noStrings.matchAll(/(?<![\w:])(persys_[a-z0-9_]+|up|push_time_seconds|push_failure_time_seconds|ALERTS)(?![\w:])/g)) names.add(m[1]!);
  return names;
}

// --- the dashboard ---------------------------------------------------------------------------------

export interface DashboardTarget {
  refId: string;
  expr: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}

export interface DashboardPanel {
  id: number;
  title: string;
  type: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: DashboardTarget[];
}

export interface DashboardVariable {
  name: string;
  type: string;
  query: string | { query: string; refId: string };
  multi?: boolean;
  includeAll?: boolean;
  allValue?: string;
}

export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: DashboardVariable[] };
  panels: DashboardPanel[];
}

export const loadDashboard = (): Dashboard => JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;

/** The values Grafana would put in for the dashboard's variables and its built-in interval variables. */
export interface DashboardVars {
  node: string;
  workload: string;
  rateInterval: string;
}

/** Grafana's substitution: $var and ${var}, the built-in $__rate_interval / $__interval / $__range. */
export function substitute(expr: string, v: DashboardVars): string {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}|\$__range|\$\{__range\}/g, v.rateInterval)
    .replace(/\$\{node\}|\$node\b/g, v.node)
    .replace(/\$\{workload\}|\$workload\b/g, v.workload);
}

export function dashboardQueries(d: Dashboard, v: DashboardVars): { panel: string; refId: string; expr: string }[] {
  return d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, refId: t.refId, expr: substitute(t.expr, v) })));
}

/** `label_values(<selector>, <label>)` of a query variable, as the label-values API call's parts. */
export function labelValuesQuery(variable: DashboardVariable): { selector: string; label: string } {
  const q = typeof variable.query === 'string' ? variable.query : variable.query.query;
  const m = /^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$/.exec(q.trim());
  if (!m) throw new Error(`variable ${variable.name}: not a label_values() query: ${q}`);
  return { selector: m[1]!, label: m[2]! };
}

// --- the example Prometheus configuration ------------------------------------------------------------

interface ScrapeConfig {
  job_name: string;
  scrape_interval?: string;
  scrape_timeout?: string;
  static_configs: { targets: string[] }[];
}

/** The example configuration with loopback targets, 1 s intervals and the rules file by absolute path. */
export async function exampleConfig(targets: { agents: string[]; pushgateway: string }): Promise<string> {
  const cfg = parse(await readFile(PROMETHEUS_EXAMPLE, 'utf8')) as {
    global: Record<string, string>;
    rule_files: string[];
    scrape_configs: ScrapeConfig[];
  };
  cfg.global = { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
  cfg.rule_files = [RULES_FILE];
  const job = (name: string) => {
    const j = cfg.scrape_configs.find((s) => s.job_name === name);
    if (!j) throw new Error(`prometheus.example.yml has no job ${name}`);
    return j;
  };
  job('persys_agent').static_configs = [{ targets: targets.agents }];
  job('persys_pushgateway').static_configs = [{ targets: [targets.pushgateway] }];
  return stringify(cfg);
}
