import type { ExitEvidence } from '../runtimes/runtime.js';
import type { StoreData, WorkloadRecord } from './types.js';

/**
 * Agents before runtime contract v2 kept generated VM passwords beside the records (`vmSecrets`).
 * Their runtime now keeps them in the record's opaque runtimeState (version 1: `{ password }`): this
 * moves them there once, so an upgrade neither loses a reported password nor generates a new one.
 * Returns whether anything moved. Mutates `d` (call it inside store.update).
 */
export function moveLegacySecrets(d: StoreData): boolean {
  const legacy = d.vmSecrets;
  if (!legacy) return false;
  for (const [id, s] of Object.entries(legacy)) {
    const r = Object.hasOwn(d.records, id) ? d.records[id] : undefined;
    if (r && r.runtimeState === undefined && typeof s.password === 'string') r.runtimeState = { version: 1, data: { password: s.password } };
  }
  delete d.vmSecrets;
  return true;
}

/** The crash evidence records of agents before contract v2 kept under a type-named key. */
const LEGACY_EVIDENCE_KEY = 'container';

/**
 * Records written before contract v2 carry their crash evidence under the old key; it is the same
 * data as `evidence`. Moves it (mutates `d`); returns whether anything moved.
 */
export function moveLegacyEvidence(d: StoreData): boolean {
  let moved = false;
  for (const r of Object.values(d.records)) {
    const old = (r as WorkloadRecord & Record<string, unknown>)[LEGACY_EVIDENCE_KEY] as ExitEvidence | undefined;
    if (old === undefined) continue;
    if (r.evidence === undefined) r.evidence = old;
    delete (r as WorkloadRecord & Record<string, unknown>)[LEGACY_EVIDENCE_KEY];
    moved = true;
  }
  return moved;
}

/** Whether the store holds anything written in the shape before contract v2. */
export function hasLegacyRuntimeFacts(d: StoreData): boolean {
  return d.vmSecrets !== undefined || Object.values(d.records).some((r) => Object.hasOwn(r, LEGACY_EVIDENCE_KEY));
}
