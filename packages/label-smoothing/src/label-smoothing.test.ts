import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, Random, composeRegularizers, softCrossEntropy, type RegularizerPlugin, type SoftBatch } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { labelSmoothing } from './index.js';
import { errorField, linearClassifier, minimizeSteps } from '@regstack/regularizer/testing';

const linearModel = (inputSize: number, numClasses: number) => linearClassifier({ inputSize, numClasses, seed: 3 });

/** A deterministic mixer for the test: 0.7 of each example with 0.3 of the batch in reverse order. */
function reverseMix(): RegularizerPlugin {
  const mix = (tensor: tf.Tensor) => tf.add(tf.mul(0.7, tensor), tf.mul(0.3, tf.reverse(tensor, 0)));
  return {
    name: 'reverse-mix',
    stage: 'batch-transform',
    exclusiveGroup: 'batch-mixing',
    transformBatch: (batch: SoftBatch) => ({ inputs: mix(batch.inputs), targets: mix(batch.targets) as tf.Tensor2D }),
  };
}

const numClasses = 4;
const labels = [0, 3, 1];
const oneHot = labels.map((label) => Array.from({ length: numClasses }, (_, k) => (k === label ? 1 : 0)));
const smoothRows = (rows: number[][], epsilon: number) => rows.map((row) => row.map((y) => y * (1 - epsilon) + epsilon / numClasses));
const flat = (tensor: tf.Tensor) => Array.from(tensor.dataSync());

function makeBatch() {
  return { inputs: tf.randomUniform([3, 5], 0, 1, 'float32', 7), labels: tf.tensor1d(labels, 'int32') };
}

