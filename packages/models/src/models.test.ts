import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, Random, composeRegularizers, meanEntropy, type ModelMode, type RegularizerPlugin } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { createModel, linearClassifier, mlp, resnet18, smallCnn, wideResNet, type ClassifierModel } from './index.js';

function images(shape: [number, number, number, number], seed: number): tf.Tensor4D {
  return tf.randomUniform(shape, 0, 1, 'float32', seed);
}

function values(variable: tf.Tensor): number[] {
  return Array.from(variable.dataSync());
}

describe('parameter counts', () => {
  it('match the published counts of ResNet-18 (CIFAR) and the Wide ResNets', () => {
    const check = (model: ClassifierModel, expected: number) => {
      expect(model.parameterCount()).toBe(expected);
      model.dispose();
    };
    check(resnet18({ numClasses: 10 }), 11_173_962);
    check(resnet18({ numClasses: 100 }), 11_220_132);
    check(createModel('wrn-16-8', { numClasses: 10 }), 10_961_370);
    check(createModel('wrn-28-10', { numClasses: 10 }), 36_479_194);
  }, 60_000);

  it('counts the small models from their layer sizes', () => {
    const width = 4;
    const cnn = smallCnn({ inputShape: [28, 28, 1], width, numClasses: 10 });
    const convolutions = 9 * 1 * width + 9 * width * width + 9 * width * 2 * width + 9 * 2 * width * 2 * width;
    const batchNorms = 2 * (width + width + 2 * width + 2 * width);
    const head = 7 * 7 * 2 * width * 10 + 10;
    expect(cnn.parameterCount()).toBe(convolutions + batchNorms + head);
    expect(cnn.featureSize).toBe(7 * 7 * 2 * width);
    expect(cnn.nonTrainableVariables).toHaveLength(8);
    const perceptron = mlp({ inputShape: [28, 28, 1], hiddenUnits: [32, 16] });
    expect(perceptron.parameterCount()).toBe(784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10);
    expect(perceptron.nonTrainableVariables).toHaveLength(0);
    const linear = linearClassifier({ inputShape: [28, 28, 1] });
    expect(linear.parameterCount()).toBe(7850);
    for (const model of [cnn, perceptron, linear]) model.dispose();
  });
});

