/**
 * The list of this package's kernels, one file each beside this one, and the three calls that read it:
 * register, unregister, and what is registered. Registration is an explicit call (useBackend makes it),
 * so that no bundler has to keep a side-effect import alive and a user can restore TF.js's own kernels.
 *
 * A new kernel is one file exporting a {@link BackendKernelConfig} and one line in {@link KERNELS}.
 */
import { ConfigError, assertChoice } from '@regstack/regularizer';
import { conv2dBackpropFilterConfig } from './conv2d-backprop-filter.js';
import { conv2dBackpropInputConfig } from './conv2d-backprop-input.js';
import { maxPoolGradConfig } from './max-pool-grad.js';
import { channelMomentsConfig } from './channel-moments.js';
import { channelSumsConfig } from './channel-sums.js';
import { batchNormConfig } from './batch-norm.js';
import { batchNormGradConfig } from './batch-norm-grad.js';
import { identityConfig } from './identity.js';
import { batchMatMulConfig } from './batch-mat-mul.js';
import { conv2dConfig } from './conv2d.js';
import { castConfig } from './cast.js';
import { KERNEL_BACKENDS, isOurs, replaceKernel, restoreKernel, type BackendKernelConfig, type KernelBackendName } from './registry.js';

/** Every kernel of this package, in the order {@link registeredKernels} (and `useBackend`) lists them. */
const KERNELS: readonly BackendKernelConfig[] = [
  conv2dBackpropFilterConfig,
  conv2dBackpropInputConfig,
  maxPoolGradConfig,
  channelMomentsConfig,
  channelSumsConfig,
  batchNormConfig,
  batchNormGradConfig,
  identityConfig,
  batchMatMulConfig,
  conv2dConfig,
  castConfig,
];

/** One row of {@link listKernels}. */
export interface KernelDescription {
  /** TF.js's name of the kernel ours replaces, or the name of a new kernel. */
  kernelName: string;
  /** Backends it can be registered for. */
  backends: KernelBackendName[];
  /** Backends `useBackend` (and {@link registerKernels} without names) registers it for. */
  defaultBackends: KernelBackendName[];
}

/** This package's kernels: the name of each, the backends it can run on and those it is registered for by default. */
export function listKernels(): KernelDescription[] {
  return KERNELS.map(({ kernelName, backends, defaultBackends }) => ({ kernelName, backends: [...backends], defaultBackends: [...defaultBackends] }));
}

/** The configs of `kernelNames` (default: those of `backendName` chosen by `pick`), after checking each runs there. */
function configsFor(
  backendName: KernelBackendName,
  kernelNames: readonly string[] | undefined,
  pick: (config: BackendKernelConfig) => readonly KernelBackendName[],
): BackendKernelConfig[] {
  const backend = assertChoice('backend', backendName, KERNEL_BACKENDS);
  if (kernelNames === undefined) return KERNELS.filter((config) => pick(config).includes(backend));
  if (!Array.isArray(kernelNames)) throw new ConfigError('kernels', `expected an array of kernel names, got ${String(kernelNames)}`);
  return kernelNames.map((kernelName) => {
    const config = KERNELS.find((candidate) => candidate.kernelName === kernelName);
    if (config === undefined) {
      throw new ConfigError('kernels', `'${String(kernelName)}' is not a kernel of @regstack/backend; its kernels: ${KERNELS.map((known) => known.kernelName).join(', ')}`);
    }
    if (!config.backends.includes(backend)) {
      throw new ConfigError('kernels', `${config.kernelName} runs on ${config.backends.join(' and ')} only, not on '${backend}'`);
    }
    return config;
  });
}

/**
 * Registers our kernels for `backendName` in place of the registered ones (kept, so that
 * {@link unregisterKernels} can put them back). Idempotent. Import the backend package first: a backend
 * package loaded afterwards registers its own kernels over ours. `useBackend` calls this.
 *
 * @param backendName `'wasm'` or `'cpu'`.
 * @param kernelNames Kernels to register; default those whose `defaultBackends` (see {@link listKernels})
 *   name this backend.
 * @returns Every kernel of ours now registered for `backendName` ({@link registeredKernels}).
 * @throws ConfigError (field `backend`) for another backend, (field `kernels`) for a name that is not
 *   ours or a kernel that does not run on this backend.
 */
export function registerKernels(backendName: KernelBackendName, kernelNames?: readonly string[]): string[] {
  for (const config of configsFor(backendName, kernelNames, (config) => config.defaultBackends)) replaceKernel(backendName, config);
  return registeredKernels(backendName);
}

/**
 * Puts back the kernels TF.js had registered before {@link registerKernels} (none, for wasm's filter
 * gradient and our new channel reductions). Useful for benchmarks and for comparing against the
 * shipped kernels.
 *
 * @param backendName `'wasm'` or `'cpu'`.
 * @param kernelNames Kernels to restore; default every one of ours.
 * @throws ConfigError as {@link registerKernels}.
 */
export function unregisterKernels(backendName: KernelBackendName, kernelNames?: readonly string[]): void {
  for (const config of configsFor(backendName, kernelNames, (config) => config.backends)) restoreKernel(backendName, config.kernelName);
}

/** Names of our kernels registered for `backendName` now, in {@link listKernels}' order (none for backends we have no kernels for). */
export function registeredKernels(backendName: string): string[] {
  return KERNELS.filter((config) => isOurs(backendName, config.kernelName)).map((config) => config.kernelName);
}
