/**
 * One explicit call that picks a TF.js backend and makes it ready for training. Browser-safe: nothing
 * Node-only is imported at the top, and optional backends are loaded only when asked for.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, assertChoice, assertKnownOptions, assertNumber } from '@regstack/regularizer';
import { registerKernels, registeredKernels } from './kernels/register-kernels.js';
import { convolutionThreads } from './threads/parallel-conv.js';
import { engineHasRelaxedSimd, prepareSimdKernels, setFusedMultiplyAdd, simdKernels } from './simd/instance.js';
import { startConvPool, stopConvPool } from './threads/conv-pool.js';

/** Backends {@link useBackend} can select. */
export const BACKEND_NAMES = ['wasm', 'cpu', 'webgl', 'webgpu', 'tensorflow'] as const;
/** A backend {@link useBackend} can select. */
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Options of {@link useBackend}. */
export interface UseBackendOptions {
  /**
   * Where the wasm binaries are served from, passed to `setWasmPaths` of `@tensorflow/tfjs-backend-wasm`:
   * a URL prefix ending in `/` or a map from file name (`tfjs-backend-wasm.wasm`, `-simd.wasm`,
   * `-threaded-simd.wasm`) to URL. Needed in browsers whenever a bundler does not copy the `.wasm` files
   * next to the script; Node finds them in `node_modules` by itself.
   */
  wasmPaths?: string | Record<string, string>;
  /**
   * Threads for wasm. In Node (where TF.js runs wasm single-threaded) `threads: n` starts n − 1 worker
   * threads, each with its own TF.js on wasm, that take equal shares of the batch of every large
   * convolution (forward, filter and input gradients); results equal one thread's up to float32
   * rounding (a filter gradient adds the shares' sums). Default 1; `os.availableParallelism()` uses
   * every core. In browsers: XNNPACK's threads (with cross-origin isolation only).
   */
  threads?: number;
  /**
   * Register this package's kernels for the backend, those `listKernels()` gives it by default: conv
   * gradients (wasm: filter and input gradients; cpu: filter gradient), per-channel reductions (wasm
   * and cpu: batch normalisation's statistics and gradient sums in `@regstack/models`), and on wasm its
   * `Conv2D`, `MaxPoolGrad` (the shipped one loses gradients, see `maxPoolGradient`), an `Identity`
   * that shares data instead of copying and a `BatchMatMul` that keeps transposed products on
   * XNNPACK's GEMM. Default true.
   */
  registerKernels?: boolean;
  /**
   * Relaxed SIMD's fused multiply-add in this package's direct convolution kernels (wasm and cpu; see
   * `setFusedMultiplyAdd`). Node ≥ 22 and browsers since 2023 have it. Node 20's V8 has it behind
   * `--experimental-wasm-relaxed-simd`: there `true` (the default) turns that flag on for this process
   * (`v8.setFlagsFromString`, before the kernels compile), which makes the reference recipe's ResNet-18
   * step ≈11% faster (tools/bench/README.md). The multiply-adds are then rounded once instead of twice, as
   * PyTorch's FMA kernels do. `false` leaves V8's flags alone and uses the separate multiply and add (the
   * same rounding on every engine); left unset, an earlier `setFusedMultiplyAdd(false)` stands. Applied
   * only with `registerKernels`.
   */
  relaxedSimd?: boolean;
}

/** What {@link useBackend} prepared. */
export interface BackendInfo {
  /** The backend now active, as named to {@link useBackend} (TF.js also calls it this). */
  name: BackendName;
  /** Kernels of this package registered for this backend (empty for webgl, webgpu and tensorflow). */
  kernels: string[];
  /** Threads for wasm: in Node the main one plus the convolution workers; in browsers XNNPACK's. */
  threads?: number;
  /** Whether this package's direct convolution kernels multiply-add with relaxed SIMD (wasm and cpu; see {@link UseBackendOptions.relaxedSimd}). */
  fusedMultiplyAdd?: boolean;
}

/** One row of {@link listBackends}. */
export interface BackendDescription {
  /** Name to pass to {@link useBackend}. */
  name: BackendName;
  /** True for the backend chosen when none is named. */
  isDefault: boolean;
  /** Package providing it. */
  packageName: string;
  /** Whether it is a dependency of this package (always present) or an optional peer to install. */
  bundled: boolean;
  /** Where it runs. */
  runs: 'node and browsers' | 'node' | 'browsers' | 'browsers, or node with the webgpu package';
  /** Whether this package registers its conv-gradient kernels there. */
  fastConvGradients: boolean;
  /** One line on when to pick it. */
  summary: string;
  /** Command that installs it, when it is an optional peer. */
  install?: string;
}

const TFJS_VERSION = '4.22.0';

