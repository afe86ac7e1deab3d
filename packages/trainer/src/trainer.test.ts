import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ConfigError, DataError, DivergenceError, classifierFromFunction, crossEntropy, type RegularizerPlugin } from '@regstack/regularizer';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { memoryCheckpointStore } from './checkpoint.js';
import { tensorData } from './data.js';
import { fileCheckpointStore } from './node.js';
import { linearModel, prototypeData } from './test-models.js';
import { train } from './trainer.js';

const FEATURES = 12;
const CLASSES = 4;

function problem(count = 400, seed = 3) {
  const { inputs, labels } = prototypeData(count, FEATURES, CLASSES, seed);
  return { inputs: tf.tensor2d(inputs, [count, FEATURES]), labels: tf.tensor1d(labels, 'int32') };
}

const values = (model: { trainableVariables: readonly tf.Variable[] }) => model.trainableVariables.map((v) => Array.from(v.dataSync()));

describe('train', () => {
  it('learns a learnable problem: validation accuracy rises well above chance', async () => {
    const data = problem();
    const model = linearModel(FEATURES, CLASSES);
    const tensorsBefore = tf.memory().numTensors;
    const result = await train({ model, train: tensorData(data.inputs, data.labels), epochs: 6, batchSize: 32, learningRate: 0.5, seed: 1 });
    expect(tf.memory().numTensors).toBe(tensorsBefore); // nothing left behind, the optimizer's state included
    expect(result.history).toHaveLength(6);
    expect(result.validation?.count).toBe(40); // the 10% hold-out
    expect(result.validation?.accuracy).toBeGreaterThan(0.85); // chance is 0.25
    expect(result.history[0]!.terms.base).toBeGreaterThan(result.history[5]!.terms.base!);
    expect(result.steps).toBe(6 * Math.ceil(360 / 32));
    model.dispose();
    tf.dispose([data.inputs, data.labels]);
  });

  it('without validation (validationFraction 0) trains on every example and keeps the final weights', async () => {
    const data = problem(200);
    const source = tensorData(data.inputs, data.labels);
    const heldOutModel = linearModel(FEATURES, CLASSES);
    const model = linearModel(FEATURES, CLASSES);
    const tensorsBefore = tf.memory().numTensors;
    const recipe = { epochs: 3, batchSize: 32, learningRate: 0.5, seed: 1 };
    const result = await train({ model, train: source, test: source, validationFraction: 0, ...recipe });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(result.validation).toBeUndefined();
    expect(result.history.every((record) => record.validation === undefined)).toBe(true);
    expect(result.bestEpoch).toBe(3);
    expect(result.steps).toBe(3 * Math.ceil(200 / 32)); // all 200 examples, none held out
    expect(result.test!.count).toBe(200);
    // The same run with a hold-out takes fewer steps: the option really changes what is trained on.
    const heldOut = await train({ model: heldOutModel, train: source, ...recipe });
    expect(heldOut.steps).toBe(3 * Math.ceil(180 / 32));
    // The returned weights are the final epoch's: one more evaluation agrees with the reported test metrics.
    const again = await train({ model, train: source, test: source, validationFraction: 0, ...recipe, epochs: 1, learningRate: 0 });
    expect(again.test!.accuracy).toBeCloseTo(result.test!.accuracy, 10);
    model.dispose();
    heldOutModel.dispose();
    tf.dispose([data.inputs, data.labels]);
  });

  it('applies clipping, then weight decay, then Nesterov SGD exactly as the recipe', async () => {
    const inputs = tf.tensor2d([[1, 0.5], [0.2, 0.9], [0.7, 0.1]]);
    const labels = tf.tensor1d([0, 1, 1], 'int32');
    const model = linearModel(2, 2, 9);
    const [weight, bias] = model.trainableVariables as tf.Variable[];
    const before = [weight!.clone(), bias!.clone()];
    const { grads } = tf.variableGrads(() => crossEntropy(model.apply(inputs, { mode: 'train' }).logits, labels), [weight!, bias!]);
    const g = [grads[weight!.name]!, grads[bias!.name]!];
    const norm = Math.sqrt(g.reduce((s, t) => s + tf.sum(tf.square(t)).dataSync()[0]!, 0));
    const maxNorm = 0.1;
    expect(norm).toBeGreaterThan(maxNorm); // so clipping matters here
    const scale = maxNorm / (norm + 1e-6);
    const lr = 0.3;
    const decay = 0.01;
    const momentum = 0.9;
    // First step: the momentum buffer equals the decayed gradient d, and Nesterov steps by d + μ·d.
    const expected = before.map((w, i) => tf.sub(w, tf.mul(lr * (1 + momentum), tf.add(tf.mul(g[i]!, scale), tf.mul(w, decay)))));
    await train({
      model,
      train: tensorData(inputs, labels),
      validation: tensorData(inputs, labels),
      epochs: 1,
      batchSize: 3,
      learningRate: lr,
      weightDecay: decay,
      clipNorm: maxNorm,
      momentum,
    });
    model.trainableVariables.forEach((variable, i) => {
      const difference = tf.max(tf.abs(tf.sub(variable, expected[i]!))).dataSync()[0]!;
      expect(difference).toBeLessThan(1e-6);
    });
    model.dispose();
  });

  it('resumes from a checkpoint to the same weights as an uninterrupted run', async () => {
    const data = problem(200, 5);
    const common = { train: tensorData(data.inputs, data.labels), batchSize: 16, learningRate: 0.2, seed: 7 } as const;
    const straight = linearModel(FEATURES, CLASSES, 2);
    const straightStore = memoryCheckpointStore();
    await train({ ...common, model: straight, epochs: 4, checkpoints: straightStore });

    const directory = await mkdtemp(join(tmpdir(), 'regstack-resume-'));
    try {
      const interrupted = linearModel(FEATURES, CLASSES, 2);
      await train({ ...common, model: interrupted, epochs: 2, checkpoints: fileCheckpointStore(directory) });
      interrupted.dispose();
      const resumed = linearModel(FEATURES, CLASSES, 99); // different init: everything must come from the checkpoint
      const result = await train({ ...common, model: resumed, epochs: 4, checkpoints: fileCheckpointStore(directory), resume: true });
      expect(result.history.map((r) => r.epoch)).toEqual([1, 2, 3, 4]);
      expect(values(resumed)).toEqual(values(straight));
      resumed.dispose();
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
    straight.dispose();
    tf.dispose([data.inputs, data.labels]);
  });

  it('keeps the tensor count the same after every step, with a regularizer', async () => {
    const data = problem(120, 8);
    const model = linearModel(FEATURES, CLASSES);
    const confident: RegularizerPlugin = {
      name: 'toy-term',
      stage: 'loss-term',
      prepare: (context) => ({ shifted: tf.add(context.clean.inputs, 0.1) }),
      loss: (context, state) => ({ value: tf.mul(0.1, crossEntropy(context.forward((state as { shifted: tf.Tensor }).shifted, 'frozen-stats').logits, context.clean.labels)) as tf.Scalar }),
    };
    const counts: number[] = [];
    await train({
      model, train: tensorData(data.inputs, data.labels), epochs: 2, batchSize: 16, regularizers: [confident],
      onBatchEnd: () => counts.push(tf.memory().numTensors),
    });
    const perEpoch = Math.ceil(108 / 16);
    expect(counts.length).toBe(2 * perEpoch);
    // Constant within an epoch; from epoch 2 on, the best-weights snapshot holds one copy of each variable.
    expect(new Set(counts.slice(0, perEpoch)).size).toBe(1);
    expect(new Set(counts.slice(perEpoch)).size).toBe(1);
    expect(counts[perEpoch]! - counts[0]!).toBe(model.trainableVariables.length);
    model.dispose();
    tf.dispose([data.inputs, data.labels]);
  });

  it('stops on a NaN loss with a DivergenceError and leaves the last good checkpoint intact', async () => {
    const data = problem(64, 4);
    const inner = linearModel(FEATURES, CLASSES);
    let calls = 0;
    const poisoned = classifierFromFunction({
      numClasses: CLASSES,
      trainableVariables: inner.trainableVariables,
      apply: (inputs, options) => {
        calls++;
        const logits = inner.apply(inputs, options).logits;
        return calls > 7 ? (tf.mul(logits, Number.NaN) as tf.Tensor2D) : logits;
      },
    });
    const store = memoryCheckpointStore();
    await expect(
      train({ model: poisoned, train: tensorData(data.inputs, data.labels), validation: tensorData(data.inputs, data.labels), epochs: 5, batchSize: 16, checkpoints: store }),
    ).rejects.toThrow(DivergenceError);
    // Epoch 1 is 4 steps + 1 evaluation batch = 5 calls; epoch 2 fails at its third step (call 8).
    expect(store.saves).toBe(1);
    const saved = await store.load();
    expect(saved!.manifest.state.epoch).toBe(1);
    inner.dispose();
    tf.dispose([data.inputs, data.labels]);
  });

  it('rejects bad input with typed errors naming the field', async () => {
    const data = problem(40, 1);
    const model = linearModel(FEATURES, CLASSES);
    const source = tensorData(data.inputs, data.labels);
    await expect(train({ model, train: source, batchSize: 0 })).rejects.toThrow(/batchSize: must be ≥ 1/);
    await expect(train({ model, train: source, learningRate: Number.NaN })).rejects.toThrow(ConfigError);
    await expect(train({ model, train: source, ...({ learningrate: 0.1 } as object) })).rejects.toThrow(/train\.learningrate: unknown option/);
    await expect(train({ model, train: source, resume: true })).rejects.toThrow(/resume/);
    const wrongLabels = tensorData(data.inputs, tf.tensor1d(Array.from({ length: 40 }, (_, i) => (i === 7 ? 4 : 0)), 'int32'));
    await expect(train({ model, train: wrongLabels, validation: source, epochs: 1, batchSize: 40 })).rejects.toThrow(/batch\.labels: label 4/);
    expect(() => tensorData(data.inputs, tf.tensor1d([0, 1], 'int32'))).toThrow(DataError);
    // baseLoss is the stack's to check: its errors reach the caller before the first update.
    const weights = model.trainableVariables.map((variable) => Array.from(variable.dataSync()));
    await expect(train({ model, train: source, epochs: 1, ...({ baseLoss: 'triple' } as object) })).rejects.toThrow(/^baseLoss: expected single or two-view, got triple$/);
    await expect(train({ model, train: source, epochs: 1, baseLoss: 'two-view' })).rejects.toThrow(/^baseLoss: 'two-view' needs an augment function$/);
    expect(model.trainableVariables.map((variable) => Array.from(variable.dataSync()))).toEqual(weights);
    // A raw tf.LayersModel is told how to wrap it, not a TypeError from deep inside.
    const layersModel = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [FEATURES], units: CLASSES })] });
    await expect(train({ model: layersModel as never, train: source, epochs: 1 })).rejects.toThrow(/^model: got a tf\.LayersModel .*classifierFromLayersModel/);
    layersModel.dispose();
    model.dispose();
    tf.dispose([data.inputs, data.labels]);
  });
});
