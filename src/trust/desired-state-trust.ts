/**
 * The trust checks on a pulled desired-state document, as pure functions the source calls:
 * - openSigned: the DSSE envelope is verified (when trust.publicKeys is set) and its payload parsed;
 * - checkFreshness: rollback (lower generation), mix-and-match (same generation, other content,
 *   signed documents only) and freeze (expiresAt in the past).
 * Every refusal is a SourceError with its code, so the last good state stays in force and the
 * report names the reason.
 */
import { isDeepStrictEqual } from 'node:util';
import { SourceError } from '../errors/index.js';
import type { DesiredStateDocument } from '../spec/desired-state.js';
import { DESIRED_STATE_PAYLOAD_TYPE, DsseError, isEnvelope, verifyEnvelope, type TrustedKey } from './dsse.js';

export interface TrustSettings {
  keys: TrustedKey[];
  /** Distinct trusted keys that must have signed (trust.threshold). */
  threshold: number;
  /** Accept nodeId "*" in signed documents (trust.allowWildcardNode). */
  allowWildcardNode: boolean;
}

export interface Opened {
  payload: unknown;
  /** Ids of the trusted keys whose signatures verified; empty for an unsigned document. */
  signedBy: string[];
}

/**
 * With trust configured, `raw` must be an envelope signed by at least `threshold` trusted keys;
 * without, an envelope is refused (it cannot be checked) and a plain document passes through.
 */
export function openSigned(raw: unknown, trust: TrustSettings | undefined): Opened {
  if (trust === undefined) {
    if (isEnvelope(raw)) {
      throw new SourceError('DESIRED_STATE_INVALID', 'the document is a signed DSSE envelope, but this host has no trusted keys (trust.publicKeys) to check it with');
    }
    return { payload: raw, signedBy: [] };
  }
  let opened: { payload: Buffer; keyIds: string[] };
  try {
    opened = verifyEnvelope(raw, trust.keys, trust.threshold);
  } catch (err) {
    if (err instanceof DsseError) throw new SourceError('SIGNATURE_INVALID', err.message, { cause: err });
    throw err;
  }
  let payload: unknown;
  try {
    payload = JSON.parse(opened.payload.toString('utf8')) as unknown;
  } catch (err) {
    // Signed by a trusted key, so not an attack: a publisher error, reported as such.
    throw new SourceError('DESIRED_STATE_INVALID', `the signed payload (${DESIRED_STATE_PAYLOAD_TYPE}) is not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return { payload, signedBy: opened.keyIds };
}

/** nodeId "*": from a local file when unsigned; in a signed document only with trust.allowWildcardNode. */
export function checkWildcardNode(doc: DesiredStateDocument, signed: boolean, local: boolean, allowWildcardNode: boolean, nodeId: string): void {
  if (doc.nodeId !== '*') return;
  if (signed) {
    if (!allowWildcardNode) {
      throw new SourceError('DESIRED_STATE_INVALID', `signed document is for node *, which trust.allowWildcardNode does not allow; sign one that names node ${nodeId}`);
    }
    return;
  }
  if (!local) throw new SourceError('DESIRED_STATE_INVALID', `document is for node *, which only a local file may use; this node is ${nodeId}`);
}

/** `'same'` when `doc` is the stored document again (nothing new to apply), else `'newer'`. */
export type Freshness = 'same' | 'newer';

/**
 * Rollback, mix-and-match and expiry. `stored` is the document in force, or only its generation,
 * or null before the first.
 * An unsigned document with the same generation and other content is accepted (a publisher's typo
 * fix without a bump); a signed one is refused, since an attacker could otherwise pair any two
 * signed documents of one generation.
 */
export function checkFreshness(doc: DesiredStateDocument, stored: DesiredStateDocument | { generation: number } | null, signed: boolean, nowMs: number): Freshness {
  if (stored !== null) {
    if (doc.generation < stored.generation) {
      throw new SourceError(
        'DESIRED_STATE_STALE',
        `document generation ${doc.generation} is lower than the stored generation ${stored.generation} (rollback or replay refused)`,
      );
    }
    // Content is compared only when the document in force is known (not just its generation).
    if (doc.generation === stored.generation && 'workloads' in stored) {
      if (isDeepStrictEqual(doc, stored)) return 'same';
      if (signed) {
        throw new SourceError(
          'DESIRED_STATE_STALE',
          `signed document has the stored generation ${doc.generation} but different content (mix-and-match refused; publish changes with a higher generation)`,
        );
      }
    }
  }
  if (doc.expiresAt !== undefined && Date.parse(doc.expiresAt) <= nowMs) {
    throw new SourceError('DESIRED_STATE_EXPIRED', `document generation ${doc.generation} expired at ${doc.expiresAt}; it is not applied (the publisher must sign a fresh one)`);
  }
  return 'newer';
}

/** True when the document in force carries an expiresAt that has passed. */
export function isExpired(doc: DesiredStateDocument | null | undefined, nowMs: number): boolean {
  return doc?.expiresAt !== undefined && Date.parse(doc.expiresAt) <= nowMs;
}
