export { createProgram, main, QUICK_PRESET } from './cli.js';
export { compare, type CompareOptions, type CompareResult } from './compare.js';
export { runJob, jobCommand, type JobSpec, type JobResult, type Recipe } from './job.js';
export { loadData, DATASET_NAMES, type DataSpec, type DatasetName } from './data.js';
export { regularizerRegistry, renamedRegularizers, createRegularizers, type RegistryEntry } from './registry.js';
export { parseStackSpec, parseRegularizerSpec, parseOptions, parseOptionValue, formatStackSpec, type StackSpec, type RegularizerSpec } from './spec.js';
export { summarize, meanAndStd, formatRow, SUMMARY_HEADERS, type SummaryRow } from './summary.js';
export { renderChart, learningCurveSpec, reliabilitySpec } from './plots.js';
