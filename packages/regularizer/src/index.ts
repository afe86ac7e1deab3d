export type * from './contract.js';
export { Random, type RandomState } from './random.js';
export { schedules, resolveSchedule, validateSchedulable, type Schedule, type Schedulable, type ScheduleUnit, type Progress } from './schedule.js';
export { RegstackError, ConfigError, DataError, DivergenceError, assertKnownOptions, assertNumber, assertChoice, assertInterval, type NumberRange } from './errors.js';
export { oneHotTargets, softCrossEntropy, softCrossEntropyPerExample, crossEntropy, entropyPerExample, meanEntropy } from './losses.js';
export { clipByGlobalNorm, addWeightDecay, applyGradients } from './gradients.js';
export { classifierFromLayersModel, classifierFromFunction, type LayersModelLike, type LayersClassifierOptions, type ForwardFunction } from './classifier.js';
export { composeRegularizers, lossInputGradient, validateBatch, STAGE_ORDER, type RegularizerStack, type StackOptions } from './stack.js';
export { setBackendAdviceHandler, REGSTACK_BACKEND_MARKER_KERNEL } from './step-checks.js';
