import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { registerKernels, unregisterKernels } from './register-kernels.js';

describe('the sharing Cast on wasm', () => {
  it('shares the data of a cast to the same dtype, and converts any other cast as wasm does', async () => {
    await tf.setBackend('wasm');
    registerKernels('wasm', [tf.Cast]);
    const backend = tf.backend() as unknown as { refCount(dataId: object): number; numDataIds(): number };
    const dataBefore = backend.numDataIds();
    const x = tf.tensor([1.5, -2, 0, 4], [2, 2]);
    const same = tf.cast(x, 'float32');
    expect(same.dataId).toBe(x.dataId);
    expect(backend.refCount(x.dataId)).toBe(2);
    x.dispose();
    expect(Array.from(same.dataSync())).toEqual([1.5, -2, 0, 4]);
    // Another dtype: converted by wasm's own kernel (truncated toward zero), in new data.
    const integers = tf.cast(same, 'int32');
    expect(integers.dataId).not.toBe(same.dataId);
    expect(integers.dtype).toBe('int32');
    expect(Array.from(integers.dataSync())).toEqual([1, -2, 0, 4]);
    // The ReLU gradient, which casts its mask to float32, is unchanged.
    const input = tf.tensor1d([-1, 0, 2, 3]);
    const gradient = tf.grad((value: tf.Tensor) => tf.sum(tf.mul(tf.relu(value), tf.tensor1d([1, 2, 3, 4]))))(input);
    expect(Array.from(gradient.dataSync())).toEqual([0, 0, 3, 4]);
    tf.dispose([same, integers, input, gradient]);
    expect(backend.numDataIds()).toBe(dataBefore);

    unregisterKernels('wasm', [tf.Cast]);
    const y = tf.tensor([5, 6]);
    const copied = tf.cast(y, 'float32');
    expect(copied.dataId).not.toBe(y.dataId);
    tf.dispose([y, copied]);
    registerKernels('wasm', [tf.Cast]);
  });
});
