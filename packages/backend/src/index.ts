export {
  useBackend,
  stopWorkerThreads,
  listBackends,
  BACKEND_NAMES,
  type BackendName,
  type BackendInfo,
  type BackendDescription,
  type UseBackendOptions,
} from './use-backend.js';
export { registerKernels, unregisterKernels, registeredKernels, listKernels, type KernelDescription } from './kernels/register-kernels.js';
export { KERNEL_BACKENDS, type KernelBackendName } from './kernels/registry.js';
export {
  conv2dFilterGradient,
  conv2dInputGradient,
  setWinogradInputGradient,
  type ConvGradientAttributes,
  type ConvPadding,
  type FilterGradientMethod,
  type InputGradientMethod,
} from './ops/conv-gradients.js';
export { setFusedMultiplyAdd } from './simd/instance.js';
export { setCopyOverlap, setMinimumParallelWork, setPiecesPerThread } from './threads/parallel-conv.js';
export { setWinogradConvolution } from './simd/winograd.js';
export { setWinogradFilterGradient } from './simd/winograd-filter-gradient.js';
export { setSubPixelInputGradient } from './simd/sub-pixel.js';
export { maxPoolGradient, type MaxPoolGradientAttributes } from './ops/max-pool-gradient.js';
export { CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL, CHANNEL_REDUCTION_KERNEL_NAMES } from './ops/channel-reductions.js';
export { BATCH_NORM_KERNEL, BATCH_NORM_GRAD_KERNEL, BATCH_NORM_KERNEL_NAMES, BATCH_NORM_MODES, type BatchNormAttributes } from './ops/batch-norm.js';
