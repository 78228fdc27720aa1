/**
 * Document fields the schema describes but this version does not act on. A document that uses one
 * is rejected (DESIRED_STATE_INVALID, naming the path) rather than applied without it: the last
 * good desired state stays in force and nothing is removed. A field leaves this list with its
 * implementation.
 */
export const UNSUPPORTED_DOCUMENT_FIELDS: readonly { key: string; reason: string }[] = [
];

/** The unsupported top-level fields a document uses (an absent field or an empty list uses nothing). */
export function unsupportedDocumentFields(doc: unknown): { key: string; reason: string; value: unknown }[] {
  if (typeof doc !== 'object' || doc === null) return [];
  const rec = doc as Record<string, unknown>;
  return UNSUPPORTED_DOCUMENT_FIELDS.filter(({ key }) => rec[key] !== undefined && !(Array.isArray(rec[key]) && rec[key].length === 0)).map((f) => ({ ...f, value: rec[f.key] }));
}
