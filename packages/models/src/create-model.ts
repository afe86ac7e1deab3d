import { ConfigError } from '@regstack/regularizer';
import type { ClassifierModel, ModelName } from './model.js';
import { mlp, linearClassifier, type LinearClassifierOptions, type MlpOptions } from './mlp.js';
import { resnet18, type ResNet18Options } from './resnet.js';
import { smallCnn, type SmallCnnOptions } from './small-cnn.js';
import { wideResNet, type WideResNetOptions } from './wide-resnet.js';

/** The options {@link createModel} accepts for each architecture. */
export interface ModelOptionsByName {
  resnet18: ResNet18Options;
  'wrn-28-10': Omit<WideResNetOptions, 'depth' | 'widen'>;
  'wrn-16-8': Omit<WideResNetOptions, 'depth' | 'widen'>;
  'small-cnn': SmallCnnOptions;
  mlp: MlpOptions;
  linear: LinearClassifierOptions;
}

/** Every name {@link createModel} accepts. */
export const modelNames: readonly ModelName[] = ['resnet18', 'wrn-28-10', 'wrn-16-8', 'small-cnn', 'mlp', 'linear'];

/**
 * Builds a model by name. `wrn-28-10` uses dropout 0.3 and `wrn-16-8` dropout 0.4 unless `dropout`
 * is given, as in the reference scripts (CIFAR and SVHN).
 *
 * @example const model = createModel('resnet18', { numClasses: 100, width: 16, seed: 1 });
 */
export function createModel<Name extends ModelName>(name: Name, options?: ModelOptionsByName[Name]): ClassifierModel {
  const given = (options ?? {}) as Record<string, unknown>;
  switch (name) {
    case 'resnet18':
      return resnet18(given as ResNet18Options);
    case 'wrn-28-10':
    case 'wrn-16-8': {
      for (const field of ['depth', 'widen']) {
        if (field in given) throw new ConfigError(`${name}.${field}`, `fixed by the name; use wideResNet() to choose it`);
      }
      const [depth, widen, dropout] = name === 'wrn-28-10' ? [28, 10, 0.3] : [16, 8, 0.4];
      return wideResNet({ dropout, ...(given as WideResNetOptions), depth, widen });
    }
    case 'small-cnn':
      return smallCnn(given as SmallCnnOptions);
    case 'mlp':
      return mlp(given as MlpOptions);
    case 'linear':
      return linearClassifier(given as LinearClassifierOptions);
    default:
      throw new ConfigError('name', `unknown model ${String(name)}; known: ${modelNames.join(', ')}`);
  }
}
