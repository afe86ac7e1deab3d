/**
 * A real consumer: every publishable package packed with `npm pack`, installed from the tarballs beside
 * `@tensorflow/tfjs` into a project outside the repository, type-checked under `--strict` with `node16`
 * and `bundler` resolution, run as ES module and as CommonJS, and bundled for the browser.
 *
 * It reads the packages' `dist/`: `npm test` builds them before vitest runs. The install takes every
 * package from npm's cache, which `npm ci` fills (`@tensorflow/tfjs` is a root devDependency for that
 * reason); it falls back to the registry only for what the cache lacks, and gives up after a bounded time.
 * The repository's own node_modules is never written to. `REGSTACK_KEEP_CONSUMER=1` keeps the project.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
const programsDirectory = fileURLToPath(new URL('./programs', import.meta.url));
const typescriptCompiler = join(repositoryRoot, 'node_modules/typescript/bin/tsc');
const rootManifest = JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
const rootLicense = readFileSync(join(repositoryRoot, 'LICENSE'), 'utf8');

/** Every workspace package that is published (the playground is private). */
const publishable = readdirSync(join(repositoryRoot, 'packages'))
  .filter((directory) => existsSync(join(repositoryRoot, 'packages', directory, 'package.json')))
  .filter((directory) => !JSON.parse(readFileSync(join(repositoryRoot, 'packages', directory, 'package.json'), 'utf8')).private)
  .sort();

/**
 * The consumer programs run in Node, and what each needs beyond the packages as they are. `stack` uses
 * only what every package exported when this test was written; the others follow the READMEs' forms.
 */
const programs = ['stack', 'own-loop', 'fit'] as const;
type Program = (typeof programs)[number];

interface CommandResult {
  code: number;
  /** stdout and stderr together, for messages. */
  output: string;
  stdout: string;
}

/**
 * Runs a command without a shell; never throws. The environment drops the npm_* variables of the
 * `npm test` that started vitest (they would point npm at the repository's workspace), keeping the cache
 * and registry settings, and NODE_OPTIONS (vitest's hooks have no business in the consumer).
 */
function run(command: string, commandArguments: string[], cwd: string, timeoutMs: number): Promise<CommandResult> {
  const environment: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    const lower = name.toLowerCase();
    if (lower === 'node_options') continue;
    if (lower.startsWith('npm_') && !['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig'].includes(lower)) continue;
    environment[name] = value;
  }
  return new Promise((resolve) => {
    execFile(command, commandArguments, { cwd, env: environment, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      const timedOut = error && 'killed' in error && error.killed ? `\n(killed after ${timeoutMs} ms)` : '';
      resolve({ code, output: `${stdout}${stderr}${timedOut}`, stdout });
    });
  });
}

/** The type errors tsc printed (`--pretty false`), by the program they belong to (`shared` counts for all). */
function errorsByProgram(output: string, folder: string): Record<Program, string[]> {
  const errors = Object.fromEntries(programs.map((program) => [program, [] as string[]])) as Record<Program, string[]>;
  for (const line of output.split('\n')) {
    const match = /^(?:\.\/)?([\w-]+)\/([\w-]+)\.ts\(\d+,\d+\): error /.exec(line);
    if (!match) {
      if (/error TS/.test(line)) for (const program of programs) errors[program].push(line);
      continue;
    }
    if (match[1] !== folder) continue;
    for (const program of programs) if (match[2] === program || match[2] === 'shared') errors[program].push(line);
  }
  return errors;
}

/** The program's `RESULT {...}` line, parsed. */
function resultOf(output: string): Record<string, any> {
  const line = output.split('\n').find((text) => text.startsWith('RESULT '));
  if (!line) throw new Error(`no RESULT line in the program's output:\n${output}`);
  return JSON.parse(line.slice('RESULT '.length));
}

