import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../../src/errors/index.js';
import {
  decodeBase64,
  DESIRED_STATE_PAYLOAD_TYPE,
  DsseError,
  isEnvelope,
  keyIdOf,
  loadPublicKeys,
  pae,
  signEnvelope,
  verifyEnvelope,
  type Envelope,
  type TrustedKey,
} from '../../src/trust/dsse.js';

const pair = () => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return { publicKey, privateKey, trusted: { keyId: keyIdOf(publicKey), publicKey } satisfies TrustedKey };
};
const T = DESIRED_STATE_PAYLOAD_TYPE;
const body = Buffer.from('{"apiVersion":"persys.dev/v1"}');
const reason = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DsseError, `expected a DsseError, got ${String(err)}`);
    return err.reason;
  }
  assert.fail('expected a throw');
};

describe('DSSE PAE', () => {
  it('matches the spec vector', () => {
    assert.equal(pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString(), 'DSSEv1 29 http://example.com/HelloWorld 11 hello world');
  });
  it('counts bytes, not characters, and handles empty parts', () => {
    assert.equal(pae('', Buffer.alloc(0)).toString(), 'DSSEv1 0  0 ');
    assert.equal(pae('é', Buffer.from('ü')).toString(), 'DSSEv1 2 é 2 ü');
  });
});

describe('DSSE sign / verify', () => {
  const a = pair();
  const b = pair();
  const c = pair();
  it('round-trips and reports the verifying key id', () => {
    const env = signEnvelope(body, T, [{ privateKey: a.privateKey }]);
    assert.ok(isEnvelope(env));
    assert.equal(env.signatures[0]?.keyid, a.trusted.keyId);
    const out = verifyEnvelope(JSON.parse(JSON.stringify(env)), [a.trusted], 1);
    assert.deepEqual(out.payload, body);
    assert.deepEqual(out.keyIds, [a.trusted.keyId]);
  });
  it('refuses a tampered payload', () => {
    const env = signEnvelope(body, T, [{ privateKey: a.privateKey }]);
    const tampered: Envelope = { ...env, payload: Buffer.from('{"apiVersion":"persys.dev/v2"}').toString('base64') };
    assert.equal(reason(() => verifyEnvelope(tampered, [a.trusted], 1)), 'below-threshold');
  });
  it('refuses a wrong payload type, even when the signature over it is valid', () => {
    const env = signEnvelope(body, 'application/json', [{ privateKey: a.privateKey }]);
    assert.equal(reason(() => verifyEnvelope(env, [a.trusted], 1)), 'wrong-payload-type');
    // Changing the type on a good envelope breaks the signature too (PAE covers it).
    const good = signEnvelope(body, T, [{ privateKey: a.privateKey }]);
    assert.equal(reason(() => verifyEnvelope({ ...good, payloadType: 'application/json' }, [a.trusted], 1)), 'wrong-payload-type');
  });
  it('refuses a key that is not trusted, whatever keyid it claims', () => {
    const env = signEnvelope(body, T, [{ privateKey: b.privateKey, keyId: a.trusted.keyId }]);
    assert.equal(reason(() => verifyEnvelope(env, [a.trusted], 1)), 'below-threshold');
  });
  it('ignores keyid: a trusted signature with a wrong or missing keyid counts', () => {
    const env = signEnvelope(body, T, [{ privateKey: a.privateKey, keyId: 'nonsense' }]);
    assert.deepEqual(verifyEnvelope(env, [a.trusted], 1).keyIds, [a.trusted.keyId]);
    const noId = { ...env, signatures: [{ sig: env.signatures[0]!.sig }] };
    assert.deepEqual(verifyEnvelope(noId, [a.trusted], 1).keyIds, [a.trusted.keyId]);
  });
  it('threshold 2 of 3 counts distinct trusted keys', () => {
    const trusted = [a.trusted, b.trusted, c.trusted];
    const one = signEnvelope(body, T, [{ privateKey: a.privateKey }]);
    assert.equal(reason(() => verifyEnvelope(one, trusted, 2)), 'below-threshold');
    const twice = { ...one, signatures: [one.signatures[0]!, { ...one.signatures[0]!, keyid: 'other' }] };
    assert.equal(reason(() => verifyEnvelope(twice, trusted, 2)), 'below-threshold');
    const two = signEnvelope(body, T, [{ privateKey: a.privateKey }, { privateKey: c.privateKey }]);
    assert.deepEqual(new Set(verifyEnvelope(two, trusted, 2).keyIds), new Set([a.trusted.keyId, c.trusted.keyId]));
    const withStranger = signEnvelope(body, T, [{ privateKey: a.privateKey }, { privateKey: pair().privateKey }]);
    assert.equal(reason(() => verifyEnvelope(withStranger, trusted, 2)), 'below-threshold');
  });
  it('accepts URL-safe and unpadded base64 for payload and signature', () => {
    const env = signEnvelope(Buffer.from('??>>~~ payload with + and / in base64 ~~'), T, [{ privateKey: a.privateKey }]);
    assert.match(env.payload + env.signatures[0]!.sig, /[+/]/);
    const urlSafe = (s: string) => s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const re = { ...env, payload: urlSafe(env.payload), signatures: [{ sig: urlSafe(env.signatures[0]!.sig) }] };
    assert.deepEqual(verifyEnvelope(re, [a.trusted], 1).payload.toString(), '??>>~~ payload with + and / in base64 ~~');
  });
  it('refuses text that is not base64 instead of skipping characters', () => {
    assert.throws(() => decodeBase64('ab$cd', 'x'), /x is not base64/);
    const env = signEnvelope(body, T, [{ privateKey: a.privateKey }]);
    assert.equal(reason(() => verifyEnvelope({ ...env, payload: `${env.payload}!` }, [a.trusted], 1)), 'bad-base64');
  });
  it('refuses what is not an envelope, and an envelope without signatures', () => {
    assert.equal(reason(() => verifyEnvelope({ apiVersion: 'persys.dev/v1' }, [a.trusted], 1)), 'not-an-envelope');
    assert.equal(reason(() => verifyEnvelope(null, [a.trusted], 1)), 'not-an-envelope');
    assert.equal(reason(() => verifyEnvelope({ payloadType: T, payload: '', signatures: [] }, [a.trusted], 1)), 'no-signatures');
    assert.equal(reason(() => verifyEnvelope({ payloadType: T, payload: '', signatures: [{ keyid: 'x' }] }, [a.trusted], 1)), 'not-an-envelope');
  });
});

describe('loadPublicKeys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'persys-dsse-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const a = pair();
  const pem = a.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  it('takes PEM strings and file paths, and lists a key once', () => {
    const file = join(dir, 'a.pub');
    writeFileSync(file, pem);
    const keys = loadPublicKeys([pem, file]);
    assert.equal(keys.length, 1);
    assert.equal(keys[0]?.keyId, a.trusted.keyId);
  });
  it('names the entry that is wrong', () => {
    assert.throws(() => loadPublicKeys([pem, join(dir, 'missing.pub')]), (e: unknown) => e instanceof ConfigError && /trust\.publicKeys\[1\]: neither a PEM/.test(e.message));
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.throws(() => loadPublicKeys([rsa]), /trust\.publicKeys\[0\]: key type rsa is not supported/);
    assert.throws(() => loadPublicKeys(['-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n']), /trust\.publicKeys\[0\]: not a PEM public key/);
  });
});
