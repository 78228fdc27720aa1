/**
 * Cost of the trust checks on a pulled document of 200 workloads, against JSON.parse of the same
 * unsigned body measured in the same run (the work every pull does anyway): DSSE verification with
 * one key, 2 of 3 keys, and the mix-and-match content comparison of a same-generation document.
 */
import { generateKeyPairSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import { checkFreshness, openSigned, type TrustSettings } from '../src/trust/desired-state-trust.js';
import { DESIRED_STATE_PAYLOAD_TYPE, keyIdOf, signEnvelope } from '../src/trust/dsse.js';
import { benchDocument, median, type Row } from './lib.js';

const WORKLOADS = 200;
const ROUNDS = 200;

function measure(fn: () => unknown): number {
  for (let i = 0; i < 20; i++) fn(); // warm-up
  const xs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t = performance.now();
    fn();
    xs.push(performance.now() - t);
  }
  return median(xs);
}

export async function benchTrust(): Promise<Row[]> {
  const doc = benchDocument('bench-node', WORKLOADS, 2);
  const body = Buffer.from(JSON.stringify(doc));
  const pairs = [0, 1, 2].map(() => generateKeyPairSync('ed25519'));
  const keys = pairs.map((p) => ({ keyId: keyIdOf(p.publicKey), publicKey: p.publicKey }));
  const one: TrustSettings = { keys: keys.slice(0, 1), threshold: 1, allowWildcardNode: false };
  const twoOfThree: TrustSettings = { keys, threshold: 2, allowWildcardNode: false };
  const env1 = JSON.parse(JSON.stringify(signEnvelope(body, DESIRED_STATE_PAYLOAD_TYPE, [{ privateKey: pairs[0]!.privateKey }]))) as unknown;
  const env2 = JSON.parse(JSON.stringify(signEnvelope(body, DESIRED_STATE_PAYLOAD_TYPE, [{ privateKey: pairs[1]!.privateKey }, { privateKey: pairs[2]!.privateKey }]))) as unknown;
  const stored = structuredClone(doc);

  const baselineMs = measure(() => JSON.parse(body.toString('utf8')));
  const baseline = { name: `JSON.parse of the unsigned body (${WORKLOADS} workloads, ${body.length} bytes)`, value: baselineMs };
  const verify1 = measure(() => openSigned(env1, one));
  const verify2 = measure(() => openSigned(env2, twoOfThree));
  const same = measure(() => checkFreshness(doc, stored, true, Date.now()));
  await Promise.resolve();
  return [
    { name: `openSigned: verify 1 signature + decode + JSON.parse, ${WORKLOADS} workloads`, value: verify1, unit: 'ms', baseline },
    { name: `openSigned: threshold 2 of 3 keys, ${WORKLOADS} workloads`, value: verify2, unit: 'ms', baseline },
    { name: `checkFreshness: same-generation content comparison, ${WORKLOADS} workloads`, value: same, unit: 'ms', baseline },
  ];
}
