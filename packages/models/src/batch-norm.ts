import * as tf from '@tensorflow/tfjs-core';
import { DataError, type ModelMode } from '@regstack/regularizer';

/** The variables and settings of one batch-normalisation layer. */
export interface BatchNormParameters {
  /** Scale γ, shape [channels], trainable. */
  readonly gamma: tf.Variable;
  /** Shift β, shape [channels], trainable. */
  readonly beta: tf.Variable;
  /** Running mean, shape [channels], not trainable. */
  readonly runningMean: tf.Variable;
  /** Running (unbiased) variance, shape [channels], not trainable. */
  readonly runningVariance: tf.Variable;
  /** Weight of the new batch in the running averages, in PyTorch's convention (0.1 there). */
  readonly momentum: number;
  /** Added to the variance before the square root (1e-5 in PyTorch). */
  readonly epsilon: number;
}

/**
 * Per-channel reductions that `@regstack/backend` registers for wasm and cpu
 * (`registerKernels`, done by `useBackend`): `x` → `[mean, biased variance]` over every
 * axis but the last, in one pass and float64. Where it is not registered for the active backend (webgl,
 * webgpu, tensorflow), tf ops compute the same. The names and semantics are the contract between the
 * two packages (tested in tools/integration).
 */
export const CHANNEL_MOMENTS_KERNEL = 'RegstackChannelMoments';
/** See {@link CHANNEL_MOMENTS_KERNEL}: `a`, `b` → `[Σa, Σa·b]` per channel. */
export const CHANNEL_SUMS_KERNEL = 'RegstackChannelSums';
/**
 * The whole layer as one kernel that `@regstack/backend` registers for wasm and cpu with its gradient:
 * inputs `{x, gamma, beta, runningMean, runningVariance}` (and `residual` with attribute `residual:
 * true`, added before the ReLU), attributes `{mode, epsilon, momentum, relu, residual}`, outputs
 * `[y, mean, inverseStd]` and in `train` also `[newRunningMean, newRunningVariance]`.
 */
export const BATCH_NORM_KERNEL = 'RegstackBatchNorm';
/** The gradient kernel of {@link BATCH_NORM_KERNEL}, which its registered gradient calls. */
export const BATCH_NORM_GRAD_KERNEL = 'RegstackBatchNormGrad';

/** Options of {@link batchNormalization}. */
export interface BatchNormOptions {
  /** Apply max(0, ·) to the output (fused into the same pass where the kernels are registered). Default false. */
  readonly relu?: boolean;
  /**
   * Added to the normalised values before the ReLU (a residual block's shortcut, x's shape): the
   * output is max(0, BN(x) + residual) with `relu`. Fused into the same pass, and its gradient into the
   * gradient's, where the kernels are registered.
   */
  readonly residual?: tf.Tensor;
}

/** Whether the kernel can run here: registered for the active backend, and no tape records (it has no gradient). */
function kernelApplies(kernelName: string): boolean {
  return tf.getKernel(kernelName, tf.getBackend()) !== undefined && !tf.engine().isTapeOn();
}

/**
 * Whether the layer can be {@link BATCH_NORM_KERNEL}: it and its gradient kernel registered for the
 * active backend with the gradient, and no nested tape (the gradient kernel has no gradient itself).
 */
function fusedKernelApplies(): boolean {
  const backend = tf.getBackend();
  return (
    tf.engine().state.gradientDepth <= 1 &&
    tf.getKernel(BATCH_NORM_KERNEL, backend) !== undefined &&
    tf.getKernel(BATCH_NORM_GRAD_KERNEL, backend) !== undefined &&
    tf.getGradient(BATCH_NORM_KERNEL) !== undefined
  );
}

/** Every axis but the last. */
function outerAxes(x: tf.Tensor): number[] {
  return x.shape.slice(0, -1).map((_, axis) => axis);
}

/**
 * The batch mean and BIASED variance per channel. The tf-op form takes the variance as E[x²] − E[x]²
 * (on wasm one activation-sized op fewer than the centred form; the cancellation it risks when
 * |mean| ≫ std does not arise after convolutions of normalised inputs), clamped at 0.
 */
