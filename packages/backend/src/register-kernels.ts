/**
 * Registration of the conv-gradient kernels as an explicit call, so that no bundler has to keep a
 * side-effect import alive and a user can restore TF.js's own kernels.
 */
import * as tf from '@tensorflow/tfjs-core';
import { conv2dFilterGradient, conv2dInputGradient, filterGradientIsDirect, type ConvGradientAttributes } from './conv-gradients.js';
import { simdConvolution, simdConvolutionSupports } from './simd-convolution.js';
import { maxPoolGradientInfo, maxPoolGradientValues, type MaxPoolGradientAttributes } from './max-pool-gradient.js';
import { asTensor, float32Buffers } from './typed-array-backend.js';
import { shareConvolution } from './parallel-conv.js';
import { CHANNEL_REDUCTION_KERNEL_NAMES, channelReductionKernelFunctions } from './channel-reductions.js';

/** Backends our kernels are registered for: both run generic tf ops well enough that ours win. */
export const KERNEL_BACKENDS = ['wasm', 'cpu'] as const;
/** A backend that {@link registerConvGradientKernels} supports. */
export type KernelBackendName = (typeof KERNEL_BACKENDS)[number];

/** Names of the kernels this package replaces or adds. */
export const CONV_GRADIENT_KERNEL_NAMES = [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput] as const;
/** A kernel this package provides. */
export type ConvGradientKernelName = (typeof CONV_GRADIENT_KERNEL_NAMES)[number];

/**
 * Kernels registered by default, per backend, from the measurements in the README: on wasm both beat
 * (or replace a missing) shipped kernel; on cpu the shipped input gradient is as fast as ours at stride 1
 * and faster at stride 2, so only the filter gradient (≈200x faster) is replaced.
 */
export const DEFAULT_CONV_GRADIENT_KERNELS: Readonly<Record<KernelBackendName, readonly ConvGradientKernelName[]>> = {
  wasm: [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput],
  cpu: [tf.Conv2DBackpropFilter],
};

type Rank4 = [number, number, number, number];

/**
 * The kernel that was registered before ours, per `backend_kernel` key, so it can be put back. Kept on
 * the global object, like TF.js's own registry, so that two copies of this package (or a test runner
 * that re-imports modules) agree on what is registered.
 */
const replaced: Map<string, tf.KernelConfig | undefined> = ((globalThis as Record<symbol, unknown>)[
  Symbol.for('@regstack/backend:replaced-kernels')
] ??= new Map()) as Map<string, tf.KernelConfig | undefined>;

function attributesOf(attrs: tf.NamedAttrMap | undefined): ConvGradientAttributes {
  const { strides, pad, dataFormat, dimRoundingMode } = (attrs ?? {}) as unknown as ConvGradientAttributes;
  return { strides, pad, dataFormat, dimRoundingMode };
}

/** Multiply-adds of a convolution: every output value sums filter height × width × input channels products. */
function convolutionWork(outputShape: readonly number[], filterShape: readonly number[]): number {
  return tf.util.sizeFromShape([...outputShape]) * filterShape[0]! * filterShape[1]! * filterShape[2]!;
}

const filterGradientKernel: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { x, dy } = inputs as tf.Conv2DBackpropFilterInputs;
  const filterShape = (attrs as unknown as tf.Conv2DBackpropFilterAttrs).filterShape as Rank4;
  const attributes = attributesOf(attrs);
  // The direct SIMD form shares its batch with the worker threads itself, without copies.
  if (filterGradientIsDirect(x!, dy!, filterShape, attributes)) return tf.tidy(() => conv2dFilterGradient(asTensor(x!), asTensor(dy!), filterShape, attributes));
  // With worker threads (useBackend's `threads` in Node), the batch is shared and the shares' sums added.
  const shared = shareConvolution('filter', backend, x!, dy!, attributes, filterShape, convolutionWork(dy!.shape, filterShape), (xs, dys, shape) =>
    conv2dFilterGradient(xs, dys, shape, attributes),
  );
  // Returning a Tensor (not a TensorInfo) hands ownership to the engine without an extra reference.
  return shared ?? tf.tidy(() => conv2dFilterGradient(asTensor(x!), asTensor(dy!), filterShape, attributes));
};

