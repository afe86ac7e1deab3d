// Every example runs here in its quick mode and must produce what it promises.
import { useBackend } from '@regstack/backend';
import { beforeAll, describe, expect, it } from 'vitest';
import { main as ownLoop } from './01-rcad-own-loop.js';
import { main as rcadMixup } from './02-rcad-mixup-trainer.js';
import { main as customRegularizer, noiseConsistency } from './03-custom-regularizer.js';
import { main as paperSetting } from './04-paper-cifar100-2k.js';
import { main as fitLayersModel } from './05-fit-layers-model.js';

describe('examples (quick mode)', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('01: RCAD in a user loop with stack.minimize, optimizer.minimize and clipped gradients', async () => {
    const { losses, metrics, tensorCounts } = await ownLoop({ quick: true });
    expect(losses).toHaveLength(24);
    const mean = (values: number[]) => values.reduce((s, v) => s + v, 0) / values.length;
    expect(mean(losses.slice(-6))).toBeLessThan(mean(losses.slice(0, 6)));
    expect(metrics.count).toBe(200);
    expect(metrics.accuracy).toBeGreaterThan(0.3); // 10-class chance is 0.1
    // From the second step on (the first creates the momentum buffers) the count never moves.
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
  });

  it('02: RCAD + mixup in the trainer reports both terms and test metrics', async () => {
    const result = await rcadMixup({ quick: true });
    expect(Object.keys(result.history[0]!.terms).sort()).toEqual(['base', 'rcad', 'total']);
    expect(result.history[0]!.terms.rcad).toBeGreaterThan(0);
    expect(result.test!.count).toBe(1000);
  });

  it('03: a custom regularizer stacks with label smoothing and ramps its weight', async () => {
    const result = await customRegularizer({ quick: true });
    // λ ramps from 0 at epoch 0; within the first epoch the mean term is small but positive.
    expect(result.history[0]!.terms['noise-consistency']).toBeGreaterThan(0);
    expect(() => noiseConsistency({ sigma: -1 })).toThrow(/noiseConsistency\.sigma/);
  });

  it('04: the paper setting runs end to end on files in the official CIFAR-100 format', async () => {
    const { result, trainSize, validationSize, testSize } = await paperSetting({ quick: true });
    expect([trainSize, validationSize, testSize]).toEqual([180, 20, 100]);
    expect(result.history).toHaveLength(1);
    expect(Object.keys(result.history[0]!.terms).sort()).toEqual(['base', 'rcad', 'total']);
  });

  it('05: fit trains a LayersModel with RCAD + mixup; file:// save and reload predict the same', async () => {
    const { history, maxDifference, testAccuracy } = await fitLayersModel({ quick: true });
    expect(history.epoch).toEqual([0, 1]);
    expect(Object.keys(history.history).sort()).toEqual(['acc', 'base', 'loss', 'rcad', 'val_acc', 'val_loss']);
    expect(history.history.rcad![0]).toBeGreaterThan(0);
    expect(history.params.samples).toBe(576); // 640 less the last 10%
    expect(maxDifference).toBe(0); // float32 weights round-trip bit for bit
    expect(testAccuracy).toBeGreaterThan(0.4); // 10-class chance is 0.1
  });
});
