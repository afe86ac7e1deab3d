import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, Random, composeRegularizers } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { entropyMin } from './index.js';
import { errorField, linearClassifier, linearLogProbabilities, linearProblem, minimizeSteps } from '@regstack/regularizer/testing';

const { inputs: inputRows, labels, weights: weightRows, bias: biasValues } = linearProblem();
const inputSize = 3;
const numClasses = 4;

/** A linear classifier with the fixed weights above, counting its forward passes by mode. */
const linearModel = () => linearClassifier({ inputSize, numClasses, weights: weightRows, bias: biasValues });

const makeBatch = () => ({ inputs: tf.tensor2d(inputRows), labels: tf.tensor1d(labels, 'int32') });

/** The total loss in float64: mean CE + sign·λ·mean H of the same linear model, for finite differences. */
function lossInFloat64(weights: number[][], bias: number[], lambda: number, sign: number): { crossEntropy: number; entropy: number; total: number } {
  let crossEntropy = 0;
  let entropy = 0;
  inputRows.forEach((x, i) => {
    const logProbabilities = linearLogProbabilities(weights, bias, x);
    crossEntropy -= logProbabilities[labels[i]!]!;
    entropy -= logProbabilities.reduce((sum, logP) => sum + Math.exp(logP) * logP, 0);
  });
  crossEntropy /= inputRows.length;
  entropy /= inputRows.length;
  return { crossEntropy, entropy, total: crossEntropy + sign * lambda * entropy };
}

