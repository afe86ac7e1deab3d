/**
 * End to end: builds the page, serves it from 127.0.0.1, and trains one short RCAD + label
 * smoothing run in Debian's Chromium (headless, wasm backend) through the real form.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(`SKIPPED playground browser test: no Chromium at ${CHROMIUM}. Install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH.`);
}

const packageRoot = fileURLToPath(new URL('..', import.meta.url));
const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  // instantiateStreaming refuses wasm served under any other type.
  '.wasm': 'application/wasm',
  '.json': 'application/json',
};

function buildPage(outDir: string): Promise<void> {
  const viteBin = join(dirname(createRequire(import.meta.url).resolve('vite/package.json')), 'bin', 'vite.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [viteBin, 'build', '--outDir', outDir, '--emptyOutDir', '--logLevel', 'warn'], {
      cwd: packageRoot,
      env: { ...process.env, NODE_ENV: 'production' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`vite build exited ${code}:\n${output}`))));
  });
}

/** A static file server for the built page, on a free port of 127.0.0.1. */
async function serve(root: string): Promise<Server> {
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://127.0.0.1').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(root + sep)) {
      response.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

describe.skipIf(!hasChromium)('playground in headless Chromium', () => {
  const workDir = mkdtempSync(join(tmpdir(), 'regstack-playground-'));
  const outDir = join(workDir, 'dist');
  const screenshotDir = process.env['PLAYGROUND_SCREENSHOT_DIR'] ?? join(tmpdir(), 'regstack-playground-screenshots');
  let server: Server;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await buildPage(outDir);
    server = await serve(outDir);
    context = await chromium.launchPersistentContext(join(workDir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 1280, height: 1000 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    await new Promise((resolve) => server?.close(resolve));
    rmSync(workDir, { recursive: true, force: true });
  });

  it('trains RCAD + label smoothing for one epoch on wasm and shows accuracy, calibration and x̃', async () => {
    const { port } = server.address() as AddressInfo;
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.selectOption('[data-testid=preset]', 'rcad+label-smoothing');
    await expect.poll(() => page.textContent('[data-testid=stack-label]')).toContain('RCAD(α=0.5, λ=0.2)');
    await page.fill('#epochs', '1');
    await page.fill('#batchSize', '32');
    await page.selectOption('[data-testid=train-size]', '500');
    await page.selectOption('[data-testid=backend]', 'wasm');

    const started = Date.now();
    await page.click('[data-testid=train]');
    // While the worker trains, the page must stay responsive: a round trip through its event loop is quick.
    await page.waitForSelector('[data-testid=status][data-state=running]');
    await page.waitForFunction(() => document.querySelector('#status')!.textContent!.includes('batch'), undefined, { timeout: 30_000 });
    const roundTrip = Date.now();
    await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
    expect(Date.now() - roundTrip).toBeLessThan(1_000);

    await page.waitForSelector('[data-testid=status][data-state=done], [data-testid=status][data-state=error]', { timeout: 75_000 });
    const seconds = (Date.now() - started) / 1000;
    const status = await page.textContent('[data-testid=status]');
    expect(await page.getAttribute('[data-testid=status]', 'data-state'), status ?? '').toBe('done');

    const row = page.locator('[data-testid=run-row]').first();
    const value = async (name: string) => (await row.locator(`[data-field=${name}]`).textContent())!.trim();
    expect(await value('backend')).toBe('wasm');
    expect(await value('stack')).toBe('LS(ε=0.1) + RCAD(α=0.5, λ=0.2)');
    const validationAccuracy = Number(await value('validation-accuracy'));
    const testAccuracy = Number(await value('test-accuracy'));
    const testEce = Number(await value('test-ece'));
    // Chance is 0.1 on ten balanced classes.
    expect(validationAccuracy).toBeGreaterThan(0.2);
    expect(testAccuracy).toBeGreaterThan(0.2);
    expect(testEce).toBeGreaterThanOrEqual(0);
    expect(testEce).toBeLessThan(1);

    // Eight examples, each drawn as x, x̃ and x̃ − x; x̃ must differ from x on screen.
    expect(await page.locator('[data-testid=preview] canvas').count()).toBe(24);
    const meanDifference = await page.evaluate(() => {
      const pixels = (canvas: HTMLCanvasElement) => canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      const cards = [...document.querySelectorAll('.preview-card')];
      let total = 0;
      let count = 0;
      for (const card of cards) {
        const original = pixels(card.querySelector('canvas[data-role=original]')!);
        const perturbed = pixels(card.querySelector('canvas[data-role=perturbed]')!);
        for (let index = 0; index < original.length; index += 4) {
          total += Math.abs(original[index]! - perturbed[index]!);
          count++;
        }
      }
      return total / count;
    });
    expect(meanDifference).toBeGreaterThan(0.5);

    mkdirSync(screenshotDir, { recursive: true });
    const screenshot = join(screenshotDir, 'playground-rcad-label-smoothing.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    console.info(`playground: 1 epoch on 500 images in ${seconds.toFixed(1)} s (wasm), validation accuracy ${validationAccuracy}, test accuracy ${testAccuracy}, test ECE ${testEce}; screenshot ${screenshot}`);
    expect(pageErrors).toEqual([]);
  }, 90_000);
});
