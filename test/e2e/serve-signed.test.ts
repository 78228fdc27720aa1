/**
 * `serve --require-signed` with the built CLI: only DSSE envelopes signed by a --trust-key are
 * published; what is served is the envelope itself, which `verify` accepts as an agent would.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, cliToken, desiredDoc, httpClientFor, ServeProcess } from '../helpers/serve-process.js';
import { makeThrowawayCa, type ThrowawayPki } from '../helpers/tls.js';

describe('serve --require-signed (built CLI, HTTPS)', { timeout: 120_000 }, () => {
  const nodeId = `e2e-serve-signed-${randomBytes(3).toString('hex')}`;
  let dir: string;
  let pki: ThrowawayPki;
  let serve: ServeProcess;
  let http: ReturnType<typeof httpClientFor>;
  let common: string[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-serve-signed-'));
    pki = await makeThrowawayCa(dir);
    http = httpClientFor(await readFile(pki.caCert));
    for (const name of ['good', 'other']) {
      const k = await cli(['keygen', '--out', join(dir, name)]);
      assert.equal(k.code, 0, k.stderr);
    }
    const serveDir = join(dir, 'serve');
    await writeFile(join(dir, 'admin.token'), await cliToken(serveDir, '--admin'), { mode: 0o600 });
    serve = await ServeProcess.start([
      '--dir', serveDir, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey,
      '--require-signed', '--trust-key', join(dir, 'good', 'signing.pub'),
    ]);
    common = ['--server', serve.url, '--token', join(dir, 'admin.token'), '--ca', pki.caCert];
  });

  after(async () => {
    await serve?.stop().catch(() => undefined);
    await http?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const sign = async (key: string, doc: unknown, out: string) => {
    await writeFile(`${out}.doc.json`, JSON.stringify(doc));
    const s = await cli(['sign', '--key', join(dir, key, 'signing.key'), '--out', out, `${out}.doc.json`]);
    assert.equal(s.code, 0, s.stderr);
    return out;
  };

  it('refuses an unsigned document, one signed by an untrusted key and a tampered one; publishes a signed one', async () => {
    const unsigned = join(dir, 'unsigned.json');
    await writeFile(unsigned, JSON.stringify(desiredDoc(nodeId, 1)));
    const r1 = await cli(['publish', ...common, unsigned]);
    assert.equal(r1.code, 1);
    assert.match(r1.stderr, /refused \(400\).*signature/);

    const r2 = await cli(['publish', ...common, await sign('other', desiredDoc(nodeId, 1), join(dir, 'other.env.json'))]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /refused \(400\).*signature: no signature verifies under a trusted key/);

    const good = await sign('good', desiredDoc(nodeId, 2), join(dir, 'good.env.json'));
    const envelope = JSON.parse(await readFile(good, 'utf8')) as { payload: string };
    const tampered = join(dir, 'tampered.env.json');
    const payload = Buffer.from(envelope.payload, 'base64').toString('utf8').replace('"generation":2', '"generation":3');
    await writeFile(tampered, JSON.stringify({ ...envelope, payload: Buffer.from(payload).toString('base64') }));
    const r3 = await cli(['publish', ...common, tampered]);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /refused \(400\).*signature/);

    const ok = await cli(['publish', ...common, good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`published: node ${nodeId} generation 2`));

    const admin = (await readFile(join(dir, 'admin.token'), 'utf8')).trim();
    const served = await http.call('GET', `${serve.url}/v1/nodes/${nodeId}/desired`, { token: admin });
    assert.equal(served.status, 200);
    const servedFile = join(dir, 'served.json');
    await writeFile(servedFile, served.text);
    const v = await cli(['verify', '--key', join(dir, 'good', 'signing.pub'), servedFile]);
    assert.equal(v.code, 0, `the served envelope verifies as an agent would: ${v.stderr}`);
  });

  it('refuses to start with --require-signed but no --trust-key', async () => {
    const r = await cli(['serve', '--dir', join(dir, 'serve2'), '--listen', '127.0.0.1:0', '--require-signed']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--require-signed needs --trust-key/);
  });
});
