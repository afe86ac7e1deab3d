/**
 * The WebAssembly SIMD code of the Winograd F(2×2, 3×3) convolution (winograd.ts; Lavin & Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2015), written instruction by instruction like the
 * direct kernels (kernel-code.ts). A tile is 2 × 2 outputs, computed from the 4 × 4 window of x above
 * it as Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, summed over the input channels, with
 *
 *     Bᵀ = | 1  0 −1  0 |     G = | 1    0    0  |     Aᵀ = | 1  1  1  0 |
 *          | 0  1  1  0 |         | ½    ½    ½  |          | 0  1 −1 −1 |
 *          | 0 −1  1  0 |         | ½   −½    ½  |
 *          | 0  1  0 −1 |         | 0    0    1  |
 *
 * The element-wise product summed over the input channels is 16 independent matrix products
 * M[k] = V[k] · U[k] (tiles × input channels times input × output channels), one per position k of the
 * 4 × 4 transformed tile: that is where the work goes, 16 multiply-adds per tile and channel pair where
 * the direct loop needs 36 (2.25× fewer). Every kernel works on 4 channels per f32x4.
 */
import { FunctionBody, I32, V128 } from './wasm-module.js';

/** Each parameter's local index, by name. */
function parameterIndices<Name extends string>(names: readonly Name[]): Record<Name, number> {
  return Object.fromEntries(names.map((name, index) => [name, index])) as Record<Name, number>;
}

type Operation = 'add' | 'sub';

function apply(f: FunctionBody, operation: Operation): void {
  if (operation === 'add') f.addF32x4();
  else f.subF32x4();
}

/**
 * Rows of Bᵀ as `first ± second` (Bᵀ's row i is e_first ± e_second): the same pattern serves the
 * columns of B, so V = Bᵀ d B is this applied to rows, then to columns.
 */
const B_TRANSPOSED: ReadonlyArray<readonly [number, Operation, number]> = [
  [0, 'sub', 2],
  [1, 'add', 2],
  [2, 'sub', 1],
  [1, 'sub', 3],
];

/** Parameters of the input transform, in order (all i32; pointers and strides in bytes). */
const INPUT_PARAMETERS = ['x', 'v', 'tiles', 'groups', 'xRow', 'xColumn', 'xTile', 'vMatrix'] as const;

/**
 * Input transform of `tiles` tiles side by side (x's windows `xTile` bytes apart) × `groups` groups of
 * 4 input channels: V[k] = (Bᵀ d B)[k] for k = 4i + j, written at `v` + k·`vMatrix`, each tile's
 * channels after the previous tile's (V[k] is [tiles][input channels]).
 */
export function winogradInputKernel(): FunctionBody {
  const f = new FunctionBody(INPUT_PARAMETERS.map(() => I32));
  const p = parameterIndices(INPUT_PARAMETERS);
  const tileCounter = f.local(I32), groupCounter = f.local(I32), tile = f.local(I32), xp = f.local(I32), vp = f.local(I32), vk = f.local(I32);
  const rows = Array.from({ length: 4 }, () => f.local(I32));
  const columnTwo = f.local(I32), columnThree = f.local(I32);
  const t = Array.from({ length: 4 }, () => f.local(V128));

  f.get(p.xColumn).i32(2).mul().set(columnTwo);
  f.get(p.xColumn).i32(3).mul().set(columnThree);
  const load = (row: number, column: number) => {
    f.get(rows[row]!);
    if (column > 0) f.get([0, p.xColumn, columnTwo, columnThree][column]!).add();
    f.load();
  };
  f.get(p.x).set(tile).get(p.v).set(vp);
  f.countedLoop(tileCounter, { local: p.tiles }, () => {
    f.get(tile).set(xp);
    f.countedLoop(groupCounter, { local: p.groups }, () => {
      f.get(xp).set(rows[0]!);
      for (let row = 1; row < 4; row++) f.get(rows[row - 1]!).get(p.xRow).add().set(rows[row]!);
      f.get(vp).set(vk);
      for (const [first, rowOperation, second] of B_TRANSPOSED) {
        // Row i of Bᵀ d, one vector per column j …
        for (let column = 0; column < 4; column++) {
          load(first, column);
          load(second, column);
          apply(f, rowOperation);
          f.set(t[column]!);
        }
        // … times B: row i of V, stored at k = 4i, …, 4i + 3.
        for (const [left, columnOperation, right] of B_TRANSPOSED) {
          f.get(vk).get(t[left]!).get(t[right]!);
          apply(f, columnOperation);
          f.store();
          f.increment(vk, { local: p.vMatrix });
        }
      }
      f.increment(xp, 16).increment(vp, 16);
    });
    f.increment(tile, { local: p.xTile });
  });
  return f;
}

