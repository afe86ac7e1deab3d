// A prototype of RCAD at its cost floor (≈2 forward+backward passes), for the benchmark only.
//
// The stack computes RCAD's input gradient in `prepare`, with its own forward+backward, before the
// weight tape opens; then the tape runs the base forward on x and the forward on x̃, and one backward
// through both: 3 forwards + 2 backwards. When the base loss is the plain cross-entropy on the clean
// batch (no augmentation, mixup or label smoothing), the base pass's backward already yields ∇x:
// taping x beside the weights gives the clean loss's weight gradients and ∇x in one pass; x̃ follows,
// and a second tape gives the entropy term's weight gradients. The sum equals the stack's gradient
// (the total is linear in its terms). Not a package API: the stack's contract computes every input
// gradient before the weight tape (see the report in tools/bench/README.md).
import * as tf from '@tensorflow/tfjs-core';
import { meanEntropy, oneHotTargets, softCrossEntropy } from '@regstack/regularizer';
import { rcadPerturbation } from '@regstack/rcad';

/**
 * RCAD's total loss and its weight gradients with one forward+backward on x (weights and ∇x together)
 * and one on x̃. Same value and gradients as `composeRegularizers([rcad({ alpha, lambda })])` with the
 * plain CE base loss, up to float rounding.
 * @param {import('@regstack/regularizer').Classifier} model
 * @param {{ inputs: tf.Tensor, labels: tf.Tensor1D }} batch
 * @param {{ alpha?: number, lambda?: number }} [options] The reference's defaults: α = 1, λ = 0.2.
 * @returns {{ value: tf.Scalar, grads: tf.NamedTensorMap }}
 */
export function fusedRcadGradients(model, batch, options = {}) {
  const alpha = options.alpha ?? 1;
  const lambda = options.lambda ?? 0.2;
  const variables = /** @type {tf.Variable[]} */ ([...model.trainableVariables]);
  return tf.tidy(() => {
    const targets = oneHotTargets(batch.labels, model.numClasses);
    const clean = tf.valueAndGrads((inputs, ..._weights) => softCrossEntropy(model.apply(inputs, { mode: 'train' }).logits, targets))([
      batch.inputs,
      ...variables,
    ]);
    const [inputGradient, ...cleanGrads] = clean.grads;
    // The reference differentiates the SUMMED loss; the mean's gradient is that over B. Rescaled so that
    // the 1e-10 in the normalisation acts exactly as in the reference.
    const perturbed = rcadPerturbation(tf.mul(inputGradient, batch.inputs.shape[0]), batch.inputs, alpha);
    const logK = Math.log(model.numClasses);
    const term = tf.variableGrads(() => tf.mul(lambda, tf.sub(logK, meanEntropy(model.apply(perturbed, { mode: 'frozen-stats' }).logits))), variables);
    /** @type {tf.NamedTensorMap} */
    const grads = {};
    variables.forEach((variable, index) => {
      grads[variable.name] = tf.add(cleanGrads[index], term.grads[variable.name]);
    });
    return { value: tf.add(clean.value, term.value), grads };
  });
}
