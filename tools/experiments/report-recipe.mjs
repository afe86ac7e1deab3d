// The report of the Fashion-MNIST study at the reference script's recipe (issue 16,
// tools/experiments/fashion-mnist-2k-recipe.sh): per-stack tables at 2,000 images, paired per-seed
// differences with t and bootstrap intervals, and the data-scarcity curve, from the runs that have
// FINISHED (the lines of each `n<N>/results.jsonl`). A run still training, or not started, is never
// counted and its cell says "not run yet": nothing here is filled in by hand.
//
//   node tools/experiments/report-recipe.mjs [STUDY]            # markdown on stdout
//   node tools/experiments/report-recipe.mjs [STUDY] --write docs/results-fashion-mnist-recipe.md
//
// STUDY is the script's OUT (runs/fashion-mnist-recipe unless given). --write replaces the section
// between `<!-- report:begin -->` and `<!-- report:end -->` of the page (the hand-written text around
// it stays) and writes the scarcity plot next to the page (<page>-scarcity.svg and .png).
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { bootstrapInterval, dedupeRuns, pairedDifferences, summarize, tInterval } from './statistics.mjs';

/**
 * One finished run: the fields of a `results.jsonl` line (as `regstack compare` writes it) read here.
 * @typedef {{ epochs?: number, batchSize?: number, learningRate?: number, momentum?: number, weightDecay?: number, clipNorm?: number, augment?: string, validation?: string }} Recipe
 * @typedef {{ id?: string, stack: string, seed: number, data: { name?: string, trainSize: number }, model?: { name?: string, options?: Record<string, unknown> },
 *   recipe?: Recipe, secondsPerEpoch?: number, test: { accuracy: number, nll: number, ece: number, count?: number } }} Run
 * @typedef {{ runs: Run[], files: string[], skipped: { unparseable: number, unfinished: number, duplicates: number } }} Study
 * @typedef {{ stack: string, trainSize: number, seeds: number, mean: number, lower: number, upper: number }} Point
 */

const LABEL_SMOOTHING = 'label-smoothing:epsilon=0.1';
const RCAD_ONE = 'rcad:alpha=1,lambda=0.2';
const RCAD_HALF = 'rcad:alpha=0.5,lambda=0.2';

/** The study's stacks, in table order: `label` is the `--stack` argument as the runs record it. */
export const STACKS = [
  { label: 'erm', name: 'ERM' },
  { label: LABEL_SMOOTHING, name: 'LS (ε 0.1)' },
  { label: RCAD_ONE, name: 'RCAD (α 1)' },
  { label: `${RCAD_ONE}+${LABEL_SMOOTHING}`, name: 'LS + RCAD (α 1)' },
  { label: `${RCAD_HALF}+${LABEL_SMOOTHING}`, name: 'LS + RCAD (α 0.5)' },
];
/** The paired comparisons, treatment − baseline on the same seed. */
export const COMPARISONS = [
  { treatment: `${RCAD_ONE}+${LABEL_SMOOTHING}`, baseline: LABEL_SMOOTHING },
  { treatment: RCAD_ONE, baseline: 'erm' },
  { treatment: `${RCAD_HALF}+${LABEL_SMOOTHING}`, baseline: LABEL_SMOOTHING },
];
/** The training-set size of the five-stack comparison, and the seeds the script plans for it. */
export const COMPARISON_SIZE = 2000;
const COMPARISON_SEEDS = [0, 1, 2, 3, 4];
/** The data-scarcity curve: these two stacks at these sizes (seeds 0 and 1 planned at 1,000 and 5,000). */
export const SCARCITY = { baseline: LABEL_SMOOTHING, treatment: `${RCAD_ONE}+${LABEL_SMOOTHING}`, sizes: [1000, 2000, 5000] };
/** The bootstrap's fixed seed and size, so that the report is the same on every run. */
export const BOOTSTRAP = { seed: 16, resamples: 10_000 };
export const BEGIN_MARKER = '<!-- report:begin -->';
export const END_MARKER = '<!-- report:end -->';

const NOT_RUN = 'not run yet';
/** @param {string} label */
const nameOf = (label) => STACKS.find((stack) => stack.label === label)?.name ?? `\`${label}\``;
/** @param {number} value */
const thousands = (value) => value.toLocaleString('en-US');
/** @param {unknown} value @returns {value is number} */
const isFiniteNumber = (value) => typeof value === 'number' && Number.isFinite(value);

/**
 * Reads every finished run of a study folder: the lines of `results.jsonl` in the folder and in
 * each of its subfolders (the script writes `n1000/`, `n2000/`, `n5000/`). A line that does not
 * parse (a write cut short by a kill) or has no test metrics is skipped and counted; a repeated
 * (size, stack, seed) keeps its last line.
 * @param {string} folder
 * @returns {Study}
 */
