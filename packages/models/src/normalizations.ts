/**
 * Per-channel input statistics for the `mean` and `std` options of every model. CIFAR and SVHN are
 * the values of RCAD's reference script (pixel statistics / 255); Fashion-MNIST is its training-set
 * mean and standard deviation.
 */
export const normalizations = {
  cifar: { mean: [125.3 / 255, 123.0 / 255, 113.9 / 255], std: [63.0 / 255, 62.1 / 255, 66.7 / 255] },
  svhn: { mean: [109.9 / 255, 109.7 / 255, 113.8 / 255], std: [50.1 / 255, 50.6 / 255, 50.8 / 255] },
  fashionMnist: { mean: [0.286], std: [0.353] },
} as const satisfies Record<string, { mean: readonly number[]; std: readonly number[] }>;
