import type { ExitEvidence, RuntimeState } from './runtime.js';

/*
 * State files of agents before runtime contract v2 kept runtime facts under type-specific keys. The
 * runtimes that wrote them know those keys; this moves them into the generic record fields once.
 * Typed by shape (the store's types are not imported: runtimes do not depend on the store).
 */

interface LegacyRecord {
  runtimeState?: RuntimeState;
  evidence?: ExitEvidence;
}
interface LegacyData {
  records: Record<string, LegacyRecord>;
  vmSecrets?: Record<string, { password: string }>;
}

/**
 * Agents before runtime contract v2 kept generated VM passwords beside the records (`vmSecrets`).
 * Their runtime now keeps them in the record's opaque runtimeState (version 1: `{ password }`): this
 * moves them there once, so an upgrade neither loses a reported password nor generates a new one.
 * Returns whether anything moved. Mutates `d` (call it inside store.update).
 */
export function moveLegacySecrets(d: LegacyData): boolean {
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
export function moveLegacyEvidence(d: LegacyData): boolean {
  let moved = false;
  for (const r of Object.values(d.records)) {
    const old = (r as LegacyRecord & Record<string, unknown>)[LEGACY_EVIDENCE_KEY] as ExitEvidence | undefined;
    if (old === undefined) continue;
    if (r.evidence === undefined) r.evidence = old;
    delete (r as LegacyRecord & Record<string, unknown>)[LEGACY_EVIDENCE_KEY];
    moved = true;
  }
  return moved;
}

/** Whether the store holds anything written in the shape before contract v2. */
export function hasLegacyRuntimeFacts(d: LegacyData): boolean {
  return d.vmSecrets !== undefined || Object.values(d.records).some((r) => Object.hasOwn(r, LEGACY_EVIDENCE_KEY));
}
