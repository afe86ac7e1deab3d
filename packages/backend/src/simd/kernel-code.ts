/**
 * The WebAssembly SIMD code of this package's direct convolution kernels, written instruction by
 * instruction (wasm-module.ts encodes it). Two families, each a nest of counted loops around a block of
 * f32x4 accumulators held in locals (registers, once V8 compiles them):
 *
 * - filter gradient: up to 4 input × 8 output channels, summed over the positions of a chunk;
 * - convolution (forward): up to 4 output positions × 8 output channels, summed over the filter's taps.
 *
 * For the convolution, 4 × 8 measured as fast as 2 × 16 and faster than 3 × 12, 4 × 12 and 3 × 16 (more
 * accumulators spill from the 16 xmm registers V8 allocates), and unrolling the tap loop by two made
 * it slower.
 */
import { FunctionBody, I32, V128 } from './wasm-module.js';

/** Each parameter's local index, by name. */
function parameterIndices<Name extends string>(names: readonly Name[]): Record<Name, number> {
  return Object.fromEntries(names.map((name, index) => [name, index])) as Record<Name, number>;
}

/** Input channels per block (1-4 for the remainder) and output channels per block (8, or 4 for the remainder). */
export const CHANNEL_BLOCK = 4;

/** Parameters of every kernel, in order (all i32; pointers and strides in bytes). */
const FILTER_PARAMETERS = ['x', 'dy', 'dw', 'images', 'rows', 'columns', 'xImage', 'xRow', 'xColumn', 'dyPosition', 'dwRow', 'outputBlocks'] as const;

/**
 * Kernel for `inputs` input channels (1-4) and `vectors` × 4 output channels (1 or 2) per block: for each
 * of `outputBlocks` blocks side by side, sums over images × rows × columns positions and adds the sums
 * to dw's `inputs` rows (`dwRow` bytes apart).
 */
export function filterGradientKernel(inputs: number, vectors: number, fused: boolean): FunctionBody {
  const f = new FunctionBody(FILTER_PARAMETERS.map(() => I32));
  const p = parameterIndices(FILTER_PARAMETERS);
  // Counters, pointers and strides (i32).
  const blockCounter = f.local(I32), imageCounter = f.local(I32), rowCounter = f.local(I32), columnCounter = f.local(I32);
  const xImage = f.local(I32), xRow = f.local(I32), xp = f.local(I32), dyp = f.local(I32);
  const dyBlock = f.local(I32), dwBlock = f.local(I32), dwp = f.local(I32);
  const accumulators = Array.from({ length: inputs * vectors }, () => f.local(V128));
  const dyVectors = Array.from({ length: vectors }, () => f.local(V128));
  const broadcast = f.local(V128);
  const blockBytes = 16 * vectors;

  f.get(p.dy).set(dyBlock).get(p.dw).set(dwBlock);
  f.countedLoop(blockCounter, { local: p.outputBlocks }, () => {
    for (const accumulator of accumulators) f.zeros().set(accumulator);
    f.get(p.x).set(xImage).get(dyBlock).set(dyp);
    f.countedLoop(imageCounter, { local: p.images }, () => {
      f.get(xImage).set(xRow);
      f.countedLoop(rowCounter, { local: p.rows }, () => {
        f.get(xRow).set(xp);
        f.countedLoop(columnCounter, { local: p.columns }, () => {
          for (const [v, dyVector] of dyVectors.entries()) f.get(dyp).load(16 * v).set(dyVector);
          for (let i = 0; i < inputs; i++) {
            f.get(xp).loadSplat(4 * i).set(broadcast);
            for (const [v, dyVector] of dyVectors.entries()) {
              const accumulator = accumulators[i * vectors + v]!;
              f.multiplyAccumulate(accumulator, broadcast, dyVector, fused);
            }
          }
          f.increment(xp, { local: p.xColumn }).increment(dyp, { local: p.dyPosition });
        });
        f.increment(xRow, { local: p.xRow });
      });
      f.increment(xImage, { local: p.xImage });
    });
    // dw[i][block] += the block's sums (summed from zero per call: shorter float32 chains).
    f.get(dwBlock).set(dwp);
    for (let i = 0; i < inputs; i++) {
      for (let v = 0; v < vectors; v++) {
        f.get(dwp).get(dwp).load(16 * v).get(accumulators[i * vectors + v]!).addF32x4().store(16 * v);
      }
      f.increment(dwp, { local: p.dwRow });
    }
    f.increment(dyBlock, blockBytes).increment(dwBlock, blockBytes);
  });
  return f;
}

/** Output positions per block (the remainder of a row in blocks of 1-3). */
export const POSITION_BLOCK = 4;

/** Parameters of every convolution kernel, in order (all i32; pointers and strides in bytes). */
const CONVOLUTION_PARAMETERS = [
  'x', 'w', 'y', 'images', 'rows', 'columnBlocks', 'xImage', 'xRow', 'xPosition', 'yImage', 'yRow', 'yPosition',
  'filterRows', 'taps', 'xFilterRow', 'wTap', 'outputBlocks',
] as const;

