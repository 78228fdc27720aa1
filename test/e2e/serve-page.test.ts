/**
 * The fleet overview page in a real browser: Debian's headless Chromium, driven by playwright-core
 * (no browser download), against `serve` over HTTPS that 5 simulated nodes report to, one of them
 * with a failing workload. A screenshot is saved under test-output/serve-page/.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { requireEngine } from '../helpers/engines.js';
import { cliToken, desiredDoc, httpClientFor, ServeProcess, statusReportFor } from '../helpers/serve-process.js';
import { makeThrowawayCa } from '../helpers/tls.js';

const skip = await requireEngine('chromium');
const OUTPUT_DIR = process.env.PERSYS_TEST_OUTPUT_DIR ?? fileURLToPath(new URL('../../test-output/serve-page/', import.meta.url));

describe('serve: the overview page in headless Chromium', { skip, timeout: 120_000 }, () => {
  const run = randomBytes(3).toString('hex');
  const nodes = [1, 2, 3, 4, 5].map((i) => `page-${run}-n${i}`);
  const failingNode = nodes[2] as string;
  const behindNode = nodes[4] as string;
  let dir: string;
  let serve: ServeProcess;
  let http: ReturnType<typeof httpClientFor>;
  let admin: string;
  let nodeToken: string;
  let browser: Browser | undefined;

  const running = (id: string) => ({ id, type: 'container', revision: '1', desiredState: 'running', actualState: 'running', phase: 'Running', message: 'running' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-serve-page-'));
    const pki = await makeThrowawayCa(dir);
    http = httpClientFor(await readFile(pki.caCert));
    const serveDir = join(dir, 'serve');
    admin = await cliToken(serveDir, '--admin');
    const tokens = new Map<string, string>();
    for (const n of nodes) tokens.set(n, await cliToken(serveDir, n));
    nodeToken = tokens.get(nodes[0] as string) as string;
    serve = await ServeProcess.start(['--dir', serveDir, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--heartbeat-seconds', '60']);
    for (const n of nodes) {
      assert.equal((await http.call('PUT', `${serve.url}/v1/nodes/${n}/desired`, { token: admin, body: JSON.stringify(desiredDoc(n, n === behindNode ? 4 : 3)) })).status, 200);
      const workloads =
        n === failingNode
          ? [
              running('web'),
              {
                id: 'api',
                type: 'container',
                revision: '2',
                desiredState: 'running',
                actualState: 'missing',
                phase: 'BackingOff',
                message: 'pulling registry.local/api:2 failed',
                error: { code: 'IMAGE_PULL_FAILED', message: 'manifest for registry.local/api:2 not found', userMessage: 'The image could not be pulled.', transient: true },
                retry: { attempts: 3, nextRetryAt: new Date(Date.now() + 30_000).toISOString(), gaveUp: false },
              },
            ]
          : [running('web'), running('db')];
      // Each node reports with its own token, as an agent does.
      const res = await http.call('POST', `${serve.url}/v1/nodes/${n}/status`, { token: tokens.get(n) as string, body: JSON.stringify(statusReportFor(n, 1, 3, workloads)) });
      assert.equal(res.status, 200, res.text);
    }
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await serve?.stop().catch(() => undefined);
    await http?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('asks a browser for the admin token (401 with a Basic challenge) and refuses a node token (403)', async () => {
    // Headless Chromium cannot answer a credentials prompt, so the browser context's own request API checks the answer.
    const anon = await browser!.newContext({ ignoreHTTPSErrors: true });
    const asNode = await browser!.newContext({ ignoreHTTPSErrors: true, httpCredentials: { username: 'n', password: nodeToken } });
    try {
      const res = await anon.request.get(`${serve.url}/`);
      assert.equal(res.status(), 401);
      assert.match(res.headers()['www-authenticate'] ?? '', /^Basic /);
      assert.equal((await asNode.request.get(`${serve.url}/`)).status(), 403);
    } finally {
      await anon.close();
      await asNode.close();
    }
  });

  it('shows the failing node and its error code; filters and a click on a node work', async () => {
    // The page is behind the admin token; a browser sends it as the Basic password.
    const ctx = await browser!.newContext({ ignoreHTTPSErrors: true, httpCredentials: { username: 'admin', password: admin }, viewport: { width: 1280, height: 720 } });
    try {
      const page = await ctx.newPage();
      const res = await page.goto(`${serve.url}/`);
      assert.equal(res?.status(), 200);
      const failingRow = page.locator(`tr.node.failing#node-${failingNode}`);
      assert.equal(await failingRow.count(), 1, 'the failing node has a red row');
      assert.ok(await failingRow.isVisible());
      assert.match(await failingRow.innerText(), /IMAGE_PULL_FAILED/);
      assert.equal(await page.locator('tr.node.failing').count(), 1, 'only one node is failing');
      assert.equal(await page.locator(`tr.node.behind#node-${behindNode}`).count(), 1, 'the node behind its published generation is marked');
      assert.equal(await page.locator('tr.node.ok').count(), 3);
      // One click on the failing node opens its workloads and the exact runtime error.
      await failingRow.click({ position: { x: 400, y: 10 } });
      assert.notEqual(await page.locator(`#node-${failingNode} details`).getAttribute('open'), null, 'the details are open');
      assert.ok(await page.getByText('manifest for registry.local/api:2 not found').isVisible());
      await mkdir(OUTPUT_DIR, { recursive: true });
      const shot = join(OUTPUT_DIR, 'overview.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`# screenshot: ${shot}`);
      // The "failing" filter (script) hides every other node.
      await page.locator('nav a[data-filter="failing"]').click();
      assert.equal(await page.locator('tbody[data-node]:visible').count(), 1);
      assert.ok(await page.locator(`tbody[data-node="${failingNode}"]`).isVisible());
      await page.screenshot({ path: join(OUTPUT_DIR, 'overview-failing.png'), fullPage: true });
    } finally {
      await ctx.close();
    }
  });

  it('reads without JavaScript: the error code is in the HTML and the filters are links', async () => {
    const ctx = await browser!.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false, httpCredentials: { username: 'admin', password: admin } });
    try {
      const page = await ctx.newPage();
      await page.goto(`${serve.url}/?filter=behind`);
      assert.equal(await page.locator('tbody[data-node]').count(), 1);
      assert.ok(await page.locator(`tbody[data-node="${behindNode}"]`).isVisible());
      await page.goto(`${serve.url}/?filter=failing`);
      assert.match(await page.locator(`tr#node-${failingNode}`).innerText(), /IMAGE_PULL_FAILED/);
    } finally {
      await ctx.close();
    }
  });
});