export function readStudy(folder) {
  if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new Error(`study folder ${folder} does not exist (give the script's OUT folder)`);
  const files = [join(folder, 'results.jsonl')];
  for (const entry of readdirSync(folder, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.isDirectory()) files.push(join(folder, entry.name, 'results.jsonl'));
  }
  /** @type {Run[]} */
  const lines = [];
  let unparseable = 0;
  let unfinished = 0;
  const read = files.filter((file) => existsSync(file));
  for (const file of read) {
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((text, index) => {
        if (text.trim() === '') return;
        let run;
        try {
          run = JSON.parse(text);
        } catch {
          unparseable++;
          return;
        }
        const where = `${file}:${index + 1}`;
        if (typeof run.stack !== 'string') throw new Error(`${where}: field 'stack' must be a string`);
        if (!Number.isInteger(run.seed)) throw new Error(`${where}: field 'seed' must be an integer`);
        if (!Number.isInteger(run.data?.trainSize)) throw new Error(`${where}: field 'data.trainSize' must be an integer`);
        const test = run.test ?? {};
        if (![test.accuracy, test.nll, test.ece].every(isFiniteNumber)) {
          unfinished++;
          return;
        }
        lines.push(run);
      });
  }
  const { runs, duplicates } = dedupeRuns(lines);
  return { runs, files: read, skipped: { unparseable, unfinished, duplicates } };
}

/**
 * "86.91 ± 0.42" over two or more seeds, the value alone for one, "not run yet" for none.
 * @param {number[]} values @param {number} digits
 */
function meanCell(values, digits) {
  if (values.length === 0) return NOT_RUN;
  const { mean, standardDeviation } = summarize(values);
  return values.length > 1 ? `${mean.toFixed(digits)} ± ${standardDeviation.toFixed(digits)}` : mean.toFixed(digits);
}
/** @param {Run[]} runs */
const seedsCell = (runs) => (runs.length === 0 ? '0' : `${runs.length} (${runs.map((run) => run.seed).join(', ')})`);
/** @param {number} value */
const signed = (value) => `${value < 0 ? '−' : '+'}${Math.abs(value).toFixed(2)}`;
/** @param {{ lower: number, upper: number }} bounds */
const interval = ({ lower, upper }) => `[${signed(lower)}, ${signed(upper)}]`;
/** @param {Run} run */
const percent = (run) => run.test.accuracy * 100;

/** The recipe line every run must share: the report is about one recipe. @param {Run} run */
function recipeOf(run) {
  return JSON.stringify({ data: run.data?.name, model: run.model, recipe: run.recipe, testCount: run.test.count });
}

/**
 * Paired per-seed differences of test accuracy (points) with their mean, the count of positive
 * ones, and the 95 % t and bootstrap intervals when at least two seeds pair up (null otherwise).
 * @param {ReadonlyArray<{ seed: number, test: { accuracy: number } }>} treatmentRuns
 * @param {ReadonlyArray<{ seed: number, test: { accuracy: number } }>} baselineRuns
 */
export function pairedAccuracy(treatmentRuns, baselineRuns) {
  /** @param {ReadonlyArray<{ seed: number, test: { accuracy: number } }>} runs */
  const bySeed = (runs) => new Map(runs.map((run) => [run.seed, run.test.accuracy * 100]));
  const pairs = pairedDifferences(bySeed(treatmentRuns), bySeed(baselineRuns));
  const differences = pairs.map((pair) => pair.difference);
  const enough = differences.length >= 2;
  return {
    pairs,
    mean: differences.length > 0 ? summarize(differences).mean : null,
    positive: differences.filter((difference) => difference > 0).length,
    t: enough ? tInterval(differences, 0.95) : null,
    bootstrap: enough ? bootstrapInterval(differences, { ...BOOTSTRAP, confidence: 0.95 }) : null,
  };
}

/**
 * The generated section (markdown) and the scarcity curve's points.
 * @param {Pick<Study, 'runs' | 'skipped'>} study
 * @param {{ plot?: string }} [options] `plot`: the PNG's file name to link under the scarcity table
 * @returns {{ markdown: string, points: Point[] }}
 */
