import { BUILTIN_TYPES, type TypeRegistry } from '../runtimes/registry.js';
import type { WorkloadBase } from '../runtimes/runtime.js';

/*
 * Canonical specs and their hashes, generic over workload types: each type's canonical form (per
 * hash version) lives with its runtime (src/runtimes/<name>/canonical.ts), the building blocks in
 * src/runtimes/canonical-json.ts, the caches in the registry.
 */

export { describeSpecChanges, hashCanonical, pruneCanonical, stableStringify } from '../runtimes/canonical-json.js';
export type { CanonicalJson, CanonicalObject } from '../runtimes/canonical-json.js';

/** The canonical spec of a workload under its type's current hash version (memoised and frozen: do not mutate). */
export function canonicalSpec(w: WorkloadBase, types: TypeRegistry = BUILTIN_TYPES): object {
  return types.canonical(w);
}

/** `sha256:<hex>` of the canonical spec; what the spec-hash label on engine objects carries. */
export function specHash(w: WorkloadBase, types: TypeRegistry = BUILTIN_TYPES): string {
  return types.hash(w);
}
