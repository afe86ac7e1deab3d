import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';
import { classifierFromLayersModel } from './classifier.js';
import { ConfigError } from './errors.js';
import { Random } from './random.js';
import { composeRegularizers } from './stack.js';
import { errorField } from './testing.js';

describe('classifierFromLayersModel', () => {
  it('runs three modes, and frozen-stats leaves batch-norm moving statistics untouched', () => {
    const model = tfl.sequential({
      layers: [tfl.layers.dense({ inputShape: [4], units: 6 }), tfl.layers.batchNormalization(), tfl.layers.dense({ units: 3 })],
    });
    const classifier = classifierFromLayersModel(model);
    expect(classifier.numClasses).toBe(3);
    expect(classifier.trainableVariables.length).toBe(6);
    const movingMean = () => Array.from(classifier.nonTrainableVariables[0]!.dataSync());
    const x = tf.randomNormal([8, 4], 2, 1, 'float32', 3);
    const before = movingMean();
    const frozen = classifier.apply(x, { mode: 'frozen-stats' }).logits;
    expect(movingMean()).toEqual(before);
    const train = classifier.apply(x, { mode: 'train' }).logits;
    expect(movingMean()).not.toEqual(before);
    // Both use the batch statistics of x, so the outputs agree.
    expect(Array.from(frozen.dataSync())).toEqual(Array.from(train.dataSync()));
    const evaluation = classifier.apply(x, { mode: 'eval' }).logits;
    expect(Array.from(evaluation.dataSync())).not.toEqual(Array.from(train.dataSync()));
    tf.dispose([x, frozen, train, evaluation]);
    model.dispose();
  });

  it('reads a two-output model as [features, logits]', () => {
    const input = tfl.input({ shape: [4] });
    const features = tfl.layers.dense({ units: 5, activation: 'relu' }).apply(input) as tfl.SymbolicTensor;
    const logits = tfl.layers.dense({ units: 3 }).apply(features) as tfl.SymbolicTensor;
    const classifier = classifierFromLayersModel(tfl.model({ inputs: input, outputs: [features, logits] }));
    const output = classifier.apply(tf.ones([2, 4]), { mode: 'eval' });
    expect(output.features!.shape).toEqual([2, 5]);
    expect(output.logits.shape).toEqual([2, 3]);
  });

  it('refuses a model that outputs probabilities, saying how to fix it', () => {
    const dense = (activation?: 'softmax' | 'sigmoid' | 'linear' | 'relu') =>
      tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 6, activation: 'relu' }), tfl.layers.dense({ units: 3, ...(activation ? { activation } : {}) })] });
    const refused = (model: tfl.LayersModel) => {
      try {
        classifierFromLayersModel(model);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).field).toBe('model');
        return (error as Error).message;
      }
      return 'accepted';
    };
    expect(refused(dense('softmax'))).toMatch(/softmax activation.*needs logits.*activation: 'linear'.*tf\.softmax/);
    expect(refused(dense('sigmoid'))).toMatch(/sigmoid activation/);
    expect(refused(dense('linear'))).toBe('accepted');
    expect(refused(dense())).toBe('accepted');
    // A separate Activation or Softmax layer at the end.
    const withLayer = (last: tfl.layers.Layer) => tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 3 }), last] });
    expect(refused(withLayer(tfl.layers.activation({ activation: 'softmax' })))).toMatch(/softmax/);
    expect(refused(withLayer(tfl.layers.softmax()))).toMatch(/softmax/);
    // The softmax inside a nested Sequential that ends the model.
    const nested = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 5 }), dense('softmax')] });
    expect(refused(nested)).toMatch(/softmax/);
    // A two-output model is judged by its logits output only.
    const input = tfl.input({ shape: [4] });
    const features = tfl.layers.dense({ units: 5, activation: 'sigmoid' }).apply(input) as tfl.SymbolicTensor;
    const probabilities = tfl.layers.dense({ units: 3, activation: 'softmax' }).apply(features) as tfl.SymbolicTensor;
    const logits = tfl.layers.dense({ units: 3 }).apply(features) as tfl.SymbolicTensor;
    expect(refused(tfl.model({ inputs: input, outputs: [features, logits] }))).toBe('accepted');
    expect(refused(tfl.model({ inputs: input, outputs: [features, probabilities] }))).toMatch(/logits output ends in a softmax/);
  });

  it('validates its options and reads `stochastic` from the layers, recursively', () => {
    const plain = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 6 }), tfl.layers.batchNormalization(), tfl.layers.dense({ units: 3 })] });
    expect(errorField(() => classifierFromLayersModel(plain, { numClases: 3 } as never), ConfigError)).toBe('classifierFromLayersModel.numClases');
    expect(errorField(() => classifierFromLayersModel(plain, { numClasses: 1 }), ConfigError)).toBe('classifierFromLayersModel.numClasses');
    expect(errorField(() => classifierFromLayersModel(plain, { stochastic: 'no' as never }), ConfigError)).toBe('classifierFromLayersModel.stochastic');
    expect(errorField(() => classifierFromLayersModel({} as never), ConfigError)).toBe('model');
    expect(classifierFromLayersModel(plain, { numClasses: 3 }).numClasses).toBe(3);
    expect(classifierFromLayersModel(plain).stochastic).toBe(false);
    expect(classifierFromLayersModel(plain, { stochastic: true }).stochastic).toBe(true);
    const withDropout = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 6 }), tfl.layers.dropout({ rate: 0.5 }), tfl.layers.dense({ units: 3 })] });
    expect(classifierFromLayersModel(withDropout).stochastic).toBe(true);
    expect(classifierFromLayersModel(withDropout, { stochastic: false }).stochastic).toBe(false);
    for (const noise of [tfl.layers.gaussianNoise({ stddev: 0.1 }), tfl.layers.gaussianDropout({ rate: 0.1 }), tfl.layers.alphaDropout({ rate: 0.1 })]) {
      const inner = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [4], units: 6 }), noise] });
      const outer = tfl.sequential({ layers: [inner, tfl.layers.dense({ units: 3 })] });
      expect(classifierFromLayersModel(outer).stochastic).toBe(true);
    }
    const spatial = tfl.sequential({ layers: [tfl.layers.conv1d({ inputShape: [6, 2], filters: 2, kernelSize: 3 }), tfl.layers.spatialDropout1d({ rate: 0.2 }), tfl.layers.flatten(), tfl.layers.dense({ units: 3 })] });
    expect(classifierFromLayersModel(spatial).stochastic).toBe(true);
  });

  it('gives a deterministic Layers model the fused path of stack.gradients, with the plain path\'s gradients and statistics', () => {
    const build = () =>
      tfl.sequential({
        layers: [
          tfl.layers.dense({ inputShape: [4], units: 6, kernelInitializer: tfl.initializers.glorotNormal({ seed: 3 }) }),
          tfl.layers.batchNormalization(),
          tfl.layers.activation({ activation: 'tanh' }),
          tfl.layers.dense({ units: 3, kernelInitializer: tfl.initializers.glorotNormal({ seed: 4 }) }),
        ],
      });
    const model = build();
    const twin = build();
    const classifier = classifierFromLayersModel(model);
    const twinClassifier = classifierFromLayersModel(twin);
    // A loss term with a prepare that asks for the clean input gradient, as RCAD does.
    const stack = composeRegularizers([
      {
        name: 'shifted-entropy',
        stage: 'loss-term',
        prepare: (context) => ({ shifted: tf.add(context.clean.inputs, context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient) }),
        loss: (context, state: { shifted: tf.Tensor }) => ({ value: tf.mul(0.5, tf.mean(tf.square(context.forward(state.shifted, 'frozen-stats').logits))) as tf.Scalar }),
      },
    ]);
    const batch = { inputs: tf.randomUniform([8, 4], 0, 1, 'float32', 5), labels: tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1], 'int32') };
    const fused = stack.gradients({ model: classifier, batch, random: new Random(1) });
    expect(fused.fused).toBe(true);
    const prepared = stack.prepare({ model: twinClassifier, batch, random: new Random(1) });
    const plain = prepared.gradients();
    prepared.dispose();
    // The twins' variables have names of their own: compare in order.
    const fusedGrads = classifier.trainableVariables.map((variable) => fused.grads[variable.name]!);
    const plainGrads = twinClassifier.trainableVariables.map((variable) => plain.grads[variable.name]!);
    expect(fusedGrads).toHaveLength(6);
    fusedGrads.forEach((gradient, index) => {
      const difference = tf.tidy(() => tf.max(tf.abs(tf.sub(gradient, plainGrads[index]!))).dataSync()[0]!);
      expect(difference).toBeLessThan(1e-5);
    });
    expect(fused.value.dataSync()[0]).toBeCloseTo(plain.value.dataSync()[0]!, 5);
    // The moving statistics moved once, by the base pass, on both paths.
    const statistics = (c: typeof classifier) => c.nonTrainableVariables.flatMap((variable) => Array.from(variable.dataSync()));
    expect(statistics(classifier)).not.toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    statistics(classifier).forEach((value, index) => expect(value).toBeCloseTo(statistics(twinClassifier)[index]!, 6));
    tf.dispose([fused.value, plain.value, ...Object.values(fused.grads), ...Object.values(plain.grads), batch.inputs, batch.labels]);
    model.dispose();
    twin.dispose();
  });
});