export function buildReport(study, { plot } = {}) {
  const { runs } = study;
  const recipes = [...new Set(runs.map(recipeOf))];
  if (recipes.length > 1) throw new Error(`the finished runs do not share one recipe (data, model, recipe, test size): ${recipes.join(' | ')}`);
  /** @param {number} size @param {string} label */
  const at = (size, label) => runs.filter((run) => run.data.trainSize === size && run.stack === label).sort((a, b) => a.seed - b.seed);
  const sizes = [...new Set(runs.map((run) => run.data.trainSize))].sort((a, b) => a - b);
  /** @type {string[]} */
  const out = [];
  const line = (text = '') => out.push(text);

  line(`_Generated by \`node tools/experiments/report-recipe.mjs\` from ${runs.length} finished run${runs.length === 1 ? '' : 's'}` +
    (sizes.length > 0 ? ` (${sizes.map((size) => `${runs.filter((run) => run.data.trainSize === size).length} at ${thousands(size)} images`).join(', ')})` : '') +
    '. Runs still training or not started are not counted; their cells say "not run yet"._');
  if (recipes.length === 1) {
    /** @type {{ data?: string, model?: Run['model'], recipe?: Recipe, testCount: number }} */
    const { data, model, recipe, testCount } = JSON.parse(/** @type {string} */ (recipes[0]));
    const options = Object.entries(model?.options ?? {}).map(([key, value]) => `${key} ${value}`).join(', ');
    line();
    line(`Recipe of every run, as recorded: ${data} ${model?.name}${options ? ` (${options})` : ''}, ${recipe?.epochs} epochs, batch ${recipe?.batchSize}, ` +
      `lr ${recipe?.learningRate}, momentum ${recipe?.momentum}, weight decay ${recipe?.weightDecay}, clip ${recipe?.clipNorm}, ` +
      `augment ${recipe?.augment}, validation ${recipe?.validation}; tested on ${thousands(testCount)} images.`);
  }

  // 1. The five stacks at 2,000 images.
  const comparisonLabels = STACKS.map((stack) => stack.label); // and any other stack run at this size, after them
  for (const run of runs) if (run.data.trainSize === COMPARISON_SIZE && !comparisonLabels.includes(run.stack)) comparisonLabels.push(run.stack);
  line();
  line(`### Stacks at ${thousands(COMPARISON_SIZE)} training images`);
  line();
  line('| stack | seeds finished | test accuracy % | test NLL | test ECE | s / epoch [min–max] |');
  line('|---|---|---|---|---|---|');
  for (const label of comparisonLabels) {
    const list = at(COMPARISON_SIZE, label);
    const seconds = list.map((run) => run.secondsPerEpoch).filter(isFiniteNumber);
    const [fastest, slowest] = [Math.min(...seconds).toFixed(0), Math.max(...seconds).toFixed(0)];
    const range = seconds.length === 0 ? NOT_RUN : seconds.length === 1 ? fastest : `${fastest}–${slowest}`;
    line(`| ${nameOf(label)} | ${seedsCell(list)} | ${meanCell(list.map(percent), 2)} | ${meanCell(list.map((run) => run.test.nll), 3)} | ` +
      `${meanCell(list.map((run) => run.test.ece), 3)} | ${range} |`);
  }
  line();
  line('Mean ± sample standard deviation over the seeds finished (one seed: its value alone). Seconds per epoch ' +
    'are the range over runs: the machine is shared, so they say how long a run took, not how fast a stack is (`npm run bench` measures that).');
  const seedColumns = [...new Set([...COMPARISON_SEEDS, ...runs.filter((run) => run.data.trainSize === COMPARISON_SIZE).map((run) => run.seed)])].sort((a, b) => a - b);
  line();
  line('Test accuracy % per seed:');
  line();
  line(`| stack | ${seedColumns.map((seed) => `seed ${seed}`).join(' | ')} |`);
  line(`|---|${seedColumns.map(() => '---').join('|')}|`);
  for (const label of comparisonLabels) {
    const list = at(COMPARISON_SIZE, label);
    line(`| ${nameOf(label)} | ${seedColumns.map((seed) => { const run = list.find((r) => r.seed === seed); return run ? percent(run).toFixed(2) : NOT_RUN; }).join(' | ')} |`);
  }

  // 2. Paired differences.
  line();
  line(`### Paired differences at ${thousands(COMPARISON_SIZE)} images (test accuracy, points)`);
  line();
  line(`| comparison | ${seedColumns.map((seed) => `seed ${seed}`).join(' | ')} | paired seeds | mean | positive | 95 % t interval | 95 % bootstrap interval |`);
  line(`|---|${seedColumns.map(() => '---').join('|')}|---|---|---|---|---|`);
  for (const { treatment, baseline } of COMPARISONS) {
    const result = pairedAccuracy(at(COMPARISON_SIZE, treatment), at(COMPARISON_SIZE, baseline));
    const cells = seedColumns.map((seed) => { const pair = result.pairs.find((p) => p.seed === seed); return pair ? signed(pair.difference) : NOT_RUN; });
    const count = result.pairs.length;
    const tooFew = count === 0 ? 'no paired seed yet' : 'needs ≥ 2 paired seeds';
    line(`| ${nameOf(treatment)} − ${nameOf(baseline)} | ${cells.join(' | ')} | ${count} | ${result.mean === null ? NOT_RUN : signed(result.mean)} | ` +
      `${count === 0 ? '–' : `${result.positive} of ${count}`} | ${result.t ? interval(result.t) : tooFew} | ${result.bootstrap ? interval(result.bootstrap) : tooFew} |`);
  }
  line();
  line('Each difference is treatment − baseline on the same seed (the same training images, the same initial weights and the same ' +
    'seed for shuffling and augmentation), in percentage points of test accuracy. The t interval is mean ± t(0.975, n − 1) · sd / √n over the n paired seeds; the bootstrap ' +
    `interval is the 2.5–97.5 % percentile of ${thousands(BOOTSTRAP.resamples)} resampled means (seed ${BOOTSTRAP.seed}). With a few seeds the bootstrap ` +
    'interval cannot reach beyond the differences seen, so it is narrower than the t interval without being more trustworthy.');

  // 3. Data scarcity.
  /** @type {Point[]} */
  const points = [];
  line();
  line(`### Data scarcity: ${nameOf(SCARCITY.baseline)} vs ${nameOf(SCARCITY.treatment)}`);
  line();
  line(`| training images | ${nameOf(SCARCITY.baseline)}: seeds | test accuracy % | ${nameOf(SCARCITY.treatment)}: seeds | test accuracy % | paired difference (points) |`);
  line('|---|---|---|---|---|---|');
  for (const size of SCARCITY.sizes) {
    const base = at(size, SCARCITY.baseline);
    const treated = at(size, SCARCITY.treatment);
    const paired = pairedAccuracy(treated, base);
    const differenceCell = paired.mean === null ? NOT_RUN : `${signed(paired.mean)} over ${paired.pairs.length} seed${paired.pairs.length === 1 ? '' : 's'} (${paired.positive} positive)`;
    line(`| ${thousands(size)} | ${seedsCell(base)} | ${meanCell(base.map(percent), 2)} | ${seedsCell(treated)} | ${meanCell(treated.map(percent), 2)} | ${differenceCell} |`);
    for (const [label, list] of /** @type {Array<[string, Run[]]>} */ ([[SCARCITY.baseline, base], [SCARCITY.treatment, treated]])) {
      if (list.length === 0) continue;
      const { mean, standardDeviation } = summarize(list.map(percent));
      const spread = list.length > 1 ? standardDeviation : 0;
      points.push({ stack: nameOf(label), trainSize: size, seeds: list.length, mean, lower: mean - spread, upper: mean + spread });
    }
  }
  line();
  if (points.length === 0) line('No run of the scarcity curve has finished yet: no plot.');
  else if (plot) line(`![test accuracy against training images, mean ± sd over seeds](${plot})`);
  const { unparseable, unfinished, duplicates } = study.skipped;
  if (unparseable + unfinished + duplicates > 0) {
    line();
    line(`Left out: ${duplicates} repeated line${duplicates === 1 ? '' : 's'} of the same run (one kept), ${unparseable} line${unparseable === 1 ? '' : 's'} cut short, ` +
      `${unfinished} without test metrics.`);
  }
  return { markdown: `${out.join('\n')}\n`, points };
}

