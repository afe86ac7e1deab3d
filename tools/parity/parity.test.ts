// Parity with a float64 PyTorch reference (fixtures from tools/parity/generate.py): our float32
// models and plugins, run through the real stack on the cpu backend with tf ops only and on the wasm
// backend with @regstack/backend's kernels (conv gradients, max-pool gradient, batch-norm reductions),
// must reproduce the reference's loss terms, generated inputs, weight gradients and running statistics
// to a relative L2 error of at most 1e-5 per tensor on cpu and 3e-5 on wasm.
import * as tf from '@tensorflow/tfjs-core';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unregisterKernels, useBackend } from '@regstack/backend';
import { adversarialTraining, type AdversarialTrainingOptions } from '@regstack/adversarial-training';
import { entropyMin } from '@regstack/entropy-min';
import { labelSmoothing } from '@regstack/label-smoothing';
import { meAda, type MeAdaOptions } from '@regstack/me-ada';
import { mixup } from '@regstack/mixup';
import { importNamedTensors, resnet18, smallCnn, type ClassifierModel } from '@regstack/models';
import { rcad, rcadPerturbation } from '@regstack/rcad';
import { Random, composeRegularizers, lossInputGradient, oneHotTargets, type RegularizerPlugin } from '@regstack/regularizer';
import { capturePrepared, relativeError } from '@regstack/regularizer/testing';
import { mixupDraws, type MixupDraws } from './mixup-draws.js';

/** The target: float32 against float64, norm-wise per tensor. */
const TOLERANCE = 1e-5;
/** The floor on wasm (see the setups below). */
const WASM_TOLERANCE = 3e-5;
/** Never looser than this, whatever PyTorch's own float32 run reaches. */
const CEILING = 1e-4;

/**
 * A tensor's tolerance: 1e-5, or twice what PyTorch itself reaches in float32 on that tensor where
 * that is worse (tensors made small by cancellation, such as the gradient of a shift that a later
 * batch norm removes, lose digits in any float32 implementation), never above 1e-4.
 */
let floor = TOLERANCE;
const toleranceFor = (float32Error: number | undefined) => Math.min(CEILING, Math.max(floor, 2 * (float32Error ?? 0)));

interface FixtureTensor {
  shape: number[];
  values: number[];
}

interface FixtureCase {
  name: string;
  plugin: 'none' | 'label-smoothing' | 'mixup' | 'rcad' | 'rcad+label-smoothing' | 'entropy-min' | 'adversarial-training' | 'me-ada';
  options: Record<string, unknown>;
  seed?: number;
  draws?: MixupDraws;
  terms: Record<string, number>;
  tensors: Record<string, FixtureTensor>;
  gradients: Record<string, FixtureTensor>;
  runningStatistics: Record<string, FixtureTensor>;
  /** PyTorch's own float32 run of the case against its float64 result, per tensor. */
  float32Error: Record<'tensors' | 'gradients' | 'runningStatistics', Record<string, number>>;
}

interface Fixture {
  model: { factory: 'smallCnn' | 'resnet18'; options: Record<string, unknown> };
  trainable: string[];
  weights: Record<string, FixtureTensor>;
  batch: { inputs: FixtureTensor; labels: number[] };
  cases: FixtureCase[];
}

const readFixture = (file: string): Fixture => JSON.parse(readFileSync(new URL(`./fixtures/${file}`, import.meta.url), 'utf8')) as Fixture;

const tensorOf = (fixture: FixtureTensor) => tf.tensor(fixture.values, fixture.shape, 'float32');

/** ‖ours − reference‖₂ / ‖reference‖₂ in float64, after checking the shapes agree and the reference is not all zeros. */
function errorAgainst(ours: tf.Tensor, reference: FixtureTensor, label: string): number {
  expect(ours.shape, `${label}: shape`).toEqual(reference.shape);
  expect(reference.values.some((value) => value !== 0), `${label}: the reference is all zeros, so a relative error means nothing`).toBe(true);
  return relativeError(ours.dataSync(), reference.values);
}

function pluginsFor(testCase: FixtureCase): RegularizerPlugin[] {
  const options = testCase.options;
  switch (testCase.plugin) {
    case 'none':
      return [];
    case 'label-smoothing':
      return [labelSmoothing({ epsilon: options.epsilon as number })];
    case 'mixup':
      return [mixup({ mixupAlpha: options.mixupAlpha as number })];
    case 'rcad':
      return [rcad({ alpha: options.alpha as number, lambda: options.lambda as number })];
    case 'rcad+label-smoothing':
      return [rcad({ alpha: options.alpha as number, lambda: options.lambda as number }), labelSmoothing({ epsilon: options.epsilon as number })];
    case 'entropy-min':
      return [entropyMin({ lambda: options.lambda as number })];
    case 'adversarial-training':
      return [adversarialTraining(options as AdversarialTrainingOptions)];
    case 'me-ada':
      return [meAda(options as MeAdaOptions)];
  }
}

