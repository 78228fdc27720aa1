import type { ObservedWorkload, Wanted } from './runtime.js';

/*
 * Helpers a runtime's type descriptor may use for the parts of the contract most engines share.
 */

const sameRevision = (a: string | undefined, b: string | undefined): boolean => (a ?? '') === (b ?? '');

/**
 * The primary of several engine objects labelled with one workload id: the one matching what is
 * wanted, then a running one, then the newest, then the lowest id (so the choice is stable).
 * Every other object is a duplicate.
 */
export function newestMatching(list: readonly ObservedWorkload[], wanted: Wanted): ObservedWorkload {
  const score = (o: ObservedWorkload): [number, number, string, string] => [
    o.specHash === wanted.specHash && sameRevision(o.revision, wanted.revision) ? 1 : 0,
    o.state === 'running' ? 1 : 0,
    o.createdAt ?? '',
    o.runtimeId,
  ];
  let best = list[0] as ObservedWorkload;
  let bestScore = score(best);
  for (const o of list.slice(1)) {
    const s = score(o);
    const better = s[0] !== bestScore[0] ? s[0] > bestScore[0] : s[1] !== bestScore[1] ? s[1] > bestScore[1] : s[2] !== bestScore[2] ? s[2] > bestScore[2] : s[3] < bestScore[3];
    if (better) {
      best = o;
      bestScore = s;
    }
  }
  return best;
}