/**
 * The scarcity curve: mean test accuracy against training images per stack, ± sd bars where two or more seeds finished.
 * @param {Point[]} points at least one
 * @returns {import('vega-lite').TopLevelSpec}
 */
export function scarcitySpec(points) {
  // An explicit range a point either side of the bars: vega's own collapses to one value when one run has finished.
  const domain = [Math.floor(Math.min(...points.map((point) => point.lower))) - 1, Math.ceil(Math.max(...points.map((point) => point.upper))) + 1];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Test accuracy against training images (mean ± sd over seeds)',
    width: 420,
    height: 260,
    data: { values: points },
    encoding: {
      x: { field: 'trainSize', type: 'quantitative', title: 'training images', scale: { type: 'log', domain: [800, 6000] }, axis: { values: SCARCITY.sizes, format: ',d' } },
      color: { field: 'stack', type: 'nominal', title: 'stack', sort: [nameOf(SCARCITY.baseline), nameOf(SCARCITY.treatment)] },
    },
    layer: [
      { mark: { type: 'line', point: true }, encoding: { y: { field: 'mean', type: 'quantitative', title: 'test accuracy %', scale: { domain }, axis: { format: 'd', tickMinStep: 1 } } } },
      {
        transform: [{ filter: 'datum.seeds > 1' }],
        mark: { type: 'rule' },
        encoding: { y: { field: 'lower', type: 'quantitative' }, y2: { field: 'upper' } },
      },
    ],
  };
}

