export type * from './contract.js';
export { Random, type RandomState } from './random.js';
export { schedules, resolveSchedule, validateSchedulable, type Schedule, type Schedulable, type ScheduleUnit, type Progress } from './schedule.js';
export { RegstackError, ConfigError, DataError, DivergenceError, describeError, assertKnownOptions, assertNumber, assertChoice, assertInterval, type NumberRange, type RegstackErrorOptions } from './errors.js';
export { oneHotTargets, softCrossEntropy, softCrossEntropyPerExample, crossEntropy, entropyPerExample, meanEntropy } from './losses.js';
export { clipByGlobalNorm, addWeightDecay } from './gradients.js';
export { classifierFromLayersModel, classifierFromFunction, type LayersModelLike, type ForwardFunction } from './classifier.js';
export { SPECIFICATION_VERSIONS } from './specification.js';
export { composeRegularizers, lossInputGradient, validateBatch, STAGE_ORDER, type RegularizerStack } from './stack.js';
