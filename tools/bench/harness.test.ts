import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '@regstack/backend';
import { TorchWorker, VARIANTS, formatReport, runBenchmark } from './harness.mjs';
import { profileKernels } from './kernel-profile.mjs';

// The bench asks /usr/bin/python3 for torch; where it has none, the report says why (a fresh CI machine).
const PYTHON = '/usr/bin/python3';
const pythonInstalled = existsSync(PYTHON);

describe('bench harness', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('runs every variant on tiny models and reports positive timings, ratios, memory and kernels', async () => {
    const before = tf.memory().numTensors;
    const report = await runBenchmark({
      models: [
        { id: 'tiny-cnn', architecture: 'small-cnn', width: 2, inputShape: [8, 8, 3], numClasses: 3, rounds: 2 },
        { id: 'tiny-resnet', architecture: 'resnet18', width: 2, inputShape: [8, 8, 3], numClasses: 3, rounds: 1 },
      ],
      batchSize: 4,
      warmup: 1,
      threads: [1, 2],
      // One PyTorch thread: two threads on a machine loaded by other jobs can take seconds per tiny step.
      torch: pythonInstalled ? { stepsPerRound: 1, threads: [1] } : false,
    });
    // Every step and every model freed what it made.
    expect(tf.memory().numTensors).toBe(before);
    expect(report.backend).toBe('wasm');
    // What two threads get on this machine: between one thread's throughput (or a little under) and two.
    expect(report.parallelism).toBeGreaterThan(0.5);
    expect(report.parallelism).toBeLessThan(2.5);
    expect(report.models.map((model: { id: string }) => model.id)).toEqual(['tiny-cnn', 'tiny-resnet']);
    for (const model of report.models) {
      expect(Object.keys(model.variants)).toEqual(Object.keys(VARIANTS));
      expect(model.parameters).toBeGreaterThan(0);
      for (const variant of Object.values(model.variants) as Array<Record<string, any>>) {
        expect(variant.samplesMs).toHaveLength(model.rounds);
        expect(variant.medianMs).toBeGreaterThan(0);
        expect(variant.minMs).toBeLessThanOrEqual(variant.medianMs);
        expect(variant.ratioToErm).toBeGreaterThan(0);
        expect(variant.phasesMs.gradients).toBeGreaterThan(0);
        expect(variant.memory.leakedTensorsPerStep).toBe(0);
        expect(variant.memory.peakBytes).toBeGreaterThan(0);
        expect(variant.memory.kernelCalls).toBeGreaterThan(10);
        expect(variant.profile.topKernels[0].selfMs).toBeGreaterThan(0);
      }
      expect(model.variants.erm.ratioToErm).toBe(1);
      // ERM and RCAD timed again with a convolution worker thread, in the same rounds.
      expect(Object.keys(model.ours)).toEqual(['1', '2']);
      expect(model.ours['2'].erm.samplesMs).toHaveLength(model.rounds);
      expect(model.ours['2'].rcad.medianMs).toBeGreaterThan(0);
      expect(model.ours['1'].erm.medianMs).toBe(model.variants.erm.medianMs);
      // RCAD runs strictly more kernels than ERM (the pass on x̃); the trainer's path serves its input
      // gradient from the base pass, so it runs fewer than the prepare path, which makes a pass for it.
      expect(model.variants.rcad.memory.kernelCalls).toBeGreaterThan(model.variants.erm.memory.kernelCalls);
      expect(model.variants.rcad.fused).toBe(true);
      expect(model.variants['rcad-unfused'].fused).toBe(false);
      expect(model.variants['rcad-unfused'].phasesMs.prepare).toBeGreaterThan(0);
      expect(model.variants.rcad.memory.kernelCalls).toBeLessThan(model.variants['rcad-unfused'].memory.kernelCalls);
      // Label smoothing changes the base loss: RCAD's direction takes a backward of its own over the
      // base pass's forward (no forward of its own).
      expect(model.variants['rcad+label-smoothing'].fused).toBe(true);
      expect(model.variants['rcad+label-smoothing'].fusion).toBe('base-forward');
      expect(model.variants.rcad.fusion).toBe('base-backward');
      if (pythonInstalled && model.torch.available) {
        expect(Object.keys(model.torch.threads)).toEqual(['1']);
        expect(model.torch.threads['1'].erm.medianMs).toBeGreaterThan(0);
        expect(model.torch.threads['1'].rcad.medianMs).toBeGreaterThan(0);
        expect(model.oursOverTorch['1'].erm).toBeCloseTo(model.variants.erm.medianMs / model.torch.threads['1'].erm.medianMs, 10);
      } else {
        expect(typeof model.torch.reason).toBe('string');
      }
    }
    const table = formatReport(report);
    expect(table).toContain('| rcad+label-smoothing |');
    expect(table).toContain('Top kernels, tiny-cnn rcad');
    // The JSON round-trips (no tensors or functions in it).
    expect(JSON.parse(JSON.stringify(report)).models[0].variants.rcad.medianMs).toBe(report.models[0].variants.rcad.medianMs);
  });

  it('times a tf.LayersModel wrapped by classifierFromLayersModel, on the fused RCAD path', async () => {
    const before = tf.memory().numTensors;
    const report = await runBenchmark({
      models: [{ id: 'tiny-layers', architecture: 'layers-cnn', width: 2, inputShape: [8, 8, 3], numClasses: 3, rounds: 1 }],
      variants: ['rcad', 'rcad-unfused'],
      batchSize: 4,
      warmup: 1,
      threads: [1],
      torch: true,
    });
    expect(tf.memory().numTensors).toBe(before);
    const [model] = report.models;
    // Convolutions 3→2, 2→2, 2→4, 4→4 (3×3, no bias), batch norms of 4 values per channel, then
    // 8×8 pooled twice to 2×2×4 = 16 features into 3 logits.
    expect(model.parameters).toBe(9 * (3 * 2 + 2 * 2 + 2 * 4 + 4 * 4) + 4 * (2 + 2 + 4 + 4) + (16 * 3 + 3));
    expect(model.torch).toEqual({ available: false, reason: 'no PyTorch twin of the tf.LayersModel' });
    // No dropout layer: the adapter reads stochastic: false and the stack fuses RCAD's input gradient.
    expect(model.variants.rcad.fused).toBe(true);
    expect(model.variants['rcad-unfused'].fused).toBe(false);
    expect(model.variants.rcad.memory.kernelCalls).toBeLessThan(model.variants['rcad-unfused'].memory.kernelCalls);
    expect(model.variants.rcad.memory.leakedTensorsPerStep).toBe(0);
    expect(model.variants.rcad.ratioToErm).toBeGreaterThan(0);
  });

  it("times the reference recipe's two-view step: its own batch and variants, the augmentation, PyTorch's same step", async () => {
    const before = tf.memory().numTensors;
    const report = await runBenchmark({
      models: [
        {
          id: 'tiny-recipe',
          architecture: 'resnet18',
          width: 2,
          inputShape: [8, 8, 1],
          numClasses: 3,
          rounds: 2,
          batchSize: 3,
          baseLoss: 'two-view',
          mean: [0.286],
          std: [0.353],
          variants: ['erm', 'rcad', 'rcad+label-smoothing'],
        },
      ],
      batchSize: 4,
      warmup: 1,
      threads: [1, 2],
      torch: pythonInstalled ? { stepsPerRound: 1, threads: [1] } : false,
    });
    expect(tf.memory().numTensors).toBe(before);
    const [model] = report.models;
    // The model's batch and variants, not the run's (which asks for every variant at batch 4).
    expect(model.batchSize).toBe(3);
    expect(model.baseLoss).toBe('two-view');
    expect(Object.keys(model.variants)).toEqual(['erm', 'rcad', 'rcad+label-smoothing']);
    // Two-view RCAD serves its direction from the base pass's clean view (the fused step); with label
    // smoothing the direction's loss differs from the base loss, so it takes a second backward over the
    // base pass's forward; ERM has nothing to fuse.
    const fusedExpected: Record<string, boolean> = { erm: false, rcad: true, 'rcad+label-smoothing': true };
    for (const [name, variant] of Object.entries(model.variants) as Array<[string, Record<string, any>]>) {
      // Two views: the stack augments the second view every step, through the bench's timed augmentation.
      expect(variant.phasesMs.augment).toBeGreaterThan(0);
      expect(variant.fused, name).toBe(fusedExpected[name]);
      expect(variant.memory.leakedTensorsPerStep).toBe(0);
      // Every convolution gradient counts as the backward pass, the fused step's own backward passes
      // over the recorded tape (RCAD + label smoothing) included.
      const convolutionGradients = (variant.profile.topKernelsByPhase as Array<{ kernel: string }>).filter(({ kernel }) => kernel.startsWith('Conv2DBackprop'));
      expect(convolutionGradients.length, name).toBeGreaterThan(0);
      expect(convolutionGradients.map(({ kernel }) => kernel).filter((kernel) => !kernel.endsWith('(backward)')), name).toEqual([]);
    }
    // Two views run two forward passes: more kernels than a single-view ERM of the same model (1.45×
    // since batch norm is one kernel a layer: the update's kernels, the same for both, weigh more).
    const single = await runBenchmark({
      models: [{ id: 'tiny-single', architecture: 'resnet18', width: 2, inputShape: [8, 8, 1], numClasses: 3, rounds: 1, batchSize: 3, mean: [0.286], std: [0.353], variants: ['erm'] }],
      warmup: 1,
      threads: [1],
      torch: false,
    });
    expect(model.variants.erm.memory.kernelCalls).toBeGreaterThan(single.models[0].variants.erm.memory.kernelCalls * 1.3);
    // Every variant of the recipe is timed again at 2 threads, with per-round gains.
    expect(Object.keys(model.ours['2'])).toEqual(['erm', 'rcad', 'rcad+label-smoothing']);
    expect(model.ours['2']['rcad+label-smoothing'].speedUpPerRound.min).toBeLessThanOrEqual(model.ours['2']['rcad+label-smoothing'].speedUpPerRound.max);
    if (pythonInstalled && model.torch.available) {
      expect(Object.keys(model.torch.threads['1'])).toEqual(['erm', 'rcad', 'rcad+label-smoothing']);
      for (const variant of ['erm', 'rcad', 'rcad+label-smoothing']) {
        const perRound = model.oursOverTorchPerRound['1'][variant];
        expect(perRound.min).toBeLessThanOrEqual(perRound.median);
        expect(perRound.median).toBeLessThanOrEqual(perRound.max);
      }
    }
    const table = formatReport(report);
    expect(table).toContain('batch 3, two-view base loss with crop + flip');
    expect(table).toContain('| rcad+label-smoothing |');
  });

  it('rejects an unknown variant by name', async () => {
    await expect(runBenchmark({ models: [], variants: ['rcad', 'dropout'] })).rejects.toThrow(/unknown variant 'dropout'/);
  });

  it('profiles kernels by pass, and self times add up to the time inside kernels', () => {
    const a = tf.tensor2d([[1, 2], [3, 4]]);
    const { result, profile } = profileKernels((label: (stage: string) => void) => {
      label('gradient');
      const gradient = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(x, x)))(a);
      label('plain');
      const sum = tf.add(gradient, a);
      gradient.dispose();
      return sum;
    });
    // d/dx Σx² = 2x, plus x.
    expect(Array.from(result.dataSync())).toEqual([3, 6, 9, 12]);
    result.dispose();
    a.dispose();
    const calls = Object.fromEntries(profile.byKernel.map((entry: { kernel: string; calls: number }) => [entry.kernel, entry.calls]));
    expect(calls.Add).toBeGreaterThanOrEqual(1);
    expect(calls.Multiply).toBeGreaterThanOrEqual(3); // x·x forward, then dy·x twice backward
    expect(profile.byPhaseMs.forward).toBeGreaterThan(0);
    expect(profile.byPhaseMs.backward).toBeGreaterThan(0);
    const selfTotal = profile.byKernel.reduce((total: number, entry: { selfMs: number }) => total + entry.selfMs, 0);
    expect(selfTotal).toBeCloseTo(profile.kernelMs, 6);
    expect(profile.byStageMs.gradient + profile.byStageMs.plain).toBeCloseTo(profile.kernelMs, 6);
    expect(profile.kernelMs).toBeLessThanOrEqual(profile.totalMs);
  });
});

