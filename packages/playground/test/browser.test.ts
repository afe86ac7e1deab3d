/**
 * End to end: builds the page, serves it from 127.0.0.1, and drives it in Debian's Chromium (headless,
 * SwiftShader's WebGL2) through the real form: the backend choice, one short RCAD + label smoothing
 * run on wasm, and the page's responsiveness while a webgl run trains.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, CHROMIUM_ARGS, assertChromium, buildPage, serve, skipWithoutChromium, urlOf } from './browser-harness.js';

describe.skipIf(skipWithoutChromium('playground browser test'))('playground in headless Chromium', () => {
  const workDir = mkdtempSync(join(tmpdir(), 'regstack-playground-'));
  const outDir = join(workDir, 'dist');
  const screenshotDir = process.env['PLAYGROUND_SCREENSHOT_DIR'] ?? join(tmpdir(), 'regstack-playground-screenshots');
  let server: Server;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    assertChromium();
    await buildPage(outDir);
    server = await serve(outDir);
    context = await chromium.launchPersistentContext(join(workDir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
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
    // Also when beforeAll failed before serving: a close that never starts would never call back.
    if (server !== undefined) await new Promise((resolve) => server.close(resolve));
    rmSync(workDir, { recursive: true, force: true });
  });

  it('offers webgl where a worker gets WebGL2 with float32 colour buffers, and disables it, saying why, elsewhere', async () => {
    const option = '[data-testid=backend] option[value=webgl]';
    await page.goto(urlOf(server));
    await expect.poll(() => page.getAttribute(option, 'data-detected')).toBe('available');
    expect(await page.locator(option).isDisabled()).toBe(false);

    // The same browser with each requirement taken away, before the page's scripts run.
    const withoutWebgl2 = () => {
      const getContext = OffscreenCanvas.prototype.getContext as (this: OffscreenCanvas, type: string, ...rest: unknown[]) => unknown;
      (OffscreenCanvas.prototype as unknown as { getContext: typeof getContext }).getContext = function (type, ...rest) {
        return type === 'webgl2' ? null : getContext.call(this, type, ...rest);
      };
    };
    const withoutFloatBuffers = () => {
      const getExtension = WebGL2RenderingContext.prototype.getExtension;
      WebGL2RenderingContext.prototype.getExtension = function (this: WebGL2RenderingContext, name: string) {
        return name === 'EXT_color_buffer_float' ? null : getExtension.call(this, name);
      } as typeof getExtension;
    };
    for (const [takeAway, reason] of [[withoutWebgl2, 'no WebGL2'], [withoutFloatBuffers, 'no float32 colour buffers']] as const) {
      const other = await context.newPage();
      await other.addInitScript(takeAway);
      await other.goto(urlOf(server));
      await expect.poll(() => other.getAttribute(option, 'data-detected')).toBe('unavailable');
      expect(await other.locator(option).isDisabled()).toBe(true);
      expect(await other.locator(option).textContent()).toContain(`not available in this browser (${reason})`);
      expect(await other.inputValue('[data-testid=backend]')).toBe('wasm');
      await other.close();
    }
  });

  it('trains RCAD + label smoothing for one epoch on wasm and shows accuracy, calibration and x̃', async () => {
    await page.goto(urlOf(server));
    await page.selectOption('[data-testid=preset]', 'rcad+label-smoothing');
    await expect.poll(() => page.textContent('[data-testid=stack-label]')).toContain('RCAD(α=0.5, λ=0.2)');
    await page.fill('#epochs', '1');
    await page.fill('#batchSize', '32');
    await page.selectOption('[data-testid=train-size]', '500');
    await page.selectOption('[data-testid=backend]', 'wasm');

    const started = Date.now();
    await page.click('[data-testid=train]');
    await page.waitForSelector('[data-testid=status][data-state=done], [data-testid=status][data-state=error]', { timeout: 0 });
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
  }, 240_000);
  it('keeps the page responsive while the worker trains on webgl (counted in events, not seconds), and Stop ends the run', async () => {
    await page.goto(urlOf(server));
    await expect.poll(() => page.getAttribute('[data-testid=backend] option[value=webgl]', 'data-detected')).toBe('available');
    await page.selectOption('[data-testid=preset]', 'rcad+label-smoothing');
    // Far more epochs than the test waits for: training is still running whenever the probe looks.
    await page.fill('#epochs', '100');
    await page.fill('#batchSize', '16');
    await page.fill('#width', '8');
    await page.selectOption('[data-testid=train-size]', '200');
    await page.selectOption('[data-testid=backend]', 'webgl');
    await page.click('[data-testid=train]');
    await page.waitForFunction(() => document.querySelector('#status')!.textContent!.includes('batch'), undefined, { timeout: 0 });
    const row = page.locator('[data-testid=run-row]').last();
    expect((await row.locator('[data-field=backend]').textContent())!.trim()).toBe('webgl');

    // Counters on the page's main thread that count only while the run is in progress: animation
    // frames, clicks on the stack's label (inert), and the worker's batch reports.
    await page.evaluate(() => {
      const status = document.querySelector('#status')!;
      const running = () => status.getAttribute('data-state') === 'running';
      const probe = { frames: 0, clicks: 0, batches: 0 };
      (window as unknown as { probe: typeof probe }).probe = probe;
      const frame = () => {
        if (running()) probe.frames++;
        requestAnimationFrame(frame);
      };
      requestAnimationFrame(frame);
      document.querySelector('#stack-label')!.addEventListener('click', () => {
        if (running()) probe.clicks++;
      });
      new MutationObserver(() => {
        if (running() && status.textContent!.includes('batch')) probe.batches++;
      }).observe(status, { childList: true, characterData: true, subtree: true });
    });
    const probe = () => page.evaluate(() => (window as unknown as { probe: { frames: number; clicks: number; batches: number } }).probe);

    // Each click is a round trip through the browser's input pipeline and the page's main thread;
    // Playwright waits for the target to be stable over animation frames first. A main thread busy
    // with training would answer none of them until the run ended (100 epochs from now).
    const clicks = 5;
    for (let index = 0; index < clicks; index++) await page.click('[data-testid=stack-label]');
    // Then until the worker has reported two more batches: the events above and below interleave with training.
    await page.waitForFunction(() => (window as unknown as { probe: { batches: number } }).probe.batches >= 2, undefined, { polling: 'raf', timeout: 0 });
    const counted = await probe();
    expect(counted.clicks).toBe(clicks);
    expect(counted.frames).toBeGreaterThanOrEqual(2);
    expect(counted.batches).toBeGreaterThanOrEqual(2);
    expect(await page.getAttribute('[data-testid=status]', 'data-state')).toBe('running');

    await page.click('[data-testid=stop]');
    await expect.poll(() => page.getAttribute('[data-testid=status]', 'data-state')).toBe('idle');
    expect(await page.textContent('[data-testid=status]')).toMatch(/stopped/);
    expect(await row.locator('[data-field=epochs]').textContent()).toMatch(/\(stopped\)$/);
    console.info(`playground on webgl: ${counted.clicks} clicks and ${counted.frames} animation frames handled while the worker reported ${counted.batches} batches`);
    expect(pageErrors).toEqual([]);
  }, 300_000);
});
