import * as tf from '@tensorflow/tfjs-core';
import { DataError } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { exportNamedTensors, importNamedTensors, loadWeights, resnet18, saveWeights, smallCnn, wideResNet, type ClassifierModel } from './index.js';

const x = () => tf.randomUniform([3, 8, 8, 3], 0, 1, 'float32', 1);

function evalLogits(model: ClassifierModel, inputs: tf.Tensor): number[] {
  return tf.tidy(() => Array.from(model.apply(inputs, { mode: 'eval' }).logits.dataSync()));
}

function dataErrorField(run: () => void): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(DataError);
    return (error as DataError).field;
  }
  throw new Error('expected a DataError');
}

describe('weights', () => {
  it('names variables as the PyTorch CIFAR ResNet-18 does, trainable first within each layer', () => {
    const model = resnet18({ width: 2, inputShape: [8, 8, 3] });
    const names = [...model.namedVariables().keys()];
    expect(names.slice(0, 6)).toEqual(['conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var', 'layer1.0.conv1.weight']);
    expect(names).toContain('layer2.0.shortcut.0.weight');
    expect(names).toContain('layer2.0.shortcut.1.running_var');
    expect(names).not.toContain('layer1.0.shortcut.0.weight');
    expect(names.slice(-2)).toEqual(['linear.weight', 'linear.bias']);
    // 1 stem + 16 block convs + 3 shortcuts = 20 BN layers; 20 convs; 1 linear (weight, bias).
    expect(names).toHaveLength(20 + 20 * 4 + 2);
    model.dispose();
  });

  it('round-trips through saveWeights → JSON → loadWeights, running statistics included', async () => {
    const source = resnet18({ width: 2, inputShape: [8, 8, 3], seed: 1 });
    const target = resnet18({ width: 2, inputShape: [8, 8, 3], seed: 2 });
    const inputs = x();
    // Move the running statistics away from their initial values first.
    tf.dispose(source.apply(inputs, { mode: 'train' }) as unknown as tf.TensorContainer);
    expect(evalLogits(target, inputs)).not.toEqual(evalLogits(source, inputs));
    const saved = JSON.parse(JSON.stringify(await saveWeights(source)));
    expect(saved.architecture).toBe('resnet18');
    loadWeights(target, saved);
    expect(evalLogits(target, inputs)).toEqual(evalLogits(source, inputs));
    expect(Array.from(target.namedVariables().get('bn1.running_mean')!.dataSync())).toEqual(
      Array.from(source.namedVariables().get('bn1.running_mean')!.dataSync()),
    );
    tf.dispose(inputs);
    source.dispose();
    target.dispose();
  });

  it('rejects mismatches with a DataError naming the tensor, and leaves the model unchanged', async () => {
    const model = smallCnn({ width: 2, inputShape: [8, 8, 3], seed: 1 });
    const wider = smallCnn({ width: 3, inputShape: [8, 8, 3], seed: 1 });
    const inputs = x();
    const before = evalLogits(model, inputs);
    const widerWeights = await saveWeights(wider);
    expect(dataErrorField(() => loadWeights(model, widerWeights))).toBe('weights.block1.conv1.weight');
    expect(evalLogits(model, inputs)).toEqual(before);
    const own = await saveWeights(model);
    const missing = { ...own, tensors: own.tensors.filter((tensor) => tensor.name !== 'block2.bn1.running_var') };
    expect(dataErrorField(() => loadWeights(model, missing))).toBe('weights.block2.bn1.running_var');
    const extra = { ...own, tensors: [...own.tensors, { ...own.tensors[0]!, name: 'block3.conv1.weight' }] };
    expect(dataErrorField(() => loadWeights(model, extra))).toBe('weights.block3.conv1.weight');
    const truncated = { ...own, tensors: own.tensors.map((tensor, index) => (index === 0 ? { ...tensor, data: tensor.data.slice(0, 8) } : tensor)) };
    expect(dataErrorField(() => loadWeights(model, truncated))).toBe('weights.block1.conv1.weight');
    expect(dataErrorField(() => loadWeights(model, { ...own, architecture: 'resnet18' }))).toBe('weights.architecture');
    expect(dataErrorField(() => loadWeights(model, {} as never))).toBe('weights.format');
    // Non-strict loads a subset, still shape-checked.
    loadWeights(model, missing, { strict: false });
    expect(evalLogits(model, inputs)).toEqual(before);
    tf.dispose(inputs);
    model.dispose();
    wider.dispose();
  });

  it('exports and imports tf.NamedTensorMaps (tf.io.encodeWeights-compatible), with shape checks', async () => {
    const source = wideResNet({ depth: 10, widen: 1, inputShape: [8, 8, 3], seed: 1, dropout: 0 });
    const target = wideResNet({ depth: 10, widen: 1, inputShape: [8, 8, 3], seed: 2, dropout: 0 });
    const inputs = x();
    const map = exportNamedTensors(source);
    expect(Object.keys(map)).toContain('block1.layer.0.conv1.weight');
    const { data, specs } = await tf.io.encodeWeights(map);
    const decoded = tf.io.decodeWeights(data, specs);
    importNamedTensors(target, decoded);
    expect(evalLogits(target, inputs)).toEqual(evalLogits(source, inputs));
    const wrong = { ...decoded, 'fc.weight': tf.zeros([3, 10]) };
    expect(dataErrorField(() => importNamedTensors(target, wrong))).toBe('weights.fc.weight');
    const before = tf.memory().numTensors;
    importNamedTensors(target, decoded);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([inputs, wrong['fc.weight']!, ...Object.values(map), ...Object.values(decoded)]);
    source.dispose();
    target.dispose();
  });
});