describe('the PyTorch worker where torch is missing or the child dies', () => {
  // Stand-ins for Python: one whose `import torch` fails (a fake package first on PYTHONPATH, so the
  // real torch_step.py answers "unavailable" and exits), and one that exits at once, reading nothing.
  const directory = mkdtempSync(join(tmpdir(), 'regstack-torch-'));
  afterAll(() => rmSync(directory, { recursive: true, force: true }));
  const script = (name: string, body: string) => {
    const path = join(directory, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  };
  mkdirSync(join(directory, 'hidden', 'torch'), { recursive: true });
  writeFileSync(join(directory, 'hidden', 'torch', '__init__.py'), 'raise ImportError("torch is hidden for this test")\n');
  const withoutTorch = script('python-without-torch', `PYTHONPATH='${join(directory, 'hidden')}' exec ${PYTHON} "$@"`);
  const dying = script('python-that-exits', 'exit 3');
  const spec = { architecture: 'small-cnn', width: 2, inputShape: [8, 8, 3], numClasses: 3 };

  // Each start races the child's exit against our writes to its stdin (the request, then close's
  // exit command): an unhandled EPIPE there used to kill the test process about every other run.
  it.skipIf(!pythonInstalled)('reports a Python without torch as a reason, every time, and never crashes on a closed pipe', async () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const started = await TorchWorker.start(spec, { python: withoutTorch }, 4, 0);
      expect(started.worker).toBeUndefined();
      expect(started.reason).toBe('cannot import torch: torch is hidden for this test');
    }
  });

  it('reports a child that exits before answering, every time, and never crashes on a closed pipe', async () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const started = await TorchWorker.start(spec, { python: dying }, 4, 0);
      expect(started.worker).toBeUndefined();
      expect(started.reason).toMatch(/^torch_step\.py( exited with 3|'s pipe failed: .*EPIPE)/);
    }
  });
});
