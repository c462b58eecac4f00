/**
 * The console in a real browser: Debian's chromium (headless, driven by playwright-core) against a
 * mirror with access control on (the admin signs in with HTTP Basic), after real pulls from the fake
 * upstream. It sees the images and figures, watches a throttled download's bytes grow and the
 * download leave, pins an image by keyboard, cancels and then confirms a purge, and the server's pin
 * set, cache size and blob store change accordingly. One browser launch for the file.
 *
 * A screenshot of the page goes to CONSOLE_SCREENSHOT, or a temp directory (docs/console.png is one).
 */
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getRequestListener } from '@hono/node-server';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../src/cli/format.js';
import { authFiles, authRaw, PASSWORDS } from '../access/helpers.js';
import { digestOf } from '../helpers/digest.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { makeImage, makeIndex, makeLayer, makeRandomLayer, type Image } from '../helpers/images.js';
import { DOCKER_ACCEPT, startMirror, type TestMirror } from '../helpers/mirror.js';
import { listenOn } from '../helpers/ports.js';

const CHROMIUM = '/usr/bin/chromium';

const alpine = makeImage({ layers: [makeRandomLayer(300_000, 'browser alpine')] });
const nginxAmd = makeImage({ layers: [makeRandomLayer(400_000, 'browser nginx amd64'), makeLayer([{ path: 'etc/nginx.conf', content: 'amd64' }])], architecture: 'amd64' });
const nginxArm = makeImage({ layers: [makeRandomLayer(400_000, 'browser nginx arm64'), makeLayer([{ path: 'etc/nginx.conf', content: 'arm64' }])], architecture: 'arm64' });
const nginx = makeIndex([nginxAmd, nginxArm]);
const big = makeImage({ layers: [makeRandomLayer(1_300_000, 'browser big')] });

