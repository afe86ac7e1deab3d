/** Classification metrics computed from predicted probabilities on the host. */

/** Number of equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15). */
export const DEFAULT_CALIBRATION_BINS = 15;

/** One bin of a reliability diagram. */
export interface ReliabilityBin {
  /** Lower and upper confidence edge: (lower, upper]. */
  lower: number;
  upper: number;
  /** Examples whose confidence falls in the bin. */
  count: number;
  /** Mean confidence of those examples (0 when empty). */
  confidence: number;
  /** Their accuracy (0 when empty). */
  accuracy: number;
}

/** Accuracy, negative log-likelihood and calibration of a set of predictions. */
export interface ClassificationMetrics {
  /** Examples evaluated. */
  count: number;
  /** Fraction classified correctly. */
  accuracy: number;
  /** Mean negative log-likelihood of the true class (natural log). */
  nll: number;
  /** Expected calibration error: Σ_b |B|/n · |acc(B) − conf(B)| over equal-width bins. */
  ece: number;
  /** The reliability diagram the ECE is computed from. */
  reliability: ReliabilityBin[];
}

/**
 * Accumulates metrics batch by batch, so evaluation never holds all predictions in memory.
 * Feed it log-probabilities (log-softmax of the logits).
 */
export class MetricsAccumulator {
  private count = 0;
  private correct = 0;
  private nllSum = 0;
  private readonly binCount: Float64Array;
  private readonly binConfidence: Float64Array;
  private readonly binCorrect: Float64Array;

  constructor(private readonly bins = DEFAULT_CALIBRATION_BINS) {
    this.binCount = new Float64Array(bins);
    this.binConfidence = new Float64Array(bins);
    this.binCorrect = new Float64Array(bins);
  }

  /** Adds a batch: row-major log-probabilities [n, K] and n integer labels. */
  add(logProbabilities: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number): void {
    for (let i = 0; i < labels.length; i++) {
      const offset = i * numClasses;
      let best = 0;
      for (let k = 1; k < numClasses; k++) if (logProbabilities[offset + k]! > logProbabilities[offset + best]!) best = k;
      const label = labels[i]!;
      const isCorrect = best === label ? 1 : 0;
      const confidence = Math.exp(logProbabilities[offset + best]!);
      this.count++;
      this.correct += isCorrect;
      this.nllSum -= logProbabilities[offset + label]!;
      // Bins are (lower, upper]; a confidence of exactly 0 cannot occur for a max over K ≥ 1 classes.
      const bin = Math.min(this.bins - 1, Math.max(0, Math.ceil(confidence * this.bins) - 1));
      this.binCount[bin]! += 1;
      this.binConfidence[bin]! += confidence;
      this.binCorrect[bin]! += isCorrect;
    }
  }

  /** The metrics of everything added so far. */
  result(): ClassificationMetrics {
    const reliability: ReliabilityBin[] = [];
    let ece = 0;
    for (let b = 0; b < this.bins; b++) {
      const count = this.binCount[b]!;
      const confidence = count > 0 ? this.binConfidence[b]! / count : 0;
      const accuracy = count > 0 ? this.binCorrect[b]! / count : 0;
      reliability.push({ lower: b / this.bins, upper: (b + 1) / this.bins, count, confidence, accuracy });
      if (this.count > 0) ece += (count / this.count) * Math.abs(accuracy - confidence);
    }
    return {
      count: this.count,
      accuracy: this.count > 0 ? this.correct / this.count : Number.NaN,
      nll: this.count > 0 ? this.nllSum / this.count : Number.NaN,
      ece,
      reliability,
    };
  }
}

/** One completed epoch of a run: what the trainer reports and its checkpoints keep in their history. */
export interface EpochRecord {
  /** 1-based epoch number. */
  epoch: number;
  /** Learning rate at the epoch's start. */
  learningRate: number;
  /** Mean of each named loss term over the epoch's steps. */
  terms: Record<string, number>;
  /** Validation metrics (reliability diagram omitted); absent when the run has no validation set. */
  validation?: Omit<ClassificationMetrics, 'reliability'>;
  /** Wall-clock seconds of the epoch's training steps (evaluation excluded). */
  trainSeconds: number;
  /** Mean seconds per optimizer step. */
  secondsPerStep: number;
  /** Whether this epoch's weights became the best so far (without validation: every epoch, the last one wins). */
  best: boolean;
}
