// A user's own loop: stack.minimize, the stack's generator, and the mistakes a TF.js programmer is
// likely to make on the first day (a raw LayersModel, prepare inside minimize, the plain backends).
import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RegularizerPlugin, StepInput } from './index.js';
import { ConfigError, Random, applyGradients, classifierFromFunction, composeRegularizers, setBackendAdviceHandler } from './index.js';
import { REGSTACK_BACKEND_MARKER_KERNEL } from './step-checks.js';
import { countingLinearModel, useCpu } from './test-setup.js';
import { countingClassifier, errorField } from './testing.js';

beforeAll(useCpu);
afterEach(async () => {
  await tf.setBackend('cpu');
});

function makeBatch(size = 6, features = 5, numClasses = 3, seed = 11) {
  return {
    inputs: tf.randomUniform([size, features], 0, 1, 'float32', seed),
    labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % numClasses), 'int32'),
  };
}

/** A loss term that records one uniform draw of the step's generator per step (and adds 0·loss). */
function drawRecorder(draws: number[]): RegularizerPlugin {
  return {
    name: 'draws',
    stage: 'loss-term',
    readsBase: true,
    prepare: (context) => {
      draws.push(context.random.uniform());
      return {};
    },
    loss: (context) => ({ value: tf.mul(0, context.base.loss) as tf.Scalar }),
  };
}

/** A term with a prepare: λ·mean of the squared logits at x + ∇x (the clean input gradient). */
function squaredLogitsAtShift(lambda = 0.3): RegularizerPlugin<{ shifted: tf.Tensor }> {
  return {
    name: 'shift',
    stage: 'loss-term',
    prepare: (context) => ({ shifted: tf.add(context.clean.inputs, context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient) }),
    loss: (context, state) => ({ value: tf.mul(lambda, tf.mean(tf.square(context.forward(state.shifted, 'frozen-stats').logits))) as tf.Scalar }),
  };
}

const weightsOf = (model: { trainableVariables: tf.Variable[] }) => model.trainableVariables.map((variable) => Array.from(variable.dataSync()));

describe('stack.minimize', () => {
  it('applies exactly the gradients of stack.gradients, returns the named terms and leaks nothing', () => {
    const stack = composeRegularizers([squaredLogitsAtShift()]);
    const batch = makeBatch();
    // Two copies of one model (same seed, variables of their own).
    const manual = countingClassifier({ inputSize: 5, numClasses: 3, seed: 7 });
    const helper = countingClassifier({ inputSize: 5, numClasses: 3, seed: 7 });
    const manualOptimizer = tf.train.adam(0.05);
    const helperOptimizer = tf.train.adam(0.05);
    const counts: number[] = [];
    const termsSeen: Array<Record<string, number>> = [];
    for (let step = 0; step < 4; step++) {
      const { value, grads, terms } = stack.gradients({ model: manual, batch, random: new Random(step), step });
      applyGradients(manualOptimizer, grads); // Adam: declared for NamedVariableMap, so the list form
      tf.dispose([value, ...Object.values(grads)]);
      const helperTerms = stack.minimize(helperOptimizer, { model: helper, batch, random: new Random(step), step });
      expect(helperTerms).toEqual(terms);
      termsSeen.push(helperTerms);
      counts.push(tf.memory().numTensors);
    }
    expect(Object.keys(termsSeen[0]!).sort()).toEqual(['base', 'shift', 'total']);
    expect(termsSeen[0]!.total).toBeCloseTo(termsSeen[0]!.base! + termsSeen[0]!.shift!, 5);
    expect(termsSeen.at(-1)!.total).toBeLessThan(termsSeen[0]!.total!);
    expect(weightsOf(helper)).toEqual(weightsOf(manual));
    // The first step creates Adam's moment variables; from then on the count does not move.
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(errorField(() => stack.minimize({} as never, { model: helper, batch }), ConfigError)).toBe('optimizer');
    tf.dispose([batch.inputs, batch.labels]);
    manualOptimizer.dispose();
    helperOptimizer.dispose();
    manual.dispose();
    helper.dispose();
  });
});

