import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  DataError,
  Random,
  composeRegularizers,
  crossEntropy,
  meanEntropy,
  type ModelMode,
  type RegularizerPlugin,
} from '@regstack/regularizer';
import { capturePrepared, countingClassifier, minimizeSteps } from '@regstack/regularizer/testing';
import { adversarialTraining, type AdversarialTrainingState } from './index.js';

const INPUTS = 5;
const CLASSES = 3;

/** Counts passes by mode; its `eval` mode shifts the hidden pre-activations (running statistics stand-in). */
const countingModel = (seed = 1) => countingClassifier({ inputSize: INPUTS, numClasses: CLASSES, hiddenUnits: 8, seed, evalShift: 0.7 });

/** Inputs in [0, 1] with some entries exactly on the bounds, so clipping has work to do. */
function makeBatch(size = 6, seed = 4) {
  const inputs = tf.tidy(() => {
    const uniform = tf.randomUniform([size, INPUTS], 0, 1, 'float32', seed);
    return tf.clipByValue(tf.sub(tf.mul(uniform, 1.4), 0.2), 0, 1);
  });
  return { inputs, labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % CLASSES), 'int32') };
}

/** Wraps the plugin so a test can read the adversarial inputs the real stack's prepare produced. */
const capturing = (plugin: RegularizerPlugin<AdversarialTrainingState>) => capturePrepared(plugin, (state) => state.adversarial.arraySync() as number[][]);

function attackOnce(options: Parameters<typeof adversarialTraining>[0], seed = 1, batch = makeBatch(), model = countingModel()) {
  const { plugin, captured } = capturing(adversarialTraining(options));
  composeRegularizers([plugin]).prepare({ model, batch, random: new Random(seed) }).dispose();
  return captured[0]!;
}

/** ∇x of the batch-summed cross-entropy, by hand. */
function inputGradient(model: ReturnType<typeof countingModel>, inputs: tf.Tensor, labels: tf.Tensor1D, mode: ModelMode) {
  return tf.grad((x: tf.Tensor) => crossEntropy(model.apply(x, { mode }).logits, labels, 'sum'))(inputs);
}

const maximum = (values: number[]) => values.reduce((a, b) => Math.max(a, b), -Infinity);

