/**
 * Just enough of the WebAssembly binary format to build this package's SIMD kernels at run time: i32
 * and v128 locals, loops, loads and stores, and the few f32x4 operations a multiply-accumulate needs.
 * Writing the bytes here keeps the kernels free of a toolchain and of binaries in the repository.
 */

/** Value types as the binary format numbers them. */
export const I32 = 0x7f;
export const V128 = 0x7b;

function unsigned(value: number): number[] {
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

function signed(value: number): number[] {
  const bytes: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) {
      bytes.push(byte);
      return bytes;
    }
    bytes.push(byte | 0x80);
  }
}

function name(text: string): number[] {
  const bytes = [...new TextEncoder().encode(text)];
  return [...unsigned(bytes.length), ...bytes];
}

function vector(items: number[][]): number[] {
  return [...unsigned(items.length), ...items.flat()];
}

function section(id: number, content: number[]): number[] {
  return [id, ...unsigned(content.length), ...content];
}

/** One function's body, written instruction by instruction. */
export class FunctionBody {
  readonly bytes: number[] = [];
  private readonly locals: number[] = [];

  /** @param parameters The parameters' value types; locals are numbered after them. */
  constructor(readonly parameters: readonly number[]) {}

  /** Declares a local of `type` and returns its index. */
  local(type: number): number {
    this.locals.push(type);
    return this.parameters.length + this.locals.length - 1;
  }

  get(index: number): this {
    this.bytes.push(0x20, ...unsigned(index));
    return this;
  }

  set(index: number): this {
    this.bytes.push(0x21, ...unsigned(index));
    return this;
  }

  i32(value: number): this {
    this.bytes.push(0x41, ...signed(value));
    return this;
  }

  add(): this {
    this.bytes.push(0x6a);
    return this;
  }

  sub(): this {
    this.bytes.push(0x6b);
    return this;
  }

  mul(): this {
    this.bytes.push(0x6c);
    return this;
  }

  /** `local += step` (i32). */
  increment(index: number, step: number | { local: number }): this {
    this.get(index);
    if (typeof step === 'number') this.i32(step);
    else this.get(step.local);
    return this.add().set(index);
  }

  /** A loop that runs its body `count` times (count ≥ 1), counting `counter` down to zero. */
  countedLoop(counter: number, count: { local: number } | number, body: () => void): this {
    if (typeof count === 'number') this.i32(count);
    else this.get(count.local);
    this.set(counter);
    this.bytes.push(0x03, 0x40);
    body();
    // counter -= 1; continue while it is not zero.
    this.get(counter).i32(1).sub();
    this.bytes.push(0x22, ...unsigned(counter)); // local.tee
    this.bytes.push(0x0d, 0x00, 0x0b); // br_if 0; end
    return this;
  }

  private simd(opcode: number, ...immediates: number[]): this {
    this.bytes.push(0xfd, ...unsigned(opcode), ...immediates);
    return this;
  }

  /** v128.load at the address on the stack plus `offset` bytes. */
  load(offset = 0): this {
    return this.simd(0x00, 0, ...unsigned(offset));
  }

  /** v128.load32_splat: one float at the address on the stack plus `offset`, in all four lanes. */
  loadSplat(offset = 0): this {
    return this.simd(0x09, 0, ...unsigned(offset));
  }

  /** v128.store of the vector on the stack at the address below it plus `offset`. */
  store(offset = 0): this {
    return this.simd(0x0b, 0, ...unsigned(offset));
  }

  zeros(): this {
    return this.simd(0x0c, ...new Array<number>(16).fill(0));
  }

  addF32x4(): this {
    return this.simd(0xe4);
  }

  subF32x4(): this {
    return this.simd(0xe5);
  }

  /** v128.const: `value` in all four f32 lanes. */
  constF32x4(value: number): this {
    return this.simd(0x0c, ...new Uint8Array(new Float32Array([value, value, value, value]).buffer));
  }

  mulF32x4(): this {
    return this.simd(0xe6);
  }

  /** f32x4.max: NaN if either lane is NaN, and +0 for max(−0, +0). */
  maxF32x4(): this {
    return this.simd(0xe9);
  }

  /** f32x4.gt: all ones in each lane where the first vector's is greater, zeros elsewhere. */
  greaterF32x4(): this {
    return this.simd(0x44);
  }

  /** i8x16.shuffle of the two vectors on the stack: byte i of the result is byte lanes[i] of their 32. */
  shuffle(lanes: readonly number[]): this {
    return this.simd(0x0d, ...lanes);
  }

  /** f64x2.promote_low_f32x4: the vector's two low floats as doubles. */
  promoteLowF32x4(): this {
    return this.simd(0x5f);
  }

  addF64x2(): this {
    return this.simd(0xf0);
  }

  mulF64x2(): this {
    return this.simd(0xf2);
  }

  /** v128.and of the two vectors on the stack. */
  and(): this {
    return this.simd(0x4e);
  }

  /** f32x4.relaxed_madd (relaxed SIMD): a·b + c of the three vectors on the stack, fused where the CPU has FMA. */
  maddF32x4(): this {
    return this.simd(0x105);
  }

  /**
   * `accumulator += a · b` (f32x4): one relaxed_madd when `fused`, else f32x4.mul then f32x4.add.
   */
  multiplyAccumulate(accumulator: number, a: number, b: number, fused: boolean): this {
    if (fused) return this.get(a).get(b).get(accumulator).maddF32x4().set(accumulator);
    return this.get(accumulator).get(a).get(b).mulF32x4().addF32x4().set(accumulator);
  }

  /** The function as the code section holds it: its size, its locals and its instructions. */
  encode(): number[] {
    const groups: number[][] = [];
    for (const type of this.locals) {
      const last = groups[groups.length - 1];
      if (last !== undefined && last[1] === type) last[0]!++;
      else groups.push([1, type]);
    }
    const body = [...vector(groups.map(([count, type]) => [...unsigned(count!), type!])), ...this.bytes, 0x0b];
    return [...unsigned(body.length), ...body];
  }
}

/**
 * A module of functions with no results, exported under their names, that imports its memory as
 * `env.memory`: shared (threads may run the functions on the same memory at once) or not.
 *
 * @param functions The functions, in order.
 * @param memory The imported memory's limits in 64 KiB pages; `maximum` is required when shared.
 */
export function encodeModule(
  functions: ReadonlyArray<{ name: string; body: FunctionBody }>,
  memory: { initial: number; maximum?: number; shared: boolean },
): Uint8Array<ArrayBuffer> {
  const types = functions.map(({ body }) => [0x60, ...vector(body.parameters.map((type) => [type])), 0x00]);
  if (memory.shared && memory.maximum === undefined) throw new RangeError('encodeModule: a shared memory needs a maximum');
  const limits =
    memory.maximum === undefined
      ? [0x00, ...unsigned(memory.initial)]
      : [memory.shared ? 0x03 : 0x01, ...unsigned(memory.initial), ...unsigned(memory.maximum)];
  const bytes = [
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vector(types)),
    ...section(2, vector([[...name('env'), ...name('memory'), 0x02, ...limits]])),
    ...section(3, vector(functions.map((_, index) => unsigned(index)))),
    ...section(7, vector(functions.map(({ name: text }, index) => [...name(text), 0x00, ...unsigned(index)]))),
    ...section(10, vector(functions.map(({ body }) => body.encode()))),
  ];
  return new Uint8Array(bytes);
}