const inputGradientKernel: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, filter } = inputs as tf.Conv2DBackpropInputInputs;
  const inputShape = (attrs as unknown as tf.Conv2DBackpropInputAttrs).inputShape as Rank4;
  const attributes = attributesOf(attrs);
  // Its convolutions have the forward input's channels as outputs: when our Conv2D runs them directly,
  // they share their batches themselves.
  const channels = attributes.dataFormat === 'NCHW' ? inputShape[1] : inputShape[3];
  if (isConvolutionKernelRegistered(tf.getBackend()) && channels % 4 === 0) {
    return tf.tidy(() => conv2dInputGradient(inputShape, asTensor(dy!), asTensor(filter!), attributes));
  }
  const shared = shareConvolution('input', backend, dy!, filter!, attributes, inputShape, convolutionWork(dy!.shape, filter!.shape), (dys, f, shape) =>
    conv2dInputGradient(shape, dys, f, attributes),
  );
  return shared ?? tf.tidy(() => conv2dInputGradient(inputShape, asTensor(dy!), asTensor(filter!), attributes));
};

/**
 * wasm's `Conv2D`: the direct WebAssembly SIMD convolution (simd-convolution.ts) for float32 NHWC
 * inputs with dilation 1 and output channels in multiples of 4, which shares its batch with the worker
 * threads itself; otherwise the shipped kernel (XNNPACK), its batch shared with the worker threads
 * through copies when there are any (see conv-pool.ts).
 */
const convolutionKernel: tf.KernelFunc = (args) => {
  const { x, filter } = args.inputs as tf.Conv2DInputs;
  const { strides, pad, dimRoundingMode, dilations, dataFormat } = args.attrs as unknown as tf.Conv2DAttrs;
  const info = tf.backend_util.computeConv2DInfo(
    x!.shape as Rank4,
    filter!.shape as Rank4,
    strides,
    dilations,
    pad,
    dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
  const outputShape: Rank4 = [info.batchSize, info.outHeight, info.outWidth, info.outChannels];
  if (info.dataFormat === 'channelsLast' && info.dilationHeight === 1 && info.dilationWidth === 1 && x!.dtype === 'float32' && filter!.dtype === 'float32') {
    const geometry = { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
    if (simdConvolutionSupports(geometry)) {
      const buffers = float32Buffers(tf.Conv2D, args.backend as tf.KernelBackend, [x!, filter!], [outputShape]);
      simdConvolution(buffers.inputs[0]!, buffers.inputs[1]!, buffers.outputs[0]!.values, geometry);
      return buffers.outputs[0]!.info;
    }
  }
  const shipped = shippedKernel('wasm', tf.Conv2D, args.backend);
  const fixed = reachingPadding(info, args.attrs as unknown as tf.Conv2DAttrs);
  const attrs = fixed ? (fixed as unknown as tf.NamedAttrMap) : args.attrs;
  const attributes = fixed
    ? { strides, pad: fixed.pad, dilations, dataFormat }
    : { strides, pad: pad as ConvGradientAttributes['pad'], dilations, dataFormat, ...(dimRoundingMode ? { dimRoundingMode } : {}) };
  const shared = shareConvolution('forward', args.backend, x!, filter!, attributes, outputShape, convolutionWork(outputShape, filter!.shape), (xs, f) =>
    tf.engine().makeTensorFromTensorInfo(shipped.kernelFunc({ ...args, attrs, inputs: { x: xs, filter: f } }) as tf.TensorInfo),
  );
  return shared ?? shipped.kernelFunc({ ...args, attrs });
};

/**
 * Explicit padding for the shipped kernel when the last windows reach past the padding (numeric
 * padding rounded up by `dimRoundingMode`): TF.js 4.22 hands XNNPACK the padding alone, so XNNPACK
 * computes fewer rows or columns than TF.js allocated and every value lands in the wrong place. With
 * the padding extended to what the windows reach, both agree. Undefined when nothing reaches past it.
 */
function reachingPadding(info: tf.backend_util.Conv2DInfo, attrs: tf.Conv2DAttrs): (tf.Conv2DAttrs & { pad: tf.backend_util.ExplicitPadding }) | undefined {
  if (info.dataFormat !== 'channelsLast') return undefined;
  const { inHeight, inWidth, outHeight, outWidth, strideHeight, strideWidth, effectiveFilterHeight, effectiveFilterWidth, padInfo } = info;
  const bottom = (outHeight - 1) * strideHeight + effectiveFilterHeight - inHeight - padInfo.top;
  const right = (outWidth - 1) * strideWidth + effectiveFilterWidth - inWidth - padInfo.left;
  if (bottom <= padInfo.bottom && right <= padInfo.right) return undefined;
  const pad: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [padInfo.top, Math.max(bottom, padInfo.bottom)],
    [padInfo.left, Math.max(right, padInfo.right)],
    [0, 0],
  ];
  const { dimRoundingMode: _rounding, ...rest } = attrs;
  return { ...rest, pad };
}

const maxPoolGradientKernel: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, input } = inputs as tf.MaxPoolGradInputs;
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
  const attributes: MaxPoolGradientAttributes = { filterSize, strides, pad, ...(dimRoundingMode ? { dimRoundingMode } : {}) };
  const info = maxPoolGradientInfo(input!.shape as Rank4, dy!.shape, attributes);
  // In place on the backend's memory: no copies of x, dy or dx.
  const buffers = float32Buffers(tf.MaxPoolGrad, backend as tf.KernelBackend, [input!, dy!], [input!.shape]);
  const [values, upstream] = buffers.inputs as [Float32Array, Float32Array];
  maxPoolGradientValues(values, upstream, info, buffers.outputs[0]!.values);
  return buffers.outputs[0]!.info;
};