/** Parameters of the output transform, in order (all i32; pointers and strides in bytes). */
const OUTPUT_PARAMETERS = ['m', 'y', 'tiles', 'groups', 'mMatrix', 'yRow', 'yColumn', 'yTile'] as const;

/**
 * Output transform of `tiles` tiles side by side × `groups` groups of 4 output channels: the 2 × 2
 * outputs Aᵀ M A of M[k] (at `m` + k·`mMatrix`, [tiles][output channels]) written to y, the tile's
 * first output at its pointer, the others `yColumn`, `yRow` and both further, tiles `yTile` apart.
 */
export function winogradOutputKernel(): FunctionBody {
  const f = new FunctionBody(OUTPUT_PARAMETERS.map(() => I32));
  const p = parameterIndices(OUTPUT_PARAMETERS);
  const tileCounter = f.local(I32), groupCounter = f.local(I32), tile = f.local(I32), yp = f.local(I32), mp = f.local(I32), mk = f.local(I32);
  const rowColumn = f.local(I32);
  // Aᵀ M, row 0 (M's rows 0 + 1 + 2) and row 1 (M's rows 1 − 2 − 3), one vector per column j.
  const top = Array.from({ length: 4 }, () => f.local(V128));
  const bottom = Array.from({ length: 4 }, () => f.local(V128));
  const value = f.local(V128);

  f.get(p.yRow).get(p.yColumn).add().set(rowColumn);
  f.get(p.y).set(tile).get(p.m).set(mp);
  f.countedLoop(tileCounter, { local: p.tiles }, () => {
    f.get(tile).set(yp);
    f.countedLoop(groupCounter, { local: p.groups }, () => {
      f.get(mp).set(mk);
      for (let row = 0; row < 4; row++) {
        for (let column = 0; column < 4; column++) {
          f.get(mk).load().set(value);
          f.increment(mk, { local: p.mMatrix });
          const sum = top[column]!, difference = bottom[column]!;
          if (row === 0) f.get(value).set(sum);
          if (row === 1) f.get(sum).get(value).addF32x4().set(sum).get(value).set(difference);
          if (row === 2) f.get(sum).get(value).addF32x4().set(sum).get(difference).get(value).subF32x4().set(difference);
          if (row === 3) f.get(difference).get(value).subF32x4().set(difference);
        }
      }
      // (Aᵀ M) A: columns 0 + 1 + 2 and 1 − 2 − 3 of each row.
      for (const [rowVectors, rowOffset] of [
        [top, undefined],
        [bottom, p.yRow],
      ] as const) {
        f.get(yp);
        if (rowOffset !== undefined) f.get(rowOffset).add();
        f.get(rowVectors[0]!).get(rowVectors[1]!).addF32x4().get(rowVectors[2]!).addF32x4().store();
        f.get(yp).get(rowOffset === undefined ? p.yColumn : rowColumn).add();
        f.get(rowVectors[1]!).get(rowVectors[2]!).subF32x4().get(rowVectors[3]!).subF32x4().store();
      }
      f.increment(mp, 16).increment(yp, 16);
    });
    f.increment(tile, { local: p.yTile });
  });
  return f;
}

