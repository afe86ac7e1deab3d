/**
 * wasm's `BatchMatMul` runs XNNPACK's GEMM only when neither operand is transposed; with `transposeA`
 * or `transposeB` (every matMul gradient: dA = dy·Bᵀ, dB = Aᵀ·dy) it falls back to a scalar loop. The
 * transposes are made explicit here, so the GEMM always runs: a linear head's weight gradient
 * ([64, 4096]ᵀ·[64, 10]) 7.6 → 0.5 ms, its input gradient 3.1 → 0.3 ms. wasm only: it delegates to
 * wasm's shipped kernel.
 */
import * as tf from '@tensorflow/tfjs-core';
import { asTensor } from '../typed-array-backend.js';
import { shippedKernel, type BackendKernelConfig } from './registry.js';

/** Swaps the last two axes. */
function transposeInner(info: tf.TensorInfo): tf.Tensor {
  const rank = info.shape.length;
  const permutation = [...Array(rank).keys()];
  permutation[rank - 2] = rank - 1;
  permutation[rank - 1] = rank - 2;
  return tf.transpose(asTensor(info), permutation);
}

const kernelFunc: tf.KernelFunc = (args) => {
  const { a, b } = args.inputs as tf.BatchMatMulInputs;
  const attributes = args.attrs as unknown as tf.BatchMatMulAttrs;
  const shipped = shippedKernel('wasm', tf.BatchMatMul, args.backend);
  if (!attributes.transposeA && !attributes.transposeB) return shipped.kernelFunc(args);
  const transposed: tf.Tensor[] = [];
  const plain = (info: tf.TensorInfo, transpose: boolean): tf.TensorInfo => {
    if (!transpose) return info;
    const swapped = transposeInner(info);
    transposed.push(swapped);
    return swapped;
  };
  try {
    return shipped.kernelFunc({
      ...args,
      inputs: { a: plain(a!, attributes.transposeA), b: plain(b!, attributes.transposeB) },
      attrs: { ...args.attrs, transposeA: false, transposeB: false },
    });
  } finally {
    tf.dispose(transposed);
  }
};

export const batchMatMulConfig: BackendKernelConfig = {
  kernelName: tf.BatchMatMul,
  backends: ['wasm'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
