import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import * as tfd from '@tensorflow/tfjs-data';
import { ConfigError, DataError, DivergenceError, classifierFromLayersModel, composeRegularizers, crossEntropy, type RegularizerPlugin, type RegularizerStack } from '@regstack/regularizer';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { fit, type FitLogs } from './fit.js';
import './node.js'; // registers the file:// router
import { linearModel, prototypeData } from './test-models.js';

const FEATURES = 8;
const CLASSES = 3;

function problem(count: number, seed: number) {
  const { inputs, labels } = prototypeData(count, FEATURES, CLASSES, seed);
  return { x: tf.tensor2d(inputs, [count, FEATURES]), y: tf.tensor1d(labels, 'int32'), inputs, labels };
}

/** Batch norm first, so its input is the raw batch and its moving mean can be computed by hand. */
function batchNormDropoutModel(seed: number) {
  const model = tfl.sequential();
  model.add(tfl.layers.batchNormalization({ inputShape: [FEATURES] }));
  model.add(tfl.layers.dense({ units: 16, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({ seed }) }));
  model.add(tfl.layers.dropout({ rate: 0.25 }));
  model.add(tfl.layers.dense({ units: CLASSES, kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + 1 }) }));
  return model;
}

/** Mean cross-entropy and accuracy of `predict` (inference mode), computed here without fit's code. */
function evaluateByHand(model: tfl.LayersModel, x: tf.Tensor, labels: ArrayLike<number>) {
  const logits = model.predict(x) as tf.Tensor2D;
  const logProbabilities = tf.logSoftmax(logits);
  const rows = logProbabilities.arraySync();
  tf.dispose([logits, logProbabilities]);
  let nll = 0;
  let correct = 0;
  rows.forEach((row, i) => {
    nll -= row[labels[i]!]!;
    if (row.indexOf(Math.max(...row)) === labels[i]) correct++;
  });
  return { loss: nll / rows.length, acc: correct / rows.length };
}