/**
 * wasm's shipped `Identity` copies the values; TF.js calls it for every tensor a customGrad or a
 * gradient saves for the backward pass. Tensors are immutable and the wasm backend counts references
 * (its `Reshape` shares data the same way), so sharing the data is enough.
 */
const sharedIdentityKernel: tf.KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as tf.IdentityInputs;
  (backend as unknown as { incRef(dataId: tf.DataId): void }).incRef(x!.dataId);
  return { dataId: x!.dataId, shape: x!.shape, dtype: x!.dtype };
};

/** Backends on which a shipped kernel we wrap has had its setup (wasm binds its C++ function there). */
const setUpShipped = new Map<string, WeakSet<object>>();

/** The kernel ours replaced, set up for `backend` (it was not registered when the backend initialised). */
function shippedKernel(backendName: string, kernelName: string, backend: object): tf.KernelConfig {
  const shipped = replaced.get(`${backendName}_${kernelName}`);
  if (shipped === undefined) throw new Error(`@regstack/backend: no shipped ${kernelName} kernel for ${backendName} to delegate to`);
  const done = setUpShipped.get(kernelName) ?? new WeakSet<object>();
  setUpShipped.set(kernelName, done);
  if (shipped.setupFunc !== undefined && !done.has(backend)) {
    shipped.setupFunc(backend as tf.KernelBackend);
    done.add(backend);
  }
  return shipped;
}

/** Swaps the last two axes. */
function transposeInner(info: tf.TensorInfo): tf.Tensor {
  const rank = info.shape.length;
  const permutation = [...Array(rank).keys()];
  permutation[rank - 2] = rank - 1;
  permutation[rank - 1] = rank - 2;
  return tf.transpose(asTensor(info), permutation);
}

/**
 * wasm's `BatchMatMul` runs XNNPACK's GEMM only when neither operand is transposed; with `transposeA`
 * or `transposeB` (every matMul gradient: dA = dy·Bᵀ, dB = Aᵀ·dy) it falls back to a scalar loop. The
 * transposes are made explicit here, so the GEMM always runs: a linear head's weight gradient
 * ([64, 4096]ᵀ·[64, 10]) 7.6 → 0.5 ms, its input gradient 3.1 → 0.3 ms.
 */
