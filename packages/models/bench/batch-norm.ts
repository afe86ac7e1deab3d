/**
 * Batch-norm forward + backward on the wasm backend, with TF.js's own kernels only: this package's
 * `batchNormalization` (one op with its analytic gradient; its reductions as tf ops here, because
 * `@regstack/backend`'s channel-reduction kernels are not registered: tools/bench/layers.mjs measures
 * those) against the same mathematics as plain ops differentiated by TF.js, a centred hand-written form,
 * tfjs-core's `tf.moments` + `tf.batchNorm`, and `tf.layers.batchNormalization`. Activation
 * [64, 32, 32, 32] (NHWC), gradients w.r.t. the input, γ and β. Run from packages/models with
 * `npm run bench:batch-norm`.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import * as tfl from '@tensorflow/tfjs-layers';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { batchNormalization, type BatchNormParameters } from '../src/batch-norm.js';

const shape: [number, number, number, number] = [64, 32, 32, 32];
const channels = shape[3];
const epsilon = 1e-5;
const warmup = 3;
const repeats = Number(process.env.REPEATS ?? 15);

type Forward = (x: tf.Tensor4D, gamma: tf.Variable, beta: tf.Variable) => tf.Tensor;

async function main(): Promise<void> {
  // WASM_PATHS lets the bundled script run where node_modules is absent (a copy of wasm-out/).
  const wasmDirectory =
    process.env.WASM_PATHS ?? dirname(createRequire(join(process.cwd(), 'package.json')).resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm.wasm'));
  setWasmPaths(`${wasmDirectory.replace(/\/$/, '')}/`);
  await tf.setBackend('wasm');
  const input = tf.variable(tf.randomNormal(shape, 0.5, 2, 'float32', 1), true);
  const upstream = tf.randomNormal(shape, 0, 1, 'float32', 2);
  const gamma = tf.variable(tf.randomUniform([channels], 0.5, 1.5, 'float32', 3));
  const beta = tf.variable(tf.randomNormal([channels], 0, 1, 'float32', 4));
  const running = { runningMean: tf.variable(tf.zeros([channels]), false), runningVariance: tf.variable(tf.ones([channels]), false) };

  const ours: Forward = (x, g, b) => {
    const parameters: BatchNormParameters = { gamma: g, beta: b, ...running, momentum: 0.1, epsilon };
    return batchNormalization(x, parameters, 'train');
  };
  const plainOps: Forward = (x, g, b) => {
    const mean = tf.mean(x, [0, 1, 2]);
    const variance = tf.relu(tf.sub(tf.mean(tf.square(x), [0, 1, 2]), tf.square(mean)));
    const scale = tf.mul(g, tf.rsqrt(tf.add(variance, epsilon)));
    return tf.add(tf.mul(x, scale), tf.sub(b, tf.mul(mean, scale)));
  };
  const centred: Forward = (x, g, b) => {
    const mean = tf.mean(x, [0, 1, 2]);
    const centered = tf.sub(x, mean);
    const variance = tf.mean(tf.square(centered), [0, 1, 2]);
    return tf.add(tf.mul(centered, tf.mul(g, tf.rsqrt(tf.add(variance, epsilon)))), b);
  };
  const coreBatchNorm: Forward = (x, g, b) => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.batchNorm(x, mean, variance, b, g, epsilon);
  };
  const layer = tfl.layers.batchNormalization({ axis: -1, momentum: 0.9, epsilon });
  layer.build(shape);
  // Same γ and β as the other variants, so that outputs can be compared.
  layer.setWeights([gamma, beta, running.runningMean, running.runningVariance]);
  const layersForward: Forward = (x) => layer.apply(x, { training: true }) as tf.Tensor;
  const layerWeights = layer.trainableWeights.map((weight) => weight.read() as tf.Variable);

  const variants: Array<[string, Forward, tf.Variable[]]> = [
    ['@regstack/models batchNormalization (one op)', ours, [input, gamma, beta]],
    ['plain ops E[x²] − E[x]², differentiated by TF.js', plainOps, [input, gamma, beta]],
    ['hand-written, centred (E[(x − μ)²])', centred, [input, gamma, beta]],
    ['tf.moments + tf.batchNorm', coreBatchNorm, [input, gamma, beta]],
    ['tf.layers.batchNormalization', layersForward, [input, ...layerWeights]],
  ];

  const reference = tf.tidy(() => centred(input, gamma, beta).dataSync());
  console.log(`node ${process.version}, backend ${tf.getBackend()}, activation [${shape.join(', ')}], ${repeats} interleaved repeats (median ms)`);
  const runs = variants.map(([name, forward, variables]) => ({
    name,
    forwardOnly: () => {
      tf.tidy(() => {
        forward(input, gamma, beta).dataSync();
      });
    },
    forwardBackward: () => {
      tf.tidy(() => {
        const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(input, gamma, beta), upstream)) as tf.Scalar, variables);
        value.dataSync();
        for (const gradient of Object.values(grads)) gradient.dataSync();
      });
    },
    difference: tf.tidy(() => tf.max(tf.abs(tf.sub(forward(input, gamma, beta), tf.tensor(reference, shape)))).dataSync()[0]!),
    forwardTimes: [] as number[],
    stepTimes: [] as number[],
  }));
  for (const run of runs) {
    for (let index = 0; index < warmup; index++) {
      run.forwardOnly();
      run.forwardBackward();
    }
  }
  // Interleaved, so that load from other processes falls on every variant alike.
  for (let repeat = 0; repeat < repeats; repeat++) {
    for (const run of runs) {
      run.forwardTimes.push(time(run.forwardOnly));
      run.stepTimes.push(time(run.forwardBackward));
    }
  }
  for (const run of runs) {
    console.log(
      `${run.name.padEnd(52)} forward ${median(run.forwardTimes).toFixed(1).padStart(7)}  forward+backward ${median(run.stepTimes).toFixed(1).padStart(7)}  max |Δ| vs centred ${run.difference.toExponential(1)}`,
    );
  }
}

function time(run: () => void): number {
  const start = performance.now();
  run();
  return performance.now() - start;
}

function median(times: number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
