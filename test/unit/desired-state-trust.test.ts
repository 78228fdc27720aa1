import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { ConfigError, SourceError } from '../../src/errors/index.js';
import type { DesiredStateDocument } from '../../src/spec/desired-state.js';
import { buildStatusReport } from '../../src/status/build-report.js';
import type { StoreData } from '../../src/store/types.js';
import { DesiredStateSource } from '../../src/sync/source.js';
import { checkFreshness, checkWildcardNode, isExpired, openSigned, type TrustSettings } from '../../src/trust/desired-state-trust.js';
import { DESIRED_STATE_PAYLOAD_TYPE, keyIdOf, signEnvelope } from '../../src/trust/dsse.js';
import { trustSettingsFrom } from '../../src/trust/settings.js';
import { parseDuration } from '../../src/cli/trust-commands.js';

const NOW = Date.parse('2030-06-01T12:00:00Z');
const doc = (generation: number, extra: Partial<DesiredStateDocument> = {}): DesiredStateDocument => ({
  apiVersion: 'persys.dev/v1',
  kind: 'DesiredState',
  nodeId: 'n1',
  generation,
  workloads: [{ id: 'web', type: 'container', spec: { image: 'nginx:1' } }],
  ...extra,
}) as DesiredStateDocument;
const other = (generation: number) => doc(generation, { workloads: [{ id: 'web', type: 'container', spec: { image: 'nginx:2' } }] } as Partial<DesiredStateDocument>);
const codeOf = (fn: () => unknown): string => {
  try {
    fn();
    return 'accepted';
  } catch (err) {
    assert.ok(err instanceof SourceError, String(err));
    return err.code;
  }
};

describe('rollback / mix-and-match / expiry table', () => {
  const past = '2030-06-01T11:59:59Z';
  const future = '2030-06-02T00:00:00Z';
  const rows: [string, DesiredStateDocument, DesiredStateDocument | null, boolean, string][] = [
    ['first document', doc(1), null, true, 'newer'],
    ['first document, unsigned', doc(1), null, false, 'newer'],
    ['higher generation', doc(5), doc(4), true, 'newer'],
    ['lower generation, signed', doc(3), doc(4), true, 'DESIRED_STATE_STALE'],
    ['lower generation, unsigned', doc(3), doc(4), false, 'DESIRED_STATE_STALE'],
    ['generation 0 after 1', doc(0), doc(1), true, 'DESIRED_STATE_STALE'],
    ['same generation, same content, signed', doc(4), doc(4), true, 'same'],
    ['same generation, same content, key order differs', { ...doc(4), workloads: doc(4).workloads, generation: 4 }, JSON.parse(JSON.stringify(doc(4))) as DesiredStateDocument, true, 'same'],
    ['same generation, other content, signed (mix-and-match)', other(4), doc(4), true, 'DESIRED_STATE_STALE'],
    ['same generation, other labels, signed', doc(4, { labels: { a: 'b' } }), doc(4), true, 'DESIRED_STATE_STALE'],
    ['same generation, other expiresAt, signed', doc(4, { expiresAt: future }), doc(4), true, 'DESIRED_STATE_STALE'],
    ['same generation, other content, unsigned (typo fix)', other(4), doc(4), false, 'newer'],
    ['expired, first document', doc(1, { expiresAt: past }), null, true, 'DESIRED_STATE_EXPIRED'],
    ['expired, higher generation', doc(5, { expiresAt: past }), doc(4), true, 'DESIRED_STATE_EXPIRED'],
    ['expires exactly now', doc(5, { expiresAt: new Date(NOW).toISOString() }), doc(4), true, 'DESIRED_STATE_EXPIRED'],
    ['expired, unsigned', doc(5, { expiresAt: past }), doc(4), false, 'DESIRED_STATE_EXPIRED'],
    ['not yet expired', doc(5, { expiresAt: future }), doc(4), true, 'newer'],
    ['expired and older: rollback wins', doc(3, { expiresAt: past }), doc(4), true, 'DESIRED_STATE_STALE'],
    ['the expired document in force seen again', doc(4, { expiresAt: past }), doc(4, { expiresAt: past }), true, 'same'],
    ['expiresAt with an offset', doc(5, { expiresAt: '2030-06-01T13:30:00+02:00' }), doc(4), true, 'DESIRED_STATE_EXPIRED'],
  ];
  for (const [name, d, stored, signed, want] of rows) {
    it(name, () => {
      let got: string;
      try {
        got = checkFreshness(d, stored, signed, NOW);
      } catch (err) {
        assert.ok(err instanceof SourceError);
        got = err.code;
      }
      assert.equal(got, want);
    });
  }
  it('isExpired', () => {
    assert.equal(isExpired(doc(1, { expiresAt: past }), NOW), true);
    assert.equal(isExpired(doc(1, { expiresAt: future }), NOW), false);
    assert.equal(isExpired(doc(1), NOW), false);
    assert.equal(isExpired(null, NOW), false);
  });
});