// A real browser beside the rest of the suite (the image build, the fleet) on 2 cores: a test's own waits
// (up to 10 s each for an element, a poll, a pull) can add up past vitest's default 30 s there.
describe('the console in chromium', { timeout: 90_000 }, () => {
  let hub: FakeUpstream;
  let m: TestMirror;
  let adminServer: Server;
  let adminUrl: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let tmp: string;
  const problems: string[] = [];

  /** A client's pull over HTTP through the mirror: the manifest (and a platform's, for an index), config, layers. */
  const pull = async (name: string, tag: string, img: Image, index?: boolean) => {
    const get = (path: string, accept?: string) => fetch(`${m.url}/v2/${name}/${path}`, accept ? { headers: { accept } } : {});
    const root = await get(`manifests/${tag}`, DOCKER_ACCEPT);
    expect(root.status).toBe(200);
    await root.arrayBuffer();
    if (index) {
      const child = await get(`manifests/${img.manifest.digest}`, DOCKER_ACCEPT);
      expect(child.status).toBe(200);
      await child.arrayBuffer();
    }
    for (const b of [img.config, ...img.layers]) {
      const r = await get(`blobs/${b.digest}`);
      expect(digestOf(Buffer.from(await r.arrayBuffer()))).toBe(b.digest);
    }
  };
  const row = (repo: string) => page.locator(`#image-table tr[data-ref^="docker.io/library/${repo}@"]`);

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'console-browser-'));
    hub = await FakeUpstream.start({ rateLimit: { limit: 200, remaining: 200 } });
    hub.putImage('library/alpine', alpine, '3.19');
    hub.putIndex('library/nginx', nginx, [nginxAmd, nginxArm], '1.27');
    hub.putImage('library/big', big, 'latest');
    m = await startMirror({
      upstreams: { 'docker.io': { url: hub.url, libraryPrefix: true } },
      listen: true,
      raw: { ...authRaw(await authFiles()), cache: { maxBytes: 20 * 1024 * 1024 } },
    });
    const listener = getRequestListener(m.adminApp.fetch);
    adminServer = createServer((req, res) => void listener(req, res));
    adminUrl = `http://127.0.0.1:${await listenOn(adminServer)}`;
    // Real pulls (anonymous from loopback, as the policy allows), twice: misses, then hits.
    for (let i = 0; i < 2; i++) {
      await pull('alpine', '3.19', alpine);
      await pull('nginx', '1.27', nginxAmd, true);
    }
    expect(await m.registry.drain(5000)).toBe(true);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    context = await browser.newContext({ httpCredentials: { username: 'alice', password: PASSWORDS.alice }, viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error' || /Content.Security.Policy/i.test(msg.text())) problems.push(msg.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    adminServer?.closeAllConnections();
    await new Promise<void>((r) => (adminServer ? adminServer.close(() => r()) : r()));
    await m?.stop();
    await hub?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it('shows the cached images and the figures, live over server-sent events', async () => {
    expect(existsSync(CHROMIUM)).toBe(true);
    await page.goto(`${adminUrl}/ui`);
    await expect.poll(() => page.locator('#live-state').textContent(), { timeout: 10_000 }).toBe('live');
    await expect.poll(() => row('alpine').count()).toBe(1);
    expect(await row('alpine').locator('.tag').allTextContents()).toEqual(['3.19']);
    expect(await row('nginx').locator('td[data-label="Platforms"]').textContent()).toBe('linux/amd64, linux/arm64');
    const summary = await m.admin.summary();
    expect(await page.locator('[data-f="cacheBytes"]').first().textContent()).toBe(formatBytes(summary.bytes));
    expect(await page.locator('[data-f="limitBytes"]').textContent()).toBe('20.0 MiB');
    expect(await page.locator('#cache-use').getAttribute('value')).toBe(String(summary.bytes));
    const live = (await (await m.adminApp.request('/admin/live', { headers: { authorization: `Basic ${Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64')}` } })).json()) as any;
    expect(await page.locator('[data-f="hitRatio"]').textContent()).toBe(`${(live.figures.hitRatio * 100).toFixed(1)} %`);
    expect(await page.locator('[data-f="bytesSaved"]').textContent()).toBe(formatBytes(live.figures.bytesSaved));
    // The second pulls came from the cache: at least their configs and layers.
    expect(live.figures.bytesSaved).toBeGreaterThanOrEqual([alpine.config, ...alpine.layers, nginxAmd.config, ...nginxAmd.layers].reduce((n, b) => n + b.size, 0));
    expect(await page.locator('#chart-bytesSaved .line').getAttribute('d')).toMatch(/^M/);
    // The upstream, with what the fake hub said is left of its pull limit.
    const left = 200 - hub.count({ kind: 'manifest', method: 'GET', status: 200 });
    expect(await page.locator('#upstream-rows').textContent()).toContain(`${left} of 200 pulls left`);
    expect(await page.locator('#repositories').textContent()).toContain('2 images in 2 repositories');
    // Browsing: the filter narrows both tables; a repository's link lists its images alone.
    await page.getByLabel('Filter repositories and images').fill('arm64');
    await expect.poll(() => row('alpine').isVisible()).toBe(false);
    expect(await row('nginx').isVisible()).toBe(true);
    await page.getByLabel('Filter repositories and images').fill('');
    await expect.poll(() => row('alpine').isVisible()).toBe(true);
    await page.getByRole('link', { name: 'docker.io/library/nginx' }).click();
    await expect.poll(() => page.locator('#h-images').textContent()).toContain('Images of docker.io/library/nginx');
    expect(await row('alpine').count()).toBe(0);
    expect(await row('nginx').count()).toBe(1);
    await page.goto(`${adminUrl}/ui`);
  });

  it('shows a download in flight with its bytes growing, then drops it when it is stored', async () => {
    const layer = big.layers[0]!;
    // About 5 s: 1.3 MB at 24 KiB every 100 ms. The page hears of it once a second, so a download of
    // about 2 s could be gone from the list one update after it appeared, before the test saw it grow.
    hub.faults.trickle = { bytesPerTick: 24 * 1024, tickMs: 100 };
    try {
      const pulling = pull('big', 'latest', big);
      const item = page.locator(`#download-list li[data-digest="${layer.digest}"]`);
      await item.waitFor({ timeout: 10_000 });
      expect(await item.locator('strong').textContent()).toBe('docker.io/library/big');
      const first = Number(await item.locator('.bytes').getAttribute('data-received'));
      await expect.poll(async () => Number(await item.locator('.bytes').getAttribute('data-received', { timeout: 2000 })), { timeout: 10_000 }).toBeGreaterThan(first);
      expect(Number(await item.locator('progress').getAttribute('max'))).toBe(layer.size);
      // Once, with the download on the page: the screenshot for docs/.
      await page.screenshot({ path: process.env.CONSOLE_SCREENSHOT ?? join(tmp, 'console.png'), fullPage: true });
      await pulling;
      await item.waitFor({ state: 'detached', timeout: 10_000 });
      await expect.poll(() => page.locator('#downloads-empty').isVisible()).toBe(true);
    } finally {
      delete hub.faults.trickle;
    }
    expect(existsSync(process.env.CONSOLE_SCREENSHOT ?? join(tmp, 'console.png'))).toBe(true);
  });

  it('pins an image from the keyboard and shows it pinned; the server holds the pin', async () => {
    await page.reload();
    const pin = row('alpine').getByRole('button', { name: 'Pin', exact: true });
    await pin.focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => row('alpine').locator('.pinned').textContent()).toBe('pinned');
    await expect.poll(() => page.locator('#message').textContent()).toContain('Pinned docker.io/library/alpine:3.19');
    expect(await m.admin.pins()).toEqual([`docker.io/library/alpine@${alpine.manifest.digest}`]);
    expect((await m.admin.images()).find((i) => i.repo === 'library/alpine')?.pinned).toBe(true);
    // And back: unpin.
    await row('alpine').getByRole('button', { name: 'Unpin', exact: true }).click();
    await expect.poll(() => row('alpine').locator('.pinned').textContent()).toBe('no');
    expect(await m.admin.pins()).toEqual([]);
    await row('alpine').getByRole('button', { name: 'Pin', exact: true }).click();
    await expect.poll(() => row('alpine').locator('.pinned').textContent()).toBe('pinned');
  });

  it('asks before purging; Escape keeps the image, confirming (by keyboard) removes it, its blobs and its bytes', async () => {
    const before = (await m.admin.summary()).bytes;
    const purge = row('nginx').getByRole('button', { name: 'Purge', exact: true });
    await purge.click();
    const dialog = page.locator('dialog#confirm');
    await expect.poll(() => dialog.isVisible()).toBe(true);
    expect(await dialog.textContent()).toContain('docker.io/library/nginx:1.27');
    // Focus starts on Cancel; Escape closes without purging.
    expect(await page.evaluate('document.activeElement?.textContent')).toBe('Cancel');
    await page.keyboard.press('Escape');
    await expect.poll(() => dialog.isVisible()).toBe(false);
    expect(await row('nginx').count()).toBe(1);
    expect((await m.admin.summary()).bytes).toBe(before);

    // All by keyboard this time: Enter on the row's button, Tab from Cancel to Purge, Enter.
    await purge.focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => dialog.isVisible()).toBe(true);
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement?.id')).toBe('confirm-ok');
    await page.keyboard.press('Enter');
    await expect.poll(() => row('nginx').count(), { timeout: 10_000 }).toBe(0);
    await expect.poll(() => page.locator('#message').textContent()).toMatch(/^Purged docker\.io\/library\/nginx:1\.27: \d+ blobs/);
    const after = (await m.admin.summary()).bytes;
    // Exactly the index, the platform manifest, the config and the layers that were pulled.
    expect(before - after).toBe([nginx, nginxAmd.manifest, nginxAmd.config, ...nginxAmd.layers].reduce((n, b) => n + b.size, 0));
    await expect.poll(() => page.locator('[data-f="cacheBytes"]').first().textContent(), { timeout: 5000 }).toBe(formatBytes(after));
    for (const b of [nginx, nginxAmd.manifest, nginxAmd.config, ...nginxAmd.layers]) expect(await m.blobs.stat(b.digest), b.digest).toBeUndefined();
    // The pinned image and the other one stay.
    expect(await row('alpine').count()).toBe(1);
    expect(await m.blobs.stat(alpine.layers[0]!.digest)).toBeDefined();
  });

  it('falls back to polling when the event stream is cut, and reads on a phone without sideways scrolling', async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.route('**/admin/live/events', (r) => r.abort());
    await phone.goto(`${adminUrl}/ui`);
    await expect.poll(() => phone.locator('#live-state').textContent(), { timeout: 10_000 }).toBe('live (polling)');
    expect(await phone.locator('[data-f="cacheBytes"]').first().textContent()).toBe(formatBytes((await m.admin.summary()).bytes));
    expect(await phone.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    // Table rows stack: each cell on its own line, labelled.
    expect(await phone.locator('#image-table td[data-label="Size"]').first().evaluate((td) => (globalThis as any).getComputedStyle(td).display)).toBe('block');
    await phone.close();
    expect(problems).toEqual([]);
  });
});