describe("the stack's own generator", () => {
  it('serves steps called without `random`: fresh draws each step, reproducible from the seed', () => {
    const batch = makeBatch();
    const model = countingLinearModel(5, 3);
    const run = (options?: { seed: number }) => {
      const draws: number[] = [];
      const stack = composeRegularizers([drawRecorder(draws)], options);
      for (let step = 0; step < 3; step++) stack.prepare({ model, batch, step }).dispose();
      stack.gradients({ model, batch }).value.dispose();
      return draws;
    };
    const seeded = run({ seed: 4 });
    expect(new Set(seeded).size).toBe(4); // every step draws anew
    expect(run({ seed: 4 })).toEqual(seeded); // and the seed reproduces the run
    expect(run({ seed: 5 })).not.toEqual(seeded);
    expect(run()).toEqual(run({ seed: 0 }));
    // What the old README did, a new generator per step, draws the same every step.
    const draws: number[] = [];
    const stack = composeRegularizers([drawRecorder(draws)]);
    for (let step = 0; step < 3; step++) stack.prepare({ model, batch, random: new Random(0), step }).dispose();
    expect(new Set(draws).size).toBe(1);
    expect(errorField(() => composeRegularizers([], { seed: 1.5 }), ConfigError)).toBe('composeRegularizers.seed');
    expect(errorField(() => composeRegularizers([], { sede: 1 } as never), ConfigError)).toBe('composeRegularizers.sede');
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });
});

describe('mistakes in a user loop', () => {
  it('a raw tf.LayersModel where a Classifier is expected is told to wrap it', () => {
    const layersModel = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [5], units: 3 })] });
    const batch = makeBatch();
    const stack = composeRegularizers([]);
    const input = { model: layersModel, batch } as unknown as StepInput;
    for (const call of [() => stack.prepare(input), () => stack.gradients(input), () => stack.minimize(tf.train.sgd(0.1), input)]) {
      expect(call).toThrow(ConfigError);
      expect(call).toThrow(/tf\.LayersModel.*classifierFromLayersModel\(model\)/);
    }
    expect(errorField(() => stack.prepare({ batch } as unknown as StepInput), ConfigError)).toBe('model');
    tf.dispose([batch.inputs, batch.labels]);
    layersModel.dispose();
  });

  it('prepare inside an optimizer.minimize closure is told to run before it', () => {
    const model = countingLinearModel(5, 3);
    const batch = makeBatch();
    const stack = composeRegularizers([squaredLogitsAtShift()]);
    const optimizer = tf.train.sgd(0.1);
    const before = weightsOf(model);
    let step: ReturnType<typeof stack.prepare> | undefined;
    expect(() =>
      optimizer.minimize(() => {
        step = stack.prepare({ model, batch });
        return step.loss();
      }, false, model.trainableVariables),
    ).toThrow(/stack\.prepare: called while a gradient tape is recording.*BEFORE optimizer\.minimize/);
    expect(step).toBeUndefined();
    expect(weightsOf(model)).toEqual(before);
    expect(() => tf.variableGrads(() => stack.gradients({ model, batch }).value, model.trainableVariables)).toThrow(ConfigError);
    // The documented order works.
    const prepared = stack.prepare({ model, batch });
    optimizer.minimize(prepared.loss, false, model.trainableVariables);
    prepared.dispose();
    expect(weightsOf(model)).not.toEqual(before);
    tf.dispose([batch.inputs, batch.labels]);
    optimizer.dispose();
    model.dispose();
  });
});