/**
 * Wraps a real plugin so that the state its `prepare` returns (x̃, x_adv, x⁺) is copied out for
 * comparison; the plugin itself runs unchanged inside the real stack.
 */
function capturingState(plugin: RegularizerPlugin, captured: Map<string, tf.Tensor>): RegularizerPlugin {
  return capturePrepared(plugin, (state) => {
    for (const [key, value] of Object.entries(state as Record<string, unknown>)) {
      if (value instanceof tf.Tensor) captured.set(key, tf.keep(tf.clone(value)));
    }
  }).plugin;
}

const fixtures = [
  { file: 'small-cnn.json', build: (options: Record<string, unknown>) => smallCnn(options as Parameters<typeof smallCnn>[0]) },
  { file: 'resnet18.json', build: (options: Record<string, unknown>) => resnet18(options as Parameters<typeof resnet18>[0]) },
];

/** Worst relative error per fixture and case, printed once at the end for the README. */
const summary: string[] = [];

/**
 * Each fixture runs twice: TF.js's cpu backend with none of our kernels (batch norm as tf ops, TF.js's
 * conv gradients), and the default training setup, `useBackend('wasm')` with every kernel
 * of @regstack/backend.
 */
const setups = [
  {
    name: 'cpu, tf ops only',
    prepare: async () => {
      floor = TOLERANCE;
      await tf.setBackend('cpu');
      unregisterKernels('cpu');
      expect(tf.getKernel('RegstackChannelMoments', 'cpu')).toBeUndefined();
      expect(tf.getKernel('RegstackBatchNorm', 'cpu')).toBeUndefined();
    },
  },
  {
    name: 'wasm, @regstack/backend kernels',
    prepare: async () => {
      // XNNPACK's float32 convolutions sum in another order (SIMD partial sums) than TF.js's cpu loops:
      // on the ResNet fixture the worst tensor measured 2.0e-5 here, PyTorch's own float32 run 1.8e-5.
      floor = WASM_TOLERANCE;
      const info = await useBackend('wasm');
      expect(info.kernels).toContain('RegstackChannelMoments');
      // Batch norm (with the ReLU after it) as one kernel and its gradient.
      expect(info.kernels).toContain('RegstackBatchNorm');
    },
  },
];

afterAll(() => {
  console.info(`parity with PyTorch float64 (worst relative L2 error per case):\n${summary.join('\n')}`);
});