const DESCRIPTIONS: readonly BackendDescription[] = [
  {
    name: 'wasm',
    isDefault: true,
    packageName: '@tensorflow/tfjs-backend-wasm',
    bundled: true,
    runs: 'node and browsers',
    fastConvGradients: true,
    summary: 'XNNPACK on WebAssembly with SIMD: the fastest CPU backend without a native build.',
  },
  {
    name: 'cpu',
    isDefault: false,
    packageName: '@tensorflow/tfjs-backend-cpu',
    bundled: true,
    runs: 'node and browsers',
    fastConvGradients: true,
    summary: 'Plain JavaScript: slow, but the reference every other backend is tested against.',
  },
  {
    name: 'webgl',
    isDefault: false,
    packageName: '@tensorflow/tfjs-backend-webgl',
    bundled: false,
    runs: 'browsers',
    fastConvGradients: false,
    summary: 'GPU through WebGL2 (float32 textures): the GPU backend every current browser has.',
    install: `npm install @tensorflow/tfjs-backend-webgl@${TFJS_VERSION}`,
  },
  {
    name: 'webgpu',
    isDefault: false,
    packageName: '@tensorflow/tfjs-backend-webgpu',
    bundled: false,
    runs: 'browsers, or node with the webgpu package',
    fastConvGradients: false,
    summary: 'GPU through WebGPU; in Node it also needs the `webgpu` package (Dawn).',
    install: `npm install @tensorflow/tfjs-backend-webgpu@${TFJS_VERSION} webgpu`,
  },
  {
    name: 'tensorflow',
    isDefault: false,
    packageName: '@tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node',
    bundled: false,
    runs: 'node',
    fastConvGradients: false,
    summary: 'Native TensorFlow (CUDA with tfjs-node-gpu): fastest in Node, needs a native install.',
    install: `npm install @tensorflow/tfjs-node@${TFJS_VERSION}   # or @tensorflow/tfjs-node-gpu for CUDA`,
  },
];

/** The backends {@link useBackend} can select, with what each needs and when to pick it. */
export function listBackends(): BackendDescription[] {
  return DESCRIPTIONS.map((description) => ({ ...description }));
}

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

/**
 * Imports an optional package through a specifier bundlers cannot see, so that a bundle does not fail
 * to build when the package is absent. Returns undefined when the package itself is not installed;
 * any other failure (an installed native addon that does not load) propagates.
 */
async function importOptional(specifier: string): Promise<Record<string, unknown> | undefined> {
  try {
    return (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as Record<string, unknown>;
  } catch (error) {
    if (isMissingModule(error, specifier)) return undefined;
    throw error;
  }
}

function isMissingModule(error: unknown, specifier: string): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  const missing =
    code === 'ERR_MODULE_NOT_FOUND' ||
    code === 'MODULE_NOT_FOUND' ||
    /Cannot find (module|package)|Could not resolve|Failed to (load|resolve)/i.test(error.message);
  // A missing dependency *of* an installed package is a broken install, not an absent one.
  return missing && error.message.includes(specifier);
}

let gradientsLoaded = false;

/**
 * tfjs-core registers no gradients by itself. Bundlers and Vite resolve TF.js's own registration module;
 * plain Node cannot (its internal imports lack file extensions), so the build ships a self-contained
 * copy for that case.
 */
async function ensureGradients(): Promise<void> {
  if (gradientsLoaded || tf.getGradient(tf.Conv2D) !== undefined) {
    gradientsLoaded = true;
    return;
  }
  try {
    await import('@tensorflow/tfjs-core/dist/register_all_gradients');
  } catch (error) {
    if (!isNode()) throw error;
    // CommonJS, so that both our ESM and CJS builds load it on every Node ≥ 20 (require(esm) came in 20.19).
    const bundled = './register-gradients-node.cjs';
    await import(/* @vite-ignore */ /* webpackIgnore: true */ bundled);
  }
  gradientsLoaded = true;
}

/**
 * Ends the convolution worker threads of `useBackend('wasm', { threads })`, including those parked by a
 * later one-thread call (which keeps them, warm, for the next call with the same count). Selecting
 * another backend ends them too; idle workers never keep Node from exiting.
 */
export async function stopWorkerThreads(): Promise<void> {
  await stopConvPool({ terminate: true });
}

/** One thread again; the workers stay parked for a later call with the same count. */
async function parkWorkerThreads(): Promise<void> {
  if (convolutionThreads() === 1) return;
  await stopConvPool();
}

/**
 * Relaxed SIMD's multiply-add for the direct kernels: on Node 20, whose V8 has it behind a flag, the
 * flag is turned on first (V8 reads wasm feature flags when a module compiles; worker threads started
 * later see it too). `false` keeps the separate multiply and add.
 */