describe('fit with a LayersModel', () => {
  it('trains batch norm + dropout under rcad + mixup: callbacks in order, history, running statistics, file:// save and reload', async () => {
    const count = 96;
    const data = problem(count, 11);
    const model = batchNormDropoutModel(5);
    const events: string[] = [];
    const batchLogs: FitLogs[] = [];
    const tensorsAtEpochEnd: number[] = [];
    const tensorsBefore = tf.memory().numTensors;

    const history = await fit(model, data.x, data.y, {
      regularizers: [mixup(), rcad()],
      optimizer: 'adam',
      learningRate: 0.01,
      epochs: 2,
      batchSize: 32,
      validationSplit: 0.25,
      shuffle: false,
      seed: 3,
      callbacks: {
        onTrainBegin: () => void events.push('trainBegin'),
        onEpochBegin: (epoch) => void events.push(`epochBegin ${epoch}`),
        onBatchBegin: (batch, logs) => void events.push(`batchBegin ${batch} size ${logs?.size}`),
        onBatchEnd: (batch, logs) => {
          events.push(`batchEnd ${batch}`);
          batchLogs.push({ ...logs });
        },
        onEpochEnd: async (epoch, logs) => {
          events.push(`epochEnd ${epoch} ${Object.keys(logs ?? {}).sort().join(',')}`);
          tensorsAtEpochEnd.push(tf.memory().numTensors);
        },
        onTrainEnd: () => void events.push('trainEnd'),
      },
    });

    // 72 training examples (the first 75%: Keras takes the LAST fraction for validation), batches 32, 32, 8.
    const epochEvents = (epoch: number) => [
      `epochBegin ${epoch}`,
      'batchBegin 0 size 32', 'batchEnd 0', 'batchBegin 1 size 32', 'batchEnd 1', 'batchBegin 2 size 8', 'batchEnd 2',
      `epochEnd ${epoch} acc,base,loss,rcad,val_acc,val_loss`,
    ];
    expect(events).toEqual(['trainBegin', ...epochEvents(0), ...epochEvents(1), 'trainEnd']);

    // The total is the base cross-entropy plus RCAD's weighted term; mixup transforms, adds no term.
    for (const logs of batchLogs) {
      expect(Object.keys(logs).sort()).toEqual(['acc', 'base', 'batch', 'loss', 'rcad', 'size']);
      expect(logs.loss).toBeCloseTo(logs.base! + logs.rcad!, 5);
      expect(logs.rcad).toBeGreaterThan(0);
      expect(logs.acc! * logs.size!).toBe(Math.round(logs.acc! * logs.size!)); // a count of correct predictions
    }
    expect(history.epoch).toEqual([0, 1]);
    expect(Object.keys(history.history).sort()).toEqual(['acc', 'base', 'loss', 'rcad', 'val_acc', 'val_loss']);
    // Epoch logs weigh batches by their size, as TF.js's BaseLogger does.
    const epochMean = (name: string, epoch: number) =>
      batchLogs.slice(3 * epoch, 3 * epoch + 3).reduce((sum, logs) => sum + logs[name]! * logs.size!, 0) / 72;
    for (const name of ['loss', 'acc', 'base', 'rcad']) {
      expect(history.history[name]![0]).toBeCloseTo(epochMean(name, 0), 6);
      expect(history.history[name]![1]).toBeCloseTo(epochMean(name, 1), 6);
    }
    // The last epoch's validation ran on the final weights: recompute it with predict.
    const validationInputs = tf.slice(data.x, 72);
    const validation = evaluateByHand(model, validationInputs, data.labels.slice(72));
    validationInputs.dispose();
    expect(history.history.val_loss![1]).toBeCloseTo(validation.loss, 5);
    expect(history.history.val_acc![1]).toBeCloseTo(validation.acc, 6);
    expect(history.params).toMatchObject({ epochs: 2, initialEpoch: 0, samples: 72, steps: 3, batchSize: 32, doValidation: true, seed: 3 });

    // No leak: the same count after each epoch, and after fit what there was before (its Adam disposed).
    expect(tensorsAtEpochEnd[1]).toBe(tensorsAtEpochEnd[0]);
    expect(tf.memory().numTensors).toBe(tensorsBefore);

    // Batch norm's moving mean saw ONE training pass per step, the base pass: m ← 0.99·m + 0.01·mean(batch).
    // mixup's one λ per batch keeps each batch's mean; RCAD's extra passes on x + α·d would move it, and
    // with six steps from 0 one extra update per step would about double it.
    const rows = Array.from({ length: 72 }, (_, i) => Array.from(data.inputs.slice(i * FEATURES, (i + 1) * FEATURES)));
    const expectedMean = new Array<number>(FEATURES).fill(0);
    for (let epoch = 0; epoch < 2; epoch++) {
      for (const [start, end] of [[0, 32], [32, 64], [64, 72]] as const) {
        for (let j = 0; j < FEATURES; j++) {
          let sum = 0;
          for (let i = start; i < end; i++) sum += rows[i]![j]!;
          expectedMean[j] = 0.99 * expectedMean[j]! + 0.01 * (sum / (end - start));
        }
      }
    }
    const movingMean = Array.from(model.layers[0]!.getWeights()[2]!.dataSync());
    for (let j = 0; j < FEATURES; j++) expect(Math.abs(movingMean[j]! - expectedMean[j]!)).toBeLessThan(1e-6);
    expect(Math.min(...expectedMean)).toBeGreaterThan(0.001); // so the comparison above could fail

    // An ordinary LayersModel afterwards: save with file://, reload, the same predictions.
    const directory = await mkdtemp(join(tmpdir(), 'regstack-fit-'));
    try {
      await model.save(`file://${directory}`);
      expect((await readdir(directory)).sort()).toEqual(['model.json', 'weights.bin']);
      const reloaded = await tfl.loadLayersModel(`file://${join(directory, 'model.json')}`);
      const before = model.predict(data.x) as tf.Tensor;
      const after = reloaded.predict(data.x) as tf.Tensor;
      // float32 weights are written and read bit for bit, so the predictions agree exactly; 1e-6 allows nothing more than that.
      expect(tf.max(tf.abs(tf.sub(before, after))).dataSync()[0]).toBeLessThanOrEqual(1e-6);
      tf.dispose([before, after]);
      reloaded.dispose();
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
    model.dispose();
    tf.dispose([data.x, data.y]);
  });

  it('keeps the moving statistics to the base pass on the fused path too (a deterministic model, RCAD alone)', async () => {
    const data = problem(64, 14);
    const layers = tfl.sequential();
    layers.add(tfl.layers.batchNormalization({ inputShape: [FEATURES] }));
    layers.add(tfl.layers.dense({ units: CLASSES, kernelInitializer: tfl.initializers.glorotUniform({ seed: 3 }) }));
    // Declared deterministic, so the stack's fused path (one base pass also serving RCAD's input gradient) runs.
    const model = { ...classifierFromLayersModel(layers), stochastic: false };
    const stack = composeRegularizers([rcad()]);
    const fused: boolean[] = [];
    const watched: RegularizerStack = { ...stack, gradients: (input) => {
      const result = stack.gradients(input);
      fused.push(result.fused);
      return result;
    } };
    await fit(model, data.x, data.y, { regularizers: watched, optimizer: 'sgd', batchSize: 16, shuffle: false, seed: 0 });
    expect(fused).toEqual([true, true, true, true]);
    const expectedMean = new Array<number>(FEATURES).fill(0);
    for (let start = 0; start < 64; start += 16) {
      for (let j = 0; j < FEATURES; j++) {
        let sum = 0;
        for (let i = start; i < start + 16; i++) sum += data.inputs[i * FEATURES + j]!;
        expectedMean[j] = 0.99 * expectedMean[j]! + 0.01 * (sum / 16);
      }
    }
    const movingMean = layers.layers[0]!.getWeights()[2]!.dataSync();
    for (let j = 0; j < FEATURES; j++) expect(Math.abs(movingMean[j]! - expectedMean[j]!)).toBeLessThan(1e-6);
    layers.dispose();
    tf.dispose([data.x, data.y]);
  });

  it('stops when tf.callbacks.earlyStopping says so, for a LayersModel and for a Classifier', async () => {
    const data = problem(40, 2);
    const validation = problem(20, 3);
    const layersModel = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [FEATURES], units: CLASSES })] });
    // No validation loss is below the baseline 0: patience 2 ends training after the second epoch.
    const stopper = () => tfl.callbacks.earlyStopping({ monitor: 'val_loss', baseline: 0, patience: 2 });
    const common = { optimizer: 'sgd', epochs: 10, batchSize: 20, validationData: [validation.x, validation.y], seed: 1 } as const;
    const fromLayers = await fit(layersModel, data.x, data.y, { ...common, callbacks: stopper() });
    expect(fromLayers.epoch).toEqual([0, 1]);
    expect(layersModel.stopTraining).toBe(true);
    // A second fit starts afresh (stopTraining reset after onTrainBegin, as model.fit does).
    const again = await fit(layersModel, data.x, data.y, { ...common, epochs: 1 });
    expect(again.epoch).toEqual([0]);

    const classifier = linearModel(FEATURES, CLASSES, 4);
    const fromClassifier = await fit(classifier, data.x, data.y, { ...common, callbacks: [stopper()] });
    expect(fromClassifier.epoch).toEqual([0, 1]);

    // stopTraining set during an epoch ends it after the current batch; the epoch still ends with validation.
    let batches = 0;
    const stopped = await fit(layersModel, data.x, data.y, {
      ...common,
      batchSize: 5,
      callbacks: {
        onBatchEnd: (batch) => {
          batches++;
          if (batch === 1) layersModel.stopTraining = true;
        },
      },
    });
    expect(batches).toBe(2);
    expect(stopped.epoch).toEqual([0]);
    expect(stopped.history.val_loss).toHaveLength(1);
    layersModel.dispose();
    classifier.dispose();
    tf.dispose([data.x, data.y, validation.x, validation.y]);
  });

  it('uses the optimizer a LayersModel was compiled with, and leaves it usable', async () => {
    const data = problem(30, 4);
    const model = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [FEATURES], units: CLASSES })] });
    model.compile({ optimizer: tf.train.sgd(0.5), loss: 'sparseCategoricalCrossentropy' });
    const before = Array.from(model.getWeights()[0]!.dataSync());
    await fit(model, data.x, data.y, { epochs: 1, batchSize: 30, seed: 0 });
    const after = Array.from(model.getWeights()[0]!.dataSync());
    expect(after).not.toEqual(before);
    // Not disposed by fit: model.fit with the same optimizer still works.
    await model.fit(data.x, tf.cast(data.y, 'float32'), { epochs: 1, verbose: 0 });
    model.dispose();
    tf.dispose([data.x, data.y]);
  });
});