describe('forward passes', () => {
  const tiny: Array<[string, () => ClassifierModel, [number, number, number]]> = [
    ['resnet18', () => resnet18({ width: 2, numClasses: 7, inputShape: [8, 8, 3] }), [8, 8, 3]],
    ['wrn-10-1', () => wideResNet({ depth: 10, widen: 1, numClasses: 7, inputShape: [8, 8, 3], dropout: 0.3 }), [8, 8, 3]],
    ['small-cnn', () => smallCnn({ width: 2, numClasses: 7, inputShape: [9, 9, 1] }), [9, 9, 1]],
    ['mlp', () => mlp({ hiddenUnits: [5], numClasses: 7, inputShape: [4, 4, 2] }), [4, 4, 2]],
    ['linear', () => linearClassifier({ numClasses: 7, inputShape: [4, 4, 2] }), [4, 4, 2]],
  ];

  it.each(tiny)('%s gives logits [batch, K] and features [batch, featureSize] in every mode, from NHWC or flat inputs', (_, build, shape) => {
    const model = build();
    const x = images([3, ...shape], 1);
    const before = tf.memory().numTensors;
    for (const mode of ['train', 'eval', 'frozen-stats'] as ModelMode[]) {
      const { logits, features } = model.apply(x, { mode, random: new Random(1) });
      expect(logits.shape).toEqual([3, 7]);
      expect(features?.shape).toEqual([3, model.featureSize]);
      tf.dispose([logits, features!]);
    }
    expect(tf.memory().numTensors).toBe(before);
    const flat = tf.reshape(x, [3, -1]);
    const fromFlat = model.apply(flat, { mode: 'eval' });
    const fromImages = model.apply(x, { mode: 'eval' });
    expect(values(fromFlat.logits)).toEqual(values(fromImages.logits));
    tf.dispose([x, flat, fromFlat.logits, fromFlat.features!, fromImages.logits, fromImages.features!]);
    model.dispose();
  });

  it('checks inputs and modes, naming the field', () => {
    const model = smallCnn({ width: 2, inputShape: [8, 8, 1] });
    const wrong = tf.zeros([2, 8, 8, 3]);
    expect(() => model.apply(wrong, { mode: 'eval' })).toThrow(DataError);
    expect(() => model.apply(wrong, { mode: 'eval' })).toThrow(/inputs: expected shape \[batch, 8, 8, 1\]/);
    const right = tf.zeros([2, 8, 8, 1]);
    expect(() => model.apply(right, { mode: 'training' as ModelMode })).toThrow(/options\.mode/);
    tf.dispose([wrong, right]);
    model.dispose();
    expect(() => model.apply(right, { mode: 'eval' })).toThrow(ConfigError);
  });

  it('normalises inputs inside the model: mean/std model on raw x equals the plain model on (x − mean)/std', () => {
    const mean = [0.4, 0.5, 0.6];
    const std = [0.2, 0.25, 0.3];
    const normalised = resnet18({ width: 2, inputShape: [8, 8, 3], mean, std, seed: 4 });
    const plain = resnet18({ width: 2, inputShape: [8, 8, 3], seed: 4 });
    const x = images([2, 8, 8, 3], 2);
    const standardised = tf.div(tf.sub(x, tf.tensor1d(mean)), tf.tensor1d(std));
    // 'eval' (running statistics) so that batch statistics of a tiny batch do not amplify rounding.
    const a = normalised.apply(x, { mode: 'eval' });
    const b = plain.apply(standardised, { mode: 'eval' });
    const differences = values(tf.abs(tf.sub(a.logits, b.logits)));
    expect(Math.max(...differences)).toBeLessThan(1e-5);
    expect(Math.max(...values(tf.abs(tf.sub(a.logits, plain.apply(x, { mode: 'eval' }).logits))))).toBeGreaterThan(1e-3);
    normalised.dispose();
    plain.dispose();
  });

  it("uses the running statistics in 'eval' and updates them by PyTorch's rule in 'train'", () => {
    const model = linearStem();
    const x = images([4, 4, 4, 1], 3);
    const variables = model.namedVariables();
    const conv = variables.get('conv1.weight')!;
    // The stem's pre-BN activations, computed independently with PyTorch's symmetric padding.
    const activations = tf.conv2d(x, conv as tf.Tensor4D, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]);
    const count = activations.size / activations.shape[3]!;
    const batchMean = values(tf.mean(activations, [0, 1, 2]));
    const batchVariance = values(tf.moments(activations, [0, 1, 2]).variance);
    const runningMean = variables.get('bn1.running_mean')!;
    const runningVariance = variables.get('bn1.running_var')!;
    const before = tf.memory().numTensors;
    tf.dispose(model.apply(x, { mode: 'train' }) as unknown as tf.TensorContainer);
    expect(tf.memory().numTensors).toBe(before);
    values(runningMean).forEach((value, channel) => expect(value).toBeCloseTo(0.1 * batchMean[channel]!, 5));
    values(runningVariance).forEach((value, channel) =>
      expect(value).toBeCloseTo(0.9 + 0.1 * batchVariance[channel]! * (count / (count - 1)), 5),
    );
    // Eval mode reads the running statistics and nothing of the batch: one example alone gets the
    // logits it gets within the batch, and a changed running mean changes the output.
    const stats = values(runningMean).concat(values(runningVariance));
    const batchLogits = values(model.apply(x, { mode: 'eval' }).logits);
    const first = tf.slice(x, [0, 0, 0, 0], [1, 4, 4, 1]);
    const aloneLogits = values(model.apply(first, { mode: 'eval' }).logits);
    aloneLogits.forEach((value, index) => expect(value).toBeCloseTo(batchLogits[index]!, 5));
    expect(values(runningMean).concat(values(runningVariance))).toEqual(stats);
    const aloneFrozen = values(model.apply(tf.concat([first, first]), { mode: 'frozen-stats' }).logits);
    expect(aloneFrozen.slice(0, aloneLogits.length)).not.toEqual(aloneLogits);
    runningMean.assign(tf.tensor1d([0.25, -0.5]));
    expect(values(model.apply(first, { mode: 'eval' }).logits)).not.toEqual(aloneLogits);
    model.dispose();
  });

  it("'frozen-stats' gives the output of 'train' without touching running statistics (ResNet-18)", () => {
    const a = resnet18({ width: 2, inputShape: [8, 8, 3], seed: 9 });
    const b = resnet18({ width: 2, inputShape: [8, 8, 3], seed: 9 });
    const x = images([4, 8, 8, 3], 5);
    const frozen = a.apply(x, { mode: 'frozen-stats' });
    const trained = b.apply(x, { mode: 'train' });
    expect(values(frozen.logits)).toEqual(values(trained.logits));
    const untouched = [...a.namedVariables()].filter(([name]) => name.endsWith('running_mean')).every(([, v]) => values(v).every((value) => value === 0));
    const updated = [...b.namedVariables()].filter(([name]) => name.endsWith('running_mean')).every(([, v]) => values(v).some((value) => value !== 0));
    expect(untouched).toBe(true);
    expect(updated).toBe(true);
    a.dispose();
    b.dispose();
  });

  it("dropout is drawn from options.random, is active in 'train' and 'frozen-stats' and off in 'eval'", () => {
    const model = wideResNet({ depth: 10, widen: 1, inputShape: [8, 8, 3], dropout: 0.5, seed: 2 });
    const x = images([4, 8, 8, 3], 6);
    const run = (mode: ModelMode, seed?: number) => values(model.apply(x, { mode, ...(seed === undefined ? {} : { random: new Random(seed) }) }).logits);
    expect(run('frozen-stats', 1)).toEqual(run('frozen-stats', 1));
    expect(run('frozen-stats', 1)).not.toEqual(run('frozen-stats', 2));
    expect(run('train', 1)).toEqual(run('frozen-stats', 1));
    expect(run('eval')).toEqual(run('eval'));
    const noDropout = wideResNet({ depth: 10, widen: 1, inputShape: [8, 8, 3], dropout: 0, seed: 2 });
    expect(values(noDropout.apply(x, { mode: 'frozen-stats' }).logits)).not.toEqual(run('frozen-stats', 1));
    model.dispose();
    noDropout.dispose();
  });
});

