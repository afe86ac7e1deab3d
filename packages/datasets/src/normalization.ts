/**
 * Per-channel normalisation constants, on the [0, 1] scale the loaders produce. Data sets hand out
 * raw inputs; the model applies `(x - mean) / std` itself, so that attacks and RCAD's input-space
 * steps stay in pixel space.
 */
export interface NormalizationConstants {
  /** Mean of each channel over the training set. */
  readonly mean: readonly number[];
  /** Standard deviation of each channel over the training set. */
  readonly std: readonly number[];
}

const scale = (values: readonly number[]): readonly number[] => Object.freeze(values.map((value) => value / 255));

/** The usual CIFAR constants (mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255), shared by CIFAR-10 and CIFAR-100. */
export const cifarNormalization: NormalizationConstants = Object.freeze({
  mean: scale([125.3, 123.0, 113.9]),
  std: scale([63.0, 62.1, 66.7]),
});

/** SVHN constants: mean (109.9, 109.7, 113.8)/255, std (50.1, 50.6, 50.8)/255. */
export const svhnNormalization: NormalizationConstants = Object.freeze({
  mean: scale([109.9, 109.7, 113.8]),
  std: scale([50.1, 50.6, 50.8]),
});

/**
 * Fashion-MNIST constants, computed over the 60 000 official training images: mean 0.28604,
 * std 0.35302 (population standard deviation of all pixels).
 */
export const fashionMnistNormalization: NormalizationConstants = Object.freeze({
  mean: Object.freeze([0.2860]),
  std: Object.freeze([0.3530]),
});

/** Tiny ImageNet uses the ImageNet constants, as is customary. */
export const imageNetNormalization: NormalizationConstants = Object.freeze({
  mean: Object.freeze([0.485, 0.456, 0.406]),
  std: Object.freeze([0.229, 0.224, 0.225]),
});

/** The constants of every data set, by the names the loaders use. */
export const normalization = Object.freeze({
  fashionMnist: fashionMnistNormalization,
  cifar10: cifarNormalization,
  cifar100: cifarNormalization,
  svhn: svhnNormalization,
  tinyImageNet: imageNetNormalization,
});

/** Mean and standard deviation of each channel of NHWC values (divided by `scale`), for checking constants on new data. */
export function channelStatistics(values: ArrayLike<number>, channels: number, scale = 1): NormalizationConstants {
  const sums = new Float64Array(channels);
  const squares = new Float64Array(channels);
  for (let index = 0; index < values.length; index++) {
    const value = values[index]! / scale;
    sums[index % channels]! += value;
    squares[index % channels]! += value * value;
  }
  const perChannel = values.length / channels;
  const mean = Array.from(sums, (sum) => sum / perChannel);
  const std = Array.from(squares, (square, channel) => Math.sqrt(Math.max(0, square / perChannel - mean[channel]! ** 2)));
  return { mean, std };
}
