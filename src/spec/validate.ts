import * as v from 'valibot';
import { desiredStateDocument, type DesiredStateDocument } from './desired-state.js';

export interface ValidationIssue {
  /** JSON path like `workloads[2].spec.ports[0].hostPort`, or `(root)`. */
  path: string;
  message: string;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; issues: ValidationIssue[] };

function pathOf(issue: v.BaseIssue<unknown>): string {
  let out = '';
  for (const item of issue.path ?? []) {
    const key = item.key;
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string') out += /^[A-Za-z_$][\w$]*$/.test(key) ? (out ? `.${key}` : key) : `[${JSON.stringify(key)}]`;
  }
  return out || '(root)';
}

/** Flattens valibot issues (including union sub-issues) to one line each, path first. */
export function flattenIssues(issues: readonly v.BaseIssue<unknown>[]): ValidationIssue[] {
  const out: ValidationIssue[] = [];
  for (const issue of issues) {
    out.push({ path: pathOf(issue), message: issue.message });
  }
  const seen = new Set<string>();
  return out.filter((i) => {
    const k = `${i.path}\u0000${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function validateWith<S extends v.GenericSchema>(schema: S, input: unknown): ValidationResult<v.InferOutput<S>> {
  const r = v.safeParse(schema, input, { abortEarly: false });
  if (r.success) return { ok: true, value: r.output };
  return { ok: false, issues: flattenIssues(r.issues) };
}

export function validateDesiredState(input: unknown): ValidationResult<DesiredStateDocument> {
  return validateWith(desiredStateDocument, input);
}

export function formatIssues(issues: readonly ValidationIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.message}`).join('\n');
}
