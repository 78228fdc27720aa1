/**
 * DSSE v1 envelopes signed with ed25519 (node:crypto, no extra dependency).
 *
 * Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
 * The signature covers PAE(payloadType, payload), never the base64 text, so re-encoding the
 * envelope (standard vs URL-safe base64, padding) does not change what was signed.
 *
 * `keyid` is only a hint: a signature counts when it verifies under a trusted key, whatever its
 * keyid says, and the threshold counts distinct trusted keys (one key signing twice counts once).
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors/index.js';

/** The payloadType of a persys desired-state document. */
export const DESIRED_STATE_PAYLOAD_TYPE = 'application/vnd.persys.desired-state+json';

export interface Envelope {
  payloadType: string;
  /** base64 of the payload bytes. */
  payload: string;
  signatures: { keyid?: string; sig: string }[];
}

export interface TrustedKey {
  /** sha256 of the key's SPKI DER, hex: the id keygen prints and sign writes as keyid. */
  keyId: string;
  publicKey: KeyObject;
}

export type DsseFailure = 'not-an-envelope' | 'bad-base64' | 'wrong-payload-type' | 'no-signatures' | 'below-threshold';

/** Why an envelope was refused; the message names the reason in words a publisher can act on. */
export class DsseError extends Error {
  readonly reason: DsseFailure;
  constructor(reason: DsseFailure, message: string) {
    super(message);
    this.name = 'DsseError';
    this.reason = reason;
  }
}

/** PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal bytes. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `, 'utf8'), type, Buffer.from(` ${payload.length} `, 'utf8'), payload]);
}

/** The id of a public key: hex sha256 of its SPKI DER encoding. */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** Standard or URL-safe base64, padded or not. Anything else is refused (Buffer.from would silently skip it). */
export function decodeBase64(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text) || text.replace(/=+$/, '').length % 4 === 1) {
    throw new DsseError('bad-base64', `${what} is not base64 (standard or URL-safe)`);
  }
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/** True when `x` has the shape of a DSSE envelope (payloadType and payload strings, signatures array). */
export function isEnvelope(x: unknown): x is Envelope {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const o = x as Record<string, unknown>;
  return typeof o.payloadType === 'string' && typeof o.payload === 'string' && Array.isArray(o.signatures);
}

export function signEnvelope(payload: Buffer, payloadType: string, keys: { keyId?: string; privateKey: KeyObject }[]): Envelope {
  if (keys.length === 0) throw new Error('signEnvelope: at least one key is needed');
  const message = pae(payloadType, payload);
  return {
    payloadType,
    payload: payload.toString('base64'),
    signatures: keys.map((k) => {
      assertEd25519(k.privateKey, 'signing key');
      const keyid = k.keyId ?? keyIdOf(createPublicKey(k.privateKey));
      return { keyid, sig: sign(null, message, k.privateKey).toString('base64') };
    }),
  };
}

/**
 * Checks `envelope` against the trusted keys. Returns the payload bytes and the ids of the
 * trusted keys whose signature verified; throws DsseError when the shape, the payload type or
 * the number of distinct verifying keys is wrong.
 */
export function verifyEnvelope(envelope: unknown, trusted: TrustedKey[], threshold: number): { payload: Buffer; keyIds: string[] } {
  if (!isEnvelope(envelope)) {
    throw new DsseError('not-an-envelope', 'the document is not a DSSE envelope ({"payloadType","payload","signatures"}); this host only accepts signed documents (trust.publicKeys is set)');
  }
  if (envelope.payloadType !== DESIRED_STATE_PAYLOAD_TYPE) {
    throw new DsseError('wrong-payload-type', `payloadType is ${JSON.stringify(envelope.payloadType)}, expected ${DESIRED_STATE_PAYLOAD_TYPE}`);
  }
  const payload = decodeBase64(envelope.payload, 'payload');
  if (envelope.signatures.length === 0) throw new DsseError('no-signatures', 'the envelope has no signatures');
  const message = pae(envelope.payloadType, payload);
  const verified = new Set<string>();
  envelope.signatures.forEach((s: unknown, i) => {
    if (typeof s !== 'object' || s === null || typeof (s as { sig?: unknown }).sig !== 'string') {
      throw new DsseError('not-an-envelope', `signatures[${i}].sig must be a base64 string`);
    }
    const sig = decodeBase64((s as { sig: string }).sig, `signatures[${i}].sig`);
    // Try every trusted key: the keyid may be absent, stale or a lie, and must not decide trust.
    // It only orders the attempts (the named key first), and one signature verifies under one key.
    const hint = (s as { keyid?: unknown }).keyid;
    const ordered = typeof hint === 'string' ? [...trusted].sort((a, b) => Number(b.keyId === hint) - Number(a.keyId === hint)) : trusted;
    for (const k of ordered) {
      if (verified.has(k.keyId)) continue;
      if (verify(null, message, k.publicKey, sig)) {
        verified.add(k.keyId);
        break;
      }
    }
  });
  if (verified.size < threshold) {
    throw new DsseError(
      'below-threshold',
      verified.size === 0
        ? `no signature verifies under a trusted key (${envelope.signatures.length} signature${envelope.signatures.length === 1 ? '' : 's'}, ${trusted.length} trusted key${trusted.length === 1 ? '' : 's'})`
        : `${verified.size} trusted key${verified.size === 1 ? '' : 's'} signed, trust.threshold needs ${threshold}`,
    );
  }
  return { payload, keyIds: [...verified] };
}

/** Parses trust.publicKeys: each entry is a PEM public key or a path to one. Throws ConfigError naming the entry. */
export function loadPublicKeys(entries: string[], key = 'trust.publicKeys'): TrustedKey[] {
  const out: TrustedKey[] = [];
  const seen = new Set<string>();
  entries.forEach((entry, i) => {
    const where = `${key}[${i}]`;
    let pem: string;
    if (entry.trimStart().startsWith('-----BEGIN')) pem = entry;
    else {
      try {
        pem = readFileSync(entry, 'utf8');
      } catch (err) {
        throw new ConfigError([`${where}: neither a PEM public key nor a readable file: ${err instanceof Error ? err.message : String(err)}`]);
      }
    }
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey(pem);
    } catch (err) {
      throw new ConfigError([`${where}: not a PEM public key: ${err instanceof Error ? err.message : String(err)}`]);
    }
    if (publicKey.asymmetricKeyType !== 'ed25519') {
      throw new ConfigError([`${where}: key type ${publicKey.asymmetricKeyType ?? 'unknown'} is not supported (ed25519 only)`]);
    }
    const keyId = keyIdOf(publicKey);
    if (seen.has(keyId)) return; // the same key listed twice must not count twice
    seen.add(keyId);
    out.push({ keyId, publicKey });
  });
  return out;
}

/** Reads a PEM private key file (keygen's `signing.key`). */
export function loadPrivateKey(path: string): KeyObject {
  const key = createPrivateKey(readFileSync(path, 'utf8'));
  assertEd25519(key, path);
  return key;
}

function assertEd25519(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${what}: key type ${key.asymmetricKeyType ?? 'unknown'} is not supported (ed25519 only)`);
}