describe("the stack's first step looks at the backend", () => {
  /** Collects the advice while PROD mode (set by the test setup, which mutes it) is off. */
  function collectAdvice(run: () => void): string[] {
    const advice: string[] = [];
    const previous = setBackendAdviceHandler((message) => advice.push(message));
    const prod = tf.env().getBool('PROD');
    tf.env().set('PROD', false);
    try {
      run();
    } finally {
      tf.env().set('PROD', prod);
      setBackendAdviceHandler(previous);
    }
    return advice;
  }

  /** A model of one op kind on 4×4×1 images: `conv`, `max-pool` or `dense`. */
  function modelOf(kind: 'conv' | 'max-pool' | 'dense') {
    const filter = tf.variable(tf.randomNormal([3, 3, 1, 3], 0, 0.5, 'float32', 1));
    const weight = tf.variable(tf.randomNormal([kind === 'max-pool' ? 4 : 16, 3], 0, 0.5, 'float32', 2));
    const model = classifierFromFunction({
      numClasses: 3,
      stochastic: false,
      trainableVariables: kind === 'conv' ? [filter] : [weight],
      apply: (inputs) =>
        tf.tidy(() => {
          if (kind === 'conv') return tf.mean(tf.conv2d(inputs as tf.Tensor4D, filter as tf.Tensor4D, 1, 'same'), [1, 2]) as tf.Tensor2D;
          const flat = kind === 'max-pool' ? tf.reshape(tf.maxPool(inputs as tf.Tensor4D, 2, 2, 'valid'), [inputs.shape[0]!, 4]) : tf.reshape(inputs, [inputs.shape[0]!, 16]);
          return tf.matMul(flat, weight) as tf.Tensor2D;
        }),
    });
    return { model, dispose: () => tf.dispose([filter, weight]) };
  }

  const images = () => ({ inputs: tf.randomUniform([4, 4, 4, 1], 0, 1, 'float32', 3), labels: tf.tensor1d([0, 1, 2, 0], 'int32') });

  it("wasm without @regstack/backend's kernels: a typed error naming useBackend where training cannot work", async () => {
    await tf.setBackend('wasm');
    const batch = images();
    for (const kind of ['conv', 'max-pool'] as const) {
      const { model, dispose } = modelOf(kind);
      const stack = composeRegularizers([]);
      let message = '';
      try {
        stack.gradients({ model, batch });
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).field).toBe('backend');
        message = (error as Error).message;
      }
      expect(message).toMatch(/useBackend/);
      expect(message).toMatch(/@regstack\/backend/);
      expect(message).toMatch(kind === 'conv' ? /Conv2DBackpropFilter/ : /MaxPoolGrad.*drops gradients/);
      // Every step says it again until the backend is fixed.
      expect(() => stack.minimize(tf.train.sgd(0.1), { model, batch })).toThrow(/useBackend/);
      dispose();
    }
    // A dense model trains on plain wasm, only slower: one warning per backend, none after.
    const { model, dispose } = modelOf('dense');
    const advice = collectAdvice(() => {
      composeRegularizers([]).gradients({ model, batch }).value.dispose();
      composeRegularizers([]).gradients({ model, batch }).value.dispose();
    });
    expect(advice).toHaveLength(1);
    expect(advice[0]).toMatch(/wasm backend without @regstack\/backend's training kernels.*useBackend/);
    dispose();
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('the cpu backend gets one warning about speed, and none once @regstack/backend set it up', () => {
    const model = countingLinearModel(5, 3);
    const batch = makeBatch();
    const marker = { kernelName: REGSTACK_BACKEND_MARKER_KERNEL, backendName: 'cpu', kernelFunc: () => ({ dataId: {}, shape: [], dtype: 'float32' as const }) };
    tf.registerKernel(marker);
    const withMarker = collectAdvice(() => composeRegularizers([]).prepare({ model, batch }).dispose());
    tf.unregisterKernel(REGSTACK_BACKEND_MARKER_KERNEL, 'cpu');
    expect(withMarker).toEqual([]);
    const advice = collectAdvice(() => {
      for (let index = 0; index < 3; index++) composeRegularizers([]).prepare({ model, batch }).dispose();
    });
    expect(advice).toHaveLength(1);
    expect(advice[0]).toMatch(/cpu backend, which is about 50× slower.*await useBackend\(\)/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });
});