/** Parameters of the filter transform, in order (all i32; pointers and strides in bytes). */
const FILTER_PARAMETERS = ['w', 'u', 'count', 'wTap', 'uMatrix'] as const;

/**
 * U = G g Gᵀ of one vector of (input, output) channel pairs, written into `f`: `tap(row, column)` pushes
 * tap (row, column) of g; U[k] is stored at `uk` + k·`uMatrix` (`uk` is advanced past all 16).
 */
function filterTransform(f: FunctionBody, half: number, t: readonly number[], uk: number, uMatrix: number, tap: (row: number, column: number) => void): void {
  /** G's rows applied to three vectors pushed by `item(0..2)`, row `row`, onto the stack. */
  const applyG = (row: number, item: (index: number) => void) => {
    if (row === 0) item(0);
    else if (row === 3) item(2);
    else {
      item(0);
      item(1);
      if (row === 1) f.addF32x4();
      else f.subF32x4();
      item(2);
      f.addF32x4().get(half).mulF32x4();
    }
  };
  for (let row = 0; row < 4; row++) {
    // Row `row` of G g …
    for (let column = 0; column < 3; column++) {
      applyG(row, (index) => tap(index, column));
      f.set(t[column]!);
    }
    // … times Gᵀ: row `row` of U, stored at k = 4·row, …, 4·row + 3.
    for (let column = 0; column < 4; column++) {
      f.get(uk);
      applyG(column, (index) => f.get(t[index]!));
      f.store();
      f.increment(uk, { local: uMatrix });
    }
  }
}

/**
 * Filter transform U = G g Gᵀ of `count` vectors of 4 (input, output) channel pairs: the 3 × 3 taps of
 * pair block n at `w` + 16n + (3r + c)·`wTap`, U[k] at `u` + 16n + k·`uMatrix`.
 */
export function winogradFilterKernel(): FunctionBody {
  const f = new FunctionBody(FILTER_PARAMETERS.map(() => I32));
  const p = parameterIndices(FILTER_PARAMETERS);
  const counter = f.local(I32), wp = f.local(I32), up = f.local(I32), uk = f.local(I32);
  const taps = Array.from({ length: 9 }, () => f.local(I32));
  const half = f.local(V128);
  const t = Array.from({ length: 3 }, () => f.local(V128));

  f.i32(0).set(taps[0]!);
  for (let tap = 1; tap < 9; tap++) f.get(taps[tap - 1]!).get(p.wTap).add().set(taps[tap]!);
  f.constF32x4(0.5).set(half);
  f.get(p.w).set(wp).get(p.u).set(up);
  f.countedLoop(counter, { local: p.count }, () => {
    f.get(up).set(uk);
    filterTransform(f, half, t, uk, p.uMatrix, (row, column) => f.get(wp).get(taps[3 * row + column]!).add().load());
    f.increment(wp, 16).increment(up, 16);
  });
  return f;
}

/** Parameters of the flipped filter transform, in order (all i32; pointers and strides in bytes). */
const FLIPPED_FILTER_PARAMETERS = ['w', 'u', 'inputBlocks', 'outputBlocks', 'wRow', 'wTap', 'uRow', 'uMatrix'] as const;

/** i8x16.shuffle lanes, as float lanes of the two vectors (0-3 the first, 4-7 the second). */
const floatLanes = (lanes: readonly number[]): number[] => lanes.flatMap((lane) => [4 * lane, 4 * lane + 1, 4 * lane + 2, 4 * lane + 3]);
/** [a0, b0, a1, b1], [a2, b2, a3, b3], [a0, a1, b0, b1], [a2, a3, b2, b3]: two rounds make a 4 × 4 transpose. */
const INTERLEAVE_LOW = floatLanes([0, 4, 1, 5]);
const INTERLEAVE_HIGH = floatLanes([2, 6, 3, 7]);
const PAIRS_LOW = floatLanes([0, 1, 4, 5]);
const PAIRS_HIGH = floatLanes([2, 3, 6, 7]);

