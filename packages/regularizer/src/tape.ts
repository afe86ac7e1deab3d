/**
 * One forward pass recorded on TF.js's gradient tape, backpropagated more than once. TF.js's public
 * gradient functions (`tf.grads`, `tf.variableGrads`, `engine.gradients`) record a forward pass and
 * backpropagate it exactly once; the fused step with transformed targets needs two backward passes of
 * one forward (the base loss w.r.t. the weights, the plain cross-entropy w.r.t. the inputs). This
 * module records with the engine's own tape (so every kernel's registered gradient and every
 * `tf.customGrad` is used as TF.js would use it) and walks that tape itself.
 *
 * It relies on the tape as tfjs-core 4.x keeps it (`engine.ts` and `tape.ts` of 4.22): `startTape`
 * and `endTape` on the engine, `state.activeTape` an array of nodes `{ id, kernelName, inputs,
 * outputs, gradient, saved }` whose `gradient(dys)` returns one closure per input, and `saved`
 * tensors kept until the backward pass disposes them. {@link tapeSupported} checks all of it on a
 * small problem before a step relies on it; the fused step falls back to the plain path where it fails.
 */
import * as tf from '@tensorflow/tfjs-core';

/** A node of the engine's tape, as tfjs-core 4.x records it (`addTapeNode`). */
interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  /** Present when the kernel has a gradient; a null dy stands for zeros (the engine makes them). */
  gradient?: (dys: Array<tf.Tensor | null>) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

/** The part of the engine this module uses; `startTape` and `endTape` are private in its types. */
interface TapeEngine {
  state: { gradientDepth: number; activeTape: TapeNode[] | null };
  startTape(): void;
  endTape(): void;
}

/** The engine seen through {@link TapeEngine}, or a sentence saying what is missing. */
function tapeEngine(): TapeEngine | string {
  const engine = tf.engine() as unknown as Partial<TapeEngine>;
  if (typeof engine.startTape !== 'function' || typeof engine.endTape !== 'function') return 'the engine has no startTape/endTape';
  if (engine.state === undefined || typeof engine.state.gradientDepth !== 'number') return 'the engine state has no gradientDepth';
  return engine as TapeEngine;
}

/** A recorded forward pass: its result, and backward passes over its tape until {@link Recording.release}. */
export interface Recording<T> {
  readonly result: T;
  /**
   * ∂y/∂x for each of `xs` (undefined where y does not depend on x), through the recorded tape, with
   * dy = 1. Only the tape's nodes on a path from `xs` to `y` run, and each node's gradient only for
   * its inputs that depend on `xs` (so asking for the inputs alone skips the weights' gradients, e.g.
   * the convolutions' filter gradients). Every intermediate tensor is freed.
   */
  backward(y: tf.Scalar, xs: readonly tf.Tensor[]): Array<tf.Tensor | undefined>;
  /** Frees what the tape saved for backward passes. Idempotent. */
  release(): void;
}

/**
 * Runs `forward` in a tidy on a fresh tape and keeps the tape for {@link Recording.backward}. Call it
 * outside any tape (the fused step is). When `forward` throws, the tape is freed.
 * @throws Error when the engine's tape is not as tfjs-core 4.x keeps it (see {@link tapeSupported}).
 */
export function recordForward<T extends tf.TensorContainer>(forward: () => T): Recording<T> {
  const engine = tapeEngine();
  if (typeof engine === 'string') throw new Error(`internal: TF.js's tape cannot be recorded here (${engine})`);
  if (engine.state.gradientDepth !== 0) throw new Error('internal: recordForward must run outside any gradient tape');
  engine.startTape();
  const tape = engine.state.activeTape;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    for (const node of tape ?? []) tf.dispose(node.saved ?? []);
    if (engine.state.activeTape === tape) engine.state.activeTape = null;
  };
  let result: T;
  try {
    if (!Array.isArray(tape) || tape.length !== 0 || (engine.state.gradientDepth as number) !== 1) throw new Error("internal: the engine did not start a fresh tape (tfjs-core's tape is not as 4.x keeps it)");
    // Scopes named as tfjs-core's own gradients names them ('forward', 'backward'), so that whatever
    // reads the engine's scope stack (the bench's kernel profile, tf.profile) attributes these passes alike.
    result = tf.tidy('forward', forward);
  } catch (error) {
    engine.endTape();
    release();
    throw error;
  }
  engine.endTape();
  // The nodes are this recording's now: a later gradient at depth 0 starts a fresh tape, which would
  // drop them with their saved tensors unfreed.
  if (engine.state.activeTape === tape) engine.state.activeTape = null;
  const nodes = tape as TapeNode[];
  const malformed = nodes.find((node) => typeof node?.id !== 'number' || typeof node.inputs !== 'object' || !Array.isArray(node.outputs));
  if (malformed !== undefined) {
    tf.dispose(result);
    release();
    throw new Error("internal: a tape node is not as tfjs-core 4.x records it ({ id, inputs, outputs, gradient, saved })");
  }
  return {
    result,
    backward: (y, xs) => {
      if (released) throw new Error('internal: the recording was released');
      return backpropagate(nodes, y, xs);
    },
    release,
  };
}