const batchMatMulKernel: tf.KernelFunc = (args) => {
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

const kernelFunctions: Record<string, tf.KernelFunc> = {
  [tf.Conv2DBackpropFilter]: filterGradientKernel,
  [tf.Conv2DBackpropInput]: inputGradientKernel,
  [tf.MaxPoolGrad]: maxPoolGradientKernel,
  [tf.Identity]: sharedIdentityKernel,
  [tf.BatchMatMul]: batchMatMulKernel,
  [tf.Conv2D]: convolutionKernel,
  ...channelReductionKernelFunctions,
};

/** Puts our kernel in place of the registered one (kept for {@link restoreKernel}). Idempotent. */
function replaceKernel(backendName: string, kernelName: string): void {
  const key = `${backendName}_${kernelName}`;
  if (replaced.has(key)) return;
  const shipped = tf.getKernel(kernelName, backendName);
  // unregister first: registerKernel over an existing one works but logs a warning per kernel.
  if (shipped !== undefined) tf.unregisterKernel(kernelName, backendName);
  replaced.set(key, shipped);
  tf.registerKernel({ kernelName, backendName, kernelFunc: kernelFunctions[kernelName]! });
}

/** Puts back the kernel that {@link replaceKernel} replaced, if ours is registered. */
function restoreKernel(backendName: string, kernelName: string): void {
  const key = `${backendName}_${kernelName}`;
  if (!replaced.has(key)) return;
  const shipped = replaced.get(key);
  replaced.delete(key);
  tf.unregisterKernel(kernelName, backendName);
  if (shipped === undefined) return;
  tf.registerKernel(shipped);
  // Backends run a kernel's setup (wasm binds its C++ function) only for kernels present when they
  // initialise; ours stood in the shipped one's place then, so run its setup now.
  const initialised = tf.engine().registry[backendName];
  if (initialised !== undefined && shipped.setupFunc !== undefined) shipped.setupFunc(initialised);
}

/**
 * Registers our conv-gradient kernels for the given backends, replacing any registered ones (kept, so
 * {@link unregisterConvGradientKernels} can restore them). Idempotent. Import the backend packages first:
 * a backend package loaded afterwards registers its own kernels over ours.
 *
 * @param backends Backends to register for; default both `wasm` and `cpu`.
 * @param kernels Kernels to register; default {@link DEFAULT_CONV_GRADIENT_KERNELS} of each backend.
 * @returns Our kernels now registered, per backend.
 */
export function registerConvGradientKernels(
  backends: readonly KernelBackendName[] = KERNEL_BACKENDS,
  kernels?: readonly ConvGradientKernelName[],
): Partial<Record<KernelBackendName, string[]>> {
  const registered: Partial<Record<KernelBackendName, string[]>> = {};
  for (const backendName of backends) {
    for (const kernelName of kernels ?? DEFAULT_CONV_GRADIENT_KERNELS[backendName]) replaceKernel(backendName, kernelName);
    registered[backendName] = registeredConvGradientKernels(backendName);
  }
  return registered;
}

/**
 * Puts back the kernels TF.js had registered before {@link registerConvGradientKernels} (none, for the
 * wasm filter gradient). Useful for benchmarks and for comparing against the shipped kernels.
 *
 * @param backends Backends to restore; default both `wasm` and `cpu`.
 */
export function unregisterConvGradientKernels(backends: readonly KernelBackendName[] = KERNEL_BACKENDS): void {
  for (const backendName of backends) {
    for (const kernelName of CONV_GRADIENT_KERNEL_NAMES) restoreKernel(backendName, kernelName);
  }
}

/** Names of our kernels currently registered for `backendName`. */
export function registeredConvGradientKernels(backendName: string): string[] {
  return CONV_GRADIENT_KERNEL_NAMES.filter((kernelName) => replaced.has(`${backendName}_${kernelName}`));
}

/**
 * Registers this package's `MaxPoolGrad` ({@link maxPoolGradient}) for the given backends, in place of
 * the shipped one (kept, so {@link unregisterMaxPoolGradientKernel} can restore it). Idempotent. The
 * default is wasm only: TF.js 4.22's wasm `MaxPoolGrad` loses whole windows' gradients, while the cpu
 * backend's is correct (ours equals it exactly). Import the backend packages first.
 *
 * @param backends Backends to register for; default `['wasm']`.
 */
export function registerMaxPoolGradientKernel(backends: readonly KernelBackendName[] = ['wasm']): void {
  for (const backendName of backends) replaceKernel(backendName, tf.MaxPoolGrad);
}

/**
 * Puts back the `MaxPoolGrad` TF.js had registered before {@link registerMaxPoolGradientKernel}.
 *
 * @param backends Backends to restore; default both `wasm` and `cpu`.
 */
export function unregisterMaxPoolGradientKernel(backends: readonly KernelBackendName[] = KERNEL_BACKENDS): void {
  for (const backendName of backends) restoreKernel(backendName, tf.MaxPoolGrad);
}

/** Whether this package's `MaxPoolGrad` is registered for `backendName`. */
export function isMaxPoolGradientKernelRegistered(backendName: string): boolean {
  return replaced.has(`${backendName}_${tf.MaxPoolGrad}`);
}

/**
 * Registers the per-channel reduction kernels (`RegstackChannelMoments`, `RegstackChannelSums`, see
 * `channel-reductions.ts`) for the given backends. `@regstack/models`' batch normalisation uses them
 * whenever they are registered for the active backend, and tf ops otherwise. Idempotent.
 *
 * @param backends Backends to register for; default both `wasm` and `cpu`.
 */
export function registerChannelReductionKernels(backends: readonly KernelBackendName[] = KERNEL_BACKENDS): void {
  for (const backendName of backends) {
    for (const kernelName of CHANNEL_REDUCTION_KERNEL_NAMES) replaceKernel(backendName, kernelName);
  }
}

/** Removes the kernels {@link registerChannelReductionKernels} registered; `@regstack/models` falls back to tf ops. */
export function unregisterChannelReductionKernels(backends: readonly KernelBackendName[] = KERNEL_BACKENDS): void {
  for (const backendName of backends) {
    for (const kernelName of CHANNEL_REDUCTION_KERNEL_NAMES) restoreKernel(backendName, kernelName);
  }
}

/** Whether this package's per-channel reduction kernels are registered for `backendName`. */
export function areChannelReductionKernelsRegistered(backendName: string): boolean {
  return CHANNEL_REDUCTION_KERNEL_NAMES.every((kernelName) => replaced.has(`${backendName}_${kernelName}`));
}

/**
 * Registers an `Identity` that shares the input's data (a reference count) instead of copying it, in
 * place of wasm's shipped one (kept for {@link unregisterSharedIdentityKernel}). Idempotent.
 *
 * @param backends Default `['wasm']` (the cpu backend's own `Identity` already shares).
 */
export function registerSharedIdentityKernel(backends: readonly KernelBackendName[] = ['wasm']): void {
  for (const backendName of backends) replaceKernel(backendName, tf.Identity);
}

/** Puts back the `Identity` TF.js had registered before {@link registerSharedIdentityKernel}. */
export function unregisterSharedIdentityKernel(backends: readonly KernelBackendName[] = ['wasm']): void {
  for (const backendName of backends) restoreKernel(backendName, tf.Identity);
}

/** Whether this package's sharing `Identity` is registered for `backendName`. */
export function isSharedIdentityKernelRegistered(backendName: string): boolean {
  return replaced.has(`${backendName}_${tf.Identity}`);
}

/**
 * Registers a wasm `BatchMatMul` that transposes operands explicitly so that XNNPACK's GEMM always runs
 * (the shipped one loops in scalar code whenever `transposeA` or `transposeB` is set, as in every
 * matMul gradient). It delegates to the shipped kernel, kept for {@link unregisterBatchMatMulKernel}.
 * Idempotent; wasm only.
 */
export function registerBatchMatMulKernel(): void {
  replaceKernel('wasm', tf.BatchMatMul);
}

/** Puts back wasm's shipped `BatchMatMul`. */
export function unregisterBatchMatMulKernel(): void {
  restoreKernel('wasm', tf.BatchMatMul);
}

/** Whether this package's `BatchMatMul` is registered for `backendName`. */
export function isBatchMatMulKernelRegistered(backendName: string): boolean {
  return replaced.has(`${backendName}_${tf.BatchMatMul}`);
}

/**
 * Registers this package's wasm `Conv2D` (the direct WebAssembly SIMD convolution where it applies,
 * sharing batches with the worker threads of `useBackend('wasm', { threads })`; the shipped kernel,
 * kept for {@link unregisterConvolutionKernel}, otherwise). Idempotent; wasm only.
 */
export function registerConvolutionKernel(): void {
  replaceKernel('wasm', tf.Conv2D);
}

/** Puts back wasm's shipped `Conv2D`. */
export function unregisterConvolutionKernel(): void {
  restoreKernel('wasm', tf.Conv2D);
}

/** Whether this package's `Conv2D` is registered for `backendName`. */
export function isConvolutionKernelRegistered(backendName: string): boolean {
  return replaced.has(`${backendName}_${tf.Conv2D}`);
}
