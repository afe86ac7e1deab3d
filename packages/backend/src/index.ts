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
export {
  registerConvGradientKernels,
  unregisterConvGradientKernels,
  registeredConvGradientKernels,
  registerMaxPoolGradientKernel,
  unregisterMaxPoolGradientKernel,
  isMaxPoolGradientKernelRegistered,
  registerChannelReductionKernels,
  unregisterChannelReductionKernels,
  areChannelReductionKernelsRegistered,
  registerSharedIdentityKernel,
  unregisterSharedIdentityKernel,
  isSharedIdentityKernelRegistered,
  registerBatchMatMulKernel,
  unregisterBatchMatMulKernel,
  isBatchMatMulKernelRegistered,
  registerConvolutionKernel,
  unregisterConvolutionKernel,
  isConvolutionKernelRegistered,
  CONV_GRADIENT_KERNEL_NAMES,
  DEFAULT_CONV_GRADIENT_KERNELS,
  type ConvGradientKernelName,
  KERNEL_BACKENDS,
  type KernelBackendName,
} from './register-kernels.js';
export {
  conv2dFilterGradient,
  conv2dInputGradient,
  type ConvGradientAttributes,
  type ConvPadding,
  type FilterGradientMethod,
  type InputGradientMethod,
} from './conv-gradients.js';
export { setFusedMultiplyAdd } from './simd-kernels.js';
export { maxPoolGradient, type MaxPoolGradientAttributes } from './max-pool-gradient.js';
export { CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL, CHANNEL_REDUCTION_KERNEL_NAMES } from './channel-reductions.js';
