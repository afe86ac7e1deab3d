import { adversarialTraining } from '@regstack/adversarial-training';
import { entropyMin } from '@regstack/entropy-min';
import { labelSmoothing } from '@regstack/label-smoothing';
import { meAda } from '@regstack/me-ada';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { ConfigError, type RegularizerPlugin } from '@regstack/regularizer';
import type { RegularizerSpec } from './spec.js';

/** A regularizer the command line knows by name. */
export interface RegistryEntry {
  /** One line for `--help` and error messages. */
  summary: string;
  create: (options: Record<string, unknown>) => RegularizerPlugin;
}

/** Names the command line used to accept, and the name each now has (the plugin's package name). */
export const renamedRegularizers: Readonly<Record<string, string>> = Object.freeze({ adversarial: 'adversarial-training' });


/**
 * Every regularizer `--reg` and `--stack` accept, each under its plugin's name (the name of its term
 * in logs, and of its package without the scope).
 */
export const regularizerRegistry: Readonly<Record<string, RegistryEntry>> = Object.freeze({
  rcad: { summary: 'RCAD: maximise entropy along the adversarial direction (alpha, lambda)', create: (o) => rcad(o) },
  'label-smoothing': { summary: 'label smoothing (epsilon)', create: (o) => labelSmoothing(o) },
  mixup: { summary: 'mixup / CutMix (mixupAlpha, cutmixAlpha, probability, switchProbability)', create: (o) => mixup(o) },
  'adversarial-training': { summary: 'FGSM / PGD adversarial training (attack, norm, epsilon, stepSize, steps, weight)', create: (o) => adversarialTraining(o) },
  'entropy-min': { summary: 'entropy minimisation or the confidence penalty (lambda, mode)', create: (o) => entropyMin(o) },
  'me-ada': { summary: 'ME-ADA, online form (steps, stepSize, beta, gamma, weight)', create: (o) => meAda(o) },
});

const noticed = new Set<string>();

/**
 * Builds the plugins of a parsed stack; unknown names get an error listing what exists. A renamed
 * regularizer's old name still works, with a one-line notice on stderr (once per process).
 */
export function createRegularizers(specs: readonly RegularizerSpec[]): RegularizerPlugin[] {
  return specs.map((spec) => {
    const renamed = Object.hasOwn(renamedRegularizers, spec.name) ? renamedRegularizers[spec.name] : undefined;
    if (renamed !== undefined && !noticed.has(spec.name)) {
      noticed.add(spec.name);
      process.stderr.write(`regstack: '${spec.name}' is now called '${renamed}'; the old name will stop working in a later release\n`);
    }
    const entry = regularizerRegistry[renamed ?? spec.name];
    if (!entry) {
      throw new ConfigError('--reg', `unknown regularizer '${spec.name}'; known: ${Object.keys(regularizerRegistry).join(', ')}`);
    }
    return entry.create(spec.options);
  });
}
