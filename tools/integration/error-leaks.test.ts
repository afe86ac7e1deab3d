// Every error path of a step, repeated: a thrown error must leave `tf.memory().numTensors` as it was.
// TF.js leaks are silent, and a loop that catches and retries (or a comparison that reports a
// failed stack and goes on) would otherwise grow without bound.
import * as tf from '@tensorflow/tfjs-core';
import { adversarialTraining } from '@regstack/adversarial-training';
import { entropyMin } from '@regstack/entropy-min';
import { labelSmoothing } from '@regstack/label-smoothing';
import { meAda } from '@regstack/me-ada';
import { mixup } from '@regstack/mixup';
import { smallCnn } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import {
  ConfigError,
  DataError,
  Random,
  RegstackError,
  composeRegularizers,
  lossInputGradient,
  oneHotTargets,
  validateBatch,
  type Batch,
  type Classifier,
  type RegularizerPlugin,
  type StepInput,
} from '@regstack/regularizer';
import { linearClassifier } from '@regstack/regularizer/testing';
import { afterAll, describe, expect, it } from 'vitest';

const REPEATS = 20;
const CLASSES = 3;

// Batch norm and no dropout: `stochastic` is false, so stack.gradients takes the fused path.
const model = smallCnn({ width: 2, inputShape: [6, 6, 1], numClasses: CLASSES, seed: 1 });
// Dropout: stochastic, so stack.gradients takes the plain path.
const dropoutModel = smallCnn({ width: 2, inputShape: [6, 6, 1], numClasses: CLASSES, seed: 1, dropout: 0.3 });
// Logits only: ME-ADA needs features and fails inside its ascent's tape.
const logitsOnly = linearClassifier({ inputSize: 36, numClasses: CLASSES, scale: 0.3, seed: 2, bias: null, stochastic: false });

const labels = tf.tensor1d([0, 1, 2, 0], 'int32');
const images = tf.randomUniform([4, 6, 6, 1], 0, 1, 'float32', 3);
const good: Batch = { inputs: images, labels };
const bad = {
  rank3: { inputs: tf.randomUniform([4, 6, 6], 0, 1, 'float32', 4), labels },
  outOfRange: { inputs: tf.mul(images, 2), labels },
  flat: { inputs: tf.randomUniform([4, 36], 0, 1, 'float32', 5), labels },
  nan: { inputs: tf.fill([4, 6, 6, 1], NaN), labels },
  label: { inputs: images, labels: tf.tensor1d([0, 1, 3, 0], 'int32') },
  count: { inputs: images, labels: tf.tensor1d([0, 1, 2], 'int32') },
  integer: { inputs: tf.cast(images, 'int32'), labels },
  empty: { inputs: tf.zeros([0, 6, 6, 1]), labels: tf.tensor1d([], 'int32') },
  scalar: { inputs: tf.scalar(1), labels },
};

afterAll(() => {
  logitsOnly.dispose();
  tf.dispose([labels, images, ...Object.values(bad).flatMap((batch) => [batch.inputs, batch.labels])]);
  model.dispose();
  dropoutModel.dispose();
});

/** A plugin that throws from `hook` after the stack has made tensors for it. */
function throwing(hook: 'prepare' | 'loss', stage: 'loss-term' | 'generated-loss' = 'loss-term'): RegularizerPlugin {
  return {
    name: `throws-in-${hook}`,
    stage,
    prepare: (context) => {
      const state = { moved: tf.add(context.clean.inputs, 0.1) };
      if (hook === 'prepare') throw new ConfigError('plugin.prepare', 'fails on purpose');
      return state;
    },
    loss: (context, state) => {
      const logits = context.forward((state as { moved: tf.Tensor }).moved, 'frozen-stats').logits;
      if (hook === 'loss') throw new ConfigError('plugin.loss', 'fails on purpose');
      return { value: tf.mean(logits) as tf.Scalar, mixWeight: 0.1 };
    },
  };
}

/** The ways to run one step of a stack that are expected to throw. */
const runners = {
  'stack.gradients': (plugins: RegularizerPlugin[], input: StepInput) => {
    const { value, grads } = composeRegularizers(plugins).gradients(input);
    tf.dispose([value, ...Object.values(grads)]);
  },
  'prepare + gradients()': (plugins: RegularizerPlugin[], input: StepInput) => {
    const step = composeRegularizers(plugins).prepare(input);
    try {
      const { value, grads } = step.gradients();
      tf.dispose([value, ...Object.values(grads)]);
    } finally {
      step.dispose();
    }
  },
  'prepare + optimizer.minimize(loss)': (plugins: RegularizerPlugin[], input: StepInput) => {
    const step = composeRegularizers(plugins).prepare(input);
    try {
      optimizer.minimize(step.loss, false, input.model.trainableVariables as tf.Variable[]);
    } finally {
      step.dispose();
    }
  },
  'prepare + loss() outside a tape': (plugins: RegularizerPlugin[], input: StepInput) => {
    const step = composeRegularizers(plugins).prepare(input);
    try {
      step.loss().dispose();
    } finally {
      step.dispose();
    }
  },
};
const optimizer = tf.train.sgd(0.01);