/**
 * The filter transform of a stride-1 input gradient, U = G g Gᵀ with g the forward filter flipped in
 * both spatial axes and its channel axes swapped, read straight from the forward filter: tap (r, c) of
 * this convolution is the forward's tap (2 − r, 2 − c), `[outputs][inputs]` (row o at `w` +
 * (8 − 3r − c)·`wTap` + o·`wRow`). Per block of 4 input × 4 output channels it loads 4 rows of each tap,
 * transposes them with 8 shuffles, and transforms the 4 input channels' vectors as
 * {@link winogradFilterKernel} does (the same values and operations, so the same U bit for bit). U[k] of
 * input channel i, outputs o…o+3, at `u` + i·`uRow` + 4o + k·`uMatrix`.
 */
export function winogradFlippedFilterKernel(): FunctionBody {
  const f = new FunctionBody(FLIPPED_FILTER_PARAMETERS.map(() => I32));
  const p = parameterIndices(FLIPPED_FILTER_PARAMETERS);
  const inputCounter = f.local(I32), outputCounter = f.local(I32);
  const columnStart = f.local(I32), block = f.local(I32), uColumn = f.local(I32), up = f.local(I32), uk = f.local(I32);
  // (8 − tap)·wTap: this convolution's tap `tap` is the forward's tap 8 − tap.
  const tapOffsets = Array.from({ length: 9 }, () => f.local(I32));
  // 1, 2, 3 and 4 rows of w and of U.
  const wRows = Array.from({ length: 4 }, () => f.local(I32));
  const uRows = Array.from({ length: 4 }, () => f.local(I32));
  const half = f.local(V128);
  const t = Array.from({ length: 3 }, () => f.local(V128));
  const rows = Array.from({ length: 4 }, () => f.local(V128));
  const interleaved = Array.from({ length: 4 }, () => f.local(V128));
  // taps[4·tap + i]: tap `tap` of input channel i of the block, its 4 output channels.
  const taps = Array.from({ length: 36 }, () => f.local(V128));

  f.i32(0).set(tapOffsets[8]!);
  for (let tap = 7; tap >= 0; tap--) f.get(tapOffsets[tap + 1]!).get(p.wTap).add().set(tapOffsets[tap]!);
  for (const [step, multiples] of [
    [p.wRow, wRows],
    [p.uRow, uRows],
  ] as const) {
    f.get(step).set(multiples[0]!);
    for (let multiple = 1; multiple < 4; multiple++) f.get(multiples[multiple - 1]!).get(step).add().set(multiples[multiple]!);
  }
  f.constF32x4(0.5).set(half);
  f.get(p.w).set(columnStart).get(p.u).set(uColumn);
  f.countedLoop(inputCounter, { local: p.inputBlocks }, () => {
    f.get(columnStart).set(block).get(uColumn).set(up);
    f.countedLoop(outputCounter, { local: p.outputBlocks }, () => {
      for (let tap = 0; tap < 9; tap++) {
        // Rows o…o+3 of the forward's tap, 4 input channels each …
        for (let row = 0; row < 4; row++) {
          f.get(block).get(tapOffsets[tap]!).add();
          if (row > 0) f.get(wRows[row - 1]!).add();
          f.load().set(rows[row]!);
        }
        // … transposed: input channel i's 4 output channels.
        f.get(rows[0]!).get(rows[1]!).shuffle(INTERLEAVE_LOW).set(interleaved[0]!);
        f.get(rows[0]!).get(rows[1]!).shuffle(INTERLEAVE_HIGH).set(interleaved[1]!);
        f.get(rows[2]!).get(rows[3]!).shuffle(INTERLEAVE_LOW).set(interleaved[2]!);
        f.get(rows[2]!).get(rows[3]!).shuffle(INTERLEAVE_HIGH).set(interleaved[3]!);
        f.get(interleaved[0]!).get(interleaved[2]!).shuffle(PAIRS_LOW).set(taps[4 * tap]!);
        f.get(interleaved[0]!).get(interleaved[2]!).shuffle(PAIRS_HIGH).set(taps[4 * tap + 1]!);
        f.get(interleaved[1]!).get(interleaved[3]!).shuffle(PAIRS_LOW).set(taps[4 * tap + 2]!);
        f.get(interleaved[1]!).get(interleaved[3]!).shuffle(PAIRS_HIGH).set(taps[4 * tap + 3]!);
      }
      for (let input = 0; input < 4; input++) {
        f.get(up);
        if (input > 0) f.get(uRows[input - 1]!).add();
        f.set(uk);
        filterTransform(f, half, t, uk, p.uMatrix, (row, column) => f.get(taps[4 * (3 * row + column) + input]!));
      }
      f.increment(block, { local: wRows[3]! }).increment(up, 16);
    });
    f.increment(columnStart, 16).increment(uColumn, { local: uRows[3]! });
  });
  return f;
}