function channelMoments(x: tf.Tensor): [tf.Tensor, tf.Tensor] {
  if (kernelApplies(CHANNEL_MOMENTS_KERNEL)) return tf.engine().runKernel(CHANNEL_MOMENTS_KERNEL, { x }) as unknown as [tf.Tensor, tf.Tensor];
  const mean = tf.mean(x, outerAxes(x));
  return [mean, tf.relu(tf.sub(tf.mean(tf.square(x), outerAxes(x)), tf.square(mean)))];
}

/** [Σa, Σa·b] per channel. */
function channelSums(a: tf.Tensor, b: tf.Tensor): [tf.Tensor, tf.Tensor] {
  if (kernelApplies(CHANNEL_SUMS_KERNEL)) return tf.engine().runKernel(CHANNEL_SUMS_KERNEL, { a, b }) as unknown as [tf.Tensor, tf.Tensor];
  return [tf.sum(a, outerAxes(a)), tf.sum(tf.mul(a, b), outerAxes(a))];
}

/** y = x·scale + (β − μ·scale) with scale = γ/√(σ² + ε), the one affine map of every mode. */
function normalizeWith(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor, epsilon: number) {
  const inverseStd = tf.rsqrt(tf.add(variance, epsilon));
  const scale = tf.mul(gamma, inverseStd);
  return { output: tf.add(tf.mul(x, scale), tf.sub(beta, tf.mul(mean, scale))), inverseStd, scale };
}

/**
 * Batch normalisation with PyTorch's semantics over every axis but the last (NHWC or [batch, features]),
 * optionally with a residual added and followed by a ReLU (`relu(add(BN(x), residual))`).
 *
 * - `train`: normalises with the batch mean and the BIASED batch variance, then updates
 *   running = (1 − momentum)·running + momentum·batch, using the UNBIASED variance n/(n−1)·var for
 *   the running variance (as `torch.nn.BatchNorm2d` does).
 * - `frozen-stats`: the same output as `train`, running statistics untouched.
 * - `eval`: normalises with the running statistics.
 *
 * Where `@regstack/backend` registered {@link BATCH_NORM_KERNEL} (wasm, cpu), the layer is that one
 * kernel (two passes over the values; its gradient two more) plus the two assignments of the running
 * statistics: the tf-op form below costs ≈30 kernel calls a layer, most on [channels]-sized tensors.
 * Elsewhere (webgl, webgpu, tensorflow) the layer with batch statistics is one `tf.customGrad` with the
 * analytic gradient, whose per-channel reductions are the backend's channel kernels where registered.
 * Inside nested tapes (a gradient of a gradient) the layer is plain tf ops, which every tape can
 * differentiate; a customGrad's saved tensors, and the fused kernel's gradient, are invisible to an
 * outer tape. Every form gives the same numbers to float32 rounding.
 */
export function batchNormalization<T extends tf.Tensor>(x: T, parameters: BatchNormParameters, mode: ModelMode, options: BatchNormOptions = {}): T {
  const { relu = false, residual } = options;
  const count = x.size / (x.shape.at(-1) ?? 1);
  if (mode !== 'eval' && count < 2) {
    throw new DataError('inputs', `batch normalisation in '${mode}' mode needs more than 1 value per channel, got ${count}`);
  }
  if (residual !== undefined && !tf.util.arraysEqual(residual.shape, x.shape)) {
    throw new DataError('residual', `batch normalisation needs a residual of the input's shape [${x.shape}], got [${residual.shape}]`);
  }
  if (fusedKernelApplies()) return fusedBatchNormalization(x, parameters, mode, relu, residual);
  if (!relu && residual === undefined) return unfusedBatchNormalization(x, parameters, mode, count);
  return tf.tidy(() => {
    const normalized = unfusedBatchNormalization(x, parameters, mode, count);
    const sum = residual === undefined ? normalized : tf.add(normalized, residual);
    return (relu ? tf.relu(sum) : sum) as T;
  });
}

