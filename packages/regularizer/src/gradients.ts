import * as tf from '@tensorflow/tfjs-core';

/**
 * Scales gradients so that their global L2 norm is at most `maxNorm` (PyTorch's
 * `clip_grad_norm_`, which adds 1e-6 to the norm). Returns new tensors and the norm before
 * clipping; the inputs are left as they are.
 */
export function clipByGlobalNorm(grads: tf.NamedTensorMap, maxNorm: number): { grads: tf.NamedTensorMap; norm: number } {
  const names = Object.keys(grads);
  const norm = tf.tidy(() => tf.sqrt(tf.addN(names.map((name) => tf.sum(tf.square(grads[name]!))))).dataSync()[0]!);
  const scale = Math.min(1, maxNorm / (norm + 1e-6));
  const clipped: tf.NamedTensorMap = {};
  for (const name of names) clipped[name] = scale < 1 ? tf.mul(grads[name]!, scale) : tf.clone(grads[name]!);
  return { grads: clipped, norm };
}

/**
 * Adds coupled weight decay `decay · w` to each gradient (PyTorch SGD's `weight_decay`, which the
 * reference recipe applies after clipping). Returns new tensors.
 */
export function addWeightDecay(grads: tf.NamedTensorMap, variables: readonly tf.Variable[], decay: number): tf.NamedTensorMap {
  const byName = new Map(variables.map((variable) => [variable.name, variable]));
  const decayed: tf.NamedTensorMap = {};
  for (const [name, grad] of Object.entries(grads)) {
    const variable = byName.get(name);
    decayed[name] = variable && decay !== 0 ? tf.tidy(() => tf.add(grad, tf.mul(variable, decay))) : tf.clone(grad);
  }
  return decayed;
}

/**
 * `optimizer.applyGradients(grads)` for any TF.js optimizer, from the gradient maps this package
 * returns (`stack.gradients`, {@link clipByGlobalNorm}, {@link addWeightDecay}). TF.js 4.22 declares
 * the parameter of Adam's, Adamax's, Adagrad's, Adadelta's and Momentum's `applyGradients` as
 * `NamedVariableMap | NamedTensor[]` (gradients are tensors, not variables, and every optimizer
 * takes them), so a `NamedTensorMap` does not compile there; this passes the `NamedTensor[]` form,
 * which every optimizer declares. The gradients are not disposed.
 */
export function applyGradients(optimizer: tf.Optimizer, grads: tf.NamedTensorMap): void {
  optimizer.applyGradients(Object.entries(grads).map(([name, tensor]) => ({ name, tensor })));
}