for (const setup of setups) {
  describe(setup.name, () => {
    beforeAll(setup.prepare);

    for (const { file, build } of fixtures) {
      const fixture = readFixture(file);

      describe(`${fixture.model.factory} (${file}) on ${setup.name}`, () => {
        let model: ClassifierModel;
        let inputs: tf.Tensor;
        let labels: tf.Tensor1D;

        const loadWeights = () => {
          const tensors = Object.fromEntries(Object.entries(fixture.weights).map(([name, value]) => [name, tensorOf(value)]));
          importNamedTensors(model, tensors);
          tf.dispose(Object.values(tensors));
        };

        beforeAll(() => {
          model = build(fixture.model.options);
          inputs = tensorOf(fixture.batch.inputs);
          labels = tf.tensor1d(fixture.batch.labels, 'int32');
        });

        afterAll(() => {
          model.dispose();
          tf.dispose([inputs, labels]);
        });

        it('loads every variable of the reference under our names and layouts', () => {
          expect(new Set(model.namedVariables().keys())).toEqual(new Set(Object.keys(fixture.weights)));
          const trainableNames = [...model.namedVariables()].filter(([, variable]) => variable.trainable).map(([name]) => name);
          expect(trainableNames).toEqual(fixture.trainable);
        });

        for (const testCase of fixture.cases) {
          it(`${testCase.name}: terms, generated inputs, weight gradients and running statistics match PyTorch`, () => {
            loadWeights();
            const errors: Record<string, number> = {};
            const floors: Record<string, number | undefined> = {};
            const tensorsBefore = tf.memory().numTensors;

            // The input gradient and RCAD's direction through the public helpers (frozen-stats leaves the
            // running statistics alone, so the step below still starts from the loaded ones).
            if (testCase.tensors.inputGradient) {
              tf.tidy(() => {
                const { gradient } = lossInputGradient(model, inputs, oneHotTargets(labels, model.numClasses), { reduction: 'sum', mode: 'frozen-stats' });
                errors['input gradient'] = errorAgainst(gradient, testCase.tensors.inputGradient!, 'inputGradient');
                floors['input gradient'] = testCase.float32Error.tensors.inputGradient;
                if (testCase.tensors.direction) {
                  floors.direction = testCase.float32Error.tensors.direction;
                  errors.direction = errorAgainst(rcadPerturbation(gradient, tf.zerosLike(inputs), 1), testCase.tensors.direction, 'direction');
                }
              });
            }
            if (testCase.draws) {
              // The λ and permutation the reference mixed with are the plugin's own draws from this seed.
              expect(mixupDraws(testCase.draws.seed, inputs.shape[0]!, testCase.options.mixupAlpha as number)).toEqual(testCase.draws);
            }

            const captured = new Map<string, tf.Tensor>();
            const stack = composeRegularizers(pluginsFor(testCase).map((plugin) => capturingState(plugin, captured)));
            const step = stack.prepare({ model, batch: { inputs, labels }, random: new Random(testCase.seed ?? 0) });
            const { value, grads } = step.gradients();
            try {
              const terms = step.terms();
              for (const [name, expected] of Object.entries(testCase.terms)) {
                expect(terms[name], `term ${name}`).toBeDefined();
                errors[`term ${name}`] = Math.abs(terms[name]! - expected) / Math.abs(expected);
              }
              errors['returned total'] = Math.abs(value.dataSync()[0]! - testCase.terms.total!) / Math.abs(testCase.terms.total!);
              const stepTensors: Record<string, tf.Tensor | undefined> = {
                mixedInputs: step.batch.inputs,
                mixedTargets: step.batch.targets,
                smoothedTargets: step.batch.targets,
                perturbed: captured.get('perturbed'),
                adversarial: captured.get('adversarial'),
                generated: captured.get('generated'),
              };
              for (const [name, reference] of Object.entries(testCase.tensors)) {
                if (name === 'inputGradient' || name === 'direction') continue;
                const ours = stepTensors[name];
                expect(ours, `no tensor of ours to compare with the reference's ${name}`).toBeDefined();
                errors[name] = errorAgainst(ours!, reference, name);
                floors[name] = testCase.float32Error.tensors[name];
              }
              expect(Object.keys(grads).length).toBe(fixture.trainable.length);
              const variables = model.namedVariables();
              for (const name of fixture.trainable) {
                const gradient = grads[variables.get(name)!.name];
                expect(gradient, `gradient of ${name}`).toBeDefined();
                errors[`gradient ${name}`] = errorAgainst(gradient!, testCase.gradients[name]!, `gradient ${name}`);
                floors[`gradient ${name}`] = testCase.float32Error.gradients[name];
              }
              for (const [name, reference] of Object.entries(testCase.runningStatistics)) {
                errors[`running ${name}`] = errorAgainst(variables.get(name)!, reference, name);
                floors[`running ${name}`] = testCase.float32Error.runningStatistics[name];
              }
            } finally {
              tf.dispose([value, ...Object.values(grads), ...captured.values()]);
              step.dispose();
            }
            expect(tf.memory().numTensors).toBe(tensorsBefore);

            const [worstName, worst] = Object.entries(errors).reduce((a, b) => (b[1] > a[1] ? b : a));
            const pytorchWorst = Math.max(...Object.values(testCase.float32Error).flatMap((byName) => Object.values(byName)));
            summary.push(
              `  ${setup.name}: ${fixture.model.factory} ${testCase.name}: ${worst.toExponential(2)} (${worstName}; ${Object.keys(errors).length} comparisons); ` +
                `PyTorch float32 worst ${pytorchWorst.toExponential(2)}; ` +
                `${Object.values(errors).filter((error) => error > TOLERANCE).length} above 1e-5`,
            );
            for (const [name, error] of Object.entries(errors)) {
              const tolerance = toleranceFor(floors[name]);
              expect(error, `${name} (tolerance ${tolerance.toExponential(1)})`).toBeLessThanOrEqual(tolerance);
            }
          });

          it(`${testCase.name}: stack.gradients (the trainer's path, fused where it applies) matches PyTorch`, () => {
            loadWeights();
            const stack = composeRegularizers(pluginsFor(testCase));
            const { value, grads, terms, fused } = stack.gradients({ model, batch: { inputs, labels }, random: new Random(testCase.seed ?? 0) });
            try {
              // Fused exactly when every plugin with a loss has a prepare and nothing transforms the batch.
              expect(fused).toBe(['rcad', 'fgsm', 'me-ada'].some((name) => testCase.name.startsWith(name)));
              for (const [name, expected] of Object.entries(testCase.terms)) {
                expect(Math.abs(terms[name]! - expected) / Math.abs(expected), `term ${name}`).toBeLessThanOrEqual(toleranceFor(undefined));
              }
              expect(Math.abs(value.dataSync()[0]! - testCase.terms.total!) / Math.abs(testCase.terms.total!)).toBeLessThanOrEqual(toleranceFor(undefined));
              const variables = model.namedVariables();
              for (const name of fixture.trainable) {
                const tolerance = toleranceFor(testCase.float32Error.gradients[name]);
                expect(errorAgainst(grads[variables.get(name)!.name]!, testCase.gradients[name]!, `gradient ${name}`), `gradient ${name}`).toBeLessThanOrEqual(tolerance);
              }
              for (const [name, reference] of Object.entries(testCase.runningStatistics)) {
                expect(errorAgainst(variables.get(name)!, reference, name), `running ${name}`).toBeLessThanOrEqual(toleranceFor(testCase.float32Error.runningStatistics[name]));
              }
            } finally {
              tf.dispose([value, ...Object.values(grads)]);
            }
          });
        }
      });
    }
  });
}
