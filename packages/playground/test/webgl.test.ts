/**
 * `useBackend('webgl')` in a real browser: one RCAD + label smoothing step of the small CNN on a fixed
 * batch, computed on TF.js's cpu backend and on webgl in the same page (`webgl-step/`), in Debian's
 * Chromium with SwiftShader's WebGL2 (float32 colour buffers, checked: the test cannot pass on a
 * half-float or WebGL1 fallback, nor on cpu in disguise).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { relativeError } from '@regstack/regularizer/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, CHROMIUM_ARGS, assertChromium, buildPage, serve, skipWithoutChromium, urlOf } from './browser-harness.js';
import type { Comparison } from './webgl-step/step.js';

/**
 * Relative error ‖webgl − cpu‖₂ / ‖cpu‖₂ allowed for the loss, each term, each variable's gradient and
 * each running statistic. float32's unit roundoff is u = 6e-8; the longest sums here (a first-layer
 * filter gradient: 16·28·28 = 12 544 products) run in another order on the GPU, ≈ √n·u = 7e-6 typical
 * and n·u = 8e-4 at worst, and GPU exp/log may be a few ulp off. 1e-4 leaves room for real GPUs'
 * looser shaders (SwiftShader is IEEE-exact) yet stays under half-float's u = 5e-4: the half-float
 * fallback fails it (the second test shows that). Measured on SwiftShader: loss and terms bit-equal,
 * gradients 4e-7 to 2.2e-6 (worst: block1.conv1.weight), running statistics ≤ 1.7e-7.
 */
const TOLERANCE = 1e-4;

/** Relative error of every compared quantity, by name. */
function errorsOf({ cpu, onWebgl }: Comparison): Record<string, number> {
  const errors: Record<string, number> = { loss: relativeError([onWebgl.loss], [cpu.loss]) };
  for (const [name, value] of Object.entries(cpu.terms)) errors[`term ${name}`] = relativeError([onWebgl.terms[name]!], [value]);
  for (const [name, gradient] of Object.entries(cpu.gradients)) errors[`gradient ${name}`] = relativeError(onWebgl.gradients[name]!, gradient);
  for (const [name, statistic] of Object.entries(cpu.runningStatistics)) errors[`running ${name}`] = relativeError(onWebgl.runningStatistics[name]!, statistic);
  return errors;
}

function largestGradientError(errors: Record<string, number>): number {
  return Math.max(...Object.entries(errors).filter(([name]) => name.startsWith('gradient ')).map(([, error]) => error));
}

describe.skipIf(skipWithoutChromium('webgl step test'))('useBackend("webgl") in headless Chromium', () => {
  const workDir = mkdtempSync(join(tmpdir(), 'regstack-webgl-'));
  const outDir = join(workDir, 'dist');
  let server: Server;
  let browser: Browser;

  /** Opens the step page (with `query`), runs `compareStep`, and returns it with the console's errors and warnings. */
  async function compare(query = ''): Promise<{ result: Comparison; messages: string[]; seconds: number }> {
    const page = await browser.newPage();
    const messages: string[] = [];
    page.on('pageerror', (error) => messages.push(`error: ${error.message}`));
    page.on('console', (message) => {
      // Chromium relays its GL driver's performance notes ("GPU stall due to ReadPixels") as warnings.
      if (/GL Driver Message/.test(message.text())) return;
      if (message.type() === 'error' || message.type() === 'warning') messages.push(`${message.type()}: ${message.text()}`);
    });
    try {
      await page.goto(`${urlOf(server)}${query}`);
      await page.waitForFunction(() => 'compareStep' in window);
      const started = Date.now();
      const result = await page.evaluate(() => (window as unknown as { compareStep(): Promise<Comparison> }).compareStep());
      return { result, messages, seconds: (Date.now() - started) / 1000 };
    } finally {
      await page.close();
    }
  }

  beforeAll(async () => {
    assertChromium();
    await buildPage(outDir, 'test/webgl-step');
    server = await serve(outDir);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    // Also when beforeAll failed before serving: a close that never starts would never call back.
    if (server !== undefined) await new Promise((resolve) => server.close(resolve));
    rmSync(workDir, { recursive: true, force: true });
  });

  it('computes the loss, terms, gradients and running statistics of one step as cpu does, on WebGL2 with float32 textures', async () => {
    const { result, messages, seconds } = await compare();

    // A bundle that does not import the package gets a typed error naming it.
    expect(result.withoutPackage).toMatchObject({ isConfigError: true, field: 'backend' });
    expect(result.withoutPackage!.message).toContain('npm install @tensorflow/tfjs-backend-webgl@4.22.0');
    expect(result.webglInfo).toEqual({ name: 'webgl', kernels: [] });

    // The context TF.js computed in: WebGL2, rendering to and reading back float32 textures.
    expect(result.webgl).toMatchObject({ version: 2, renderFloat32Capable: true, renderFloat32Enabled: true, downloadFloatEnabled: true, forceHalfFloat: false });
    expect(result.webgl.glVersion).toMatch(/^WebGL 2\.0/);

    const { cpu, onWebgl } = result;
    expect([cpu.backend, onWebgl.backend]).toEqual(['cpu', 'webgl']);
    expect([cpu.leakedTensors, onWebgl.leakedTensors]).toEqual([0, 0]);
    // Label smoothing changes the targets and adds no term of its own.
    expect(Object.keys(onWebgl.terms).sort()).toEqual(['base', 'rcad', 'total']);
    // Two stages of two conv + batch-norm layers and the linear classifier: 14 trainable variables.
    expect(Object.keys(cpu.gradients)).toHaveLength(14);
    expect(Object.keys(onWebgl.gradients).sort()).toEqual(Object.keys(cpu.gradients).sort());
    expect(cpu.loss).toBeGreaterThan(Math.log(10) * 0.5);

    const errors = errorsOf(result);
    const report = Object.entries(errors).map(([name, error]) => `${name} ${error.toExponential(1)}`).join(', ');
    console.info(`webgl (${result.webgl.renderer}) vs cpu, one step each in ${seconds.toFixed(1)} s: ${report}`);
    for (const [name, error] of Object.entries(errors)) expect(error, name).toBeLessThan(TOLERANCE);
    // Bit-equal gradients everywhere would mean both steps ran on the same arithmetic.
    expect(largestGradientError(errors)).toBeGreaterThan(0);
    expect(messages).toEqual([]);
  }, 180_000);

  it('tells the half-float fallback apart: a warning from useBackend, and gradients outside the tolerance', async () => {
    const { result, messages } = await compare('?half-float');
    expect(result.webgl).toMatchObject({ version: 2, renderFloat32Enabled: false, forceHalfFloat: true });
    expect(messages).toEqual([expect.stringMatching(/^warning: @regstack\/backend: 'webgl' here renders to half-float textures only/)]);
    const largest = largestGradientError(errorsOf(result));
    console.info(`webgl with half-float textures vs cpu: largest gradient error ${largest.toExponential(1)}`);
    expect(largest).toBeGreaterThan(TOLERANCE);
  }, 180_000);
});