/** Reverse-mode differentiation over `nodes` (in the order they were recorded), dy = 1 at `y`. */
function backpropagate(nodes: readonly TapeNode[], y: tf.Scalar, xs: readonly tf.Tensor[]): Array<tf.Tensor | undefined> {
  // Tensors that depend on xs, found forwards; then the nodes whose outputs reach y, found backwards.
  const dependsOnX = new Set(xs.map((x) => x.id));
  const fromX = nodes.filter((node) => {
    if (!Object.values(node.inputs).some((input) => dependsOnX.has(input.id))) return false;
    for (const output of node.outputs) dependsOnX.add(output.id);
    return true;
  });
  const reachesY = new Set([y.id]);
  const path: TapeNode[] = [];
  for (let i = fromX.length - 1; i >= 0; i--) {
    const node = fromX[i]!;
    if (!node.outputs.some((output) => reachesY.has(output.id))) continue;
    for (const input of Object.values(node.inputs)) reachesY.add(input.id);
    path.push(node); // last recorded first: the order the backward pass visits them
  }
  return tf.tidy('backward', () => {
    const gradients = new Map<number, tf.Tensor>([[y.id, tf.onesLike(y)]]);
    for (const node of path) {
      if (node.gradient === undefined) throw new Error(`Cannot differentiate ${node.kernelName}: TF.js has no gradient registered for it`);
      const closures = node.gradient(node.outputs.map((output) => gradients.get(output.id) ?? null));
      for (const [name, input] of Object.entries(node.inputs)) {
        // Only the inputs that depend on xs: the others' gradients are never computed.
        if (!dependsOnX.has(input.id)) continue;
        const closure = closures[name];
        if (typeof closure !== 'function') throw new Error(`internal: ${node.kernelName}'s gradient has no closure for its input '${name}'`);
        const dx = tf.tidy(closure);
        if (dx.dtype !== 'float32' || !tf.util.arraysEqual(dx.shape, input.shape)) {
          throw new Error(`internal: ${node.kernelName}'s gradient for '${name}' is ${dx.dtype} [${dx.shape}], expected float32 [${input.shape}]`);
        }
        const earlier = gradients.get(input.id);
        if (earlier === undefined) gradients.set(input.id, dx);
        else {
          gradients.set(input.id, tf.add(earlier, dx));
          earlier.dispose(); // the tidy frees dx
        }
      }
    }
    return xs.map((x) => gradients.get(x.id));
  });
}

let supported: boolean | undefined;

/**
 * Whether {@link recordForward} works with this TF.js: checked once, on a small problem whose two
 * backward passes over one tape have known gradients and must leave no tensor behind. The fused step
 * with transformed targets needs it; where it fails, the stack takes the plain path (`fusion: 'plain'`).
 */
export function tapeSupported(): boolean {
  if (supported !== undefined) return supported;
  if (typeof tapeEngine() === 'string') return (supported = false);
  // Inside a tape the probe would be recorded there: not an answer to keep (the fused step runs outside).
  if (tf.engine().state.gradientDepth !== 0) return false;
  supported = false;
  const before = tf.memory().numTensors;
  const x = tf.tensor1d([1, 2, 3]);
  const w = tf.scalar(3);
  let recording: Recording<{ squares: tf.Scalar; sum: tf.Scalar }> | undefined;
  try {
    // squares = Σ (w·x)², sum = Σ w·x: ∂squares/∂x = 2w²x, ∂squares/∂w = 2wΣx², ∂sum/∂x = w.
    recording = recordForward(() => {
      const product = tf.mul(x, w);
      return { squares: tf.sum(tf.square(product)) as tf.Scalar, sum: tf.sum(product) as tf.Scalar };
    });
    const first = recording.backward(recording.result.squares, [x, w]);
    const second = recording.backward(recording.result.sum, [x]);
    const values = [...first, ...second].map((gradient) => (gradient ? Array.from(gradient.dataSync()) : []));
    tf.dispose([...first, ...second].filter((gradient): gradient is tf.Tensor => gradient !== undefined));
    const expected = [[18, 36, 54], [84], [3, 3, 3]];
    supported = JSON.stringify(values) === JSON.stringify(expected);
  } catch {
    supported = false;
  } finally {
    recording?.release();
    if (recording) tf.dispose(recording.result);
    tf.dispose([x, w]);
  }
  if (tf.memory().numTensors !== before) supported = false;
  return supported;
}