/**
 * Runs `attempt` REPEATS times; each must throw a regstack error of `type` whose message matches
 * `message`, and the tensor count must end where it began.
 */
function expectNoLeak(attempt: () => unknown, type: typeof RegstackError, message: RegExp): number {
  const before = tf.memory().numTensors;
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    let thrown: unknown;
    try {
      attempt();
    } catch (error) {
      thrown = error;
    }
    expect(thrown, 'expected an error').toBeInstanceOf(type);
    expect((thrown as Error).message).toMatch(message);
  }
  return tf.memory().numTensors - before;
}

interface ErrorCase {
  name: string;
  plugins: () => RegularizerPlugin[];
  input?: Partial<StepInput>;
  type: typeof RegstackError;
  message: RegExp;
}

// Functions stand in for schedules here: they are only checked when a step reads them.
const cases: ErrorCase[] = [
  { name: 'a bad label', plugins: () => [rcad()], input: { batch: bad.label }, type: DataError, message: /batch\.labels: label 3 at index 2/ },
  { name: 'NaN inputs', plugins: () => [rcad()], input: { batch: bad.nan }, type: DataError, message: /contains NaN/ },
  { name: 'labels and inputs of different counts', plugins: () => [rcad()], input: { batch: bad.count }, type: DataError, message: /has 3 labels for 4 inputs/ },
  { name: 'int32 inputs', plugins: () => [rcad()], input: { batch: bad.integer }, type: DataError, message: /expected float32/ },
  { name: 'an empty batch', plugins: () => [rcad()], input: { batch: bad.empty }, type: DataError, message: /the batch is empty/ },
  { name: 'scalar inputs', plugins: () => [rcad()], input: { batch: bad.scalar }, type: DataError, message: /expected rank ≥ 2/ },
  { name: 'rank-3 inputs to rcad (the model rejects them in the first pass)', plugins: () => [rcad()], input: { batch: bad.rank3 }, type: DataError, message: /inputs: expected shape/ },
  { name: 'rank-3 inputs to rcad, unvalidated', plugins: () => [rcad()], input: { batch: bad.rank3, validate: false }, type: DataError, message: /inputs: expected shape/ },
  { name: 'two-view without augment', plugins: () => [rcad()], input: { baseLoss: 'two-view' }, type: ConfigError, message: /baseLoss/ },
  { name: 'an augmentation that breaks the inputs', plugins: () => [rcad()], input: { augment: (x) => tf.reshape(x, [4, 36, 1]) }, type: DataError, message: /inputs: expected shape/ },
  { name: 'no model', plugins: () => [rcad()], input: { model: undefined as never }, type: ConfigError, message: /model: expected a Classifier/ },
  { name: 'a plugin throwing in prepare after another prepared', plugins: () => [rcad(), throwing('prepare')], type: ConfigError, message: /fails on purpose/ },
  { name: 'a plugin throwing in loss after the base pass', plugins: () => [rcad(), throwing('loss')], type: ConfigError, message: /fails on purpose/ },
  { name: 'a generated loss throwing on the fused tape', plugins: () => [throwing('loss', 'generated-loss')], type: ConfigError, message: /fails on purpose/ },
  {
    name: 'mix weights adding up to 1.3 (known only at the step)',
    plugins: () => [rcad(), adversarialTraining({ weight: () => 0.7 }), meAda({ weight: () => 0.6, steps: 1 })],
    type: ConfigError,
    message: /add up to 1\.3 > 1 at step 0 \(adversarial-training 0\.7 \+ me-ada 0\.6\)/,
  },
  { name: 'adversarial-training: inputs outside its clip range', plugins: () => [rcad(), adversarialTraining()], input: { batch: bad.outOfRange }, type: DataError, message: /clips to adversarialTraining\.clip/ },
  { name: 'adversarial-training: a weight schedule leaving [0, 1]', plugins: () => [adversarialTraining({ weight: () => 2 })], type: ConfigError, message: /adversarialTraining\.weight: must be ≤ 1/ },
  { name: 'adversarial-training: a negative ε from its schedule', plugins: () => [adversarialTraining({ epsilon: () => -1, attack: 'pgd', steps: 2 })], type: ConfigError, message: /adversarialTraining\.epsilon/ },
  { name: 'ME-ADA: a model without features (fails inside its ascent)', plugins: () => [rcad(), meAda({ steps: 2 })], input: { model: logitsOnly, batch: good }, type: ConfigError, message: /model\.features/ },
  { name: 'ME-ADA: a step size schedule reaching 0', plugins: () => [meAda({ stepSize: () => 0 })], type: ConfigError, message: /meAda\.stepSize/ },
  { name: 'rcad: a negative λ from its schedule', plugins: () => [rcad({ lambda: () => -1 })], type: ConfigError, message: /rcad\.lambda/ },
  { name: 'mixup: CutMix on flat inputs', plugins: () => [mixup({ cutmixAlpha: 1 }), rcad()], input: { batch: bad.flat }, type: DataError, message: /CutMix needs NHWC/ },
  { name: 'mixup: a probability schedule above 1', plugins: () => [mixup({ probability: () => 1.5 })], type: ConfigError, message: /mixup\.probability/ },
  { name: 'label smoothing: ε from its schedule above 1', plugins: () => [mixup(), labelSmoothing({ epsilon: () => 2 }), rcad()], type: ConfigError, message: /labelSmoothing\.epsilon/ },
  { name: 'entropy minimisation: a NaN λ inside the tape', plugins: () => [rcad(), entropyMin({ lambda: () => NaN })], type: ConfigError, message: /entropyMin\.lambda/ },
];