describe('fit with tensors and with a data set', () => {
  it('takes the same steps from a tf.data.Dataset of one-hot batches as from tensors, and reports the training accuracy', async () => {
    const data = problem(48, 6);
    const validation = problem(16, 7);
    const initial = linearModel(FEATURES, CLASSES, 9);
    // acc of the first step: the initial model's predictions on the first batch (a linear model: train = eval mode).
    const firstPredictions = tf.tidy(() => tf.argMax(initial.apply(tf.slice(data.x, 0, 16), { mode: 'eval' }).logits, 1).dataSync());
    const firstAccuracy = Array.from(firstPredictions).filter((p, i) => p === data.labels[i]).length / 16;
    const options = { optimizer: 'sgd', learningRate: 0.3, epochs: 2, seed: 1 } as const;

    const fromTensors = linearModel(FEATURES, CLASSES, 9);
    const firstLogs: FitLogs[] = [];
    const tensorHistory = await fit(fromTensors, data.x, data.y, {
      ...options,
      batchSize: 16,
      shuffle: false,
      validationData: [validation.x, validation.y],
      callbacks: { onBatchEnd: (_batch, logs) => void firstLogs.push({ ...logs }) },
    });
    expect(firstLogs[0]!.acc).toBeCloseTo(firstAccuracy, 6);

    const oneHot = (labels: Int32Array) => Array.from(labels, (label) => Array.from({ length: CLASSES }, (_, k) => (k === label ? 1 : 0)));
    const rows = (inputs: Float32Array, count: number) => Array.from({ length: count }, (_, i) => Array.from(inputs.slice(i * FEATURES, (i + 1) * FEATURES)));
    const dataset = tfd.zip({ xs: tfd.array(rows(data.inputs, 48)), ys: tfd.array(oneHot(data.labels)) }).batch(16);
    const validationSet = tfd.zip({ xs: tfd.array(rows(validation.inputs, 16)), ys: tfd.array(oneHot(validation.labels)) }).batch(8);
    const fromDataset = linearModel(FEATURES, CLASSES, 9);
    const tensorsBefore = tf.memory().numTensors;
    const datasetHistory = await fit(fromDataset, dataset, { ...options, validationData: validationSet });
    expect(tf.memory().numTensors).toBe(tensorsBefore); // every element's tensors freed

    fromTensors.trainableVariables.forEach((variable, i) => {
      const difference = tf.max(tf.abs(tf.sub(variable, fromDataset.trainableVariables[i]!))).dataSync()[0]!;
      expect(difference).toBeLessThan(1e-6);
    });
    for (const name of ['loss', 'acc', 'val_loss', 'val_acc']) {
      datasetHistory.history[name]!.forEach((value, epoch) => expect(value).toBeCloseTo(tensorHistory.history[name]![epoch]!, 5));
    }
    expect(datasetHistory.params).toMatchObject({ samples: undefined, steps: undefined, batchSize: undefined });
    tf.dispose([data.x, data.y, validation.x, validation.y]);
    [initial, fromTensors, fromDataset].forEach((model) => model.dispose());
  });

  it('reports acc against the targets the base loss used (the arg max of a transform), not the raw labels', async () => {
    const data = problem(30, 12);
    const model = linearModel(FEATURES, CLASSES, 5);
    const predictions = tf.tidy(() => tf.argMax(model.apply(data.x, { mode: 'eval' }).logits, 1).dataSync());
    const shifted = Array.from(data.labels, (label) => (label + 1) % CLASSES);
    // A batch transform whose targets name the next class: acc must count agreement with those.
    const shift: RegularizerPlugin = {
      name: 'shift',
      stage: 'batch-transform',
      transformBatch: (batch) => ({ inputs: batch.inputs, targets: tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(shifted, 'int32'), CLASSES), 'float32') as tf.Tensor2D) }),
    };
    let acc = NaN;
    await fit(model, data.x, data.y, {
      optimizer: 'sgd', batchSize: 30, shuffle: false, seed: 0, regularizers: [shift],
      callbacks: { onBatchEnd: (_batch, logs) => void (acc = logs!.acc!) },
    });
    const expected = Array.from(predictions).filter((p, i) => p === shifted[i]).length / 30;
    const againstLabels = Array.from(predictions).filter((p, i) => p === data.labels[i]).length / 30;
    expect(expected).not.toBeCloseTo(againstLabels, 6); // so the test tells the two apart
    expect(acc).toBeCloseTo(expected, 6);
    model.dispose();
    tf.dispose([data.x, data.y]);
  });

  it('trains on float32 inputs as they are (no copy) and casts other dtypes once', async () => {
    const data = problem(20, 13);
    const model = linearModel(FEATURES, CLASSES, 7);
    const optimizer = tf.train.sgd(0.1);
    const extraTensors = async (x: tf.Tensor) => {
      const before = tf.memory().numTensors;
      let during = NaN;
      await fit(model, x, data.y, { optimizer, batchSize: 20, seed: 0, callbacks: { onTrainBegin: () => void (during = tf.memory().numTensors) } });
      return during - before;
    };
    expect(await extraTensors(data.x)).toBe(1); // the int32 labels only
    const integers = tf.cast(tf.mul(data.x, 10), 'int32');
    expect(await extraTensors(integers)).toBe(2); // the labels and one float32 copy of the inputs
    tf.dispose([integers, data.x, data.y]);
    optimizer.dispose();
    model.dispose();
  });

  it('shuffles each epoch from the seed: the same seed gives the same weights, another seed others', async () => {
    const data = problem(40, 8);
    const run = async (seed: number) => {
      const model = linearModel(FEATURES, CLASSES, 2);
      await fit(model, data.x, data.y, { optimizer: 'sgd', learningRate: 0.5, epochs: 2, batchSize: 8, seed });
      const weights = Array.from(model.trainableVariables[0]!.dataSync());
      model.dispose();
      return weights;
    };
    const [first, second, other] = [await run(1), await run(1), await run(2)];
    expect(second).toEqual(first);
    expect(other).not.toEqual(first);
    tf.dispose([data.x, data.y]);
  });

  it('clips to the global norm, then adds weight decay, then steps: as computed by hand', async () => {
    const x = tf.tensor2d([[1, 0.5, 0, 0, 0, 0, 0, 0.2], [0.2, 0.9, 0.1, 0, 0, 0, 0, 0]]);
    const y = tf.tensor1d([0, 2], 'int32');
    const model = linearModel(FEATURES, CLASSES, 3);
    const [weight, bias] = model.trainableVariables as tf.Variable[];
    const before = [weight!.clone(), bias!.clone()];
    const { grads } = tf.variableGrads(() => crossEntropy(model.apply(x, { mode: 'train' }).logits, y), [weight!, bias!]);
    const g = [grads[weight!.name]!, grads[bias!.name]!];
    const norm = Math.sqrt(g.reduce((sum, t) => sum + tf.sum(tf.square(t)).dataSync()[0]!, 0));
    const clipNorm = 0.05;
    expect(norm).toBeGreaterThan(clipNorm); // so that clipping matters
    const [rate, decay] = [0.4, 0.01];
    const expected = before.map((w, i) => tf.sub(w, tf.mul(rate, tf.add(tf.mul(g[i]!, clipNorm / (norm + 1e-6)), tf.mul(w, decay)))));
    await fit(model, x, y, { optimizer: 'sgd', learningRate: rate, clipNorm, weightDecay: decay, batchSize: 2, seed: 0 });
    model.trainableVariables.forEach((variable, i) => {
      expect(tf.max(tf.abs(tf.sub(variable, expected[i]!))).dataSync()[0]).toBeLessThan(1e-6);
    });
    tf.dispose([x, y, ...before, ...g, ...expected]);
    model.dispose();
  });

  it('augments each batch, prints a line per epoch when verbose, and stops before an update whose loss is not finite', async () => {
    const data = problem(24, 5);
    const model = linearModel(FEATURES, CLASSES, 6);
    let augmented = 0;
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await fit(model, data.x, data.y, {
        optimizer: 'sgd', epochs: 2, batchSize: 10, seed: 2, verbose: 1,
        augment: (inputs) => {
          augmented++;
          return tf.mul(inputs, 0.9);
        },
      });
      expect(augmented).toBe(6); // 3 batches × 2 epochs
      expect(log.mock.calls.map(([line]) => String(line).replace(/ - [\d.]+s - /, ' - ')).map((line) => line.split(' - ')[0])).toEqual(['Epoch 1/2', 'Epoch 2/2']);
      expect(String(log.mock.calls[1]![0])).toMatch(/loss: \d+\.\d{4} - acc: \d\.\d{4} - base: /);
    } finally {
      log.mockRestore();
    }
    const weights = Array.from(model.trainableVariables[0]!.dataSync());
    const tensors = tf.memory().numTensors;
    const poison: RegularizerPlugin = { name: 'poison', stage: 'loss-term', loss: () => ({ value: tf.scalar(NaN) }) };
    const error = await fit(model, data.x, data.y, { optimizer: 'sgd', regularizers: [poison], seed: 2 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DivergenceError);
    expect(Array.from(model.trainableVariables[0]!.dataSync())).toEqual(weights); // no update applied
    expect(tf.memory().numTensors).toBe(tensors);
    model.dispose();
    tf.dispose([data.x, data.y]);
  });

  it('refuses bad options and data with typed errors naming the field', async () => {
    const data = problem(20, 1);
    const model = linearModel(FEATURES, CLASSES, 1);
    const layersModel = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [FEATURES], units: CLASSES })] });
    const dataset = tfd.zip({ xs: tfd.array([[0, 0, 0, 0, 0, 0, 0, 0]]), ys: tfd.array([0]) }).batch(1);
    const rejects = async (promise: Promise<unknown>, type: typeof ConfigError | typeof DataError, field: string) => {
      const error = await promise.then(() => null, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(type);
      expect((error as ConfigError).field).toBe(field);
    };
    const sgd = { optimizer: 'sgd' } as const;
    const userOptimizer = tf.train.sgd(0.1);
    const tensorsBefore = tf.memory().numTensors;
    await rejects(fit(model, data.x, data.y, { ...sgd, epoch: 2 } as never), ConfigError, 'fit.epoch');
    await rejects(fit(model, data.x, data.y, {}), ConfigError, 'optimizer');
    await rejects(fit(layersModel, data.x, data.y, {}), ConfigError, 'optimizer');
    await rejects(fit(model, data.x, data.y, { optimizer: 'nadam' as never }), ConfigError, 'optimizer');
    await rejects(fit(model, data.x, data.y, { optimizer: userOptimizer, learningRate: 0.1 }), ConfigError, 'learningRate');
    await rejects(fit(model, data.x, data.y, { ...sgd, epochs: 0 }), ConfigError, 'epochs');
    await rejects(fit(model, data.x, data.y, { ...sgd, batchSize: 2.5 }), ConfigError, 'batchSize');
    await rejects(fit(model, data.x, data.y, { ...sgd, validationSplit: 1 }), ConfigError, 'validationSplit');
    await rejects(fit(model, data.x, data.y, { ...sgd, validationSplit: 0.2, validationData: [data.x, data.y] }), ConfigError, 'validationSplit');
    await rejects(fit(model, data.x, data.y, { ...sgd, validationData: [data.x] as never }), ConfigError, 'validationData');
    await rejects(fit(model, data.x, data.y, { ...sgd, clipNorm: -1 }), ConfigError, 'clipNorm');
    await rejects(fit(model, data.x, data.y, { ...sgd, verbose: 3 as never }), ConfigError, 'verbose');
    await rejects(fit(model, data.x, data.y, { ...sgd, callbacks: { onEpochEnds: () => {} } as never }), ConfigError, 'callbacks[0].onEpochEnds');
    await rejects(fit(model, data.x, data.y, { ...sgd, batchesPerEpoch: 2 }), ConfigError, 'batchesPerEpoch');
    const named = (name: string): RegularizerPlugin => ({ name, stage: 'loss-term', loss: () => ({ value: tf.scalar(0) }) });
    await rejects(fit(model, data.x, data.y, { ...sgd, regularizers: [named('acc')] }), ConfigError, 'regularizers');
    await rejects(fit({} as never, data.x, data.y, sgd), ConfigError, 'model');
    await rejects(fit(model, dataset, { ...sgd, batchSize: 4 }), ConfigError, 'batchSize');
    await rejects(fit(model, dataset, { ...sgd, shuffle: true }), ConfigError, 'shuffle');
    await rejects(fit(model, dataset, data.y as never, sgd), ConfigError, 'y');

    const soft = tf.tensor2d(Array.from({ length: 20 }, () => [0.8, 0.1, 0.1]));
    await rejects(fit(model, data.x, soft, sgd), DataError, 'y');
    const wide = tf.oneHot(data.y, CLASSES + 1);
    await rejects(fit(model, data.x, wide, sgd), DataError, 'y');
    const outOfRange = tf.tensor1d(Array.from({ length: 20 }, () => CLASSES), 'int32');
    await rejects(fit(model, data.x, outOfRange, sgd), DataError, 'y');
    const fewer = tf.slice(data.y, 0, 10);
    await rejects(fit(model, data.x, fewer, sgd), DataError, 'y');
    const softSet = tfd.zip({ xs: tfd.array([[0, 0, 0, 0, 0, 0, 0, 0]]), ys: tfd.array([[0.5, 0.5, 0]]) }).batch(1);
    await rejects(fit(model, softSet, sgd), DataError, 'x.ys');
    tf.dispose([soft, wide, outOfRange, fewer]);
    expect(tf.memory().numTensors).toBe(tensorsBefore); // refused runs leave nothing behind
    userOptimizer.dispose();
    model.dispose();
    layersModel.dispose();
    tf.dispose([data.x, data.y]);
  });
});
