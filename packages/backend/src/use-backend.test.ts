import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@regstack/regularizer';
import { beforeAll, describe, expect, it } from 'vitest';
import { registerKernels, unregisterKernels } from './kernels/register-kernels.js';
import { BACKEND_NAMES, listBackends, useBackend, type BackendName } from './use-backend.js';
import { relativeError } from '@regstack/regularizer/testing';
import { randomValues } from './test-values.js';
import { simdKernels } from './simd/instance.js';

const CONV_GRADIENT_KERNELS = [tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput];


function values(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(randomValues(tf.util.sizeFromShape(shape), seed), shape);
}

/** A three-layer conv net (stride 1 same, stride 2 valid, 1x1 stride 2) and the gradient of its loss. */
function convNetGradients(): Float32Array[] {
  return tf.tidy(() => {
    const x = values([3, 10, 9, 3], 1);
    const first = values([3, 3, 3, 8], 2);
    const second = values([3, 3, 8, 6], 3);
    const third = values([1, 1, 6, 2], 4);
    const loss = (input: tf.Tensor, a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
      const h1 = tf.relu(tf.conv2d(input as tf.Tensor4D, a as tf.Tensor4D, 1, 'same'));
      const h2 = tf.relu(tf.conv2d(h1, b as tf.Tensor4D, 2, 'valid'));
      const out = tf.conv2d(h2, c as tf.Tensor4D, 2, 'same');
      return tf.mean(tf.square(tf.sub(out, 0.25)));
    };
    const gradients = tf.grads(loss)([x, first, second, third]);
    return gradients.map((gradient) => gradient.dataSync() as Float32Array);
  });
}

let cpuReference: Float32Array[];

beforeAll(() => {
  // The reference uses TF.js's shipped cpu kernels.
  unregisterKernels('cpu', CONV_GRADIENT_KERNELS);
  cpuReference = convNetGradients();
});

describe('useBackend', () => {
  it("defaults to wasm, registers our kernels there, and tf.grad of a conv net matches the cpu backend", async () => {
    const info = await useBackend();
    expect(info).toEqual({
      name: 'wasm',
      kernels: ['Conv2DBackpropFilter', 'Conv2DBackpropInput', 'MaxPoolGrad', 'RegstackChannelMoments', 'RegstackChannelSums', 'RegstackBatchNorm', 'RegstackBatchNormGrad', 'Identity', 'BatchMatMul', 'Conv2D', 'Cast'],
      threads: 1,
      fusedMultiplyAdd: true,
    });
    expect(tf.getBackend()).toBe('wasm');

    const before = tf.memory().numTensors;
    const onWasm = convNetGradients();
    expect(tf.memory().numTensors).toBe(before);
    expect(onWasm).toHaveLength(4);
    for (const [index, gradient] of onWasm.entries()) {
      expect(relativeError(gradient, cpuReference[index]!), `gradient ${index}`).toBeLessThan(1e-5);
    }
  });

  it('is needed: TF.js as shipped cannot differentiate a conv net on wasm', async () => {
    await useBackend('wasm');
    unregisterKernels('wasm', CONV_GRADIENT_KERNELS);
    try {
      expect(() => convNetGradients()).toThrow(/Conv2DBackpropFilter/);
    } finally {
      registerKernels('wasm', CONV_GRADIENT_KERNELS);
    }
  });

  it('prepares cpu with our kernels', async () => {
    const info = await useBackend('cpu');
    expect(info).toEqual({ name: 'cpu', kernels: ['Conv2DBackpropFilter', 'RegstackChannelMoments', 'RegstackChannelSums', 'RegstackBatchNorm', 'RegstackBatchNormGrad'], fusedMultiplyAdd: true });
    expect(tf.getBackend()).toBe('cpu');
    const onCpu = convNetGradients();
    for (const [index, gradient] of onCpu.entries()) {
      expect(relativeError(gradient, cpuReference[index]!)).toBeLessThan(1e-5);
    }
  });

  it("'tensorflow' without tfjs-node names the field and says how to install, and that wasm is the default", async () => {
    const attempt = useBackend('tensorflow');
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toMatchObject({ field: 'backend' });
    await expect(attempt).rejects.toThrow(/npm install @tensorflow\/tfjs-node@4\.22\.0/);
    await expect(attempt).rejects.toThrow(/'wasm', the default/);
  });

  it("'webgpu' without the webgpu packages names the field and says how to install", async () => {
    const attempt = useBackend('webgpu');
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toMatchObject({ field: 'backend' });
    await expect(attempt).rejects.toThrow(/npm install @tensorflow\/tfjs-backend-webgpu@4\.22\.0/);
  });

  it("'webgl' in Node names the field, says a browser is needed, and loads nothing", async () => {
    const attempt = useBackend('webgl');
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toMatchObject({ field: 'backend' });
    await expect(attempt).rejects.toThrow(/'webgl' needs a browser: Node has no WebGL/);
    // Loading the package anyway would register a backend that TF.js then tries, and fails, at every tf.ready().
    expect(tf.findBackendFactory('webgl')).toBeNull();
  });

  it('rejects unknown backends and options with the field at fault', async () => {
    await expect(useBackend('gpu' as BackendName)).rejects.toMatchObject({ field: 'backend' });
    await expect(useBackend('gpu' as BackendName)).rejects.toThrow(/wasm, cpu, webgl, webgpu, tensorflow/);
    await expect(useBackend('wasm', { thread: 2 } as never)).rejects.toMatchObject({ field: 'backend.thread' });
    await expect(useBackend('wasm', { threads: 0 })).rejects.toMatchObject({ field: 'backend.threads' });
    await expect(useBackend('wasm', { wasmPaths: null as never })).rejects.toMatchObject({ field: 'backend.wasmPaths' });
  });
});

