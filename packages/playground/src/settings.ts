/**
 * What a user picks on the page, checked and turned into a regularizer stack. Kept free of DOM and
 * worker code, and of TF.js, so that the page's own bundle stays small and Node tests can run it.
 */
import { ConfigError, assertChoice, assertKnownOptions, assertNumber } from '@regstack/regularizer';

/** Backends the page can train on. `webgl` is offered only where the worker can get a WebGL2 context. */
export const PLAYGROUND_BACKENDS = ['wasm', 'webgl', 'cpu'] as const;
/** A backend the page can train on. */
export type PlaygroundBackend = (typeof PLAYGROUND_BACKENDS)[number];

/** Training images in the embedded subset after the 10% validation hold-out. */
export const EMBEDDED_TRAIN_SIZE = 1800;

/** One run's settings, as the form produces them. */
export interface RunSettings {
  /** TF.js backend of the worker. */
  backend: PlaygroundBackend;
  /** Epochs over the training subset. */
  epochs: number;
  /** Examples per optimizer step. */
  batchSize: number;
  /** Initial SGD learning rate; ×0.1 at 50%, 75% and 90% of the epochs, as in the paper's recipe. */
  learningRate: number;
  /** Training images used, class-balanced, a multiple of 10 up to {@link EMBEDDED_TRAIN_SIZE}. */
  trainSize: number;
  /** Channels of the small CNN's first stage (the second has twice as many). */
  width: number;
  /** Seed of the weights, the hold-out, the subset and the shuffling. */
  seed: number;
  /** Label smoothing and its ε. */
  labelSmoothing: { enabled: boolean; epsilon: number };
  /** RCAD, its step α (also the step of the perturbed-image view) and its weight λ. */
  rcad: { enabled: boolean; alpha: number; lambda: number };
  /** Mixup and the α of its Beta(α, α). */
  mixup: { enabled: boolean; alpha: number };
  /** Entropy minimisation (or, maximised, the confidence penalty) and its weight λ. */
  entropyMin: { enabled: boolean; lambda: number; mode: 'minimize' | 'maximize' };
}

/** Named starting points for the form; each is a complete {@link RunSettings} regularizer choice. */
export const PRESETS = {
  erm: { title: 'ERM (no regularizer)', labelSmoothing: false, rcad: false, mixup: false, entropyMin: false },
  'label-smoothing': { title: 'Label smoothing', labelSmoothing: true, rcad: false, mixup: false, entropyMin: false },
  rcad: { title: 'RCAD', labelSmoothing: false, rcad: true, mixup: false, entropyMin: false },
  'rcad+label-smoothing': { title: 'RCAD + label smoothing', labelSmoothing: true, rcad: true, mixup: false, entropyMin: false },
  mixup: { title: 'Mixup', labelSmoothing: false, rcad: false, mixup: true, entropyMin: false },
  'entropy-min': { title: 'Entropy minimisation', labelSmoothing: false, rcad: false, mixup: false, entropyMin: true },
} as const;
/** A preset's name. */
export type PresetName = keyof typeof PRESETS;

/**
 * Defaults that train the small CNN to ≈75% validation accuracy on the embedded subset in a few
 * epochs. RCAD's α = 0.5 is the Fashion-MNIST equivalent of the paper's α = 1 on CIFAR (the same
 * per-pixel RMS step over 784 instead of 3072 values, see `@regstack/rcad`).
 */
export const DEFAULT_SETTINGS: RunSettings = {
  backend: 'wasm',
  epochs: 3,
  batchSize: 64,
  learningRate: 0.05,
  trainSize: EMBEDDED_TRAIN_SIZE,
  width: 16,
  seed: 0,
  labelSmoothing: { enabled: false, epsilon: 0.1 },
  rcad: { enabled: true, alpha: 0.5, lambda: 0.2 },
  mixup: { enabled: false, alpha: 0.2 },
  entropyMin: { enabled: false, lambda: 0.1, mode: 'minimize' },
};

function checkSection<T extends object>(field: string, value: unknown, keys: readonly (keyof T & string)[]): T {
  if (typeof value !== 'object' || value === null) throw new ConfigError(field, 'expected an object');
  assertKnownOptions(field, value as Record<string, unknown>, keys);
  const enabled = (value as { enabled?: unknown }).enabled;
  if (typeof enabled !== 'boolean') throw new ConfigError(`${field}.enabled`, `expected true or false, got ${String(enabled)}`);
  return value as T;
}

