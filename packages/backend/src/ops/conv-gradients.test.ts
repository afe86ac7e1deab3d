import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  conv2dFilterGradient,
  conv2dInputGradient,
  setValueLoops,
  type ConvGradientAttributes,
  type FilterGradientMethod,
  type InputGradientMethod,
} from './conv-gradients.js';
import { conv2dFilterGradientByMatMul } from './filter-gradient-matmul.js';
import { registerKernels, registeredKernels, unregisterKernels } from '../kernels/register-kernels.js';
import { relativeError } from '@regstack/regularizer/testing';
import { randomValues } from '../test-values.js';

type Rank4 = [number, number, number, number];

const CONV_GRADIENT_KERNELS: string[] = [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput];
/** Our conv-gradient kernels registered for `backend`. */
const registeredConvGradients = (backend: string) => registeredKernels(backend).filter((name) => CONV_GRADIENT_KERNELS.includes(name));

interface Case {
  label: string;
  input: Rank4;
  filter: Rank4;
  attributes: ConvGradientAttributes;
}

const cases: Case[] = [
  { label: '3x3 stride 1 same, odd 7x7', input: [2, 7, 7, 3], filter: [3, 3, 3, 4], attributes: { strides: 1, pad: 'same' } },
  { label: '3x3 stride 2 same, even 8x8', input: [2, 8, 8, 3], filter: [3, 3, 3, 4], attributes: { strides: 2, pad: 'same' } },
  { label: '3x3 stride 2 same, odd 9x9', input: [2, 9, 9, 2], filter: [3, 3, 2, 3], attributes: { strides: 2, pad: 'same' } },
  // 8 = 3 + 2·2 + 1: the stride skips the last row, which the gradient windows must crop.
  { label: '3x3 stride 2 valid, even 8x8', input: [2, 8, 8, 3], filter: [3, 3, 3, 2], attributes: { strides: 2, pad: 'valid' } },
  { label: '3x3 stride 1 valid, odd 7x5', input: [1, 7, 5, 2], filter: [3, 3, 2, 3], attributes: { strides: 1, pad: 'valid' } },
  { label: '1x1 stride 1 valid, even 6x6', input: [2, 6, 6, 4], filter: [1, 1, 4, 3], attributes: { strides: 1, pad: 'valid' } },
  // A 1x1 filter at stride 2 leaves whole phases of the input with zero gradient.
  { label: '1x1 stride 2 same, odd 7x7', input: [2, 7, 7, 3], filter: [1, 1, 3, 2], attributes: { strides: 2, pad: 'same' } },
  {
    label: '3x3 stride 2 explicit [1,2]x[0,1], odd 9x8',
    input: [2, 9, 8, 2],
    filter: [3, 3, 2, 3],
    attributes: { strides: 2, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  },
  { label: '2x3 strides [1,2] numeric pad 1', input: [1, 6, 7, 2], filter: [2, 3, 2, 2], attributes: { strides: [1, 2], pad: 1 } },
  {
    label: '3x3 stride 2 numeric pad 1 ceil, even 8x8',
    input: [1, 8, 8, 2],
    filter: [3, 3, 2, 2],
    attributes: { strides: 2, pad: 1, dimRoundingMode: 'ceil' },
  },
  { label: '3x3 stride 2 same NCHW, odd 7x7', input: [2, 3, 7, 7], filter: [3, 3, 3, 2], attributes: { strides: 2, pad: 'same', dataFormat: 'NCHW' } },
  // Output channels in whole vectors of 4, as the direct SIMD filter gradient takes them: 8-wide
  // blocks with a 4-wide remainder, input channels in blocks of 4 with a remainder.
  { label: '3x3 stride 2 same 5 → 12 channels, odd 9x7', input: [2, 9, 7, 5], filter: [3, 3, 5, 12], attributes: { strides: 2, pad: 'same' } },
  { label: '3x3 stride 2 valid 3 → 8 channels, even 8x8 (cropped)', input: [2, 8, 8, 3], filter: [3, 3, 3, 8], attributes: { strides: 2, pad: 'valid' } },
  { label: '1x1 stride 2 valid 6 → 8 channels, odd 7x7', input: [3, 7, 7, 6], filter: [1, 1, 6, 8], attributes: { strides: 2, pad: 'valid' } },
  {
    label: '3x2 strides [2,1] explicit [2,0]x[1,3], 4 → 4 channels',
    input: [2, 6, 5, 4],
    filter: [3, 2, 4, 4],
    attributes: { strides: [2, 1], pad: [[0, 0], [2, 0], [1, 3], [0, 0]] },
  },
  { label: '3x3 stride 1 same NCHW, 3 → 4 channels', input: [2, 3, 6, 5], filter: [3, 3, 3, 4], attributes: { strides: 1, pad: 'same', dataFormat: 'NCHW' } },
];

interface Reference {
  x: Float32Array;
  filter: Float32Array;
  dy: Float32Array;
  dyShape: number[];
  filterGradient: Float32Array;
  inputGradient: Float32Array;
}

const references = new Map<string, Reference>();

/** Runs a kernel by name with plain-object attributes (TF.js types attributes loosely). */
function runKernel(name: string, inputs: tf.NamedTensorMap, attributes: object): tf.Tensor {
  return tf.engine().runKernel(name, inputs, attributes as unknown as tf.NamedAttrMap) as tf.Tensor;
}



beforeAll(() => {
  // References come from the cpu backend's shipped kernels, so ours must not stand in their place.
  unregisterKernels('cpu', CONV_GRADIENT_KERNELS);
  expect(registeredConvGradients('cpu')).toEqual([]);
  for (const [index, testCase] of cases.entries()) {
    tf.tidy(() => {
      const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
      const x = tf.tensor4d(randomValues(size(testCase.input), 11 + index), testCase.input);
      const filter = tf.tensor4d(randomValues(size(testCase.filter), 101 + index), testCase.filter);
      const { strides, pad, dataFormat = 'NHWC', dimRoundingMode } = testCase.attributes;
      const forward = tf.conv2d(x, filter, strides, pad, dataFormat, 1, dimRoundingMode);
      const dy = tf.tensor(randomValues(forward.size, 1001 + index), forward.shape);
      const attributes = { strides, pad, dataFormat, dimRoundingMode };
      const filterGradient = runKernel(tf.Conv2DBackpropFilter, { x, dy }, { ...attributes, filterShape: testCase.filter });
      const inputGradient = runKernel(tf.Conv2DBackpropInput, { dy, filter }, { ...attributes, inputShape: testCase.input });
      references.set(testCase.label, {
        x: x.dataSync() as Float32Array,
        filter: filter.dataSync() as Float32Array,
        dy: dy.dataSync() as Float32Array,
        dyShape: dy.shape,
        filterGradient: filterGradient.dataSync() as Float32Array,
        inputGradient: inputGradient.dataSync() as Float32Array,
      });
    });
  }
});

const filterMethods = ['direct', 'im2col', 'per-tap', 'convolution'] as const;
const inputMethods: InputGradientMethod[] = ['sub-pixel', 'zero-insertion'];

// 'wasm, tf ops' runs the helpers' tf-op forms, which other backends (webgl, webgpu) use.
describe.each(['cpu', 'wasm', 'wasm, tf ops'])('conv gradients on %s match the cpu backend', (setup) => {
  beforeAll(async () => {
    await tf.setBackend(setup.startsWith('wasm') ? 'wasm' : 'cpu');
    setValueLoops(setup !== 'wasm, tf ops');
  });
  afterAll(() => {
    setValueLoops(true);
  });

  it.each(cases)('$label', (testCase) => {
    const reference = references.get(testCase.label)!;
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const x = tf.tensor4d(reference.x, testCase.input);
      const filter = tf.tensor4d(reference.filter, testCase.filter);
      const dy = tf.tensor4d(reference.dy, reference.dyShape as Rank4);
      const tensorsWithInputs = tf.memory().numTensors;
      for (const method of filterMethods) {
        const gradient =
          method === 'im2col' || method === 'per-tap'
            ? conv2dFilterGradientByMatMul(method, x, dy, testCase.filter, testCase.attributes)
            : conv2dFilterGradient(x, dy, testCase.filter, testCase.attributes, method satisfies FilterGradientMethod);
        expect(gradient.shape).toEqual(testCase.filter);
        expect(relativeError(gradient.dataSync(), reference.filterGradient), method).toBeLessThan(1e-5);
        gradient.dispose();
      }
      for (const method of inputMethods) {
        const gradient = conv2dInputGradient(testCase.input, dy, filter, testCase.attributes, method);
        expect(gradient.shape).toEqual(testCase.input);
        expect(relativeError(gradient.dataSync(), reference.inputGradient), method).toBeLessThan(1e-5);
        gradient.dispose();
      }
      // Every intermediate is released: only the three inputs remain.
      expect(tf.memory().numTensors).toBe(tensorsWithInputs);
    });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('registered kernels', () => {
  it.each(['cpu', 'wasm'] as const)('serve Conv2DBackpropFilter/Input on %s and restore the shipped ones', async (backend) => {
    await tf.setBackend(backend);
    const testCase = cases[1]!;
    const reference = references.get(testCase.label)!;
    const shippedFilter = tf.getKernel(tf.Conv2DBackpropFilter, backend);
    const shippedInput = tf.getKernel(tf.Conv2DBackpropInput, backend);
    // wasm ships no filter gradient at all.
    expect(shippedFilter === undefined).toBe(backend === 'wasm');

    expect(registerKernels(backend, CONV_GRADIENT_KERNELS).filter((name) => CONV_GRADIENT_KERNELS.includes(name))).toEqual([
      tf.Conv2DBackpropFilter,
      tf.Conv2DBackpropInput,
    ]);
    expect(registeredConvGradients(backend)).toEqual([tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput]);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const x = tf.tensor4d(reference.x, testCase.input);
      const filter = tf.tensor4d(reference.filter, testCase.filter);
      const dy = tf.tensor4d(reference.dy, reference.dyShape as Rank4);
      const attributes = { ...testCase.attributes, dataFormat: 'NHWC' };
      const filterGradient = runKernel(tf.Conv2DBackpropFilter, { x, dy }, { ...attributes, filterShape: testCase.filter });
      const inputGradient = runKernel(tf.Conv2DBackpropInput, { dy, filter }, { ...attributes, inputShape: testCase.input });
      expect(relativeError(filterGradient.dataSync(), reference.filterGradient)).toBeLessThan(1e-5);
      expect(relativeError(inputGradient.dataSync(), reference.inputGradient)).toBeLessThan(1e-5);
    });
    expect(tf.memory().numTensors).toBe(before);

    unregisterKernels(backend, CONV_GRADIENT_KERNELS);
    expect(tf.getKernel(tf.Conv2DBackpropFilter, backend)).toBe(shippedFilter);
    expect(tf.getKernel(tf.Conv2DBackpropInput, backend)).toBe(shippedInput);
    // The restored kernel must still run (wasm binds its C++ function in a setup step).
    const restored = tf.tidy(() => {
      const dy = tf.tensor4d(reference.dy, reference.dyShape as Rank4);
      const filter = tf.tensor4d(reference.filter, testCase.filter);
      const gradient = runKernel(
        tf.Conv2DBackpropInput,
        { dy, filter },
        { ...testCase.attributes, dataFormat: 'NHWC', inputShape: testCase.input },
      );
      return gradient.dataSync();
    });
    expect(relativeError(restored, reference.inputGradient)).toBeLessThan(1e-5);
  });
});