describe('labelSmoothing', () => {
  it('turns hard labels into y(1 − ε) + ε/K and feeds them to the base loss', () => {
    const model = linearModel(5, numClasses);
    const batch = makeBatch();
    const step = composeRegularizers([labelSmoothing({ epsilon: 0.2 })]).prepare({ model, batch, random: new Random(1) });
    const expected = smoothRows(oneHot, 0.2).flat();
    // A smoother that spread ε over the K − 1 other classes would give 0.8 and 0.0667.
    flat(step.batch.targets).slice(0, 4).forEach((value, index) => expect(value).toBeCloseTo([0.85, 0.05, 0.05, 0.05][index]!, 7));
    flat(step.batch.targets).forEach((value, index) => expect(value).toBeCloseTo(expected[index]!, 7));

    const loss = step.loss();
    const byHand = tf.tidy(() =>
      softCrossEntropy(model.apply(batch.inputs, { mode: 'train' }).logits, tf.tensor2d(smoothRows(oneHot, 0.2))).dataSync()[0]!,
    );
    expect(loss.dataSync()[0]).toBeCloseTo(byHand, 6);
    expect(step.terms().base).toBeCloseTo(byHand, 6);
    loss.dispose();
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('defaults to ε = 0.1', () => {
    const model = linearModel(5, numClasses);
    const batch = makeBatch();
    const step = composeRegularizers([labelSmoothing()]).prepare({ model, batch, random: new Random(1) });
    flat(step.batch.targets).forEach((value, index) => expect(value).toBeCloseTo(smoothRows(oneHot, 0.1).flat()[index]!, 7));
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('smooths mixed targets once, after the batch transform, whatever the order given', () => {
    const model = linearModel(5, numClasses);
    const batch = makeBatch();
    const reversed = [...oneHot].reverse();
    const mixed = oneHot.map((row, i) => row.map((y, k) => 0.7 * y + 0.3 * reversed[i]![k]!));
    const expected = smoothRows(mixed, 0.5).flat();
    for (const plugins of [[labelSmoothing({ epsilon: 0.5 }), reverseMix()], [reverseMix(), labelSmoothing({ epsilon: 0.5 })]]) {
      const step = composeRegularizers(plugins).prepare({ model, batch, random: new Random(1) });
      // Applied twice, ε = 0.5 would give y/4 + 3/16 instead of y/2 + 1/8.
      flat(step.batch.targets).forEach((value, index) => expect(value).toBeCloseTo(expected[index]!, 6));
      const inputs = tf.tidy(() => tf.add(tf.mul(0.7, batch.inputs), tf.mul(0.3, tf.reverse(batch.inputs, 0))));
      flat(step.batch.inputs).forEach((value, index) => expect(value).toBeCloseTo(inputs.dataSync()[index]!, 6));
      inputs.dispose();
      step.dispose();
    }
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('cannot be stacked with itself or another target smoother', () => {
    expect(() => composeRegularizers([labelSmoothing(), labelSmoothing({ epsilon: 0.2 })])).toThrow(/'label-smoothing' and 'label-smoothing' cannot be stacked.*target-smoothing/);
    const other = { ...labelSmoothing({ epsilon: 0.3 }), name: 'other-smoothing' };
    expect(() => composeRegularizers([labelSmoothing(), other])).toThrow(/'label-smoothing' and 'other-smoothing' cannot be stacked.*target-smoothing/);
  });

  it('rejects bad options with a ConfigError naming the field', () => {
    const fieldOf = (make: () => unknown) => errorField(make, ConfigError);
    expect(fieldOf(() => labelSmoothing({ epsilon: 1.5 }))).toBe('labelSmoothing.epsilon');
    expect(fieldOf(() => labelSmoothing({ epsilon: -0.1 }))).toBe('labelSmoothing.epsilon');
    expect(fieldOf(() => labelSmoothing({ epsilon: Number.NaN }))).toBe('labelSmoothing.epsilon');
    expect(fieldOf(() => labelSmoothing({ epsilon: '0.1' as never }))).toBe('labelSmoothing.epsilon');
    expect(fieldOf(() => labelSmoothing({ eps: 0.1 } as never))).toBe('labelSmoothing.eps');
    expect(fieldOf(() => labelSmoothing({ epsilon: { type: 'step', values: [0.1, 2], boundaries: [5] } }))).toBe('labelSmoothing.epsilon.values[1]');
    expect(fieldOf(() => labelSmoothing({ epsilon: { type: 'linear', from: 0, to: 1.2, start: 0, end: 3 } }))).toBe('labelSmoothing.epsilon.to');
    expect(fieldOf(() => labelSmoothing({ epsilon: 1 }))).toBe('no error');
  });

  it('follows a schedule of ε step by step, checking function schedules when they are read', () => {
    const model = linearModel(5, numClasses);
    const batch = makeBatch();
    const stack = composeRegularizers([labelSmoothing({ epsilon: { type: 'step', values: [0, 0.4], boundaries: [2], unit: 'step' } })]);
    const targetsAt = (step: number) => {
      const prepared = stack.prepare({ model, batch, random: new Random(1), step });
      const values = flat(prepared.batch.targets);
      prepared.dispose();
      return values;
    };
    expect(targetsAt(1)).toEqual(oneHot.flat());
    targetsAt(2).forEach((value, index) => expect(value).toBeCloseTo(smoothRows(oneHot, 0.4).flat()[index]!, 7));

    const ramp = composeRegularizers([labelSmoothing({ epsilon: ({ epoch }) => epoch })]);
    expect(() => ramp.prepare({ model, batch, random: new Random(1), epoch: 1.5 })).toThrow(/labelSmoothing\.epsilon: must be ≤ 1, got 1\.5/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('leaks no tensor over steps of optimizer.minimize', () => {
    const model = linearModel(5, numClasses);
    const batch = makeBatch();
    const optimizer = tf.train.sgd(0.1);
    const stack = composeRegularizers([reverseMix(), labelSmoothing()]);
    const { tensorCounts } = minimizeSteps(stack, { model, batch, random: new Random(1) }, 4, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    tf.dispose([batch.inputs, batch.labels]);
    optimizer.dispose();
    model.dispose();
  });
});