/**
 * Checks settings that crossed a `postMessage` (numbers typed into the page arrive as anything).
 *
 * @throws ConfigError naming the field, e.g. `rcad.alpha` or `trainSize`.
 */
export function validateSettings(settings: RunSettings): RunSettings {
  if (typeof settings !== 'object' || settings === null) throw new ConfigError('settings', 'expected an object');
  assertKnownOptions('settings', settings as unknown as Record<string, unknown>, Object.keys(DEFAULT_SETTINGS));
  assertChoice('backend', settings.backend, PLAYGROUND_BACKENDS);
  assertNumber('epochs', settings.epochs, { min: 1, max: 100, integer: true });
  assertNumber('batchSize', settings.batchSize, { min: 1, max: 1024, integer: true });
  assertNumber('learningRate', settings.learningRate, { min: 0, max: 10, minExclusive: true });
  assertNumber('trainSize', settings.trainSize, { min: 10, max: EMBEDDED_TRAIN_SIZE, integer: true });
  if (settings.trainSize % 10 !== 0) {
    throw new ConfigError('trainSize', `must be a multiple of 10 (the subset is class-balanced), got ${settings.trainSize}`);
  }
  assertNumber('width', settings.width, { min: 1, max: 128, integer: true });
  assertNumber('seed', settings.seed, { integer: true });
  const smoothing = checkSection<RunSettings['labelSmoothing']>('labelSmoothing', settings.labelSmoothing, ['enabled', 'epsilon']);
  assertNumber('labelSmoothing.epsilon', smoothing.epsilon, { min: 0, max: 1, maxExclusive: true });
  const rcadSettings = checkSection<RunSettings['rcad']>('rcad', settings.rcad, ['enabled', 'alpha', 'lambda']);
  // α is validated even when RCAD is off: the perturbed-image view always uses it.
  assertNumber('rcad.alpha', rcadSettings.alpha, { min: 0 });
  assertNumber('rcad.lambda', rcadSettings.lambda, { min: 0 });
  const mixupSettings = checkSection<RunSettings['mixup']>('mixup', settings.mixup, ['enabled', 'alpha']);
  assertNumber('mixup.alpha', mixupSettings.alpha, { min: 0, minExclusive: true });
  const entropy = checkSection<RunSettings['entropyMin']>('entropyMin', settings.entropyMin, ['enabled', 'lambda', 'mode']);
  assertNumber('entropyMin.lambda', entropy.lambda, { min: 0 });
  assertChoice('entropyMin.mode', entropy.mode, ['minimize', 'maximize'] as const);
  return settings;
}

/** A short human name of the stack, e.g. `RCAD(α=0.5, λ=0.2) + LS(ε=0.1)`, for legends and tables. */
export function stackLabel(settings: RunSettings): string {
  const parts: string[] = [];
  if (settings.mixup.enabled) parts.push(`mixup(α=${settings.mixup.alpha})`);
  if (settings.labelSmoothing.enabled) parts.push(`LS(ε=${settings.labelSmoothing.epsilon})`);
  if (settings.rcad.enabled) parts.push(`RCAD(α=${settings.rcad.alpha}, λ=${settings.rcad.lambda})`);
  if (settings.entropyMin.enabled) {
    parts.push(`${settings.entropyMin.mode === 'minimize' ? 'entropy-min' : 'confidence penalty'}(λ=${settings.entropyMin.lambda})`);
  }
  return parts.length === 0 ? 'ERM' : parts.join(' + ');
}

/** Applies a preset's on/off choices to `settings`, keeping their hyper-parameters. */
export function applyPreset(settings: RunSettings, preset: PresetName): RunSettings {
  const choice = PRESETS[preset];
  if (choice === undefined) throw new ConfigError('preset', `unknown preset ${String(preset)}; known: ${Object.keys(PRESETS).join(', ')}`);
  return {
    ...settings,
    labelSmoothing: { ...settings.labelSmoothing, enabled: choice.labelSmoothing },
    rcad: { ...settings.rcad, enabled: choice.rcad },
    mixup: { ...settings.mixup, enabled: choice.mixup },
    entropyMin: { ...settings.entropyMin, enabled: choice.entropyMin },
  };
}