describe('useBackend: relaxed SIMD', () => {
  const convolution = () =>
    tf.tidy(() => tf.conv2d(values([4, 12, 12, 8], 11) as tf.Tensor4D, values([3, 3, 8, 16], 12) as tf.Tensor4D, 1, 'same').dataSync() as Float32Array);

  it('turns V8\'s flag on in a fresh Node process by default, and relaxedSimd: false leaves it off', () => {
    // V8 flags are per process, and other tests here may have set it: each case is a new process.
    const source = new URL('./use-backend.ts', import.meta.url).href;
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
    const probe = (options: string) => {
      // A stand-in Conv2D gradient spares the probe TF.js's gradient registration (it loads the built copy).
      const script = `const api = await import(${JSON.stringify(tsx)}); api.register();
        const tf = await import('@tensorflow/tfjs-core');
        tf.registerGradient({ kernelName: tf.Conv2D, gradFunc: () => ({}) });
        const { useBackend } = await import(${JSON.stringify(source)});
        const relaxed = new Uint8Array([0,97,115,109,1,0,0,0,1,8,1,96,3,123,123,123,1,123,3,2,1,0,10,13,1,11,0,32,0,32,1,32,2,253,133,2,11]);
        const before = WebAssembly.validate(relaxed);
        const info = await useBackend('wasm', ${options});
        console.log(JSON.stringify({ before, after: WebAssembly.validate(relaxed), fused: info.fusedMultiplyAdd }));`;
      const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: new URL('..', import.meta.url) });
      return JSON.parse(output.trim().split('\n').at(-1)!) as { before: boolean; after: boolean; fused: boolean };
    };
    const node = Number(process.versions.node.split('.')[0]);
    const byDefault = probe('{}');
    expect(byDefault.before).toBe(node >= 22);
    expect(byDefault).toMatchObject({ after: true, fused: true });
    expect(probe('{ relaxedSimd: false }')).toEqual({ before: node >= 22, after: node >= 22, fused: false });
  }, 60_000);

  it('relaxedSimd: false gives the separate multiply and add, which agree with the fused form to float32 rounding', async () => {
    expect((await useBackend('wasm', { relaxedSimd: false })).fusedMultiplyAdd).toBe(false);
    const separate = convolution();
    expect((await useBackend('wasm', { relaxedSimd: true })).fusedMultiplyAdd).toBe(true);
    const fused = convolution();
    expect(relativeError(fused, separate)).toBeLessThan(1e-6);
    expect(relativeError(fused, separate)).toBeGreaterThan(0);
    await useBackend('wasm');
  });

  it("keeps this thread's kernels and their memory when called again with the same form, and makes new ones when the form changes", async () => {
    await useBackend('wasm');
    const kernels = simdKernels()!;
    expect(convolution().length).toBeGreaterThan(0);
    await useBackend('wasm');
    await useBackend('wasm', { relaxedSimd: true });
    // The same instance on the same (already grown) memory: worker threads keep their jobs too.
    expect(simdKernels()).toBe(kernels);
    expect((await useBackend('wasm', { relaxedSimd: false })).fusedMultiplyAdd).toBe(false);
    expect(simdKernels()).not.toBe(kernels);
    expect(simdKernels()!.memory).not.toBe(kernels.memory);
    await useBackend('wasm');
  });

  it('rejects a relaxedSimd that is not a boolean, naming the field', async () => {
    await expect(useBackend('wasm', { relaxedSimd: 'yes' as unknown as boolean })).rejects.toThrow(/backend\.relaxedSimd/);
  });
});

describe('listBackends', () => {
  it('describes every choice, wasm as the only default, with install commands for the optional ones', () => {
    const backends = listBackends();
    expect(backends.map((backend) => backend.name)).toEqual([...BACKEND_NAMES]);
    expect(backends.filter((backend) => backend.isDefault).map((backend) => backend.name)).toEqual(['wasm']);
    for (const backend of backends) {
      expect(backend.install === undefined).toBe(backend.bundled);
      expect(backend.fastConvGradients).toBe(backend.name === 'wasm' || backend.name === 'cpu');
    }
  });
});
