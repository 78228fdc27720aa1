import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors/index.js';
import { checkUrlAllowed, createHttpClient, expandNodeIdTemplate, isLoopbackHost, redactUrl, UrlNotAllowedError } from '../../src/sync/http-client.js';

type Row = [url: string, allowInsecureHttp: boolean, expected: 'ok' | RegExp];

const TABLE: Row[] = [
  ['https://fleet.example.com/fleet/nodes/a.json', false, 'ok'],
  ['https://10.0.0.1:8443/x', false, 'ok'],
  ['http://127.0.0.1:8080/x', false, 'ok'],
  ['http://127.1.2.3/x', false, 'ok'],
  ['http://127.255.255.254/x', false, 'ok'],
  ['http://localhost:9000/x', false, 'ok'],
  ['http://LOCALHOST/x', false, 'ok'],
  ['http://[::1]:8080/x', false, 'ok'],
  ['http://[::ffff:127.0.0.1]/x', false, 'ok'],
  // WHATWG URL normalises these to 127.0.0.1: still loopback.
  ['http://2130706433/x', false, 'ok'],
  ['http://0x7f.1/x', false, 'ok'],
  ['http://10.0.0.1/x', false, /plain http:\/\/ is only allowed to loopback.*source\.allowInsecureHttp/],
  ['http://10.0.0.1/x', true, 'ok'],
  ['http://fleet.example.com/x', false, /only allowed to loopback/],
  ['http://fleet.example.com/x', true, 'ok'],
  ['http://128.0.0.1/x', false, /only allowed to loopback/],
  ['http://126.255.255.255/x', false, /only allowed to loopback/],
  ['http://localhost.evil.example/x', false, /only allowed to loopback/],
  ['http://127.0.0.1.nip.io/x', false, /only allowed to loopback/],
  ['http://foo.localhost/x', false, /only allowed to loopback/],
  ['http://[::2]/x', false, /only allowed to loopback/],
  ['http://[::ffff:10.0.0.1]/x', false, /only allowed to loopback/],
  ['http://0.0.0.0/x', false, /only allowed to loopback/],
  ['file:///etc/persys/desired.json', false, 'ok'],
  ['file://localhost/etc/persys/desired.json', false, 'ok'],
  ['file://fileserver/share/desired.json', false, /must name a local path/],
  ['ftp://fleet.example.com/x', false, /unsupported URL scheme ftp:/],
  ['ftp://fleet.example.com/x', true, /unsupported URL scheme ftp:/],
  ['https://user:secret@fleet.example.com/x', false, /credentials in the URL are not supported.*source\.tokenFile/],
  ['not a url', false, /not a valid URL/],
  ['', false, /not a valid URL/],
];

describe('checkUrlAllowed', () => {
  for (const [url, allow, expected] of TABLE) {
    it(`${JSON.stringify(url)} allowInsecureHttp=${allow} -> ${expected === 'ok' ? 'allowed' : 'rejected'}`, () => {
      if (expected === 'ok') {
        assert.doesNotThrow(() => checkUrlAllowed(url, allow));
      } else {
        assert.throws(
          () => checkUrlAllowed(url, allow),
          (err: unknown) => err instanceof UrlNotAllowedError && expected.test(err.message),
        );
      }
    });
  }

  it('never echoes credentials in its message', () => {
    assert.throws(
      () => checkUrlAllowed('https://user:hunter2@fleet.example.com/x', false),
      (err: unknown) => err instanceof Error && !err.message.includes('hunter2'),
    );
  });
});

describe('isLoopbackHost', () => {
  it('knows the loopback names and ranges', () => {
    for (const h of ['localhost', '127.0.0.1', '127.9.9.9', '[::1]', '::1']) assert.equal(isLoopbackHost(h), true, h);
    for (const h of ['10.0.0.1', 'example.com', '[::]', '::', '128.0.0.1', 'localhost.com']) assert.equal(isLoopbackHost(h), false, h);
  });
});

describe('expandNodeIdTemplate / redactUrl', () => {
  it('URL-encodes the node id', () => {
    assert.equal(expandNodeIdTemplate('https://h/fleet/nodes/{nodeId}.json', 'edge 7/x'), 'https://h/fleet/nodes/edge%207%2Fx.json');
    assert.equal(expandNodeIdTemplate('https://h/{nodeId}/{nodeId}', 'a'), 'https://h/a/a');
    assert.equal(expandNodeIdTemplate('https://h/static.json', 'a'), 'https://h/static.json');
  });
  it('drops userinfo and query from logged URLs', () => {
    assert.equal(redactUrl(new URL('https://u:p@h/x?token=abc')), 'https://h/x?%E2%80%A6');
  });
});

describe('createHttpClient', () => {
  it('names the config key of an unreadable file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-http-'));
    try {
      const present = join(dir, 'present.pem');
      await writeFile(present, 'x');
      for (const key of ['caFile', 'certFile', 'keyFile', 'tokenFile'] as const) {
        const opts = { allowInsecureHttp: false, timeoutMs: 1000, [key]: join(dir, 'missing.pem') };
        // mTLS needs both files: give the partner an existing one so the missing one is named.
        if (key === 'certFile') Object.assign(opts, { keyFile: present });
        if (key === 'keyFile') Object.assign(opts, { certFile: present });
        assert.throws(
          () => createHttpClient(opts),
          (err: unknown) => err instanceof ConfigError && err.message.includes(`source.${key}: cannot read`) && err.message.includes('ENOENT'),
          key,
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('needs certFile and keyFile together', () => {
    assert.throws(() => createHttpClient({ allowInsecureHttp: false, timeoutMs: 1000, certFile: '/x' }), /source\.certFile is set but source\.keyFile is not/);
  });

  it('rejects an empty token file and trims the token', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'persys-http-'));
    try {
      const tokenFile = join(dir, 'token');
      await writeFile(tokenFile, '  \n');
      assert.throws(() => createHttpClient({ allowInsecureHttp: false, timeoutMs: 1000, tokenFile }), /source\.tokenFile: .* is empty/);
      await writeFile(tokenFile, '  s3cret\n');
      const client = createHttpClient({ allowInsecureHttp: false, timeoutMs: 1000, tokenFile });
      assert.equal(await client.authorization(), 'Bearer s3cret');
      await client.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a forbidden URL before opening any connection', async () => {
    const client = createHttpClient({ allowInsecureHttp: false, timeoutMs: 1000 });
    const ac = new AbortController();
    await assert.rejects(
      client.request(new URL('http://10.0.0.1/x'), { method: 'GET', signal: ac.signal }, async () => undefined),
      UrlNotAllowedError,
    );
    assert.equal(client.agentCount, 0);
    await client.close();
  });
});
