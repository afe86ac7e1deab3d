// RCAD + label smoothing through the fused step on the real model and kernels: a ResNet-18 whose
// batch norm is @regstack/backend's kernel (wasm, cpu), where the direction's own backward runs over
// the base pass's recorded forward (`fusion: 'base-forward'`).
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { labelSmoothing } from '@regstack/label-smoothing';
import { resnet18 } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { Random, composeRegularizers, type StepInput } from '@regstack/regularizer';
import { capturePrepared, relativeError } from '@regstack/regularizer/testing';
import { describe, expect, it } from 'vitest';

function batchOf() {
  const random = new Random(21);
  return {
    inputs: tf.tensor4d(Array.from({ length: 4 * 12 * 12 * 3 }, () => random.uniform()), [4, 12, 12, 3]),
    labels: tf.tensor1d([0, 3, 1, 2], 'int32'),
  };
}

/** The reference recipe's second view: a horizontal flip and a shift drawn from the step's generator. */
const augment = (inputs: tf.Tensor, random: Random) => tf.add(tf.reverse(inputs, 2), 0.1 * random.uniform());

describe.each(['wasm', 'cpu'] as const)('RCAD + label smoothing on a ResNet-18 with the backend kernels (%s)', (backend) => {
  it.each(['single', 'two-view'] as const)('%s: the fused step gives the prepare path’s terms, gradients and running statistics, leaking nothing', async (views) => {
    await useBackend(backend);
    const make = () => resnet18({ width: 4, numClasses: 4, inputShape: [12, 12, 3], seed: 5 });
    const [plainModel, fusedModel] = [make(), make()];
    const batch = batchOf();
    /** The stack, with RCAD's x̃ = x + α·d copied out of each step's prepared state. */
    const stack = () => {
      const { plugin, captured } = capturePrepared(rcad({ alpha: 0.5, lambda: 0.3 }), (state) => Array.from(state.perturbed!.dataSync()));
      return { stack: composeRegularizers([plugin, labelSmoothing({ epsilon: 0.2 })]), perturbed: captured };
    };
    const viewInput: Partial<StepInput> = views === 'two-view' ? { baseLoss: 'two-view', augment } : {};
    // The plain path: `prepare` makes the direction's own pass, then one tape over the whole loss.
    const plain = stack();
    const prepared = plain.stack.prepare({ ...viewInput, model: plainModel, batch, random: new Random(5) });
    const slow = prepared.gradients();
    const slowTerms = prepared.terms();
    prepared.dispose();
    const fused = stack();
    const before = tf.memory().numTensors;
    const fast = fused.stack.gradients({ ...viewInput, model: fusedModel, batch, random: new Random(5) });
    expect([fast.fused, fast.fusion]).toEqual([true, 'base-forward']);
    // RCAD's direction, and so x̃: the same kernels on the same values, to the bit.
    expect(fused.perturbed[0]).toEqual(plain.perturbed[0]);
    expect(fused.perturbed[0]).not.toEqual(Array.from(batch.inputs.dataSync()));
    // Observed on wasm and cpu: terms within 4.2e-8, gradients within 1e-7 (relative, whole tensors; 0 on one view).
    for (const [term, value] of Object.entries(slowTerms)) expect(Math.abs(fast.terms[term]! - value), term).toBeLessThan(1e-6 * Math.max(1, Math.abs(value)));
    expect(fast.terms.rcad).toBeGreaterThan(0);
    const trainable = plainModel.trainableVariables;
    expect(Object.keys(fast.grads)).toHaveLength(trainable.length);
    trainable.forEach((variable, i) => {
      const [a, b] = [slow.grads[variable.name]!, fast.grads[fusedModel.trainableVariables[i]!.name]!];
      expect(relativeError(b.dataSync() as Float32Array, a.dataSync() as Float32Array), variable.name).toBeLessThan(1e-6);
    });
    // The base pass updated the running statistics once per view, as the plain path's did: to the bit.
    plainModel.nonTrainableVariables.forEach((variable, i) => {
      expect(Array.from(fusedModel.nonTrainableVariables[i]!.dataSync())).toEqual(Array.from(variable.dataSync()));
    });
    tf.dispose([fast.value, ...Object.values(fast.grads)]);
    expect(tf.memory().numTensors).toBe(before);
    // And again: the same count after a second step.
    const again = fused.stack.gradients({ ...viewInput, model: fusedModel, batch, random: new Random(6) });
    tf.dispose([again.value, ...Object.values(again.grads)]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([slow.value, ...Object.values(slow.grads), batch.inputs, batch.labels]);
    plainModel.dispose();
    fusedModel.dispose();
  }, 60_000);
});