async function chooseMultiplyAdd(relaxed: boolean | undefined): Promise<void> {
  if (relaxed === false) {
    setFusedMultiplyAdd(false);
    return;
  }
  if (isNode() && !engineHasRelaxedSimd()) {
    try {
      const v8 = (await import(/* @vite-ignore */ /* webpackIgnore: true */ 'node:v8' as string)) as typeof import('node:v8');
      v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    } catch {
      // A runtime that reports itself as Node but has no V8 flags (Bun): the kernels use what the engine has.
    }
  }
  // Setting it again recompiles the kernels with what the engine has now; left unset, an earlier
  // `setFusedMultiplyAdd(false)` stands.
  const current = setFusedMultiplyAdd('auto');
  setFusedMultiplyAdd(relaxed === true ? 'auto' : current);
}

async function prepareWasm(options: UseBackendOptions): Promise<number> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (options.wasmPaths !== undefined) {
    // setWasmPaths only takes effect before the backend first initialises.
    wasm.setWasmPaths(options.wasmPaths as Parameters<typeof wasm.setWasmPaths>[0]);
  }
  if (!isNode()) {
    if (options.threads !== undefined) wasm.setThreadsCount(options.threads);
    await activate('wasm');
    return wasm.getThreadsCount();
  }
  // TF.js runs wasm single-threaded in Node; our worker threads take shares of each large convolution.
  await activate('wasm');
  const threads = options.threads ?? 1;
  if (threads === 1) {
    await parkWorkerThreads();
    return 1;
  }
  if (options.registerKernels === false) {
    throw new ConfigError('backend.threads', 'worker threads run our convolution kernels; they need registerKernels (leave it unset)');
  }
  await startConvPool(threads - 1);
  return threads;
}

async function prepareTensorflow(): Promise<void> {
  const loaded =
    (await importOptional('@tensorflow/tfjs-node-gpu')) ?? (await importOptional('@tensorflow/tfjs-node'));
  if (loaded === undefined) {
    throw new ConfigError(
      'backend',
      "'tensorflow' needs @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA), and neither is installed. " +
        `Install one with \`npm install @tensorflow/tfjs-node@${TFJS_VERSION}\` (or @tensorflow/tfjs-node-gpu@${TFJS_VERSION}), ` +
        "or leave the backend unset to use 'wasm', the default, which needs no native build.",
    );
  }
  await activate('tensorflow');
}

/** Node has no WebGPU; the `webgpu` package (Dawn bindings) supplies `navigator.gpu`. */
async function ensureNavigatorGpu(): Promise<void> {
  const navigatorNow = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  if (navigatorNow?.gpu !== undefined || !isNode()) return;
  const dawn = await importOptional('webgpu');
  if (dawn === undefined) {
    throw new ConfigError(
      'backend',
      "'webgpu' in Node needs the `webgpu` package (Dawn) for navigator.gpu, and it is not installed. " +
        `Install both with \`npm install @tensorflow/tfjs-backend-webgpu@${TFJS_VERSION} webgpu\`, ` +
        "or use 'tensorflow' (tfjs-node-gpu) for a GPU in Node, or 'wasm', the default.",
    );
  }
  const { create, globals } = dawn as { create: (flags: string[]) => unknown; globals: object };
  Object.assign(globalThis, globals);
  // Node ≥ 21 defines a read-only-looking `navigator` getter; defineProperty replaces it either way.
  Object.defineProperty(globalThis, 'navigator', {
    value: { gpu: create([]), userAgent: 'node' },
    configurable: true,
    writable: true,
  });
}

/**
 * Loads a GPU backend's package, an optional peer; a ConfigError with its install command when it is
 * not installed.
 */
async function importBrowserBackend(name: 'webgl' | 'webgpu'): Promise<void> {
  const packageName = `@tensorflow/tfjs-backend-${name}`;
  if ((await importOptional(packageName)) !== undefined) return;
  throw new ConfigError(
    'backend',
    `'${name}' needs ${packageName}, which is not installed. ` +
      `Install it with \`npm install ${packageName}@${TFJS_VERSION}\` ` +
      "(in a browser bundle, import it yourself before calling useBackend), or use 'wasm', the default.",
  );
}

async function prepareWebgpu(): Promise<void> {
  if (tf.findBackendFactory('webgpu') == null) {
    await ensureNavigatorGpu();
    await importBrowserBackend('webgpu');
  }
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<unknown> } } }).navigator?.gpu;
  if (gpu === undefined || (await gpu.requestAdapter()) === null) {
    throw new ConfigError(
      'backend',
      "'webgpu' found no GPU adapter (navigator.gpu is missing or offers none). " +
        "Check the browser's WebGPU support or the GPU driver, or use 'wasm', the default.",
    );
  }
  await activate('webgpu');
}