/** Parameters of the matrix-product kernel, in order (all i32; pointers and strides in bytes). */
const GEMM_PARAMETERS = [
  'v', 'u', 'm', 'matrices', 'positionBlocks', 'vMatrix', 'uMatrix', 'mMatrix', 'taps', 'vPosition', 'uTap', 'mPosition', 'outputBlocks',
] as const;

/**
 * Matrix products M[k] = V[k] · U[k] for `matrices` values of k, in blocks of `positions` rows of V
 * (tiles, 1-4) × `vectors` × 4 columns of U (output channels, 1 or 2) held in registers, as the direct
 * convolution kernel does for positions × channels, summed over `taps` input channels. `outputBlocks`
 * channel blocks side by side, `positionBlocks` tile blocks one after the other.
 */
export function winogradGemmKernel(positions: number, vectors: number, fused: boolean): FunctionBody {
  const f = new FunctionBody(GEMM_PARAMETERS.map(() => I32));
  const p = parameterIndices(GEMM_PARAMETERS);
  const matrixCounter = f.local(I32), blockCounter = f.local(I32), positionCounter = f.local(I32), tapCounter = f.local(I32);
  const vBase = f.local(I32), uBase = f.local(I32), mBase = f.local(I32), uBlock = f.local(I32), mBlock = f.local(I32);
  const vColumn = f.local(I32), mColumn = f.local(I32), vp = f.local(I32), up = f.local(I32), mp = f.local(I32);
  const positionOffsets = Array.from({ length: positions }, () => f.local(I32));
  const vBlockStep = f.local(I32);
  const accumulators = Array.from({ length: positions * vectors }, () => f.local(V128));
  const uVectors = Array.from({ length: vectors }, () => f.local(V128));
  const broadcast = f.local(V128);

  for (const [index, offset] of positionOffsets.entries()) f.get(p.vPosition).i32(index).mul().set(offset);
  f.get(p.vPosition).i32(positions).mul().set(vBlockStep);
  f.get(p.v).set(vBase).get(p.u).set(uBase).get(p.m).set(mBase);
  f.countedLoop(matrixCounter, { local: p.matrices }, () => {
    f.get(uBase).set(uBlock).get(mBase).set(mBlock);
    f.countedLoop(blockCounter, { local: p.outputBlocks }, () => {
      f.get(vBase).set(vColumn).get(mBlock).set(mColumn);
      f.countedLoop(positionCounter, { local: p.positionBlocks }, () => {
        for (const accumulator of accumulators) f.zeros().set(accumulator);
        f.get(vColumn).set(vp).get(uBlock).set(up);
        f.countedLoop(tapCounter, { local: p.taps }, () => {
          for (const [index, uVector] of uVectors.entries()) f.get(up).load(16 * index).set(uVector);
          for (let position = 0; position < positions; position++) {
            f.get(vp);
            if (position > 0) f.get(positionOffsets[position]!).add();
            f.loadSplat().set(broadcast);
            for (const [index, uVector] of uVectors.entries()) f.multiplyAccumulate(accumulators[position * vectors + index]!, broadcast, uVector, fused);
          }
          f.increment(vp, 4).increment(up, { local: p.uTap });
        });
        f.get(mColumn).set(mp);
        for (let position = 0; position < positions; position++) {
          for (let index = 0; index < vectors; index++) f.get(mp).get(accumulators[position * vectors + index]!).store(16 * index);
          f.increment(mp, { local: p.mPosition });
        }
        f.increment(vColumn, { local: vBlockStep });
        f.get(mp).set(mColumn);
      });
      f.increment(uBlock, 16 * vectors).increment(mBlock, 16 * vectors);
    });
    f.increment(vBase, { local: p.vMatrix }).increment(uBase, { local: p.uMatrix }).increment(mBase, { local: p.mMatrix });
  });
  return f;
}