/** The layer as {@link BATCH_NORM_KERNEL}, then the running statistics' assignments in `train`. */
function fusedBatchNormalization<T extends tf.Tensor>(x: T, parameters: BatchNormParameters, mode: ModelMode, relu: boolean, residual: tf.Tensor | undefined): T {
  const { gamma, beta, runningMean, runningVariance, epsilon, momentum } = parameters;
  const [output, ...perChannel] = tf.engine().runKernel(
    BATCH_NORM_KERNEL,
    { x, gamma, beta, runningMean, runningVariance, ...(residual === undefined ? {} : { residual }) },
    { mode, epsilon, momentum, relu, residual: residual !== undefined },
  ) as unknown as tf.Tensor[];
  if (mode === 'train') {
    // `assign` is not differentiated and the running variables are not trainable: no gradient flows here.
    runningMean.assign(perChannel[2]!);
    runningVariance.assign(perChannel[3]!);
  }
  // The gradient keeps its own references to what it needs (the engine saves them).
  tf.dispose(perChannel);
  return output as T;
}

/** The layer as tf ops (a customGrad with batch statistics at tape depth ≤ 1), without the ReLU. */
function unfusedBatchNormalization<T extends tf.Tensor>(x: T, parameters: BatchNormParameters, mode: ModelMode, count: number): T {
  const { gamma, beta, epsilon } = parameters;
  if (mode === 'eval') {
    return tf.tidy(() => normalizeWith(x, gamma, beta, parameters.runningMean, parameters.runningVariance, epsilon).output as T);
  }
  const withBatchStatistics = (input: tf.Tensor, scaleParameter: tf.Tensor, shiftParameter: tf.Tensor) => {
    const [mean, variance] = channelMoments(input);
    if (mode === 'train') updateRunningStatistics(parameters, mean, variance, count);
    return { mean, ...normalizeWith(input, scaleParameter, shiftParameter, mean, variance, epsilon) };
  };
  if (tf.engine().state.gradientDepth > 1) return tf.tidy(() => withBatchStatistics(x, gamma, beta).output as T);
  // With s = 1/√(σ² + ε) and x̂ = (x − μ)·s: dβ = Σdy, dγ = Σdy·x̂ = s·(Σdy·x − μ·Σdy) and
  // dx = γs·(dy − Σdy/n − x̂·dγ/n) = γs·dy + (B·x + K) per channel.
  const normalize = tf.customGrad((input, scaleParameter, shiftParameter, save: unknown) => {
    const { output, mean, inverseStd, scale } = withBatchStatistics(input as tf.Tensor, scaleParameter as tf.Tensor, shiftParameter as tf.Tensor);
    (save as tf.GradSaveFunc)([input as tf.Tensor, mean, inverseStd, scale]);
    return {
      value: output,
      gradFunc: (dy, saved) => {
        const [savedInput, savedMean, savedInverseStd, savedScale] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        const [sumDy, sumDyX] = channelSums(dy as tf.Tensor, savedInput);
        const dGamma = tf.mul(savedInverseStd, tf.sub(sumDyX, tf.mul(savedMean, sumDy)));
        const b = tf.mul(savedScale, tf.mul(savedInverseStd, tf.div(dGamma, -count)));
        const k = tf.sub(tf.mul(savedScale, tf.div(sumDy, -count)), tf.mul(b, savedMean));
        const dx = tf.add(tf.mul(dy as tf.Tensor, savedScale), tf.add(tf.mul(savedInput, b), k));
        return [dx, dGamma, sumDy];
      },
    };
  });
  return normalize(x, gamma, beta) as T;
}

/**
 * Writes the running averages. `assign` is not differentiated by TF.js and the running variables are
 * separate leaves of the tape, so no gradient flows through this update, even inside `tf.variableGrads`.
 */
function updateRunningStatistics(parameters: BatchNormParameters, mean: tf.Tensor, variance: tf.Tensor, count: number): void {
  const { momentum, runningMean, runningVariance } = parameters;
  tf.tidy(() => {
    runningMean.assign(tf.add(tf.mul(runningMean, 1 - momentum), tf.mul(mean, momentum)));
    const unbiased = tf.mul(variance, count / (count - 1));
    runningVariance.assign(tf.add(tf.mul(runningVariance, 1 - momentum), tf.mul(unbiased, momentum)));
  });
}
