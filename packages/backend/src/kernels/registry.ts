/**
 * What a kernel of this package is (a {@link BackendKernelConfig}), and the bookkeeping that puts one in
 * place of TF.js's own and back again. The list of kernels and the public calls over it are in
 * register-kernels.ts; each kernel is one file beside this one.
 */
import * as tf from '@tensorflow/tfjs-core';

/** Backends our kernels can be registered for: both keep values in CPU memory, where our loops run. */
export const KERNEL_BACKENDS = ['wasm', 'cpu'] as const;
/** A backend that {@link BackendKernelConfig.backends} can name. */
export type KernelBackendName = (typeof KERNEL_BACKENDS)[number];

/**
 * One kernel of this package, as TF.js's backends describe theirs (a `KernelConfig` per file), but for
 * several backends: where it can run, and where `useBackend` registers it.
 */
export interface BackendKernelConfig {
  /** TF.js's name of the kernel it replaces (`tf.Conv2D`, ...) or the name of a new one (`RegstackChannelMoments`). */
  kernelName: string;
  /** Backends it can be registered for. */
  backends: readonly KernelBackendName[];
  /**
   * Backends `useBackend` (and `registerKernels` without names) registers it for: where it measured
   * faster than the shipped kernel, or where the shipped one is missing or wrong.
   */
  defaultBackends: readonly KernelBackendName[];
  kernelFunc: tf.KernelFunc;
  /**
   * The gradient of a new kernel (TF.js's own have theirs), registered with it the first time: TF.js
   * keeps one gradient per kernel name for every backend, and one that is never recorded costs nothing,
   * so it stays when the kernel is unregistered.
   */
  gradient?: tf.GradConfig;
}

/**
 * The kernel that was registered before ours, per `backend_kernel` key, so it can be put back. Kept on
 * the global object, like TF.js's own registry, so that two copies of this package (or a test runner
 * that re-imports modules) agree on what is registered.
 */
const replaced: Map<string, tf.KernelConfig | undefined> = ((globalThis as Record<symbol, unknown>)[
  Symbol.for('@regstack/backend:replaced-kernels')
] ??= new Map()) as Map<string, tf.KernelConfig | undefined>;

/** Whether our kernel `kernelName` is registered for `backendName`. */
export function isOurs(backendName: string, kernelName: string): boolean {
  return replaced.has(`${backendName}_${kernelName}`);
}

/** Puts our kernel in place of the registered one (kept for {@link restoreKernel}). Idempotent. */
export function replaceKernel(backendName: string, config: BackendKernelConfig): void {
  const { kernelName, kernelFunc } = config;
  const key = `${backendName}_${kernelName}`;
  if (replaced.has(key)) return;
  const shipped = tf.getKernel(kernelName, backendName);
  // unregister first: registerKernel over an existing one works but logs a warning per kernel.
  if (shipped !== undefined) tf.unregisterKernel(kernelName, backendName);
  replaced.set(key, shipped);
  tf.registerKernel({ kernelName, backendName, kernelFunc });
  if (config.gradient !== undefined && tf.getGradient(kernelName) === undefined) tf.registerGradient(config.gradient);
}

/** Puts back the kernel that {@link replaceKernel} replaced, if ours is registered. */
export function restoreKernel(backendName: string, kernelName: string): void {
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

/** Backends on which a shipped kernel we wrap has had its setup (wasm binds its C++ function there). */
const setUpShipped = new Map<string, WeakSet<object>>();

/** The kernel ours replaced, set up for `backend` (it was not registered when the backend initialised). */
export function shippedKernel(backendName: string, kernelName: string, backend: object): tf.KernelConfig {
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
