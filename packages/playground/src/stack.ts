/** Turns the page's settings into regularizer plugins (worker side: the plugins pull in TF.js). */
import type { RegularizerPlugin } from '@regstack/regularizer';
import { entropyMin } from '@regstack/entropy-min';
import { labelSmoothing } from '@regstack/label-smoothing';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import type { RunSettings } from './settings.js';

/** The plugins of the enabled regularizers (none is ERM); the trainer composes them in stage order. */
export function regularizersOf(settings: RunSettings): RegularizerPlugin[] {
  const plugins: RegularizerPlugin[] = [];
  if (settings.mixup.enabled) plugins.push(mixup({ mixupAlpha: settings.mixup.alpha }));
  if (settings.labelSmoothing.enabled) plugins.push(labelSmoothing({ epsilon: settings.labelSmoothing.epsilon }));
  if (settings.rcad.enabled) plugins.push(rcad({ alpha: settings.rcad.alpha, lambda: settings.rcad.lambda }));
  if (settings.entropyMin.enabled) {
    plugins.push(entropyMin({ lambda: settings.entropyMin.lambda, mode: settings.entropyMin.mode }));
  }
  return plugins;
}