describe('a step that throws frees every tensor it made', () => {
  for (const [runner, run] of Object.entries(runners)) {
    for (const example of cases) {
      // Only stack.gradients has two paths: fused for a model declared not stochastic, plain otherwise.
      const models = runner === 'stack.gradients' ? ([['fused-capable', model], ['stochastic', dropoutModel]] as const) : ([['fused-capable', model]] as const);
      for (const [which, stepModel] of models) {
        it(`${example.name}: ${runner}, ${which} model`, () => {
          const input = { model: stepModel as Classifier, batch: good, random: new Random(1), ...example.input } as StepInput;
          const leaked = expectNoLeak(() => run(example.plugins(), input), example.type, example.message);
          expect(leaked).toBe(0);
        });
      }
    }
  }

  it('also when composition, validateBatch or lossInputGradient throw', () => {
    // Composition: mix weights adding to 1.3, declared as numbers, fail before any tensor exists.
    const composition = () => composeRegularizers([adversarialTraining({ weight: 0.7 }), meAda({ weight: 0.6 })]);
    expect(expectNoLeak(composition, ConfigError, /add up to 1\.3 > 1 \(adversarial-training 0\.7 \+ me-ada 0\.6\)/)).toBe(0);
    for (const batch of Object.values(bad).filter((batch) => batch !== bad.rank3 && batch !== bad.outOfRange && batch !== bad.flat)) {
      expect(expectNoLeak(() => validateBatch(batch, CLASSES), DataError, /batch\./)).toBe(0);
    }
    const targets = oneHotTargets(labels, CLASSES);
    const failing = () => lossInputGradient(model, bad.rank3.inputs, targets, { reduction: 'sum', mode: 'frozen-stats' });
    expect(expectNoLeak(failing, DataError, /inputs: expected shape/)).toBe(0);
    // Targets of the wrong width: the loss fails after the model's pass, inside the input tape.
    const wide = oneHotTargets(labels, 5);
    const before = tf.memory().numTensors;
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      expect(() => lossInputGradient(model, images, wide, { reduction: 'mean', mode: 'train' })).toThrow();
    }
    expect(tf.memory().numTensors - before).toBe(0);
    tf.dispose([targets, wide]);
  });

  it('a disposed step throws a ConfigError and makes nothing', () => {
    const step = composeRegularizers([rcad()]).prepare({ model, batch: good, random: new Random(1) });
    step.dispose();
    expect(expectNoLeak(() => step.loss(), ConfigError, /step: was disposed/)).toBe(0);
    expect(expectNoLeak(() => optimizer.minimize(step.loss), ConfigError, /step: was disposed/)).toBe(0);
  });

  it('and a good step after all these still leaks nothing', () => {
    const stack = composeRegularizers([rcad(), adversarialTraining({ weight: 0.4 }), meAda({ weight: 0.3, steps: 1 })]);
    const counts: number[] = [];
    for (let repeat = 0; repeat < 3; repeat++) {
      const { value, grads, fused } = stack.gradients({ model, batch: good, random: new Random(repeat) });
      expect(fused).toBe(true);
      tf.dispose([value, ...Object.values(grads)]);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
  });
});