/** Whether this JavaScript context can create a WebGL context at all (a page, or a worker with OffscreenCanvas). */
function canCreateWebgl(): boolean {
  try {
    const canvas =
      typeof OffscreenCanvas !== 'undefined' ? new OffscreenCanvas(1, 1)
      : typeof document !== 'undefined' ? document.createElement('canvas')
      : undefined;
    // TF.js prefers WebGL2 and still runs on WebGL1 with float textures.
    return canvas !== undefined && (canvas.getContext('webgl2') ?? canvas.getContext('webgl')) !== null;
  } catch {
    // A browser that throws instead of answering null has no usable WebGL either.
    return false;
  }
}

let halfFloatWarned = false;

async function prepareWebgl(): Promise<void> {
  // A backend registered by the caller (a bundle importing @tensorflow/tfjs-backend-webgl, or headless-gl
  // in Node through its setWebGLContext) is used as it is; otherwise this context must offer WebGL2.
  if (tf.findBackendFactory('webgl') == null) {
    if (!canCreateWebgl()) {
      throw new ConfigError(
        'backend',
        isNode()
          ? "'webgl' needs a browser: Node has no WebGL. Use 'tensorflow' (tfjs-node-gpu) for a GPU in Node, or 'wasm', the default."
          : "'webgl' found no WebGL here (the browser, its GPU blocklist or this worker offers none). Use 'wasm', the default.",
      );
    }
    await importBrowserBackend('webgl');
  }
  await activate('webgl');
  // Without float32 colour buffers TF.js computes in half-float textures: training runs, but its
  // gradients keep only ~3 significant digits.
  if (!tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED') && !halfFloatWarned) {
    halfFloatWarned = true;
    console.warn("@regstack/backend: 'webgl' here renders to half-float textures only (no EXT_color_buffer_float); gradients lose precision. Prefer 'wasm' on this device.");
  }
}

async function activate(name: string): Promise<void> {
  // setBackend swallows initialisation errors and answers false.
  const ok = await tf.setBackend(name);
  if (!ok) throw new ConfigError('backend', `TF.js could not initialise the '${name}' backend (see the warning above)`);
  await tf.ready();
}

/**
 * Selects and prepares a TF.js backend for training, in one explicit call: registers TF.js's gradients
 * (tfjs-core alone has none) and this package's conv-gradient kernels, then activates the backend.
 *
 * @param name Backend to use; default `'wasm'`. See {@link listBackends}.
 * @param options See {@link UseBackendOptions}.
 * @returns What was prepared.
 * @throws ConfigError (field `backend`) for an unknown name, an optional backend that is not installed,
 *   or a backend that fails to initialise.
 */
export async function useBackend(name: BackendName = 'wasm', options: UseBackendOptions = {}): Promise<BackendInfo> {
  const backend = assertChoice('backend', name, BACKEND_NAMES);
  assertKnownOptions('backend', options, ['wasmPaths', 'threads', 'registerKernels', 'relaxedSimd']);
  if (options.threads !== undefined) assertNumber('backend.threads', options.threads, { min: 1, integer: true });
  if (options.relaxedSimd !== undefined && typeof options.relaxedSimd !== 'boolean') {
    throw new ConfigError('backend.relaxedSimd', `expected true or false, got ${JSON.stringify(options.relaxedSimd)}`);
  }
  const { wasmPaths } = options;
  if (wasmPaths !== undefined && typeof wasmPaths !== 'string' && (typeof wasmPaths !== 'object' || wasmPaths === null)) {
    throw new ConfigError('backend.wasmPaths', 'expected a URL prefix string or a map from wasm file name to URL');
  }

  await ensureGradients();
  // Convolution worker threads serve wasm only: any other backend ends them.
  if (backend !== 'wasm') await stopWorkerThreads();
  let threads: number | undefined;
  if (backend === 'wasm' || backend === 'cpu') {
    // The backend module must load before our kernels register: its own registration would override ours.
    if (backend === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
    else await import('@tensorflow/tfjs-backend-cpu');
    if (options.registerKernels !== false) {
      registerKernels(backend);
      await chooseMultiplyAdd(options.relaxedSimd);
      // Browsers compile modules over 4 KB only asynchronously on their main thread.
      await prepareSimdKernels();
    }
    if (backend === 'wasm') threads = await prepareWasm(options);
    else await activate('cpu');
  } else if (backend === 'webgl') {
    await prepareWebgl();
  } else if (backend === 'tensorflow') {
    await prepareTensorflow();
  } else {
    await prepareWebgpu();
  }
  const info: BackendInfo = { name: backend, kernels: registeredKernels(backend) };
  if (threads !== undefined) info.threads = threads;
  if ((backend === 'wasm' || backend === 'cpu') && options.registerKernels !== false) info.fusedMultiplyAdd = simdKernels()?.fused === true;
  return info;
}
