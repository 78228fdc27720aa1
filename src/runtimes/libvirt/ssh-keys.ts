/**
 * SHA256 fingerprints of OpenSSH public keys, byte for byte as `ssh-keygen -l -f key.pub` prints
 * them: `SHA256:` + unpadded base64 of SHA-256 over the decoded key blob. keyFingerprintLine()
 * renders the whole `ssh-keygen -l` line (`<bits> SHA256:... <comment> (<TYPE>)`).
 */
import { createHash } from 'node:crypto';

export interface ParsedPublicKey {
  type: string;
  blob: Buffer;
  comment: string;
}

/** Splits an authorized_keys line (no options prefix) into type, decoded blob and comment; undefined if it is not one. */
export function parsePublicKey(line: string): ParsedPublicKey | undefined {
  const m = /^\s*(\S+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*?))?\s*$/.exec(line);
  if (!m?.[1] || !m[2]) return undefined;
  const blob = Buffer.from(m[2], 'base64');
  // The blob names its own type first; a line whose two types disagree is not a key.
  const inner = readString(blob, 0);
  if (!inner || inner.value.toString('latin1') !== m[1]) return undefined;
  return { type: m[1], blob, comment: m[3] ?? '' };
}

export function sha256Fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** `SHA256:...` of an authorized_keys line; throws for a line that is not an OpenSSH public key. */
export function keyFingerprint(line: string): string {
  const k = parsePublicKey(line);
  if (!k) throw new Error('not an OpenSSH public key line');
  return sha256Fingerprint(k.blob);
}

interface Field {
  value: Buffer;
  next: number;
}

function readString(buf: Buffer, offset: number): Field | undefined {
  if (offset + 4 > buf.length) return undefined;
  const len = buf.readUInt32BE(offset);
  const start = offset + 4;
  if (start + len > buf.length) return undefined;
  return { value: buf.subarray(start, start + len), next: start + len };
}

/** Bit length of an SSH mpint (big-endian, possibly with a leading zero byte). */
function mpintBits(v: Buffer): number {
  let i = 0;
  while (i < v.length && v[i] === 0) i++;
  if (i === v.length) return 0;
  return (v.length - i - 1) * 8 + (32 - Math.clz32(v[i] ?? 0));
}

const TYPE_LABELS: Record<string, string> = {
  'ssh-ed25519': 'ED25519',
  'sk-ssh-ed25519@openssh.com': 'ED25519-SK',
  'ssh-rsa': 'RSA',
  'ssh-dss': 'DSA',
  'ecdsa-sha2-nistp256': 'ECDSA',
  'ecdsa-sha2-nistp384': 'ECDSA',
  'ecdsa-sha2-nistp521': 'ECDSA',
  'sk-ecdsa-sha2-nistp256@openssh.com': 'ECDSA-SK',
};

/** Key size in bits as ssh-keygen reports it. */
export function keyBits(k: ParsedPublicKey): number {
  switch (k.type) {
    case 'ssh-ed25519':
    case 'sk-ssh-ed25519@openssh.com':
      return 256;
    case 'ecdsa-sha2-nistp256':
    case 'sk-ecdsa-sha2-nistp256@openssh.com':
      return 256;
    case 'ecdsa-sha2-nistp384':
      return 384;
    case 'ecdsa-sha2-nistp521':
      return 521;
    case 'ssh-rsa': {
      // string type, mpint e, mpint n
      const t = readString(k.blob, 0);
      const e = t && readString(k.blob, t.next);
      const n = e && readString(k.blob, e.next);
      return n ? mpintBits(n.value) : 0;
    }
    case 'ssh-dss': {
      // string type, mpint p, q, g, y
      const t = readString(k.blob, 0);
      const p = t && readString(k.blob, t.next);
      return p ? mpintBits(p.value) : 0;
    }
    default:
      return 0;
  }
}

/** The line `ssh-keygen -l -f <file with this key>` prints, e.g. `256 SHA256:abc... alice@host (ED25519)`. */
export function keyFingerprintLine(line: string): string {
  const k = parsePublicKey(line);
  if (!k) throw new Error('not an OpenSSH public key line');
  const comment = k.comment === '' ? 'no comment' : k.comment;
  return `${keyBits(k)} ${sha256Fingerprint(k.blob)} ${comment} (${TYPE_LABELS[k.type] ?? k.type.toUpperCase()})`;
}
