import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL } from './channel-reductions.js';
import { registerKernels, registeredKernels, unregisterKernels } from '../kernels/register-kernels.js';

const CHANNEL_KERNELS = [CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL];
/** Whether both channel-reduction kernels are registered for `backend`. */
const channelKernelsRegistered = (backend: string) => CHANNEL_KERNELS.every((name) => registeredKernels(backend).includes(name));
import { relativeError } from '@regstack/regularizer/testing';

/** Values with a channel-dependent offset and scale, so that a channel mix-up or a lost row shows. */
function values(shape: number[], seed: number): Float32Array {
  const channels = shape.at(-1)!;
  let state = seed;
  return Float32Array.from({ length: tf.util.sizeFromShape(shape) }, (_, index) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const channel = index % channels;
    return (channel - 2) * 0.75 + (1 + channel / 4) * (state / 2 ** 32 - 0.5);
  });
}

/** Per-channel Σa, Σa·b, mean and biased variance in float64, the centred way. */
function reference(a: Float32Array, b: Float32Array, channels: number) {
  const count = a.length / channels;
  const sums = new Float64Array(channels);
  const products = new Float64Array(channels);
  for (let index = 0; index < a.length; index++) {
    sums[index % channels]! += a[index]!;
    products[index % channels]! += a[index]! * b[index]!;
  }
  const mean = sums.map((sum) => sum / count);
  const variance = new Float64Array(channels);
  for (let index = 0; index < a.length; index++) variance[index % channels]! += (a[index]! - mean[index % channels]!) ** 2 / count;
  return { sums, products, mean, variance };
}

// Channels that are and are not a multiple of the 4-channel unrolling; rows beyond one 64-row block.
const shapes = [
  [3, 7, 5, 8],
  [2, 9, 11, 5],
  [130, 3],
  [1, 1, 70, 1],
];

describe.each(['wasm', 'cpu'])('channel reductions on %s', (backendName) => {
  beforeAll(async () => {
    await tf.setBackend(backendName);
    registerKernels(backendName as 'wasm' | 'cpu', CHANNEL_KERNELS);
  });

  it.each(shapes)('moments and sums of [%i, %i, …] equal a float64 reference', (...shape) => {
    const channels = shape.at(-1)!;
    const a = values(shape, 3);
    const b = values(shape, 5);
    const expected = reference(a, b, channels);
    const x = tf.tensor(a, shape);
    const y = tf.tensor(b, shape);
    const before = tf.memory().numTensors;
    const [mean, variance] = tf.engine().runKernel(CHANNEL_MOMENTS_KERNEL, { x }) as tf.Tensor[];
    const [sum, product] = tf.engine().runKernel(CHANNEL_SUMS_KERNEL, { a: x, b: y }) as tf.Tensor[];
    expect(tf.memory().numTensors).toBe(before + 4);
    expect(mean!.shape).toEqual([channels]);
    expect(relativeError(mean!.dataSync(), expected.mean)).toBeLessThan(1e-6);
    expect(relativeError(variance!.dataSync(), expected.variance)).toBeLessThan(1e-6);
    expect(relativeError(sum!.dataSync(), expected.sums)).toBeLessThan(1e-6);
    expect(relativeError(product!.dataSync(), expected.products)).toBeLessThan(1e-6);
    tf.dispose([x, y, mean!, variance!, sum!, product!]);
  });

  it('gives a constant channel a variance of exactly 0, not a rounding error below it', () => {
    const x = tf.fill([4, 3, 2], 0.1);
    const [, variance] = tf.engine().runKernel(CHANNEL_MOMENTS_KERNEL, { x }) as tf.Tensor[];
    expect(Array.from(variance!.dataSync()).every((value) => value >= 0 && value < 1e-12)).toBe(true);
    tf.dispose([x, variance!]);
  });

  it('names what is wrong with its inputs', () => {
    const vector = tf.zeros([4]);
    const ints = tf.zeros([2, 2], 'int32');
    const x = tf.zeros([2, 3]);
    const other = tf.zeros([3, 2]);
    expect(() => tf.engine().runKernel(CHANNEL_MOMENTS_KERNEL, { x: vector })).toThrow(/RegstackChannelMoments: 'x' must have rank ≥ 2/);
    expect(() => tf.engine().runKernel(CHANNEL_MOMENTS_KERNEL, { x: ints })).toThrow(/input 0 must be float32, got int32/);
    expect(() => tf.engine().runKernel(CHANNEL_SUMS_KERNEL, { a: x, b: other })).toThrow(/a has shape \[2,3\], b \[3,2\]/);
    tf.dispose([vector, ints, x, other]);
  });

  it('can be removed again', () => {
    const name = backendName as 'wasm' | 'cpu';
    expect(channelKernelsRegistered(name)).toBe(true);
    unregisterKernels(name, CHANNEL_KERNELS);
    expect(tf.getKernel(CHANNEL_MOMENTS_KERNEL, name)).toBeUndefined();
    expect(channelKernelsRegistered(name)).toBe(false);
    registerKernels(name, CHANNEL_KERNELS);
    expect(tf.getKernel(CHANNEL_SUMS_KERNEL, name)).toBeDefined();
  });
});

describe('the sharing Identity on wasm', () => {
  it('clones without copying, keeps the data alive for the clone, and frees it with the last reference', async () => {
    await tf.setBackend('wasm');
    registerKernels('wasm', [tf.Identity]);
    expect(registeredKernels('wasm')).toContain(tf.Identity);
    const backend = tf.backend() as unknown as { refCount(dataId: object): number; numDataIds(): number };
    const dataBefore = backend.numDataIds();
    const x = tf.tensor([1, 2, 3, 4], [2, 2]);
    const clone = tf.clone(x);
    expect(clone.dataId).toBe(x.dataId);
    expect(backend.refCount(x.dataId)).toBe(2);
    x.dispose();
    expect(Array.from(clone.dataSync())).toEqual([1, 2, 3, 4]);
    clone.dispose();
    expect(backend.numDataIds()).toBe(dataBefore);

    unregisterKernels('wasm', [tf.Identity]);
    const y = tf.tensor([5, 6]);
    const copied = tf.clone(y);
    expect(copied.dataId).not.toBe(y.dataId);
    expect(Array.from(copied.dataSync())).toEqual([5, 6]);
    tf.dispose([y, copied]);
    registerKernels('wasm', [tf.Identity]);
  });
});
