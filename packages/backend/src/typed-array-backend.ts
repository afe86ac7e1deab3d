/**
 * Direct access to the values of tensors on the backends that keep them in CPU memory (wasm's heap,
 * cpu's typed arrays), for kernels written as JavaScript loops: no copy in, no copy out.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The wasm backend's access to its heap: a view of a tensor's values, and a new output tensor. */
export interface WasmHeapBackend {
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

/** The cpu backend's way to adopt an array as a tensor's values. */
interface ValuesBackend {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: tf.backend_util.BackendValues): tf.TensorInfo;
}

/** Whether `backend` keeps its values on a wasm heap (the wasm backend). */
export function isWasmHeapBackend(backend: unknown): backend is WasmHeapBackend {
  const candidate = backend as Partial<WasmHeapBackend>;
  return typeof candidate.typedArrayFromHeap === 'function' && typeof candidate.makeOutput === 'function';
}

/** A kernel's input as a tensor: the engine passes the op's own tensors; a bare TensorInfo only comes from a direct runKernel call. */
export function asTensor(info: tf.TensorInfo): tf.Tensor4D {
  return (info instanceof tf.Tensor ? info : tf.engine().makeTensorFromTensorInfo(info)) as tf.Tensor4D;
}

/** A kernel's float32 output: the tensor the engine receives and the values to fill. */
export interface OutputBuffer {
  info: tf.TensorInfo;
  values: Float32Array;
}

/**
 * Allocates the outputs FIRST and then views the inputs: on wasm an allocation can grow the heap, which
 * detaches every view taken before it. Outputs are NOT zeroed on wasm; a kernel writes every value.
 *
 * @param kernelName For error messages.
 * @param backend The backend the engine passed to the kernel (wasm or cpu).
 * @param inputs The kernel's float32 inputs, in order.
 * @param outputShapes Shapes of the float32 outputs to allocate.
 * @returns Views of the inputs' values and the outputs with views of their values.
 */
export function float32Buffers(
  kernelName: string,
  backend: tf.KernelBackend,
  inputs: readonly tf.TensorInfo[],
  outputShapes: readonly number[][],
): { inputs: Float32Array[]; outputs: OutputBuffer[] } {
  for (const [index, input] of inputs.entries()) {
    if (input.dtype !== 'float32') {
      throw new TypeError(`${kernelName}: input ${index} must be float32, got ${input.dtype}`);
    }
  }
  if (isWasmHeapBackend(backend)) {
    const infos = outputShapes.map((shape) => backend.makeOutput(shape, 'float32'));
    return {
      inputs: inputs.map((input) => backend.typedArrayFromHeap(input) as Float32Array),
      outputs: infos.map((info) => ({
        info,
        values: backend.typedArrayFromHeap(info) as Float32Array,
      })),
    };
  }
  return {
    // The cpu backend returns its own array, not a copy.
    inputs: inputs.map((input) => backend.readSync(input.dataId) as Float32Array),
    outputs: outputShapes.map((shape) => {
      const values = new Float32Array(tf.util.sizeFromShape(shape));
      const info = (backend as unknown as ValuesBackend).makeTensorInfo(shape, 'float32', values);
      return { info, values };
    }),
  };
}
