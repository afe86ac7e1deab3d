// The contract between @regstack/regularizer's first-step backend check and @regstack/backend, which
// it does not import: the marker kernel it looks for is one useBackend registers, so a stack on
// `useBackend('wasm')` trains a convolution + max-pool Layers model without an error or a warning.
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { CHANNEL_MOMENTS_KERNEL, useBackend } from '@regstack/backend';
import { REGSTACK_BACKEND_MARKER_KERNEL, classifierFromLayersModel, composeRegularizers, setBackendAdviceHandler } from '@regstack/regularizer';
import { rcad } from '@regstack/rcad';
import { describe, expect, it } from 'vitest';

describe("the stack's backend check and @regstack/backend", () => {
  it('looks for a kernel that useBackend registers, and is then silent for a conv + max-pool model', async () => {
    expect(REGSTACK_BACKEND_MARKER_KERNEL).toBe(CHANNEL_MOMENTS_KERNEL);
    const info = await useBackend('wasm');
    expect(info.kernels).toContain(REGSTACK_BACKEND_MARKER_KERNEL);
    const layersModel = tfl.sequential({
      layers: [
        tfl.layers.conv2d({ inputShape: [6, 6, 1], filters: 2, kernelSize: 3, padding: 'same', kernelInitializer: tfl.initializers.heNormal({ seed: 1 }) }),
        tfl.layers.maxPooling2d({ poolSize: 2 }),
        tfl.layers.flatten(),
        tfl.layers.dense({ units: 3, kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 }) }),
      ],
    });
    const model = classifierFromLayersModel(layersModel);
    const batch = { inputs: tf.randomUniform([4, 6, 6, 1], 0, 1, 'float32', 3), labels: tf.tensor1d([0, 1, 2, 0], 'int32') };
    const advice: string[] = [];
    const previous = setBackendAdviceHandler((message) => advice.push(message));
    const prod = tf.env().getBool('PROD');
    tf.env().set('PROD', false);
    try {
      const optimizer = tf.train.sgd(0.1);
      const before = model.trainableVariables.map((variable) => Array.from(variable.dataSync()));
      const terms = composeRegularizers([rcad()]).minimize(optimizer, { model, batch });
      expect(Object.keys(terms).sort()).toEqual(['base', 'rcad', 'total']);
      // Every variable moved, the convolution's filter included (its gradient is our kernel's).
      model.trainableVariables.forEach((variable, index) => expect(Array.from(variable.dataSync())).not.toEqual(before[index]));
      optimizer.dispose();
    } finally {
      tf.env().set('PROD', prod);
      setBackendAdviceHandler(previous);
    }
    expect(advice).toEqual([]);
    tf.dispose([batch.inputs, batch.labels]);
    layersModel.dispose();
  });
});
