// Where a training step's time goes, kernel by kernel.
//
// tf.profile() cannot answer this here: @regstack/backend's conv-gradient kernels are themselves made of
// tf ops, so tf.profile lists both the outer kernel and its inner ones and their times add up to more
// than the step. This wraps the engine's single kernel entry point instead and keeps, per kernel name,
// its SELF time (its own time minus the kernels it ran inside itself). On the wasm and cpu backends
// kernels run synchronously, so wall-clock time around a kernel is that kernel's time.
import * as tf from '@tensorflow/tfjs-core';

/**
 * Which pass a kernel belongs to: the engine runs the taped function in a scope named `forward` and
 * the gradient functions in one named `backward` (tfjs-core engine.gradients); anything else
 * (optimizer update, clipping, the stack's bookkeeping) is `other`.
 * @param {{ state: { scopeStack: Array<{ name: string }> } }} engine
 * @returns {'forward' | 'backward' | 'other'}
 */
function currentPhase(engine) {
  const scopes = engine.state.scopeStack;
  for (let index = scopes.length - 1; index >= 0; index--) {
    const name = scopes[index].name;
    if (name === 'backward' || name === 'forward') return name;
  }
  return 'other';
}

/**
 * @typedef {object} KernelProfile
 * @property {number} totalMs Wall time of `run`.
 * @property {number} kernelMs Time inside top-level kernels.
 * @property {number} outsideKernelsMs Time in JavaScript between kernels (engine bookkeeping, tape, glue).
 * @property {number} kernelCalls Kernel invocations, nested ones included.
 * @property {number} peakBytes Most bytes held by live tensors after any kernel.
 * @property {Array<{ kernel: string, selfMs: number, calls: number }>} byKernel Self time per kernel name, largest first.
 * @property {Array<{ kernel: string, selfMs: number, calls: number }>} byKernelAndPhase The same per kernel and pass, e.g. `Conv2D (backward)`.
 * @property {Record<string, number>} byPhaseMs Self time per pass: forward, backward, other.
 * @property {Record<string, number>} byStageMs Self time per labelled stage of the step (see `label`).
 */

/**
 * Runs `run` once with every kernel invocation timed. `run` receives `label(stage)`, which tags the
 * kernels that follow (e.g. `prepare`, `gradients`, `update`).
 * @template T
 * @param {(label: (stage: string) => void) => T} run
 * @returns {{ result: T, profile: KernelProfile }}
 */
export function profileKernels(run) {
  const engine = /** @type {any} */ (tf.engine());
  const original = engine.runKernelFunc;
  /** @type {Map<string, { selfMs: number, calls: number }>} */
  const kernels = new Map();
  /** @type {Map<string, { selfMs: number, calls: number }>} */
  const kernelsByPhase = new Map();
  const byPhaseMs = { forward: 0, backward: 0, other: 0 };
  /** @type {Record<string, number>} */
  const byStageMs = {};
  /** Time spent in children, one entry per kernel currently running. */
  const childTime = [];
  let stage = 'unlabelled';
  let kernelMs = 0;
  let kernelCalls = 0;
  let peakBytes = engine.state.numBytes;

  engine.runKernelFunc = function profiledRunKernelFunc(parameters) {
    // customGrad ops carry no kernel name: they run in a scope named after the op.
    const name = parameters.kernelName ?? `custom:${engine.state.activeScope?.name ?? ''}`;
    const phase = currentPhase(engine);
    childTime.push(0);
    const start = performance.now();
    try {
      return original.call(this, parameters);
    } finally {
      const elapsed = performance.now() - start;
      const self = elapsed - childTime.pop();
      if (childTime.length > 0) childTime[childTime.length - 1] += elapsed;
      else kernelMs += elapsed;
      const entry = kernels.get(name) ?? { selfMs: 0, calls: 0 };
      entry.selfMs += self;
      entry.calls += 1;
      kernels.set(name, entry);
      const phaseKey = `${name} (${phase})`;
      const phaseEntry = kernelsByPhase.get(phaseKey) ?? { selfMs: 0, calls: 0 };
      phaseEntry.selfMs += self;
      phaseEntry.calls += 1;
      kernelsByPhase.set(phaseKey, phaseEntry);
      byPhaseMs[phase] += self;
      byStageMs[stage] = (byStageMs[stage] ?? 0) + self;
      kernelCalls += 1;
      peakBytes = Math.max(peakBytes, engine.state.numBytes);
    }
  };
  const start = performance.now();
  let result;
  try {
    result = run((next) => {
      stage = next;
    });
  } finally {
    engine.runKernelFunc = original;
  }
  const totalMs = performance.now() - start;
  const sorted = (map) =>
    [...map.entries()].map(([kernel, { selfMs, calls }]) => ({ kernel, selfMs, calls })).sort((a, b) => b.selfMs - a.selfMs);
  const byKernel = sorted(kernels);
  const byKernelAndPhase = sorted(kernelsByPhase);
  return {
    result,
    profile: { totalMs, kernelMs, outsideKernelsMs: totalMs - kernelMs, kernelCalls, peakBytes, byKernel, byKernelAndPhase, byPhaseMs, byStageMs },
  };
}
