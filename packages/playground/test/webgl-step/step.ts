/**
 * Test page of `webgl.test.ts`: one RCAD + label smoothing step of the small CNN on a fixed batch, on
 * TF.js's cpu backend and on webgl, in the same page, everything read back for the test to compare.
 * Nothing here imports `@tensorflow/tfjs-backend-webgl` before `useBackend('webgl')` has been tried
 * without it, so that the page also shows the error a bundle without the package gets.
 */
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { labelSmoothing } from '@regstack/label-smoothing';
import { createModel } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { ConfigError, Random, composeRegularizers } from '@regstack/regularizer';

/** One backend's step, read back as plain numbers. */
export interface StepResult {
  /** `tf.getBackend()` right after the step. */
  backend: string;
  /** The total loss. */
  loss: number;
  /** `base`, `label-smoothing`/`rcad` where they add a term, and `total`. */
  terms: Record<string, number>;
  /** Gradient of the total w.r.t. each trainable variable, by the model's parameter name. */
  gradients: Record<string, number[]>;
  /** Running statistics after the step (the base pass updates them). */
  runningStatistics: Record<string, number[]>;
  /** Tensors alive after the step minus before it (0: nothing leaked). */
  leakedTensors: number;
}

/** What TF.js's webgl backend reported about its context: the test refuses to pass on a fallback. */
export interface WebglFacts {
  /** `WEBGL_VERSION`: 2 for WebGL2. */
  version: number;
  /** `WEBGL_RENDER_FLOAT32_CAPABLE`: the context can render to float32 colour buffers. */
  renderFloat32Capable: boolean;
  /** `WEBGL_RENDER_FLOAT32_ENABLED`: TF.js renders to float32 (not half-float) textures. */
  renderFloat32Enabled: boolean;
  /** `WEBGL_DOWNLOAD_FLOAT_ENABLED`: results are read back as floats. */
  downloadFloatEnabled: boolean;
  /** `WEBGL_FORCE_F16_TEXTURES`. */
  forceHalfFloat: boolean;
  /** `gl.getParameter(gl.VERSION)` of the context TF.js computes in. */
  glVersion: string;
  /** The unmasked renderer (SwiftShader under the test's flags), for the report only. */
  renderer: string;
}

/** Everything {@link compareStep} measured. */
export interface Comparison {
  /** What `useBackend('webgl')` threw before the page had imported `@tensorflow/tfjs-backend-webgl`. */
  withoutPackage: { isConfigError: boolean; field?: string; message: string } | null;
  /** `useBackend('webgl')`'s answer once the package is imported. */
  webglInfo: { name: string; kernels: string[] };
  webgl: WebglFacts;
  cpu: StepResult;
  onWebgl: StepResult;
}

const BATCH = 16;
const CLASSES = 10;
const SHAPE = [28, 28, 1] as const;

function stepOn(backend: string): StepResult {
  const before = tf.memory().numTensors;
  // The same seed gives the same weights on every backend: they are drawn in JavaScript.
  const model = createModel('small-cnn', { inputShape: SHAPE, numClasses: CLASSES, seed: 7, width: 8, mean: 0.286, std: 0.353 });
  const random = new Random(11);
  const pixels = Float32Array.from({ length: BATCH * SHAPE[0] * SHAPE[1] * SHAPE[2] }, () => random.uniform());
  const inputs = tf.tensor4d(pixels, [BATCH, ...SHAPE]);
  const labels = tf.tensor1d(Array.from({ length: BATCH }, (_, index) => index % CLASSES), 'int32');
  const names = new Map([...model.namedVariables()].map(([name, variable]) => [variable.name, name]));
  const stack = composeRegularizers([rcad({ alpha: 0.5, lambda: 0.2 }), labelSmoothing({ epsilon: 0.1 })]);
  const step = stack.gradients({ model, batch: { inputs, labels }, random: new Random(3) });
  const result: StepResult = {
    backend: tf.getBackend(),
    loss: step.value.dataSync()[0]!,
    terms: step.terms,
    gradients: {},
    runningStatistics: {},
    leakedTensors: 0,
  };
  for (const [variableName, gradient] of Object.entries(step.grads)) {
    result.gradients[names.get(variableName) ?? variableName] = Array.from(gradient.dataSync());
  }
  for (const variable of model.nonTrainableVariables) {
    result.runningStatistics[names.get(variable.name) ?? variable.name] = Array.from(variable.dataSync());
  }
  tf.dispose([step.value, ...Object.values(step.grads), inputs, labels]);
  model.dispose();
  result.leakedTensors = tf.memory().numTensors - before;
  if (result.backend !== backend) throw new Error(`the step ran on ${result.backend}, not ${backend}`);
  return result;
}

function webglFacts(): WebglFacts {
  const gl = (tf.backend() as unknown as { gpgpu: { gl: WebGL2RenderingContext } }).gpgpu.gl;
  const debug = gl.getExtension('WEBGL_debug_renderer_info');
  return {
    version: tf.env().getNumber('WEBGL_VERSION'),
    renderFloat32Capable: tf.env().getBool('WEBGL_RENDER_FLOAT32_CAPABLE'),
    renderFloat32Enabled: tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED'),
    downloadFloatEnabled: tf.env().getBool('WEBGL_DOWNLOAD_FLOAT_ENABLED'),
    forceHalfFloat: tf.env().getBool('WEBGL_FORCE_F16_TEXTURES'),
    glVersion: String(gl.getParameter(gl.VERSION)),
    renderer: String(debug === null ? gl.getParameter(gl.RENDERER) : gl.getParameter(debug.UNMASKED_RENDERER_WEBGL)),
  };
}

async function compareStep(): Promise<Comparison> {
  let withoutPackage: Comparison['withoutPackage'] = null;
  try {
    await useBackend('webgl');
  } catch (error) {
    withoutPackage = {
      isConfigError: error instanceof ConfigError,
      field: (error as { field?: string }).field,
      message: error instanceof Error ? error.message : String(error),
    };
  }

  await useBackend('cpu');
  const cpu = stepOn('cpu');

  // What a browser bundle does: import the package, then select it.
  await import('@tensorflow/tfjs-backend-webgl');
  // `?half-float`: TF.js's own switch to the fallback of GPUs without float32 colour buffers, so the
  // test can show that its tolerance tells the two apart. Read when the backend initialises.
  if (new URLSearchParams(location.search).has('half-float')) tf.env().set('WEBGL_FORCE_F16_TEXTURES', true);
  const webglInfo = await useBackend('webgl');
  const webgl = webglFacts();
  const onWebgl = stepOn('webgl');
  return { withoutPackage, webglInfo, webgl, cpu, onWebgl };
}

(window as unknown as { compareStep: typeof compareStep }).compareStep = compareStep;
