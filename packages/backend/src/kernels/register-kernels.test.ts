import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@regstack/regularizer';
import { afterEach, describe, expect, it } from 'vitest';
import { listKernels, registerKernels, registeredKernels, unregisterKernels } from './register-kernels.js';

afterEach(() => {
  unregisterKernels('cpu');
});

describe('the kernel table', () => {
  it('lists every kernel once, with the backends it runs on and those it is registered for by default', () => {
    const kernels = listKernels();
    expect(kernels.map((kernel) => kernel.kernelName)).toEqual([
      'Conv2DBackpropFilter',
      'Conv2DBackpropInput',
      'MaxPoolGrad',
      'RegstackChannelMoments',
      'RegstackChannelSums',
      'RegstackBatchNorm',
      'RegstackBatchNormGrad',
      'Identity',
      'BatchMatMul',
      'Conv2D',
      'Cast',
    ]);
    for (const kernel of kernels) {
      expect(kernel.defaultBackends.every((backend) => kernel.backends.includes(backend)), kernel.kernelName).toBe(true);
    }
    // The rows are copies: changing one changes nothing registered.
    kernels[0]!.defaultBackends.length = 0;
    expect(listKernels()[0]!.defaultBackends).toEqual(['wasm', 'cpu']);
  });

  it("registers a backend's defaults, named kernels, and puts the shipped ones back", () => {
    const shippedFilter = tf.getKernel(tf.Conv2DBackpropFilter, 'cpu');
    expect(registeredKernels('cpu')).toEqual([]);
    expect(registerKernels('cpu')).toEqual(['Conv2DBackpropFilter', 'RegstackChannelMoments', 'RegstackChannelSums', 'RegstackBatchNorm', 'RegstackBatchNormGrad']);
    expect(tf.getKernel(tf.Conv2DBackpropFilter, 'cpu')).not.toBe(shippedFilter);
    // Idempotent, and a named kernel comes on top of what is registered.
    expect(registerKernels('cpu', [tf.MaxPoolGrad, tf.MaxPoolGrad])).toEqual(['Conv2DBackpropFilter', 'MaxPoolGrad', 'RegstackChannelMoments', 'RegstackChannelSums', 'RegstackBatchNorm', 'RegstackBatchNormGrad']);
    unregisterKernels('cpu', [tf.MaxPoolGrad, 'RegstackChannelSums', 'RegstackBatchNorm', 'RegstackBatchNormGrad']);
    expect(registeredKernels('cpu')).toEqual(['Conv2DBackpropFilter', 'RegstackChannelMoments']);
    unregisterKernels('cpu');
    expect(registeredKernels('cpu')).toEqual([]);
    expect(tf.getKernel(tf.Conv2DBackpropFilter, 'cpu')).toBe(shippedFilter);
    expect(tf.getKernel('RegstackChannelMoments', 'cpu')).toBeUndefined();
  });

  it('names the field of a wrong backend or kernel and registers nothing', () => {
    expect(() => registerKernels('webgpu' as 'cpu')).toThrow(ConfigError);
    expect(() => registerKernels('webgpu' as 'cpu')).toThrow(expect.objectContaining({ field: 'backend', message: expect.stringMatching(/wasm, cpu/) }));
    expect(() => registerKernels('cpu', ['Conv3D'])).toThrow(expect.objectContaining({ field: 'kernels', message: expect.stringMatching(/'Conv3D' is not a kernel of @regstack\/backend/) }));
    // Conv2D and BatchMatMul delegate to wasm's shipped kernels.
    expect(() => registerKernels('cpu', [tf.MaxPoolGrad, tf.Conv2D])).toThrow(expect.objectContaining({ field: 'kernels', message: expect.stringMatching(/Conv2D runs on wasm only/) }));
    expect(() => unregisterKernels('cpu', [tf.BatchMatMul])).toThrow(ConfigError);
    expect(() => registerKernels('cpu', 'MaxPoolGrad' as unknown as string[])).toThrow(expect.objectContaining({ field: 'kernels' }));
    expect(registeredKernels('cpu')).toEqual([]);
    expect(registeredKernels('webgpu')).toEqual([]);
  });
});
