import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HttpClient, RedirectRefusedError } from '../../src/sync/http-client.js';
import { createSyncClients } from '../../src/sync/sync-clients.js';
import { loadConfig } from '../../src/config/load.js';

/** A loopback server whose answers the test programs and which records the Authorization header of each request. */
async function server(host: string, answer: (req: http.IncomingMessage, res: http.ServerResponse) => void) {
  const seen: { path: string; auth: string | undefined }[] = [];
  const srv = http.createServer((req, res) => {
    seen.push({ path: req.url ?? '', auth: req.headers.authorization });
    req.resume();
    answer(req, res);
  });
  await new Promise<void>((resolve) => srv.listen(0, host, resolve));
  const port = (srv.address() as AddressInfo).port;
  return { seen, origin: `http://${host}:${port}`, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

const get = async (client: HttpClient, url: string) =>
  client.request(new URL(url), { method: 'GET', signal: AbortSignal.timeout(5000) }, async (res) => {
    await res.body.text();
    return res.statusCode;
  });

describe('HttpClient credentials and redirects', () => {
  const dir = mkdtempSync(join(tmpdir(), 'persys-cred-'));
  const tokenFile = join(dir, 'token');
  let token = 't1';
  let main: Awaited<ReturnType<typeof server>>;
  let other: Awaited<ReturnType<typeof server>>;
  let redirectTo = '';
  before(async () => {
    other = await server('127.0.0.2', (_req, res) => res.end('other'));
    main = await server('127.0.0.1', (req, res) => {
      if (req.url?.startsWith('/redirect')) {
        res.writeHead(302, { location: redirectTo }).end();
        return;
      }
      if (req.url === '/post307') {
        res.writeHead(307, { location: '/ok' }).end();
        return;
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        res.writeHead(401).end('no');
        return;
      }
      res.end('ok');
    });
  });
  after(async () => {
    await main.close();
    await other.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('uses a token rotated on disk on the next request, without a restart', async () => {
    writeFileSync(tokenFile, 't1\n');
    const client = new HttpClient({ tokenFile, allowInsecureHttp: false, timeoutMs: 5000 });
    assert.equal(await get(client, `${main.origin}/a`), 200);
    token = 't2';
    // Rotation by rename, the way a credential manager replaces files.
    writeFileSync(join(dir, 'token.new'), 't2\n');
    renameSync(join(dir, 'token.new'), tokenFile);
    assert.equal(await get(client, `${main.origin}/a`), 200);
    assert.equal(main.seen.at(-1)?.auth, 'Bearer t2');
    await client.close();
  });

  it('a 401 re-reads the token file once and repeats the request with the new token', async () => {
    token = 't3';
    writeFileSync(tokenFile, 't2\n');
    const client = new HttpClient({ tokenFile, allowInsecureHttp: false, timeoutMs: 5000 });
    main.seen.length = 0;
    assert.equal(await get(client, `${main.origin}/b`), 401); // file still says t2: one re-read, same token, the 401 stands
    assert.equal(main.seen.length, 1);
    // Same size and (possibly) same mtime as before: only the 401 makes the client look again.
    writeFileSync(tokenFile, 't3\n');
    main.seen.length = 0;
    assert.equal(await get(client, `${main.origin}/b`), 200);
    assert.deepEqual(main.seen.map((s) => s.auth).at(-1), 'Bearer t3');
    assert.ok(main.seen.length <= 2, `at most one repeat, got ${main.seen.length} requests`);
    await client.close();
  });

  it('follows a redirect to another host without the token', async () => {
    writeFileSync(tokenFile, `${token}\n`);
    const client = new HttpClient({ tokenFile, allowInsecureHttp: false, timeoutMs: 5000 });
    redirectTo = `${other.origin}/landing`;
    other.seen.length = 0;
    assert.equal(await get(client, `${main.origin}/redirect`), 200);
    assert.equal(other.seen.length, 1);
    assert.equal(other.seen[0]?.auth, undefined);
    assert.equal(main.seen.at(-1)?.auth, `Bearer ${token}`);
    // A redirect back to the first origin carries the token again (it is that host's own token).
    redirectTo = `${main.origin}/ok`;
    assert.equal(await get(client, `${main.origin}/redirect2`), 200);
    assert.equal(main.seen.at(-1)?.auth, `Bearer ${token}`);
    await client.close();
  });

  it('refuses more than 3 redirects, another scheme, and a redirect without Location', async () => {
    const client = new HttpClient({ allowInsecureHttp: false, timeoutMs: 5000 });
    redirectTo = `${main.origin}/redirect-loop`;
    main.seen.length = 0;
    await assert.rejects(get(client, `${main.origin}/redirect`), (e: unknown) => e instanceof RedirectRefusedError && /more than 3 redirects/.test(e.message));
    assert.equal(main.seen.length, 4);
    redirectTo = 'https://127.0.0.1:1/x';
    await assert.rejects(get(client, `${main.origin}/redirect`), /redirect from http:\/\/ to https:\/\/ refused \(same scheme only\)/);
    redirectTo = 'file:///etc/passwd';
    await assert.rejects(get(client, `${main.origin}/redirect`), /same scheme only/);
    redirectTo = 'http://192.0.2.1/x'; // plain http off loopback: the URL rule applies to every hop
    await assert.rejects(get(client, `${main.origin}/redirect`), /redirect refused: .*only allowed to loopback/);
    await client.close();
  });

  it('a POST follows 307 (method and body kept) but not 302', async () => {
    writeFileSync(tokenFile, `${token}\n`);
    const client = new HttpClient({ tokenFile, allowInsecureHttp: false, timeoutMs: 5000 });
    const post = (path: string) =>
      client.request(new URL(`${main.origin}${path}`), { method: 'POST', body: '{}', signal: AbortSignal.timeout(5000) }, async (res) => {
        await res.body.text();
        return res.statusCode;
      });
    assert.equal(await post('/post307'), 200);
    redirectTo = `${main.origin}/ok`;
    assert.equal(await post('/redirect'), 302);
    await client.close();
  });

  it('status credentials: own keys, or source keys only for the same origin', () => {
    writeFileSync(tokenFile, 'x\n');
    const statusToken = join(dir, 'status-token');
    writeFileSync(statusToken, 'y\n');
    const cfg = (extra: Record<string, unknown>) => loadConfig({ env: {}, flags: {}, ...extra });
    const c1 = cfg({ flags: { 'source.tokenFile': tokenFile } });
    // Other origin and no status.tokenFile: no token for status.
    const a = createSyncClients(c1, 'https://a.example/x', 'https://b.example/s');
    const b = createSyncClients(c1, 'https://a.example/x', 'https://a.example/s');
    return Promise.all([a.status.authorization(), b.status.authorization(), a.source.authorization()]).then(async ([sa, sb, src]) => {
      assert.equal(sa, undefined);
      assert.equal(sb, 'Bearer x');
      assert.equal(src, 'Bearer x');
      const c2 = cfg({ flags: { 'source.tokenFile': tokenFile, 'status.tokenFile': statusToken } });
      const c = createSyncClients(c2, 'https://a.example/x', 'https://b.example/s');
      assert.equal(await c.status.authorization(), 'Bearer y');
      for (const x of [a, b, c]) await Promise.all([x.source.close(), x.status.close()]);
    });
  });
});

describe('config keys of trust, status credentials and policy', () => {
  it('are read from env, with status paths made absolute', () => {
    const c = loadConfig({
      env: {
        PERSYS_TRUST_THRESHOLD: '2',
        PERSYS_TRUST_ALLOW_WILDCARD_NODE: 'true',
        PERSYS_STATUS_TOKEN_FILE: 'rel/token',
        PERSYS_STATUS_CA_FILE: '/etc/ca.pem',
        PERSYS_POLICY_ALLOWED_CAPABILITIES: '["NET_ADMIN"]',
        PERSYS_POLICY_ALLOWED_REGISTRIES: '["127.0.0.1:5000"]',
        PERSYS_POLICY_ALLOWED_BRIDGES: '["br0"]',
        PERSYS_POLICY_ALLOW_UNCONFINED_SECCOMP: 'true',
      },
      flags: {},
      cwd: '/srv/x',
    });
    assert.equal(c.trust.threshold, 2);
    assert.equal(c.trust.allowWildcardNode, true);
    assert.equal(c.status.tokenFile, '/srv/x/rel/token');
    assert.equal(c.status.caFile, '/etc/ca.pem');
    assert.deepEqual(c.policy.allowedCapabilities, ['NET_ADMIN']);
    assert.deepEqual(c.policy.allowedRegistries, ['127.0.0.1:5000']);
    assert.deepEqual(c.policy.allowedBridges, ['br0']);
    assert.equal(c.policy.allowUnconfinedSeccomp, true);
    assert.equal(c.policy.allowedNetworks, undefined);
  });
  it('refuse bad values, naming the key', () => {
    assert.throws(() => loadConfig({ env: { PERSYS_TRUST_THRESHOLD: '0' }, flags: {} }), /trust\.threshold: .*at least 1/);
    assert.throws(() => loadConfig({ env: { PERSYS_POLICY_ALLOWED_HOST_PATH_PREFIXES: '["relative"]' }, flags: {} }), /policy\.allowedHostPathPrefixes/);
    assert.throws(() => loadConfig({ env: { PERSYS_POLICY_ALLOWED_CAPABILITIES: '["sys_admin"]' }, flags: {} }), /policy\.allowedCapabilities/);
  });
});
