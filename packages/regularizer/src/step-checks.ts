/**
 * Checks a stack makes before a step, so that a mistake a TF.js programmer is likely to make fails
 * with an error that says what to do, instead of deep inside TF.js or not at all.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Batch, Classifier } from './contract.js';
import { ConfigError } from './errors.js';

/** Throws a ConfigError unless `model` is a Classifier; a raw `tf.LayersModel` is told how to wrap it. */
export function assertClassifier(model: unknown): asserts model is Classifier {
  if (model === null || typeof model !== 'object') throw new ConfigError('model', `expected a Classifier, got ${model === null ? 'null' : typeof model}`);
  const candidate = model as Partial<Classifier> & { layers?: unknown; outputs?: unknown };
  if (typeof candidate.numClasses !== 'number' && Array.isArray(candidate.layers) && Array.isArray(candidate.outputs)) {
    throw new ConfigError(
      'model',
      'got a tf.LayersModel where a Classifier is expected: wrap it once with classifierFromLayersModel(model) from @regstack/regularizer ' +
        '(its last layer must output logits, without softmax)',
    );
  }
  if (typeof candidate.apply !== 'function' || typeof candidate.numClasses !== 'number') {
    throw new ConfigError('model', 'expected a Classifier ({ numClasses, apply, trainableVariables }): see classifierFromLayersModel and classifierFromFunction');
  }
}

/**
 * Throws a ConfigError when a gradient tape is recording (inside `optimizer.minimize`,
 * `tf.variableGrads` or `tf.grads`): TF.js has no stopGradient, so the constants a prepare computes
 * there would be differentiated through. `gradientDepth` is the engine's count of open tapes.
 */
export function assertOutsideTape(where: string): void {
  if (tf.engine().state.gradientDepth > 0) {
    throw new ConfigError(
      where,
      'called while a gradient tape is recording (inside optimizer.minimize, tf.variableGrads or tf.grads): ' +
        'its constants would be differentiated. Call stack.prepare(...) BEFORE optimizer.minimize(step.loss, ...), or use stack.minimize(optimizer, input)',
    );
  }
}

/**
 * A kernel that only `@regstack/backend` registers (its batch-norm channel moments): present for a
 * backend exactly when `useBackend` (or the package's `registerChannelReductionKernels`) set that
 * backend up with our training kernels. Read by name so that this package does not depend on it.
 */
export const REGSTACK_BACKEND_MARKER_KERNEL = 'RegstackChannelMoments';

/**
 * Forward kernels whose weight gradient needs a kernel TF.js's wasm backend does not ship
 * (`@regstack/backend` registers the convolution's; none registers the depthwise one yet).
 */
const WASM_GRADIENT_KERNELS: Record<string, string> = {
  Conv2D: 'Conv2DBackpropFilter',
  FusedConv2D: 'Conv2DBackpropFilter',
  DepthwiseConv2dNative: 'DepthwiseConv2dNativeBackpropFilter',
  FusedDepthwiseConv2D: 'DepthwiseConv2dNativeBackpropFilter',
};

/** Why a model with these forward kernels cannot train on wasm as it is set up, if it cannot. */
function wasmFault(kernels: Set<string>): string | undefined {
  for (const kernel of kernels) {
    const gradient = WASM_GRADIENT_KERNELS[kernel];
    if (gradient !== undefined && tf.getKernel(gradient, 'wasm') === undefined) {
      return `TF.js's wasm backend has no '${gradient}' kernel, so the weight update fails`;
    }
  }
  // The shipped MaxPoolGrad is registered, so only our marker tells ours from it.
  if (kernels.has('MaxPool')) return "TF.js's wasm 'MaxPoolGrad' drops gradients (whole pooling windows get none), so training runs silently wrong";
  return undefined;
}

const warned = new Set<string>();

/** Where one-time backend advice goes; `console.warn` unless replaced (tests, or a UI). */
let adviceHandler: (message: string) => void = (message) => console.warn(message);

/**
 * Replaces where the stack's one-time backend advice goes (default `console.warn`; muted when
 * `tf.env().get('PROD')` is true, as TF.js's own notices are); `null` silences it. Returns the previous handler. Errors (training that cannot work) are thrown regardless.
 */
export function setBackendAdviceHandler(handler: ((message: string) => void) | null): (message: string) => void {
  const previous = adviceHandler;
  adviceHandler = handler ?? (() => {});
  return previous;
}

function adviseOnce(backend: string, message: string): void {
  // Muted in production mode, as TF.js mutes its own notices (tf.enableProdMode()).
  if (warned.has(backend) || tf.env().getBool('PROD')) return;
  warned.add(backend);
  adviceHandler(message);
}

function hasRegstackKernels(backend: string): boolean {
  return tf.getKernel(REGSTACK_BACKEND_MARKER_KERNEL, backend) !== undefined;
}

/**
 * The kernels of one eval-mode forward pass of `model` on the batch's first example, read from the
 * gradient tape (the engine records each kernel's name there), and any kernel the input gradient
 * found missing. Eval mode: no running statistics change.
 */
function forwardKernels(model: Classifier, inputs: tf.Tensor): { kernels: Set<string>; missing?: string } {
  const kernels = new Set<string>();
  try {
    tf.tidy(() => {
      const example = tf.slice(inputs, 0, 1);
      tf.grad((x: tf.Tensor) => {
        const { logits } = model.apply(x, { mode: 'eval' });
        for (const node of tf.engine().state.activeTape ?? []) kernels.add(node.kernelName);
        return tf.sum(logits);
      })(example);
    });
  } catch (error) {
    const missing = /Kernel '(\w+)' not registered/.exec(error instanceof Error ? error.message : String(error));
    if (missing) return { kernels, missing: missing[1]! };
    throw error;
  }
  return { kernels };
}

const USE_BACKEND = "import { useBackend } from '@regstack/backend'; await useBackend();";

/**
 * Looks at the backend before a stack's first step (see `composeRegularizers`). Throws a ConfigError
 * where training cannot work; advises once per backend where it is only slow.
 */
export function checkBackendOnce(model: Classifier, batch: Batch | undefined): void {
  const backend = tf.getBackend();
  if (backend !== 'wasm' && backend !== 'cpu') return;
  if (hasRegstackKernels(backend)) return;
  if (backend === 'cpu') {
    adviseOnce(
      'cpu',
      "regstack: training on TF.js's cpu backend, which is about 50× slower per step than wasm with @regstack/backend's kernels. " +
        `Call once before training: ${USE_BACKEND}`,
    );
    return;
  }
  // wasm without our kernels: find out whether this model can train here at all.
  if (!(batch?.inputs instanceof tf.Tensor) || batch.inputs.rank < 2 || batch.inputs.shape[0] === 0) return; // the batch check says what is wrong
  const { kernels, missing } = forwardKernels(model, batch.inputs);
  const fault = missing !== undefined ? `TF.js's wasm backend has no '${missing}' kernel, so the weight update fails` : wasmFault(kernels);
  if (fault !== undefined) {
    throw new ConfigError('backend', `${fault}. @regstack/backend registers the training kernels wasm lacks; call once before training: ${USE_BACKEND}`);
  }
  adviseOnce(
    'wasm',
    "regstack: training on TF.js's wasm backend without @regstack/backend's training kernels (slower gradients, batch-norm reductions and matrix products). " +
      `Call once before training: ${USE_BACKEND}`,
  );
}