/**
 * Renders the scarcity spec to `<basePath>.svg` and `.png` (vega to SVG, sharp to PNG, as the CLI's plots).
 * @param {Point[]} points @param {string} basePath
 */
export async function renderScarcityPlot(points, basePath) {
  const [{ default: sharp }, vega, { compile }] = await Promise.all([import('sharp'), import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(compile(scarcitySpec(points)).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileSync(`${basePath}.svg`, svg);
  await sharp(Buffer.from(svg), { density: 144 }).flatten({ background: '#ffffff' }).png().toFile(`${basePath}.png`);
  return { svg: `${basePath}.svg`, png: `${basePath}.png` };
}

/**
 * Replaces what lies between the report markers of a page, leaving everything outside them as it
 * was. A page without exactly one begin marker followed by one end marker is an error.
 * @param {string} page the page's text
 * @param {string} section the new generated section
 * @param {string} [name] the page's name, for errors
 */
export function replaceGeneratedSection(page, section, name = 'the page') {
  /** @param {string} marker */
  const count = (marker) => page.split(marker).length - 1;
  const begins = count(BEGIN_MARKER);
  const ends = count(END_MARKER);
  if (begins === 0 || ends === 0) {
    throw new Error(`${name} has no generated section: put a line '${BEGIN_MARKER}' and a line '${END_MARKER}' where the report goes`);
  }
  if (begins > 1 || ends > 1) throw new Error(`${name} has ${begins} '${BEGIN_MARKER}' and ${ends} '${END_MARKER}' markers: it must have one of each`);
  const begin = page.indexOf(BEGIN_MARKER);
  const end = page.indexOf(END_MARKER);
  if (end < begin) throw new Error(`${name}: '${END_MARKER}' comes before '${BEGIN_MARKER}'`);
  // Blank lines around the section: markdown then reads the markers as HTML blocks of their own.
  return `${page.slice(0, begin + BEGIN_MARKER.length)}\n\n${section.trim()}\n\n${page.slice(end)}`;
}

/**
 * Writes the report into `pagePath`'s generated section and the scarcity plot next to it
 * (`<page>-scarcity.svg` / `.png`; removed when no scarcity run has finished, so no stale plot stays).
 * @param {string} studyFolder
 * @param {string} pagePath
 */
export async function writeReport(studyFolder, pagePath) {
  if (!existsSync(pagePath)) throw new Error(`--write: page ${pagePath} does not exist (create it with the markers '${BEGIN_MARKER}' and '${END_MARKER}')`);
  const page = readFileSync(pagePath, 'utf8');
  const study = readStudy(studyFolder);
  const basePath = join(dirname(pagePath), `${basename(pagePath, '.md')}-scarcity`);
  const report = buildReport(study, { plot: `${basename(basePath)}.png` });
  const updated = replaceGeneratedSection(page, report.markdown, pagePath); // before any file is written
  const plots = [];
  if (report.points.length > 0) {
    const { svg, png } = await renderScarcityPlot(report.points, basePath);
    plots.push(svg, png);
  } else {
    for (const extension of ['.svg', '.png']) rmSync(`${basePath}${extension}`, { force: true });
  }
  writeFileSync(pagePath, updated);
  return { study, report, plots };
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({ allowPositionals: true, options: { write: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\nusage: node tools/experiments/report-recipe.mjs [STUDY] [--write PAGE.md]`);
  }
  if (parsed.values.help) {
    console.log('usage: node tools/experiments/report-recipe.mjs [STUDY (default runs/fashion-mnist-recipe)] [--write PAGE.md]');
    return;
  }
  if (parsed.positionals.length > 1) throw new Error(`one study folder, got ${parsed.positionals.length}: ${parsed.positionals.join(' ')}`);
  const folder = parsed.positionals[0] ?? 'runs/fashion-mnist-recipe';
  if (parsed.values.write !== undefined) {
    const { study, plots } = await writeReport(folder, parsed.values.write);
    console.log(`wrote the report of ${study.runs.length} finished runs into ${parsed.values.write}${plots.length > 0 ? ` and ${plots.join(', ')}` : ''}`);
  } else {
    process.stdout.write(buildReport(readStudy(folder)).markdown);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(`report-recipe: ${error.message}`);
    process.exitCode = 1;
  });
}