/**
 * Kernel for `positions` output positions (1-4) side by side in a row and `vectors` × 4 output channels
 * (1 or 2) per block: for each of `outputBlocks` channel blocks, every image × row × column block of
 * the chunk sums `filterRows` rows of `taps` (filter width × input channels) products and writes y.
 */
export function convolutionKernel(positions: number, vectors: number, fused: boolean): FunctionBody {
  const f = new FunctionBody(CONVOLUTION_PARAMETERS.map(() => I32));
  const p = parameterIndices(CONVOLUTION_PARAMETERS);
  // Counters, pointers and strides (i32).
  const blockCounter = f.local(I32), imageCounter = f.local(I32), rowCounter = f.local(I32), columnCounter = f.local(I32);
  const filterRowCounter = f.local(I32), tapCounter = f.local(I32), wBlock = f.local(I32), yBlock = f.local(I32);
  const xImage = f.local(I32), yImage = f.local(I32), xRow = f.local(I32), yRow = f.local(I32);
  const xColumn = f.local(I32), yColumn = f.local(I32), xFilterRow = f.local(I32), xp = f.local(I32);
  const wp = f.local(I32), yp = f.local(I32);
  // positionOffsets[i]: bytes from a block's first position to its i-th; xBlockStep: to the next block.
  const positionOffsets = Array.from({ length: positions }, () => f.local(I32));
  // Counters, pointers and strides (i32).
  const xBlockStep = f.local(I32);

  const accumulators = Array.from({ length: positions * vectors }, () => f.local(V128));
  const wVectors = Array.from({ length: vectors }, () => f.local(V128));
  const broadcast = f.local(V128);

  for (const [index, offset] of positionOffsets.entries()) f.get(p.xPosition).i32(index).mul().set(offset);
  f.get(p.xPosition).i32(positions).mul().set(xBlockStep);

  f.get(p.w).set(wBlock).get(p.y).set(yBlock);
  f.countedLoop(blockCounter, { local: p.outputBlocks }, () => {
    f.get(p.x).set(xImage).get(yBlock).set(yImage);
    f.countedLoop(imageCounter, { local: p.images }, () => {
      f.get(xImage).set(xRow).get(yImage).set(yRow);
      f.countedLoop(rowCounter, { local: p.rows }, () => {
        f.get(xRow).set(xColumn).get(yRow).set(yColumn);
        f.countedLoop(columnCounter, { local: p.columnBlocks }, () => {
          for (const accumulator of accumulators) f.zeros().set(accumulator);
          f.get(xColumn).set(xFilterRow).get(wBlock).set(wp);
          f.countedLoop(filterRowCounter, { local: p.filterRows }, () => {
            f.get(xFilterRow).set(xp);
            f.countedLoop(tapCounter, { local: p.taps }, () => {
              for (const [v, wVector] of wVectors.entries()) f.get(wp).load(16 * v).set(wVector);
              for (let position = 0; position < positions; position++) {
                f.get(xp);
                if (position > 0) f.get(positionOffsets[position]!).add();
                f.loadSplat().set(broadcast);
                for (const [v, wVector] of wVectors.entries()) {
                  const accumulator = accumulators[position * vectors + v]!;
                  f.multiplyAccumulate(accumulator, broadcast, wVector, fused);
                }
              }
              f.increment(xp, 4).increment(wp, { local: p.wTap });
            });
            f.increment(xFilterRow, { local: p.xFilterRow });
          });
          f.get(yColumn).set(yp);
          for (let position = 0; position < positions; position++) {
            for (let v = 0; v < vectors; v++) f.get(yp).get(accumulators[position * vectors + v]!).store(16 * v);
            f.increment(yp, { local: p.yPosition });
          }
          // The next block: yp has already advanced past this one.
          f.increment(xColumn, { local: xBlockStep });
          f.get(yp).set(yColumn);
        });
        f.increment(xRow, { local: p.xRow }).increment(yRow, { local: p.yRow });
      });
      f.increment(xImage, { local: p.xImage }).increment(yImage, { local: p.yImage });
    });
    f.increment(wBlock, 16 * vectors).increment(yBlock, 16 * vectors);
  });
  return f;
}


/**
 * `vectors` × 4 floats of `source` added into `target` (both byte addresses in this memory): how a filter
 * gradient's pieces' partial sums are added up in piece order (memory.ts `sumRegions`), 4 floats an
 * instruction where a JavaScript loop over a shared memory adds one (147,456 floats: 0.23-0.27 ms).
 */
export function addKernel(): FunctionBody {
  const target = 0, source = 1, vectors = 2;
  const f = new FunctionBody([I32, I32, I32]);
  const counter = f.local(I32);
  f.countedLoop(counter, { local: vectors }, () => {
    f.get(target).get(target).load().get(source).load().addF32x4().store();
    f.increment(target, 16).increment(source, 16);
  });
  return f;
}