let work = '';
let project = '';
let packed: { name: string; filename: string; files: { path: string; size: number }[] }[] = [];
let install: CommandResult = { code: -1, output: 'not run', stdout: '' };
const typeErrors: Record<'node16' | 'bundler', Record<Program, string[]>> = { node16: errorsByProgram('', ''), bundler: errorsByProgram('', '') };
let node16Output = '';
let bundlerOutput = '';
const runs = new Map<string, CommandResult>();
const started = Date.now();
const timings: Record<string, number> = {};
const timed = async <T,>(name: string, work: () => Promise<T>): Promise<T> => {
  const start = Date.now();
  try {
    return await work();
  } finally {
    timings[name] = (Date.now() - start) / 1000;
  }
};

beforeAll(async () => {
  const missing = publishable.filter((directory) => !existsSync(join(repositoryRoot, 'packages', directory, 'dist')));
  if (missing.length > 0) throw new Error(`build first (npm test does): no dist/ in ${missing.join(', ')}`);

  work = mkdtempSync(join(tmpdir(), 'regstack-consumer-'));
  project = join(work, 'project');
  const tarballs = join(work, 'tarballs');
  mkdirSync(tarballs);
  mkdirSync(project);

  const pack = await timed('pack', () =>
    run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tarballs, ...publishable.flatMap((directory) => ['-w', `packages/${directory}`])], repositoryRoot, 120_000),
  );
  if (pack.code !== 0) throw new Error(`npm pack failed:\n${pack.output}`);
  packed = JSON.parse(pack.stdout);

  // file: tarballs, and overrides so that the packages' own dependencies on each other (0.1.0) resolve to
  // these tarballs too, never to the registry.
  const local = Object.fromEntries(packed.map(({ name, filename }) => [name, `file:../tarballs/${filename}`]));
  const tfjsVersion = rootManifest.devDependencies['@tensorflow/tfjs'];
  if (!tfjsVersion) throw new Error('the root package.json must pin @tensorflow/tfjs (a devDependency) so that npm ci caches it');
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'regstack-consumer', private: true, type: 'module', dependencies: { ...local, '@tensorflow/tfjs': tfjsVersion }, overrides: local }, null, 2),
  );
  const installArguments = ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error', '--fetch-timeout=30000', '--fetch-retries=1'];
  install = await timed('install', async () => {
    const offline = await run('npm', [...installArguments, '--offline'], project, 240_000);
    // A fresh CI clone's cache holds the tarballs (npm ci) but maybe not every package's metadata.
    return offline.code === 0 ? offline : run('npm', [...installArguments, '--prefer-offline'], project, 240_000);
  });
  if (install.code !== 0) throw new Error(`npm install of the tarballs failed:\n${install.output}`);

  // The same programs as ES modules and as CommonJS: each folder's package.json says which.
  for (const [folder, type] of [['esm', 'module'], ['cjs', 'commonjs']] as const) {
    mkdirSync(join(project, folder));
    writeFileSync(join(project, folder, 'package.json'), JSON.stringify({ type }));
    for (const file of readdirSync(programsDirectory)) writeFileSync(join(project, folder, file), readFileSync(join(programsDirectory, file)));
  }
  // skipLibCheck as most projects set it: TF.js 4.22's own declarations fail the library check under
  // strict (tfjs-layers, TS2411). No @types/node: the browser-safe entries must not need it.
  const common = { strict: true, target: 'ES2022', lib: ['ES2022', 'DOM'], types: [], skipLibCheck: true, noEmitOnError: false };
  writeFileSync(join(project, 'tsconfig.node16.json'), JSON.stringify({ compilerOptions: { ...common, module: 'node16', moduleResolution: 'node16' }, include: ['esm', 'cjs'] }));
  writeFileSync(
    join(project, 'tsconfig.bundler.json'),
    JSON.stringify({ compilerOptions: { ...common, module: 'esnext', moduleResolution: 'bundler', noEmit: true }, include: ['esm'] }),
  );
  // The node16 check emits the programs (errors or not: each program's own errors fail only its tests);
  // the bundler check runs beside the programs.
  const bundlerCheck = timed('bundler typecheck', () => run(process.execPath, [typescriptCompiler, '-p', 'tsconfig.bundler.json', '--pretty', 'false'], project, 240_000));
  const node16 = await timed('node16 typecheck', () => run(process.execPath, [typescriptCompiler, '-p', 'tsconfig.node16.json', '--pretty', 'false'], project, 240_000));
  node16Output = node16.output;
  typeErrors.node16 = { ...errorsByProgram(node16.output, 'esm') };
  const node16CommonJs = errorsByProgram(node16.output, 'cjs');
  for (const program of programs) typeErrors.node16[program].push(...node16CommonJs[program]);

  // Two at a time: each loads TF.js and trains a few steps on one core.
  const programRuns = timed('programs', async () => {
    const queue = programs.flatMap((program) => (['esm', 'cjs'] as const).map((folder) => ({ program, folder })));
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const file = join(project, next.folder, `${next.program}.js`);
        const result = existsSync(file) ? await run(process.execPath, [file], project, 120_000) : { code: 1, output: `${file} was not emitted`, stdout: '' };
        runs.set(`${next.program}/${next.folder}`, result);
      }
    };
    await Promise.all([worker(), worker()]);
  });
  const [bundler] = await Promise.all([bundlerCheck, programRuns]);
  bundlerOutput = bundler.output;
  typeErrors.bundler = errorsByProgram(bundler.output, 'esm');
}, 600_000);

