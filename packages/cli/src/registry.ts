import { adversarialTraining } from '@regstack/adversarial-training';
import { entropyMinimization } from '@regstack/entropy-min';
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

/** Every regularizer `--reg` and `--stack` accept. */
export const regularizerRegistry: Readonly<Record<string, RegistryEntry>> = Object.freeze({
  rcad: { summary: 'RCAD: maximise entropy along the adversarial direction (alpha, lambda)', create: (o) => rcad(o) as RegularizerPlugin },
  'label-smoothing': { summary: 'label smoothing (epsilon)', create: (o) => labelSmoothing(o) as RegularizerPlugin },
  mixup: { summary: 'mixup / CutMix (mixupAlpha, cutmixAlpha, probability, switchProbability)', create: (o) => mixup(o) as RegularizerPlugin },
  adversarial: { summary: 'FGSM / PGD adversarial training (attack, norm, epsilon, stepSize, steps, weight)', create: (o) => adversarialTraining(o) as RegularizerPlugin },
  'entropy-min': { summary: 'entropy minimisation or the confidence penalty (lambda, mode)', create: (o) => entropyMinimization(o) as RegularizerPlugin },
  'me-ada': { summary: 'ME-ADA, online form (steps, stepSize, beta, gamma, weight)', create: (o) => meAda(o) as RegularizerPlugin },
});

/** Builds the plugins of a parsed stack; unknown names get an error listing what exists. */
export function createRegularizers(specs: readonly RegularizerSpec[]): RegularizerPlugin[] {
  return specs.map((spec) => {
    const entry = regularizerRegistry[spec.name];
    if (!entry) {
      throw new ConfigError('--reg', `unknown regularizer '${spec.name}'; known: ${Object.keys(regularizerRegistry).join(', ')}`);
    }
    return entry.create(spec.options);
  });
}
