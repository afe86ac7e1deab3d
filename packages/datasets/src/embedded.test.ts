import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { loadEmbeddedFashionMnist } from './embedded.js';
import { channelStatistics } from './normalization.js';

describe('loadEmbeddedFashionMnist', () => {
  it('holds 200 training and 100 test images per class', () => {
    const { train, validation, test, info } = loadEmbeddedFashionMnist({ validationFraction: 0 });
    expect(train.size).toBe(2000);
    expect(validation.size).toBe(0);
    expect(Array.from(train.classCounts())).toEqual(new Array(10).fill(200));
    expect(Array.from(test.classCounts())).toEqual(new Array(10).fill(100));
    expect(info.license).toMatch(/MIT.*Zalando SE/);
    // The subset's pixel statistics sit near the full training set's (0.2860, 0.3530).
    const { mean, std } = channelStatistics(train.images, 1, 255);
    expect(Math.abs(mean[0]! - 0.286)).toBeLessThan(0.02);
    expect(Math.abs(std[0]! - 0.353)).toBeLessThan(0.02);
  });

  it('holds out a seeded 10% by default and batches to [0, 1]', () => {
    const { train, validation } = loadEmbeddedFashionMnist();
    expect([train.size, validation.size]).toEqual([1800, 200]);
    const { inputs, labels } = train.batch([0, 1, 2]);
    expect(inputs.shape).toEqual([3, 28, 28, 1]);
    const values = inputs.dataSync();
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThanOrEqual(1);
    expect(Math.max(...values)).toBeGreaterThan(0.5);
    tf.dispose([inputs, labels]);
    expect(Array.from(loadEmbeddedFashionMnist({ seed: 1 }).validation.labels)).not.toEqual(Array.from(validation.labels));
  });
});

describe('browser safety and bundle size', () => {
  const bundle = (entry: string, contents?: string) =>
    build({
      ...(contents === undefined
        ? { entryPoints: [fileURLToPath(new URL(entry, import.meta.url))] }
        : { stdin: { contents, resolveDir: fileURLToPath(new URL('.', import.meta.url)), loader: 'ts' } }),
      bundle: true,
      write: false,
      minify: true,
      platform: 'browser',
      format: 'esm',
      conditions: ['@regstack/source'],
      external: ['@tensorflow/tfjs-core'],
      logLevel: 'silent',
      metafile: true,
    });
  const nodeOnly = (inputs: string[]) => inputs.filter((path) => /(^|\/)node:|mat-v5|download|files\.ts/.test(path));

  it('bundles the main entry for the browser without any Node module or the embedded data', async () => {
    const result = await bundle('./index.ts');
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((path) => path.includes('fashion-mnist-subset'))).toBe(false);
    expect(nodeOnly(inputs)).toEqual([]);
    expect(result.outputFiles[0]!.text).not.toMatch(/from ["']node:/);
  });

  it('bundles randomSubset alone small (the 3.3 MB subset was in every bundle when the main entry held it)', async () => {
    const result = await bundle('', "import { randomSubset } from './index.js'; console.log(randomSubset);");
    // 8.6 kB measured (tfjs-core external): the bound leaves room for growth, not for the data.
    expect(result.outputFiles[0]!.contents.byteLength).toBeLessThan(20_000);
  });

  it('bundles the embedded entry for the browser with its data once and no Node module', async () => {
    const result = await bundle('./embedded.ts');
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((path) => path.endsWith('data/fashion-mnist-subset.json'))).toHaveLength(1);
    expect(nodeOnly(inputs)).toEqual([]);
    const size = result.outputFiles[0]!.contents.byteLength;
    expect(size).toBeGreaterThan(3_000_000);
    expect(size).toBeLessThan(3_600_000);
  });
});