afterAll(() => {
  console.log(
    `consumer test: ${((Date.now() - started) / 1000).toFixed(1)} s (${Object.entries(timings)
      .map(([name, seconds]) => `${name} ${seconds.toFixed(1)} s`)
      .join(', ')})`,
  );
  if (!work) return;
  if (process.env.REGSTACK_KEEP_CONSUMER) {
    console.log(`consumer project kept in ${project}`);
    return;
  }
  // Deleting TF.js's 300 MB of files takes half a minute on a busy disk: a detached process does it
  // while the test run goes on (and after it ends).
  const remover = spawn(process.execPath, ['-e', 'require("node:fs").rmSync(process.argv[1], { recursive: true, force: true })', work], { detached: true, stdio: 'ignore' });
  remover.on('error', () => rmSync(work, { recursive: true, force: true }));
  remover.unref();
});

describe('the packed packages', () => {
  it('are every publishable package, each with its LICENSE, README and built entries, and no tests', () => {
    expect(packed.map(({ name }) => name).sort()).toEqual(publishable.map((directory) => `@regstack/${directory}`));
    for (const { name, files } of packed) {
      const paths = files.map(({ path }) => path);
      expect(paths, name).toContain('LICENSE');
      expect(paths, name).toContain('README.md');
      expect(paths.some((path) => path.startsWith('dist/')), name).toBe(true);
      expect(paths.filter((path) => /\.test\.ts$|__fixtures__/.test(path)), name).toEqual([]);
    }
  });

  it('ship the Fashion-MNIST subset once: one file over 100 kB in @regstack/datasets', () => {
    const datasets = packed.find(({ name }) => name === '@regstack/datasets')!;
    const large = datasets.files.filter(({ size }) => size > 100_000).map(({ path }) => path);
    expect(large).toEqual(['data/fashion-mnist-subset.json']);
  });

  it('carry the licence, repository, homepage, bugs and keywords, and README links that work on npm', () => {
    for (const directory of publishable) {
      const installed = join(project, 'node_modules/@regstack', directory);
      const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
      expect(manifest.license, directory).toBe('MIT');
      expect(readFileSync(join(installed, 'LICENSE'), 'utf8'), directory).toBe(rootLicense);
      expect(manifest.repository, directory).toEqual({ type: 'git', url: 'git+https://github.com/regstack/regstack.git', directory: `packages/${directory}` });
      expect(manifest.homepage, directory).toBe(`https://github.com/regstack/regstack/tree/main/packages/${directory}#readme`);
      expect(manifest.bugs, directory).toEqual({ url: 'https://github.com/regstack/regstack/issues' });
      expect(manifest.keywords, directory).toEqual(expect.arrayContaining(['regstack', 'tensorflowjs']));
      // npm shows the README alone: a relative link must name a file the package ships.
      const readme = readFileSync(join(installed, 'README.md'), 'utf8');
      const targets = [...readme.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((match) => match[1]!);
      const shipped = (target: string) => {
        const path = join(installed, target.split('#')[0]!);
        return path.startsWith(`${installed}/`) && existsSync(path);
      };
      const broken = targets.filter((target) => !/^(https?:|mailto:|#)/.test(target) && !shipped(target));
      expect(broken, `${directory}/README.md`).toEqual([]);
    }
  });

  it('install with a single TF.js core beside @tensorflow/tfjs and our packages from the tarballs only', () => {
    expect(install.code).toBe(0);
    const lock = JSON.parse(readFileSync(join(project, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; resolved?: string }> };
    const cores = Object.keys(lock.packages).filter((path) => path.endsWith('node_modules/@tensorflow/tfjs-core'));
    expect(cores).toEqual(['node_modules/@tensorflow/tfjs-core']);
    const ours = Object.entries(lock.packages).filter(([path]) => /node_modules\/@regstack\//.test(path));
    expect(ours.map(([path]) => path).sort()).toEqual(publishable.map((directory) => `node_modules/@regstack/${directory}`));
    for (const [path, entry] of ours) expect(entry.resolved, path).toMatch(/^file:\.\.\/tarballs\//);
  });

  it('run the command line from its installed bin', async () => {
    const result = await run(process.execPath, [join(project, 'node_modules/.bin/regstack'), '--help'], project, 60_000);
    expect(result.code, result.output).toBe(0);
    expect(result.output).toMatch(/compare/);
  });
});

describe('a consumer program: every package, the datasets entries, wasm, RCAD + label smoothing with minimize', () => {
  it('type-checks under --strict with node16 and bundler resolution', () => {
    expect(typeErrors.node16.stack, node16Output).toEqual([]);
    expect(typeErrors.bundler.stack, bundlerOutput).toEqual([]);
  });

  it.each(['esm', 'cjs'])('runs as %s: trains, leaks no tensor, datasets entries share one Dataset class', (folder) => {
    const output = runs.get(`stack/${folder}`)!;
    expect(output.code, output.output).toBe(0);
    const result = resultOf(output.output);
    expect([result.backend, result.tfBackend]).toEqual(['wasm', 'wasm']);
    expect(result.kernels).toContain('Conv2DBackpropFilter');
    expect(result.embedded).toEqual({ train: 1800, validation: 200, test: 1000, sameClass: true, trainPerClass: 200 });
    expect(result.decoded).toEqual([1, 2, 3]);
    expect(result.names).toEqual([['adversarial-training'], ['entropy-min'], ['me-ada'], ['mixup']]);
    expect(result.duplicateError).toBe('stack');
    const losses = result.losses as number[];
    expect(losses.every(Number.isFinite)).toBe(true);
    // Eight Adam steps on one fixed batch of 32: the total must fall clearly.
    expect(losses.at(-1)!).toBeLessThan(0.8 * losses[0]!);
    expect(Object.keys(result.terms).sort()).toEqual(['base', 'rcad', 'total']);
    expect(result.terms.rcad).toBeGreaterThan(0);
    // Adam's slots are made on the first step; from then on the tensor count stays put: nothing leaks.
    const counts = result.tensorCounts as number[];
    expect(new Set(counts).size, String(counts)).toBe(1);
    expect(result.smallCnnVariables).toBeGreaterThan(0);
    expect(result.tensorDataSize).toBe(32);
  });
});

// Needs `stack.minimize` and step types that fit TF.js's optimizers (issue 14, point 1).
describe('the own-loop forms of the regularizer README', () => {
  it('type-check under --strict with node16 and bundler resolution', () => {
    expect(typeErrors.node16['own-loop'], node16Output).toEqual([]);
    expect(typeErrors.bundler['own-loop'], bundlerOutput).toEqual([]);
  });

  it.each(['esm', 'cjs'])('run as %s: minimize with the variable list, gradients + applyGradients and stack.minimize agree', (folder) => {
    const output = runs.get(`own-loop/${folder}`)!;
    expect(output.code, output.output).toBe(0);
    const result = resultOf(output.output);
    for (const form of ['minimize', 'gradients', 'stackMinimize']) {
      const totals = result[form] as number[];
      expect(totals.every(Number.isFinite), form).toBe(true);
      expect(totals.at(-1)!, form).toBeLessThan(totals[0]!);
    }
    // The same start, generator and updates: the same weights up to float32 rounding.
    expect(result.weightDifference.gradients).toBeLessThan(1e-4);
    expect(result.weightDifference.stackMinimize).toBeLessThan(1e-4);
    for (const counts of result.counts as number[][]) expect(new Set(counts.slice(1)).size, String(counts)).toBe(1);
  });
});

// Needs `fit` from @regstack/trainer (issue 14, "A model.fit-style entry point").
describe('the fit-style entry point', () => {
  it('type-checks under --strict with node16 and bundler resolution', () => {
    expect(typeErrors.node16.fit, node16Output).toEqual([]);
    expect(typeErrors.bundler.fit, bundlerOutput).toEqual([]);
  });

  it.each(['esm', 'cjs'])('runs as %s: a History with the plugins and validation, and a model that saves and reloads', (folder) => {
    const output = runs.get(`fit/${folder}`)!;
    expect(output.code, output.output).toBe(0);
    const result = resultOf(output.output);
    expect(result.epochs).toEqual([0, 1]);
    expect(result.epochEnds).toEqual([0, 1]);
    expect(result.keys).toEqual(expect.arrayContaining(['loss', 'acc', 'rcad', 'val_loss', 'val_acc']));
    for (const key of result.keys as string[]) {
      expect(result.history[key], key).toHaveLength(2);
      expect((result.history[key] as number[]).every(Number.isFinite), key).toBe(true);
    }
    expect(result.predictionDifference).toBe(0);
  });
});

describe('browser bundles (esbuild, minified, TF.js external)', () => {
  const bundle = async (entry: string) => {
    const result = await build({
      entryPoints: [join(project, 'esm', entry)],
      absWorkingDir: project,
      bundle: true,
      minify: true,
      write: false,
      platform: 'browser',
      format: 'esm',
      external: ['@tensorflow/*'],
      logLevel: 'silent',
      metafile: true,
    });
    const inputs = Object.keys(result.metafile.inputs);
    return { size: result.outputFiles[0]!.contents.byteLength, inputs };
  };

  it('@regstack/rcad + @regstack/regularizer stay small and free of Node modules', async () => {
    const { size, inputs } = await bundle('browser-regularizers.ts');
    expect(inputs.some((path) => path.includes('node_modules/@regstack/rcad/dist/'))).toBe(true);
    expect(inputs.some((path) => path.includes('node_modules/@regstack/regularizer/dist/'))).toBe(true);
    expect(inputs.filter((path) => path.startsWith('node:'))).toEqual([]);
    console.log(`browser bundle, rcad + regularizer: ${size} bytes`);
    expect(size).toBeLessThan(BUNDLE_BOUNDS.regularizers);
  });

  it("the datasets' main entry stays small: the embedded subset is not in it", async () => {
    const { size, inputs } = await bundle('browser-datasets.ts');
    expect(inputs.some((path) => path.includes('fashion-mnist-subset'))).toBe(false);
    expect(inputs.filter((path) => path.startsWith('node:'))).toEqual([]);
    console.log(`browser bundle, datasets main entry: ${size} bytes`);
    expect(size).toBeLessThan(BUNDLE_BOUNDS.datasets);
  });
});

/**
 * Bounds on the minified bundles, in bytes, TF.js aside. Measured 2026-11-29: rcad + regularizer 18,762
 * then, 28,465 by the evening (the fused step, validation, checks) and 33,005 with the fused step's own
 * backward over TF.js's tape (tape.ts); 28,872 once `Random` imported pure-rand's xoroshiro128+ alone
 * rather than its index (which pulled in every generator); the datasets' main entry 11,924 (3.24 MB
 * before the embedded subset had its own entry). The bounds leave room for growth (≈25-60%), not for a
 * dependency or data set pulled in by mistake.
 */
const BUNDLE_BOUNDS = {
  regularizers: 36_000,
  datasets: 20_000,
};