/** A ResNet-18 of width 2 on 4×4×1 inputs, whose stem BN has 2 channels. */
function linearStem(): ClassifierModel {
  return resnet18({ width: 2, inputShape: [4, 4, 1], seed: 3 });
}

describe('initialisation', () => {
  it('is reproducible from the seed or a Random, and differs between seeds', () => {
    const a = smallCnn({ width: 2, inputShape: [8, 8, 1], seed: 11 });
    const b = createModel('small-cnn', { width: 2, inputShape: [8, 8, 1], random: new Random(11) });
    const c = smallCnn({ width: 2, inputShape: [8, 8, 1], seed: 12 });
    const weightsOf = (model: ClassifierModel) => values(model.namedVariables().get('block1.conv1.weight')!);
    expect(weightsOf(a)).toEqual(weightsOf(b));
    expect(weightsOf(a)).not.toEqual(weightsOf(c));
    for (const model of [a, b, c]) model.dispose();
  });

  it("follows PyTorch's defaults: U(±1/√fan_in) for conv and linear weights and linear biases, BN γ = 1, β = 0", () => {
    const model = resnet18({ width: 8, inputShape: [8, 8, 3], numClasses: 10 });
    const variables = model.namedVariables();
    const checkUniform = (name: string, fanIn: number) => {
      const data = values(variables.get(name)!);
      const bound = 1 / Math.sqrt(fanIn);
      expect(Math.max(...data.map(Math.abs))).toBeLessThanOrEqual(bound);
      // The variance of U(−b, b) is b²/3; with thousands of draws it is within a few percent.
      const variance = data.reduce((sum, value) => sum + value * value, 0) / data.length;
      expect(variance / (bound * bound / 3)).toBeGreaterThan(0.9);
      expect(variance / (bound * bound / 3)).toBeLessThan(1.1);
    };
    checkUniform('layer2.0.conv1.weight', 9 * 8);
    checkUniform('layer4.1.conv2.weight', 9 * 64);
    checkUniform('layer3.0.shortcut.0.weight', 16);
    checkUniform('linear.weight', 64);
    expect(variables.get('layer2.0.conv1.weight')!.shape).toEqual([3, 3, 8, 16]);
    expect(variables.get('linear.weight')!.shape).toEqual([64, 10]);
    expect(Math.max(...values(variables.get('linear.bias')!).map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(values(variables.get('layer1.0.bn1.weight')!).every((value) => value === 1)).toBe(true);
    expect(values(variables.get('layer1.0.bn1.bias')!).every((value) => value === 0)).toBe(true);
    expect(values(variables.get('layer1.0.bn1.running_var')!).every((value) => value === 1)).toBe(true);
    expect([...variables.keys()].some((name) => name.includes('conv') && name.endsWith('.bias'))).toBe(false);
    model.dispose();
  });

  it('follows the Wide ResNet reference: conv N(0, 2/(k²·C_out)), linear bias 0', () => {
    const model = wideResNet({ depth: 16, widen: 2, inputShape: [8, 8, 3] });
    const variables = model.namedVariables();
    const data = values(variables.get('block3.layer.1.conv1.weight')!);
    expect(variables.get('block3.layer.1.conv1.weight')!.shape).toEqual([3, 3, 128, 128]);
    const variance = data.reduce((sum, value) => sum + value * value, 0) / data.length;
    expect(variance / (2 / (9 * 128))).toBeGreaterThan(0.97);
    expect(variance / (2 / (9 * 128))).toBeLessThan(1.03);
    expect(values(variables.get('fc.bias')!).every((value) => value === 0)).toBe(true);
    expect(variables.get('block2.layer.0.convShortcut.weight')!.shape).toEqual([1, 1, 32, 64]);
    expect(variables.has('block2.layer.1.convShortcut.weight')).toBe(false);
    expect(model.architecture).toBe('wrn-16-2');
    model.dispose();
  });
});

describe('options', () => {
  it('are validated with ConfigErrors naming the field', () => {
    const field = (build: () => unknown) => {
      try {
        build();
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as ConfigError).field;
      }
      throw new Error('expected a ConfigError');
    };
    expect(field(() => resnet18({ widht: 8 } as never))).toBe('resnet18.widht');
    expect(field(() => resnet18({ width: 0 }))).toBe('resnet18.width');
    expect(field(() => resnet18({ numClasses: 1 }))).toBe('resnet18.numClasses');
    expect(field(() => resnet18({ inputShape: [32, 32] as never }))).toBe('resnet18.inputShape');
    expect(field(() => smallCnn({ inputShape: [28, 28, 1], mean: [0.1, 0.2] }))).toBe('smallCnn.mean');
    expect(field(() => smallCnn({ std: [1, 0, 1] }))).toBe('smallCnn.std[1]');
    expect(field(() => wideResNet({ depth: 27 }))).toBe('wideResNet.depth');
    expect(field(() => wideResNet({ dropout: 1 }))).toBe('wideResNet.dropout');
    expect(field(() => createModel('wrn-16-8', { depth: 10 } as never))).toBe('wrn-16-8.depth');
    expect(field(() => createModel('resnet50' as never))).toBe('name');
    expect(field(() => mlp({ hiddenUnits: [8, -1] }))).toBe('mlp.hiddenUnits[1]');
    expect(field(() => linearClassifier({ hiddenUnits: [8] } as never))).toBe('linearClassifier.hiddenUnits');
    expect(field(() => mlp({ seed: 1, random: new Random(1) }))).toBe('mlp.seed');
    expect(field(() => smallCnn({ batchNormMomentum: 2 }))).toBe('smallCnn.batchNormMomentum');
  });

  it('createModel applies the reference dropout of each Wide ResNet', () => {
    // Same seeds, same masks: the named model matches an explicit dropout 0.4 and not 0.3.
    const x = images([2, 4, 4, 1], 8);
    const named = createModel('wrn-16-8', { inputShape: [4, 4, 1], seed: 5 });
    const explicit = wideResNet({ depth: 16, widen: 8, dropout: 0.4, inputShape: [4, 4, 1], seed: 5 });
    const run = (model: ClassifierModel) => values(model.apply(x, { mode: 'frozen-stats', random: new Random(3) }).logits);
    const namedLogits = run(named);
    expect(namedLogits).toEqual(run(explicit));
    explicit.dispose();
    const other = wideResNet({ depth: 16, widen: 8, dropout: 0.3, inputShape: [4, 4, 1], seed: 5 });
    expect(namedLogits).not.toEqual(run(other));
    expect(named.architecture).toBe('wrn-16-8');
    expect(named.stochastic).toBe(true); // so a stack never takes its fused path
    for (const model of [named, other]) model.dispose();
    tf.dispose(x);
  }, 30_000);
});

describe('stochastic, and the fused path it allows', () => {
  /** RCAD's shape, written here so this package's test depends on no plugin: it asks for the clean input gradient. */
  const entropyAlongGradient: RegularizerPlugin<{ moved: tf.Tensor }> = {
    name: 'entropy-along-gradient',
    stage: 'loss-term',
    prepare: ({ clean, inputGradient }) => ({ moved: tf.add(clean.inputs, tf.sign(inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient)) }),
    loss: (context, { moved }) => ({ value: tf.mul(-0.1, meanEntropy(context.forward(moved, 'frozen-stats').logits)) as tf.Scalar }),
  };
  const common = { inputShape: [6, 6, 1] as [number, number, number], numClasses: 3, seed: 4 };
  const models: Array<[string, () => ClassifierModel, boolean]> = [
    ['small-cnn', () => smallCnn({ ...common, width: 2 }), false],
    ['small-cnn with dropout 0.2', () => smallCnn({ ...common, width: 2, dropout: 0.2 }), true],
    ['resnet18', () => resnet18({ ...common, width: 2 }), false],
    ['wide ResNet with dropout 0.3', () => wideResNet({ ...common, depth: 10, widen: 1, dropout: 0.3 }), true],
    ['wide ResNet without dropout', () => wideResNet({ ...common, depth: 10, widen: 1, dropout: 0 }), false],
    ['mlp', () => mlp({ ...common, hiddenUnits: [8] }), false],
    ['mlp with dropout 0.5', () => mlp({ ...common, hiddenUnits: [8], dropout: 0.5 }), true],
    ['linear', () => linearClassifier(common), false],
  ];

  for (const [name, make, stochastic] of models) {
    it(`${name}: stochastic is ${stochastic}, true to its passes, and the stack fuses ${stochastic ? 'never' : 'its base pass'}`, () => {
      const model = make();
      const x = images([4, 6, 6, 1], 9);
      const labels = tf.tensor1d([0, 1, 2, 0], 'int32');
      expect(model.stochastic).toBe(stochastic);
      // The flag tells the truth: two passes with different generators differ exactly when it is set.
      const pass = (seed: number) => values(model.apply(x, { mode: 'frozen-stats', random: new Random(seed) }).logits);
      expect(pass(1)).toEqual(pass(1));
      if (stochastic) expect(pass(1)).not.toEqual(pass(2));
      else expect(pass(1)).toEqual(pass(2));
      // The fused path reuses the base pass for the input gradient: exact only without random masks.
      const { value, grads, fused } = composeRegularizers([entropyAlongGradient as RegularizerPlugin]).gradients({ model, batch: { inputs: x, labels }, random: new Random(3) });
      expect(fused).toBe(!stochastic);
      tf.dispose([value, ...Object.values(grads), x, labels]);
      model.dispose();
    });
  }
});

describe('training', () => {
  it('keeps tensor counts stable over repeated train-mode steps inside tf.variableGrads, with gradients for every trainable variable', () => {
    const model = resnet18({ width: 2, inputShape: [6, 6, 3], numClasses: 3, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] });
    const x = images([4, 6, 6, 3], 4);
    const labels = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3);
    const step = () => {
      const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy(labels, model.apply(x, { mode: 'train' }).logits) as tf.Scalar);
      const count = Object.keys(grads).length;
      const finite = Object.values(grads).every((gradient) => values(gradient).every(Number.isFinite));
      tf.dispose([value, ...Object.values(grads)]);
      return { count, finite };
    };
    step();
    const before = tf.memory().numTensors;
    for (let repeat = 0; repeat < 3; repeat++) {
      const { count, finite } = step();
      expect(count).toBe(model.trainableVariables.length);
      expect(finite).toBe(true);
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, labels]);
    model.dispose();
  }, 30_000);

  it('learns: SGD on the small CNN lowers the training loss of a toy batch', () => {
    const model = smallCnn({ width: 2, inputShape: [8, 8, 1], numClasses: 2, seed: 1 });
    // Class 1 images are bright in the left half, class 0 in the right half.
    const x = tf.tidy(() => {
      const noise = tf.randomUniform([8, 8, 8, 1], 0, 0.3, 'float32', 3);
      const left = tf.concat([tf.ones([4, 8, 4, 1]), tf.zeros([4, 8, 4, 1])], 2);
      const right = tf.reverse(left, 2);
      return tf.add(noise, tf.mul(tf.concat([left, right]), 0.7)) as tf.Tensor4D;
    });
    const labels = tf.oneHot(tf.tensor1d([1, 1, 1, 1, 0, 0, 0, 0], 'int32'), 2);
    const optimizer = tf.train.sgd(0.1);
    const loss = () => tf.losses.softmaxCrossEntropy(labels, model.apply(x, { mode: 'train' }).logits) as tf.Scalar;
    const first = tf.tidy(() => loss().dataSync()[0]!);
    for (let step = 0; step < 15; step++) tf.dispose(optimizer.minimize(loss, true, model.trainableVariables as tf.Variable[]) ?? undefined);
    const last = tf.tidy(() => loss().dataSync()[0]!);
    expect(last).toBeLessThan(0.5 * first);
    tf.dispose([x, labels]);
    optimizer.dispose();
    model.dispose();
  }, 30_000);

  it('frees every variable on dispose', () => {
    const before = tf.memory().numTensors;
    const model = createModel('small-cnn', { width: 2, inputShape: [8, 8, 1] });
    expect(tf.memory().numTensors).toBe(before + model.namedVariables().size);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
