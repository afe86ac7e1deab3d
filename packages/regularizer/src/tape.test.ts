import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { recordForward, tapeSupported } from './tape.js';

/** A small network whose examples are coupled (batch statistics), with two losses of its logits. */
function problem() {
  const x = tf.tensor2d([0.3, -1.2, 0.8, 0.1, 1.5, -0.4, -0.7, 0.9, 0.2, 1.1, -0.3, 0.6], [4, 3]);
  const w = tf.variable(tf.tensor2d([0.5, -0.2, 0.1, 0.7, -0.6, 0.3], [3, 2]), true, 'tape-test-w');
  const v = tf.variable(tf.tensor2d([1.2, -0.4, 0.3, 0.9, -1.1, 0.5], [2, 3]), true, 'tape-test-v');
  const smooth = tf.tensor2d([0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8, 0.8, 0.1, 0.1], [4, 3]);
  const hard = tf.tensor2d([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0], [4, 3]);
  const logitsOf = (inputs: tf.Tensor) => {
    const pre = tf.matMul(inputs as tf.Tensor2D, w);
    const { mean, variance } = tf.moments(pre, 0);
    return tf.matMul(tf.tanh(tf.div(tf.sub(pre, mean), tf.sqrt(tf.add(variance, 1e-5)))), v);
  };
  const loss = (logits: tf.Tensor, targets: tf.Tensor) => tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), -1))) as tf.Scalar;
  return { x, w, v, smooth, hard, logitsOf, loss, dispose: () => tf.dispose([x, w, v, smooth, hard]) };
}

describe('recordForward: two backward passes over one recorded forward', () => {
  it('passes its own check on this TF.js', () => {
    expect(tapeSupported()).toBe(true);
  });

  it("gives each loss's gradients as tf.grads does, bit for bit, and frees everything", () => {
    const { x, w, v, smooth, hard, logitsOf, loss, dispose } = problem();
    // References: one tape per loss, as TF.js's public API takes them.
    const weightsReference = tf.variableGrads(() => loss(logitsOf(x), smooth), [w, v]);
    const inputReference = tf.grad((inputs: tf.Tensor) => loss(logitsOf(inputs), hard))(x);
    const before = tf.memory().numTensors;
    const recording = recordForward(() => {
      const logits = logitsOf(x);
      return { base: loss(logits, smooth), direction: loss(logits, hard) };
    });
    const [gw, gv] = recording.backward(recording.result.base, [w, v]);
    // A gradient taken between the two passes starts a tape of its own and leaves this one alone.
    tf.dispose(tf.grad((inputs: tf.Tensor) => tf.sum(tf.square(inputs)))(x));
    const [gx] = recording.backward(recording.result.direction, [x]);
    expect(Array.from(gw!.dataSync())).toEqual(Array.from(weightsReference.grads[w.name]!.dataSync()));
    expect(Array.from(gv!.dataSync())).toEqual(Array.from(weightsReference.grads[v.name]!.dataSync()));
    expect(Array.from(gx!.dataSync())).toEqual(Array.from(inputReference.dataSync()));
    expect(recording.result.base.dataSync()[0]).toBe(weightsReference.value.dataSync()[0]);
    recording.release();
    recording.release(); // idempotent
    tf.dispose([gw!, gv!, gx!, recording.result.base, recording.result.direction]);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => recording.backward(recording.result.base, [w])).toThrow(/released/);
    tf.dispose([weightsReference.value, ...Object.values(weightsReference.grads), inputReference]);
    dispose();
  });

  it("computes only the asked inputs' gradients: the input-only pass skips the weights' matrix products", () => {
    const { x, w, v, hard, logitsOf, loss, dispose } = problem();
    const recording = recordForward(() => loss(logitsOf(x), hard));
    const count = (xs: tf.Tensor[]) => {
      const before = tf.memory().numTensors;
      const kernelsBefore = kernelCalls.length;
      const gradients = recording.backward(recording.result, xs);
      const used = kernelCalls.slice(kernelsBefore).filter((name) => name === 'BatchMatMul').length;
      tf.dispose(gradients.filter((gradient): gradient is tf.Tensor => gradient !== undefined));
      expect(tf.memory().numTensors).toBe(before);
      return used;
    };
    const kernelCalls: string[] = [];
    const engine = tf.engine() as unknown as { runKernel?: (name: string, ...rest: unknown[]) => unknown };
    const runKernel = engine.runKernel!.bind(engine);
    engine.runKernel = (name: string, ...rest: unknown[]) => {
      kernelCalls.push(name);
      return runKernel(name, ...rest);
    };
    try {
      // Two products in the network: the inputs alone need each one's data gradient (2), the weights
      // as well need each one's weight gradient too (4).
      expect(count([x])).toBe(2);
      expect(count([x, w, v])).toBe(4);
    } finally {
      delete engine.runKernel; // the class's own method again
      recording.release();
      tf.dispose(recording.result);
      dispose();
    }
  });

  it('refuses to record inside another tape, and frees the tape when the forward throws', () => {
    const x = tf.scalar(2);
    expect(() => tf.grad((a: tf.Tensor) => {
      recordForward(() => tf.mul(a, 2));
      return a;
    })(x)).toThrow(/outside any gradient tape/);
    const before = tf.memory().numTensors;
    expect(() =>
      recordForward(() => {
        tf.square(tf.mul(x, 3));
        throw new Error('forward failed');
      }),
    ).toThrow('forward failed');
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.engine().state.gradientDepth).toBe(0);
    x.dispose();
  });
});