describe('wildcard node and envelopes', () => {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const trust: TrustSettings = { keys: [{ keyId: keyIdOf(publicKey), publicKey }], threshold: 1, allowWildcardNode: false };
  const star = doc(1, { nodeId: '*' });
  it('"*" in a signed document needs trust.allowWildcardNode, even from a file', () => {
    assert.match(String(codeOf(() => checkWildcardNode(star, true, true, false, 'n1'))), /DESIRED_STATE_INVALID/);
    assert.equal(codeOf(() => checkWildcardNode(star, true, false, true, 'n1')), 'accepted');
    assert.equal(codeOf(() => checkWildcardNode(star, false, true, false, 'n1')), 'accepted');
    assert.equal(codeOf(() => checkWildcardNode(star, false, false, false, 'n1')), 'DESIRED_STATE_INVALID');
  });
  it('openSigned: unsigned with trust is SIGNATURE_INVALID; an envelope without trust is refused', () => {
    assert.equal(codeOf(() => openSigned(doc(1), trust)), 'SIGNATURE_INVALID');
    const env = signEnvelope(Buffer.from(JSON.stringify(doc(1))), DESIRED_STATE_PAYLOAD_TYPE, [{ privateKey }]);
    assert.equal(codeOf(() => openSigned(env, undefined)), 'DESIRED_STATE_INVALID');
    const opened = openSigned(env, trust);
    assert.deepEqual(opened.signedBy, [trust.keys[0]!.keyId]);
    assert.equal((opened.payload as DesiredStateDocument).generation, 1);
    const notJson = signEnvelope(Buffer.from('{nope'), DESIRED_STATE_PAYLOAD_TYPE, [{ privateKey }]);
    assert.equal(codeOf(() => openSigned(notJson, trust)), 'DESIRED_STATE_INVALID');
  });
  it('trust settings: threshold above the keys, or trust keys without keys, refused at start', () => {
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.equal(trustSettingsFrom({ trust: { publicKeys: [], threshold: 1, allowWildcardNode: false } }), undefined);
    assert.throws(() => trustSettingsFrom({ trust: { publicKeys: [pem, pem], threshold: 2, allowWildcardNode: false } }), (e: unknown) => e instanceof ConfigError && /trust\.threshold: 2 is more than the 1 distinct key/.test(e.message));
    assert.throws(() => trustSettingsFrom({ trust: { publicKeys: [], threshold: 2, allowWildcardNode: false } }), /trust\.publicKeys is empty/);
    assert.equal(trustSettingsFrom({ trust: { publicKeys: [pem], threshold: 1, allowWildcardNode: true } })?.allowWildcardNode, true);
  });
  it('sign --expires durations', () => {
    assert.equal(parseDuration('24h'), 86_400_000);
    assert.equal(parseDuration('90m'), 5_400_000);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.throws(() => parseDuration('1 week'), /not a duration/);
  });
});

describe('DesiredStateSource with trust (file://)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'persys-trust-src-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const trust: TrustSettings = { keys: [{ keyId: keyIdOf(publicKey), publicKey }], threshold: 1, allowWildcardNode: false };
  const file = join(dir, 'd.json');
  let stored: DesiredStateDocument | null = null;
  const source = new DesiredStateSource({ url: pathToFileURL(file).href, maxBodyBytes: 1 << 20, trust, storedDocument: () => stored, now: () => NOW });
  const pull = async (body: unknown) => {
    writeFileSync(file, JSON.stringify(body));
    try {
      const r = await source.pull({ currentEtag: null, storedGeneration: stored?.generation ?? null, nodeId: 'n1', signal: AbortSignal.timeout(5000) });
      if (r.kind === 'updated') stored = r.document;
      return r.kind === 'updated' ? `ok ${r.document.generation} ${r.signedBy.length}` : r.kind;
    } catch (err) {
      assert.ok(err instanceof SourceError, String(err));
      return err.code;
    }
  };
  const signed = (d: unknown) => signEnvelope(Buffer.from(JSON.stringify(d)), DESIRED_STATE_PAYLOAD_TYPE, [{ privateKey }]);
  it('applies signed documents and refuses every attack in turn', async () => {
    assert.equal(await pull(signed(doc(2))), 'ok 2 1');
    assert.equal(await pull(doc(3)), 'SIGNATURE_INVALID');
    const tampered = { ...signed(doc(3)), payload: Buffer.from(JSON.stringify(other(3))).toString('base64') };
    assert.equal(await pull(tampered), 'SIGNATURE_INVALID');
    assert.equal(await pull(signed(doc(1))), 'DESIRED_STATE_STALE');
    assert.equal(await pull(signed(other(2))), 'DESIRED_STATE_STALE');
    assert.equal(await pull(signed(doc(3, { expiresAt: '2030-01-01T00:00:00Z' }))), 'DESIRED_STATE_EXPIRED');
    assert.equal(await pull(signed(doc(3, { nodeId: '*' }))), 'DESIRED_STATE_INVALID');
    assert.equal(await pull(signed(doc(3, { nodeId: 'n2' }))), 'DESIRED_STATE_INVALID');
    assert.equal(await pull(signed({ ...doc(3), workloads: 'x' })), 'DESIRED_STATE_INVALID');
    assert.equal(stored?.generation, 2);
    assert.equal(await pull(signed(doc(3, { expiresAt: '2031-01-01T00:00:00Z' }))), 'ok 3 1');
  });
});

describe('status report: expiry and signers', () => {
  it('says when the document in force has expired, and who signed it', () => {
    const data = {
      schemaVersion: 1,
      nodeId: 'n1',
      desired: { document: doc(4, { expiresAt: '2000-01-01T00:00:00Z' }), etag: null, receivedAt: 'x', source: 'y', signedBy: ['abc'] },
      records: {},
      sync: { lastPullAt: null, lastSuccessAt: null, lastError: null },
      reporter: { seq: 0 },
    } as unknown as StoreData;
    const r = buildStatusReport({ nodeId: 'n1', seq: 1, agentVersion: 't', hostname: 'h', data, runtimes: {}, now: new Date() });
    assert.equal(r.sync.desiredExpired, true);
    assert.equal(r.sync.desiredExpiresAt, '2000-01-01T00:00:00Z');
    assert.deepEqual(r.sync.signedBy, ['abc']);
  });
});
