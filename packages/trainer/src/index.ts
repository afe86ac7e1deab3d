export { train, evaluate, RECIPE_MILESTONE_FRACTIONS } from './trainer.js';
export type { TrainOptions, TrainResult, EpochRecord, BatchInfo, AugmentFunction } from './trainer.js';
export {
  fit,
  disposeOptimizer,
  FIT_OPTIMIZERS,
  type FitModel,
  type FitOptions,
  type FitHistory,
  type FitParams,
  type FitCallback,
  type FitLogs,
  type FitElement,
  type FitOptimizerName,
  type DatasetLike,
} from './fit.js';
export { tensorData, batchIndices, type DataSource } from './data.js';
export { MetricsAccumulator, DEFAULT_CALIBRATION_BINS, type ClassificationMetrics, type ReliabilityBin } from './metrics.js';
export {
  memoryCheckpointStore,
  serializeCheckpoint,
  checkpointTensors,
  verifyCheckpoint,
  type CheckpointStore,
  type CheckpointManifest,
  type SerializedCheckpoint,
  type TrainingState,
  type TensorEntry,
} from './checkpoint.js';