/*
 * The filter gradient by F(2×2, 3×3) transposed (winograd-filter-gradient.ts). Differentiating
 * Y = Aᵀ [U ⊙ V] A with respect to g in U = G g Gᵀ gives, summed over the tiles t,
 *
 *     dW = Gᵀ [Σ_t V_t ⊙ (A dY_t Aᵀ)] G,    A dY Aᵀ from a tile's 2 × 2 output gradient dY,
 *
 * with V_t = Bᵀ d_t B the forward's input transform (winogradInputKernel). A's rows are (1, 0),
 * (1, 1), (1, −1), (0, −1); the kernels below use (0, 1) for the last, which flips the sign of the
 * transformed gradient's last row and column, and undo it with G's last row (0, 0, −1) at the end:
 * one subtraction fewer per tile and no negation.
 */

/** Parameters of the output-gradient transform, in order (all i32; pointers and strides in bytes). */
const GRADIENT_PARAMETERS = ['dy', 'w', 'tiles', 'groups', 'dyRow', 'dyColumn', 'dyTile', 'wMatrix'] as const;

/**
 * Output-gradient transform of `tiles` tiles side by side (dy's 2 × 2 tiles `dyTile` bytes apart) ×
 * `groups` groups of 4 output channels: W[k] = (Ã dY Ãᵀ)[k] for k = 4i + j (Ã: A with its last row's
 * sign flipped), written at `w` + k·`wMatrix`, each tile's channels after the previous tile's (W[k] is
 * [tiles][output channels]).
 */
export function winogradGradientKernel(): FunctionBody {
  const f = new FunctionBody(GRADIENT_PARAMETERS.map(() => I32));
  const p = parameterIndices(GRADIENT_PARAMETERS);
  const tileCounter = f.local(I32), groupCounter = f.local(I32), tile = f.local(I32), dyp = f.local(I32), wp = f.local(I32), wk = f.local(I32);
  const rowColumn = f.local(I32);
  // dY's 2 × 2 values, then Ã dY's 4 rows of 2.
  const d = Array.from({ length: 4 }, () => f.local(V128));
  const rows = Array.from({ length: 8 }, () => f.local(V128));

  f.get(p.dyRow).get(p.dyColumn).add().set(rowColumn);
  f.get(p.dy).set(tile).get(p.w).set(wp);
  /** Ã's row `row` applied to the two values `first` and `second` (locals), onto the stack. */
  const applyA = (row: number, first: number, second: number) => {
    if (row === 0) f.get(first);
    else if (row === 3) f.get(second);
    else {
      f.get(first).get(second);
      if (row === 1) f.addF32x4();
      else f.subF32x4();
    }
  };
  f.countedLoop(tileCounter, { local: p.tiles }, () => {
    f.get(tile).set(dyp);
    f.countedLoop(groupCounter, { local: p.groups }, () => {
      f.get(dyp).load().set(d[0]!);
      f.get(dyp).get(p.dyColumn).add().load().set(d[1]!);
      f.get(dyp).get(p.dyRow).add().load().set(d[2]!);
      f.get(dyp).get(rowColumn).add().load().set(d[3]!);
      for (let row = 0; row < 4; row++) {
        for (let column = 0; column < 2; column++) {
          applyA(row, d[column]!, d[2 + column]!);
          f.set(rows[2 * row + column]!);
        }
      }
      f.get(wp).set(wk);
      for (let row = 0; row < 4; row++) {
        for (let column = 0; column < 4; column++) {
          f.get(wk);
          applyA(column, rows[2 * row]!, rows[2 * row + 1]!);
          f.store();
          f.increment(wk, { local: p.wMatrix });
        }
      }
      f.increment(dyp, 16).increment(wp, 16);
    });
    f.increment(tile, { local: p.dyTile });
  });
  return f;
}

