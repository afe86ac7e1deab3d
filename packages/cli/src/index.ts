export { createProgram, main, QUICK_PRESET, EXIT_CODES, exitCodeOf } from './cli.js';
export { compare, stopWorkers, JobsFailedError, type CompareOptions, type CompareResult, type JobFailure } from './compare.js';
export { runJob, jobCommand, planRun, readRunFolder, specDifferences, resolvedMilestones, type JobSpec, type JobResult, type Recipe, type RunFolderState } from './job.js';
export { lockFolder, releaseAllLocks, prepareFolder, writeFileAtomically, FileSystemError, RunFolderError, LOCK_FILE, type FolderLock, type LockHolder } from './run-folder.js';
export { loadData, DATASET_NAMES, type DataSpec, type DatasetName } from './data.js';
export { regularizerRegistry, createRegularizers, type RegistryEntry } from './registry.js';
export { parseStackSpec, parseRegularizerSpec, parseOptions, parseOptionValue, formatStackSpec, type StackSpec, type RegularizerSpec } from './spec.js';
export { summarize, meanAndStd, formatRow, SUMMARY_HEADERS, type SummaryRow } from './summary.js';
export { renderChart, learningCurveSpec, reliabilitySpec } from './plots.js';