describe('adversarialTraining', () => {
  it('FGSM: x_adv = clip(x + ε·sign ∇x ΣCE), with the gradient in the attack mode', () => {
    const model = countingModel();
    const batch = makeBatch();
    for (const attackMode of ['frozen-stats', 'eval'] as const) {
      const adversarial = attackOnce({ epsilon: 0.1, attackMode }, 1, batch, model);
      const expected = tf.tidy(() =>
        tf.clipByValue(tf.add(batch.inputs, tf.mul(0.1, tf.sign(inputGradient(model, batch.inputs, batch.labels, attackMode)))), 0, 1).arraySync(),
      ) as number[][];
      adversarial.forEach((row, i) => row.forEach((value, j) => expect(value).toBeCloseTo(expected[i]![j]!, 6)));
      // Clipping happened and held: some inputs on a bound moved by less than ε.
      const x = batch.inputs.arraySync() as number[][];
      const moved = adversarial.flat().map((value, k) => Math.abs(value - x.flat()[k]!));
      expect(adversarial.flat().every((value) => value >= 0 && value <= 1)).toBe(true);
      expect(moved.some((change) => change < 0.05)).toBe(true);
      expect(moved.filter((change) => Math.abs(change - 0.1) < 1e-6).length).toBeGreaterThan(moved.length / 2);
    }
    // The two modes give different gradients here, so the test above can tell them apart.
    const [frozen, evaluated] = (['frozen-stats', 'eval'] as const).map((mode) => attackOnce({ epsilon: 0.1, attackMode: mode }, 1, batch, model));
    expect(frozen).not.toEqual(evaluated);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('PGD stays in the ε-ball of its norm and matches a hand-run of its steps', () => {
    const model = countingModel();
    const batch = makeBatch();
    const x = batch.inputs.arraySync() as number[][];
    for (const norm of ['linf', 'l2'] as const) {
      for (const clip of [null, [0, 1] as const]) {
        const epsilon = norm === 'linf' ? 0.05 : 0.2;
        const adversarial = attackOnce({ attack: 'pgd', norm, epsilon, steps: 5, clip }, 3, batch, model);
        adversarial.forEach((row, i) => {
          const delta = row.map((value, j) => value - x[i]![j]!);
          const size = norm === 'linf' ? maximum(delta.map(Math.abs)) : Math.hypot(...delta);
          expect(size).toBeLessThanOrEqual(epsilon + 1e-6);
          // Without clipping the attack reaches the boundary of the ball.
          if (!clip) expect(size).toBeGreaterThan(epsilon * 0.99);
        });
        if (clip) expect(adversarial.flat().every((value) => value >= 0 && value <= 1)).toBe(true);
        else expect(adversarial.flat().some((value) => value < 0 || value > 1)).toBe(true);
      }
    }

    // Two L2 steps from the clean point, by hand: x ← Π(x + a·g/‖g‖), Π projecting onto the ball.
    const epsilon = 0.3;
    const stepSize = 0.2;
    const expected = tf.tidy(() => {
      let current: tf.Tensor = batch.inputs;
      for (let step = 0; step < 2; step++) {
        const gradient = inputGradient(model, current, batch.labels, 'frozen-stats');
        const moved = tf.add(current, tf.mul(stepSize, tf.div(gradient, tf.add(tf.norm(gradient, 'euclidean', 1, true), 1e-10))));
        const delta = tf.sub(moved, batch.inputs);
        const scale = tf.minimum(1, tf.div(epsilon, tf.add(tf.norm(delta, 'euclidean', 1, true), 1e-10)));
        current = tf.clipByValue(tf.add(batch.inputs, tf.mul(delta, scale)), 0, 1);
      }
      return current.arraySync() as number[][];
    });
    const adversarial = attackOnce({ attack: 'pgd', norm: 'l2', epsilon, stepSize, steps: 2, randomStart: false }, 1, batch, model);
    adversarial.forEach((row, i) => row.forEach((value, j) => expect(value).toBeCloseTo(expected[i]![j]!, 5)));
    // The second step was projected: some example sits on the sphere.
    expect(adversarial.some((row, i) => Math.abs(Math.hypot(...row.map((v, j) => v - x[i]![j]!)) - epsilon) < 1e-5)).toBe(true);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('mixes the adversarial loss as (1 − w)·CE(x) + w·CE(x_adv), with weight gradients that hold x_adv constant', () => {
    const model = countingModel();
    const batch = makeBatch();
    const weight = 0.3;
    const { plugin, captured } = capturing(adversarialTraining({ epsilon: 0.08, weight: () => weight }));
    const step = composeRegularizers([plugin]).prepare({ model, batch, random: new Random(2) });
    const variables = model.trainableVariables as tf.Variable[];
    const { value, grads } = step.gradients();

    const adversarial = tf.tensor2d(captured[0]!);
    const manual = tf.variableGrads(
      () =>
        tf.add(
          tf.mul(1 - weight, crossEntropy(model.apply(batch.inputs, { mode: 'train' }).logits, batch.labels)),
          tf.mul(weight, crossEntropy(model.apply(adversarial, { mode: 'frozen-stats' }).logits, batch.labels)),
        ) as tf.Scalar,
      variables,
    );
    expect(value.dataSync()[0]).toBeCloseTo(manual.value.dataSync()[0]!, 6);
    for (const variable of variables) {
      const error = tf.tidy(() => tf.norm(tf.sub(grads[variable.name]!, manual.grads[variable.name]!)).dataSync()[0]! / tf.norm(manual.grads[variable.name]!).dataSync()[0]!);
      expect(error).toBeLessThan(1e-5);
    }
    const terms = step.terms();
    const adversarialLoss = tf.tidy(() => crossEntropy(model.apply(adversarial, { mode: 'frozen-stats' }).logits, batch.labels).dataSync()[0]!);
    expect(terms['adversarial-training']).toBeCloseTo(adversarialLoss, 6);
    expect(terms.total).toBeCloseTo((1 - weight) * terms.base! + weight * adversarialLoss, 6);
    // The attack raised the loss it was built to raise.
    expect(adversarialLoss).toBeGreaterThan(terms.base!);
    tf.dispose([value, manual.value, adversarial, batch.inputs, batch.labels, ...Object.values(grads), ...Object.values(manual.grads)]);
    step.dispose();
    model.dispose();
  });

  it('shares the clean input gradient with an RCAD-like term asking for the same one, and only then', () => {
    const rcadLike: RegularizerPlugin<{ perturbed: tf.Tensor }> = {
      name: 'rcad-like',
      stage: 'loss-term',
      prepare(context) {
        const { gradient } = context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' });
        return { perturbed: tf.add(context.clean.inputs, tf.div(gradient, tf.add(tf.norm(gradient, 'euclidean', 1, true), 1e-10))) };
      },
      loss: (context, state) => ({ value: tf.mul(0.2, tf.sub(Math.log(CLASSES), meanEntropy(context.forward(state.perturbed, 'frozen-stats').logits))) as tf.Scalar }),
    };
    const batch = makeBatch();
    const prepareCalls = (options: Parameters<typeof adversarialTraining>[0]) => {
      const model = countingModel();
      const { plugin, captured } = capturing(adversarialTraining(options));
      const step = composeRegularizers([plugin, rcadLike]).prepare({ model, batch, random: new Random(1) });
      const calls = [...model.calls];
      const total = step.loss();
      const afterLoss = model.calls.slice(calls.length);
      const result = { calls, afterLoss, total: total.dataSync()[0]!, adversarial: captured[0]!, model };
      total.dispose();
      step.dispose();
      return result;
    };
    const shared = prepareCalls({ epsilon: 0.05 });
    expect(shared.calls).toEqual(['frozen-stats']);
    expect(shared.afterLoss).toEqual(['train', 'frozen-stats', 'frozen-stats']);
    // The shared gradient is the right one: the attack equals the hand-computed FGSM.
    const expected = tf.tidy(() =>
      tf.clipByValue(tf.add(batch.inputs, tf.mul(0.05, tf.sign(inputGradient(shared.model, batch.inputs, batch.labels, 'frozen-stats')))), 0, 1).arraySync(),
    ) as number[][];
    shared.adversarial.forEach((row, i) => row.forEach((value, j) => expect(value).toBeCloseTo(expected[i]![j]!, 6)));
    shared.model.dispose();

    expect(prepareCalls({ epsilon: 0.05, attackMode: 'eval' }).calls).toEqual(['frozen-stats', 'eval']);
    // A random start moves the first gradient off the clean point: nothing to share.
    expect(prepareCalls({ epsilon: 0.05, randomStart: true }).calls).toEqual(['frozen-stats', 'frozen-stats']);
    // PGD: the first of its steps is shared, the other steps are its own.
    expect(prepareCalls({ attack: 'pgd', steps: 3, randomStart: false }).calls).toEqual(['frozen-stats', 'frozen-stats', 'frozen-stats']);
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('draws random starts from the seeded generator: the same seed gives the same attack', () => {
    const model = countingModel();
    const batch = makeBatch();
    for (const norm of ['linf', 'l2'] as const) {
      // One short step, so the attack does not forget where it started.
      const options = { attack: 'pgd', norm, steps: 1, stepSize: 0.001 } as const;
      const first = attackOnce(options, 7, batch, model);
      expect(attackOnce(options, 7, batch, model)).toEqual(first);
      expect(attackOnce(options, 8, batch, model)).not.toEqual(first);
    }
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('trains in a user loop without leaking tensors', () => {
    const model = countingModel();
    const batch = makeBatch();
    const optimizer = tf.train.sgd(0.1);
    const stack = composeRegularizers([adversarialTraining({ attack: 'pgd', norm: 'l2', steps: 3 })]);
    const { tensorCounts } = minimizeSteps(stack, { model, batch, random: new Random(3) }, 6, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    optimizer.dispose();
    model.dispose();
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('validates its options at construction and its inputs each step, naming the field', () => {
    expect(() => adversarialTraining({ eps: 0.1 } as never)).toThrow(/adversarialTraining\.eps: unknown option/);
    expect(() => adversarialTraining({ attack: 'cw' as never })).toThrow(/adversarialTraining\.attack: expected one of fgsm, pgd/);
    expect(() => adversarialTraining({ norm: 'l1' as never })).toThrow(ConfigError);
    expect(() => adversarialTraining({ epsilon: -0.1 })).toThrow(/adversarialTraining\.epsilon: must be ≥ 0/);
    expect(() => adversarialTraining({ stepSize: 0 })).toThrow(/adversarialTraining\.stepSize: must be > 0/);
    expect(() => adversarialTraining({ steps: 5 })).toThrow(/adversarialTraining\.steps: FGSM takes exactly one step/);
    expect(() => adversarialTraining({ attack: 'pgd', steps: 2.5 })).toThrow(/adversarialTraining\.steps: expected an integer/);
    expect(() => adversarialTraining({ weight: 1.2 })).toThrow(/adversarialTraining\.weight: must be ≤ 1/);
    expect(() => adversarialTraining({ weight: { type: 'linear', from: 0, to: 2, start: 0, end: 5 } })).toThrow(/adversarialTraining\.weight/);
    expect(() => adversarialTraining({ clip: [1, 0] })).toThrow(/adversarialTraining\.clip: low must be < high/);
    expect(() => adversarialTraining({ clip: [0] as never })).toThrow(/adversarialTraining\.clip/);
    expect(() => adversarialTraining({ randomStart: 'yes' as never })).toThrow(/adversarialTraining\.randomStart/);
    expect(() => adversarialTraining({ attackMode: 'train' as never })).toThrow(/adversarialTraining\.attackMode/);

    const model = countingModel();
    const batch = { inputs: tf.tensor2d([[0, 0.5, 1, 2, 0], [0, 0, 0, 0, 0]]), labels: tf.tensor1d([0, 1], 'int32') };
    const stack = composeRegularizers([adversarialTraining()]);
    expect(() => stack.prepare({ model, batch, random: new Random(1) })).toThrow(DataError);
    expect(() => stack.prepare({ model, batch, random: new Random(1) })).toThrow(/adversarialTraining\.clip \[0, 1\].*span \[0, 2\]/);
    const scheduled = composeRegularizers([adversarialTraining({ clip: null, epsilon: () => -1 })]);
    expect(() => scheduled.prepare({ model, batch, random: new Random(1) })).toThrow(/adversarialTraining\.epsilon: must be ≥ 0/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });
});