/** Parameters of the filter-gradient output transform, in order (all i32; pointers and strides in bytes). */
const FILTER_GRADIENT_PARAMETERS = ['m', 'dw', 'count', 'mMatrix', 'dwTap'] as const;

/**
 * Filter-gradient output transform dW = G̃ᵀ M G̃ (G̃: G with its last row's sign flipped, see above) of
 * `count` vectors of 4 (input, output) channel pairs: M[k] of pair block n at `m` + 16n + k·`mMatrix`,
 * the 3 × 3 taps at `dw` + 16n + (3r + c)·`dwTap`.
 */
export function winogradFilterGradientKernel(): FunctionBody {
  const f = new FunctionBody(FILTER_GRADIENT_PARAMETERS.map(() => I32));
  const p = parameterIndices(FILTER_GRADIENT_PARAMETERS);
  const counter = f.local(I32), mp = f.local(I32), dwp = f.local(I32), mk = f.local(I32), tap = f.local(I32);
  const half = f.local(V128);
  const m = Array.from({ length: 4 }, () => f.local(V128));
  const rows = Array.from({ length: 12 }, () => f.local(V128));
  const sum = f.local(V128);

  f.constF32x4(0.5).set(half);
  /**
   * G̃ᵀ's row `row` applied to 4 vectors (locals), set into `target(row)`: (1, ½, ½, 0), (0, ½, −½, 0),
   * (0, ½, ½, −1); the first and last share ½(v1 + v2).
   */
  const applyGTransposed = (v: readonly number[], target: (row: number) => void) => {
    f.get(v[1]!).get(v[2]!).addF32x4().get(half).mulF32x4().set(sum);
    f.get(v[0]!).get(sum).addF32x4();
    target(0);
    f.get(v[1]!).get(v[2]!).subF32x4().get(half).mulF32x4();
    target(1);
    f.get(sum).get(v[3]!).subF32x4();
    target(2);
  };
  f.get(p.m).set(mp).get(p.dw).set(dwp);
  f.countedLoop(counter, { local: p.count }, () => {
    f.get(mp).set(mk);
    // G̃ᵀ M, column by column: rows[4r + column] is row r's value in that column.
    for (let column = 0; column < 4; column++) {
      for (let row = 0; row < 4; row++) {
        f.get(mk).get(p.mMatrix).i32(4 * row + column).mul().add().load().set(m[row]!);
      }
      applyGTransposed(m, (row) => f.set(rows[4 * row + column]!));
    }
    // (G̃ᵀ M) G̃: row r's columns → taps 3r, 3r + 1, 3r + 2.
    f.get(dwp).set(tap);
    for (let row = 0; row < 3; row++) {
      applyGTransposed(rows.slice(4 * row, 4 * row + 4), () => {
        f.set(m[0]!);
        f.get(tap).get(m[0]!).store();
        f.increment(tap, { local: p.dwTap });
      });
    }
    f.increment(mp, 16).increment(dwp, 16);
  });
  return f;
}
