/** Messages between the page and the training worker. Everything here survives structured cloning. */
import type { ClassificationMetrics, EpochRecord } from '@regstack/trainer';
import type { PerturbationPreview } from './perturbation.js';
import type { RunSettings } from './settings.js';

/** Page → worker: start one run (a worker trains once; the page starts a new worker per run). */
export interface StartMessage {
  type: 'start';
  settings: RunSettings;
}

/** Worker → page: the backend is up and the data are loaded. */
export interface ReadyMessage {
  type: 'ready';
  /** Backend TF.js reports as active. */
  backend: string;
  /** The stack in the order it runs, e.g. `label-smoothing → base → rcad`. */
  stack: string;
  trainSize: number;
  validationSize: number;
  testSize: number;
  /** Class names by label. */
  classNames: readonly string[];
}

/** Worker → page: one optimizer step finished. */
export interface BatchMessage {
  type: 'batch';
  epoch: number;
  batch: number;
  batches: number;
  step: number;
  /** Named loss terms of the step (`base`, one per plugin, `total`). */
  terms: Record<string, number>;
}

/** Worker → page: one epoch finished, with RCAD's view of a few validation images. */
export interface EpochMessage {
  type: 'epoch';
  record: EpochRecord;
  preview: PerturbationPreview;
}

/** Worker → page: training finished and the best-validation weights were evaluated. */
export interface DoneMessage {
  type: 'done';
  bestEpoch: number;
  steps: number;
  validation: ClassificationMetrics;
  test: ClassificationMetrics;
  /** Seconds from the start message to the end, loading and evaluation included. */
  totalSeconds: number;
}

/** Worker → page: the run failed. */
export interface ErrorMessage {
  type: 'error';
  message: string;
  /** The settings field at fault, for a ConfigError or DataError. */
  field?: string;
}

/** Everything the worker sends. */
export type WorkerMessage = ReadyMessage | BatchMessage | EpochMessage | DoneMessage | ErrorMessage;