describe('entropyMin', () => {
  it('adds λ·mean H of the base pass, computed by hand, and reuses that pass', () => {
    const model = linearModel();
    const batch = makeBatch();
    const step = composeRegularizers([entropyMin({ lambda: 0.3 })]).prepare({ model, batch, random: new Random(1) });
    const total = step.loss();
    const byHand = lossInFloat64(weightRows, biasValues, 0.3, 1);
    const terms = step.terms();
    expect(terms['entropy-min']).toBeCloseTo(0.3 * byHand.entropy, 6);
    expect(terms.base).toBeCloseTo(byHand.crossEntropy, 6);
    expect(total.dataSync()[0]).toBeCloseTo(byHand.total, 6);
    // The entropy of these logits is far from both 0 and log K, so the checks above can fail.
    expect(byHand.entropy).toBeGreaterThan(0.5);
    expect(byHand.entropy).toBeLessThan(Math.log(numClasses) - 0.05);
    expect(model.calls).toEqual(['train']);
    total.dispose();
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('defaults to λ = 0.1 and mode minimize; maximize flips the sign (the confidence penalty)', () => {
    const model = linearModel();
    const batch = makeBatch();
    const termOf = (plugin: ReturnType<typeof entropyMin>) => {
      const step = composeRegularizers([plugin]).prepare({ model, batch, random: new Random(1) });
      tf.dispose(step.loss());
      const value = step.terms()['entropy-min']!;
      step.dispose();
      return value;
    };
    const entropy = lossInFloat64(weightRows, biasValues, 0, 1).entropy;
    expect(termOf(entropyMin())).toBeCloseTo(0.1 * entropy, 6);
    expect(termOf(entropyMin({ lambda: 0.3, mode: 'maximize' }))).toBeCloseTo(-0.3 * entropy, 6);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  for (const mode of ['minimize', 'maximize'] as const) {
    it(`gives weight gradients that agree with float64 finite differences (${mode})`, () => {
      const model = linearModel();
      const batch = makeBatch();
      const lambda = 0.7;
      const sign = mode === 'minimize' ? 1 : -1;
      const step = composeRegularizers([entropyMin({ lambda, mode })]).prepare({ model, batch, random: new Random(1) });
      const { value, grads } = step.gradients();
      const weightGradient = grads[model.weight.name]!.arraySync() as number[][];
      const biasGradient = grads[model.bias!.name]!.arraySync() as number[];
      const h = 1e-6;
      let largest = 0;
      for (let j = 0; j < inputSize; j++) {
        for (let k = 0; k < numClasses; k++) {
          const shifted = (delta: number) => weightRows.map((row, r) => row.map((w, c) => (r === j && c === k ? w + delta : w)));
          const difference = (lossInFloat64(shifted(h), biasValues, lambda, sign).total - lossInFloat64(shifted(-h), biasValues, lambda, sign).total) / (2 * h);
          expect(weightGradient[j]![k]).toBeCloseTo(difference, 5);
          largest = Math.max(largest, Math.abs(difference));
        }
      }
      for (let k = 0; k < numClasses; k++) {
        const shifted = (delta: number) => biasValues.map((b, c) => (c === k ? b + delta : b));
        const difference = (lossInFloat64(weightRows, shifted(h), lambda, sign).total - lossInFloat64(weightRows, shifted(-h), lambda, sign).total) / (2 * h);
        expect(biasGradient[k]).toBeCloseTo(difference, 5);
      }
      // The entropy term moves the gradient well beyond the tolerance: without it the test would fail.
      const withoutTerm = (delta: number) => lossInFloat64(weightRows.map((row, r) => row.map((w, c) => (r === 0 && c === 0 ? w + delta : w))), biasValues, 0, 1).total;
      expect(Math.abs((withoutTerm(h) - withoutTerm(-h)) / (2 * h) - weightGradient[0]![0]!)).toBeGreaterThan(1e-3);
      expect(largest).toBeGreaterThan(1e-2);
      expect(value.dataSync()[0]).toBeCloseTo(lossInFloat64(weightRows, biasValues, lambda, sign).total, 6);
      tf.dispose([value, ...Object.values(grads), batch.inputs, batch.labels]);
      step.dispose();
      model.dispose();
    });
  }

  it('follows a schedule of λ', () => {
    const model = linearModel();
    const batch = makeBatch();
    const stack = composeRegularizers([entropyMin({ lambda: { type: 'step', values: [0, 0.5], boundaries: [1], unit: 'epoch' } })]);
    const termAt = (epoch: number) => {
      const step = stack.prepare({ model, batch, random: new Random(1), epoch });
      tf.dispose(step.loss());
      const value = step.terms()['entropy-min']!;
      step.dispose();
      return value;
    };
    expect(termAt(0.99)).toBe(0);
    expect(termAt(1)).toBeCloseTo(0.5 * lossInFloat64(weightRows, biasValues, 0, 1).entropy, 6);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('rejects bad options with a ConfigError naming the field', () => {
    const fieldOf = (make: () => unknown) => errorField(make, ConfigError);
    expect(fieldOf(() => entropyMin({ lambda: -0.1 }))).toBe('entropyMin.lambda');
    expect(fieldOf(() => entropyMin({ lambda: Number.POSITIVE_INFINITY }))).toBe('entropyMin.lambda');
    expect(fieldOf(() => entropyMin({ mode: 'max' as never }))).toBe('entropyMin.mode');
    expect(fieldOf(() => entropyMin({ weight: 1 } as never))).toBe('entropyMin.weight');
    expect(fieldOf(() => entropyMin({ lambda: { type: 'cosine', from: -1, to: 0, start: 0, end: 1 } }))).toBe('entropyMin.lambda.from');
    const model = linearModel();
    const batch = makeBatch();
    const negative = composeRegularizers([entropyMin({ lambda: () => -1 })]).prepare({ model, batch, random: new Random(1) });
    expect(() => negative.loss()).toThrow(/entropyMin\.lambda: must be ≥ 0/);
    negative.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('leaks no tensor over steps of optimizer.minimize and lowers the entropy when minimising', () => {
    const model = linearModel();
    const batch = makeBatch();
    const optimizer = tf.train.sgd(0.5);
    const stack = composeRegularizers([entropyMin({ lambda: 1 })]);
    // The plugin draws nothing random, so one generator for all steps computes what a fresh one per step would.
    const { tensorCounts, terms } = minimizeSteps(stack, { model, batch, random: new Random(1) }, 5, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    expect(terms.at(-1)!['entropy-min']!).toBeLessThan(terms[0]!['entropy-min']!);
    tf.dispose([batch.inputs, batch.labels]);
    optimizer.dispose();
    model.dispose();
  });
});
