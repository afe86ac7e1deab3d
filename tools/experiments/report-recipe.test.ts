import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { BEGIN_MARKER, END_MARKER, buildReport, readStudy, replaceGeneratedSection, scarcitySpec } from './report-recipe.mjs';

const script = fileURLToPath(new URL('./report-recipe.mjs', import.meta.url));
const LS = 'label-smoothing:epsilon=0.1';
const RCAD = 'rcad:alpha=1,lambda=0.2';
const LS_RCAD = `${RCAD}+${LS}`;
const recipe = { epochs: 20, batchSize: 32, learningRate: 0.1, momentum: 0.9, weightDecay: 0.0005, clipNorm: 1, augment: 'two-view', validation: 'none' };

/** One results.jsonl line as `regstack compare` writes it. */
function line(stack: string, seed: number, trainSize: number, accuracy: number, extra: { nll?: number; ece?: number; seconds?: number; epochs?: number } = {}) {
  return JSON.stringify({
    id: `${stack}__seed${seed}`,
    stack,
    seed,
    data: { name: 'fashion-mnist', trainSize },
    model: { name: 'resnet18', options: { width: 16 } },
    recipe: { ...recipe, epochs: extra.epochs ?? 20 },
    backend: 'wasm',
    bestEpoch: 20,
    secondsPerEpoch: extra.seconds ?? 60,
    secondsPerStep: 1,
    steps: 1260,
    test: { accuracy, nll: extra.nll ?? 0.4, ece: extra.ece ?? 0.03, count: 10000 },
  });
}

/**
 * A study folder as the script leaves it part-way: n2000 with ERM and LS on seeds 0-2, LS + RCAD on
 * seeds 0-1 (seed 0's line twice, as a resumed comparison may write it), RCAD on seed 0 only, and
 * LS + RCAD α 0.5 still training (a run folder, no line); n1000 with both scarcity stacks on seeds
 * 0-1, a line without test metrics and a last line cut short by a kill; no n5000 at all.
 */
function writeStudy(): string {
  const root = mkdtempSync(join(tmpdir(), 'report-recipe-'));
  mkdirSync(join(root, 'n2000', 'runs', 'rcad_alpha=0.5_lambda=0.2_label-smoothing_epsilon=0.1__seed0'), { recursive: true });
  writeFileSync(join(root, 'n2000', 'runs', 'rcad_alpha=0.5_lambda=0.2_label-smoothing_epsilon=0.1__seed0', 'job.json'), '{}');
  const n2000 = [
    line('erm', 0, 2000, 0.85, { nll: 0.4, ece: 0.02, seconds: 50 }),
    line(LS, 0, 2000, 0.87, { nll: 0.5, ece: 0.05, seconds: 40 }),
    line(RCAD, 0, 2000, 0.86, { seconds: 90 }),
    line(LS_RCAD, 0, 2000, 0.885),
    line('erm', 1, 2000, 0.86, { nll: 0.5, ece: 0.03, seconds: 70 }),
    line(LS, 1, 2000, 0.88, { nll: 0.5, ece: 0.05, seconds: 40 }),
    line(LS_RCAD, 0, 2000, 0.885),
    line(LS_RCAD, 1, 2000, 0.875),
    line('erm', 2, 2000, 0.87, { nll: 0.6, ece: 0.04, seconds: 60 }),
    line(LS, 2, 2000, 0.89, { nll: 0.5, ece: 0.05, seconds: 40 }),
  ];
  writeFileSync(join(root, 'n2000', 'results.jsonl'), `${n2000.join('\n')}\n`);
  mkdirSync(join(root, 'n1000'));
  const untested = line(LS_RCAD, 2, 1000, 0.9).replace(/"test":\{[^}]*\}/, '"test":{"count":0}');
  const n1000 = [line(LS, 0, 1000, 0.8), line(LS_RCAD, 0, 1000, 0.83), line(LS, 1, 1000, 0.82), line(LS_RCAD, 1, 1000, 0.81), untested];
  writeFileSync(join(root, 'n1000', 'results.jsonl'), `${n1000.join('\n')}\n${line(LS, 2, 1000, 0.9).slice(0, 40)}`);
  return root;
}

/** The cells of the markdown table row whose first cell is `first`, in the section after `heading`. */
function row(markdown: string, heading: string, first: string): string[] {
  const section = markdown.slice(markdown.indexOf(heading));
  const found = section.split('\n').find((text) => text.startsWith(`| ${first} |`));
  if (!found) throw new Error(`no row '${first}' after '${heading}'`);
  return found.split('|').slice(2, -1).map((cell) => cell.trim());
}

describe('the recipe study report', () => {
  let study: string;
  let markdown: string;
  let points: Array<{ stack: string; trainSize: number; seeds: number; mean: number; lower: number; upper: number }>;
  beforeAll(() => {
    study = writeStudy();
    const report = buildReport(readStudy(study), { plot: 'curve.png' });
    markdown = report.markdown;
    points = report.points;
  });

  it('reads finished runs only, once each', () => {
    const { runs, skipped } = readStudy(study);
    expect(runs).toHaveLength(13); // 10 lines at 2,000 less the repeat, 4 whole lines with test metrics at 1,000
    expect(skipped).toEqual({ unparseable: 1, unfinished: 1, duplicates: 1 });
    expect(markdown).toContain('from 13 finished runs (4 at 1,000 images, 9 at 2,000 images)');
    expect(markdown).toContain('Left out: 1 repeated line of the same run (one kept), 1 line cut short, 1 without test metrics.');
  });

  it('gives each stack at 2,000 images its seeds, mean ± sd and the range of seconds per epoch', () => {
    const heading = '### Stacks at 2,000';
    expect(row(markdown, heading, 'ERM')).toEqual(['3 (0, 1, 2)', '86.00 ± 1.00', '0.500 ± 0.100', '0.030 ± 0.010', '50–70']);
    expect(row(markdown, heading, 'LS (ε 0.1)')).toEqual(['3 (0, 1, 2)', '88.00 ± 1.00', '0.500 ± 0.000', '0.050 ± 0.000', '40–40']);
    expect(row(markdown, heading, 'RCAD (α 1)')).toEqual(['1 (0)', '86.00', '0.400', '0.030', '90']);
    expect(row(markdown, heading, 'LS + RCAD (α 1)')).toEqual(['2 (0, 1)', '88.00 ± 0.71', '0.400 ± 0.000', '0.030 ± 0.000', '60–60']);
    expect(row(markdown, heading, 'LS + RCAD (α 0.5)')).toEqual(['0', 'not run yet', 'not run yet', 'not run yet', 'not run yet']);
    expect(row(markdown, 'Test accuracy % per seed', 'RCAD (α 1)')).toEqual(['86.00', 'not run yet', 'not run yet', 'not run yet', 'not run yet']);
  });

  it('pairs seeds: differences, mean, positives, and intervals only from two seeds on', () => {
    const heading = '### Paired differences';
    // LS + RCAD − LS: seed 0 88.5 − 87 = +1.5, seed 1 87.5 − 88 = −0.5; mean +0.5;
    // t: 0.5 ± 12.7062 · √2 / √2; bootstrap over two values: exactly [−0.5, +1.5]
    expect(row(markdown, heading, 'LS + RCAD (α 1) − LS (ε 0.1)')).toEqual([
      '+1.50', '−0.50', 'not run yet', 'not run yet', 'not run yet', '2', '+0.50', '1 of 2', '[−12.21, +13.21]', '[−0.50, +1.50]',
    ]);
    expect(row(markdown, heading, 'RCAD (α 1) − ERM')).toEqual([
      '+1.00', 'not run yet', 'not run yet', 'not run yet', 'not run yet', '1', '+1.00', '1 of 1', 'needs ≥ 2 paired seeds', 'needs ≥ 2 paired seeds',
    ]);
    expect(row(markdown, heading, 'LS + RCAD (α 0.5) − LS (ε 0.1)')).toEqual([
      'not run yet', 'not run yet', 'not run yet', 'not run yet', 'not run yet', '0', 'not run yet', '–', 'no paired seed yet', 'no paired seed yet',
    ]);
  });

  it('draws the scarcity curve from the sizes that ran and says which did not', () => {
    const heading = '### Data scarcity';
    expect(row(markdown, heading, '1,000')).toEqual(['2 (0, 1)', '81.00 ± 1.41', '2 (0, 1)', '82.00 ± 1.41', '+1.00 over 2 seeds (1 positive)']);
    expect(row(markdown, heading, '2,000')).toEqual(['3 (0, 1, 2)', '88.00 ± 1.00', '2 (0, 1)', '88.00 ± 0.71', '+0.50 over 2 seeds (1 positive)']);
    expect(row(markdown, heading, '5,000')).toEqual(['0', 'not run yet', '0', 'not run yet', 'not run yet']);
    expect(points.map((point) => [point.stack, point.trainSize, point.seeds])).toEqual([
      ['LS (ε 0.1)', 1000, 2], ['LS + RCAD (α 1)', 1000, 2], ['LS (ε 0.1)', 2000, 3], ['LS + RCAD (α 1)', 2000, 2],
    ]);
    expect(points[0]!.mean).toBeCloseTo(81, 10);
    expect(points[0]!.upper - points[0]!.mean).toBeCloseTo(Math.SQRT2, 10);
    expect(markdown).toContain('![test accuracy against training images, mean ± sd over seeds](curve.png)');
    // The plot's accuracy axis spans the bars with a point to spare (79.59 … 89.00 → 78 … 90),
    // also when a single run gives a single value.
    const axis = (spec: ReturnType<typeof scarcitySpec>) => (spec as { layer: Array<{ encoding: { y: { scale?: { domain: number[] } } } }> }).layer[0]!.encoding.y.scale!.domain;
    expect(axis(scarcitySpec(points))).toEqual([78, 90]);
    expect(axis(scarcitySpec([{ ...points[0]!, seeds: 1, mean: 88.43, lower: 88.43, upper: 88.43 }]))).toEqual([87, 90]);
  });

  it('refuses runs of different recipes and malformed lines, naming the field', () => {
    const mixed = mkdtempSync(join(tmpdir(), 'report-recipe-mixed-'));
    writeFileSync(join(mixed, 'results.jsonl'), `${line('erm', 0, 2000, 0.85)}\n${line('erm', 1, 2000, 0.85, { epochs: 15 })}\n`);
    expect(() => buildReport(readStudy(mixed))).toThrow(/do not share one recipe/);
    writeFileSync(join(mixed, 'results.jsonl'), `${line('erm', 0, 2000, 0.85).replace('"seed":0', '"seed":"zero"')}\n`);
    expect(() => readStudy(mixed)).toThrow(/results\.jsonl:1: field 'seed' must be an integer/);
    expect(() => readStudy(join(mixed, 'absent'))).toThrow(/study folder .*absent does not exist/);
  });

  it('says plainly when nothing has finished', () => {
    const empty = buildReport(readStudy(mkdtempSync(join(tmpdir(), 'report-recipe-empty-'))), { plot: 'curve.png' });
    expect(empty.points).toEqual([]);
    expect(empty.markdown).toContain('from 0 finished runs.');
    expect(empty.markdown).toContain('No run of the scarcity curve has finished yet: no plot.');
    expect(empty.markdown).not.toContain('curve.png');
  });

  it('prints the report, and writes it between the markers of a page with the plot beside it', () => {
    const printed = spawnSync(process.execPath, [script, study], { encoding: 'utf8' });
    expect(printed.status).toBe(0);
    expect(printed.stdout).toBe(buildReport(readStudy(study)).markdown);

    const docs = mkdtempSync(join(tmpdir(), 'report-recipe-docs-'));
    const page = join(docs, 'results.md');
    const before = '# Title\n\nHand-written setup.\n\n';
    const after = '\n\n## Reading\n\nHand-written reading.\n';
    writeFileSync(page, `${before}${BEGIN_MARKER}\nold generated text\n${END_MARKER}${after}`);
    const written = spawnSync(process.execPath, [script, study, '--write', page], { encoding: 'utf8' });
    expect(written.stderr).toBe('');
    expect(written.status).toBe(0);
    const text = readFileSync(page, 'utf8');
    expect(text.startsWith(`${before}${BEGIN_MARKER}\n\n_Generated by`)).toBe(true);
    expect(text.endsWith(`1 without test metrics.\n\n${END_MARKER}${after}`)).toBe(true);
    expect(text).not.toContain('old generated text');
    expect(text).toContain('| ERM | 3 (0, 1, 2) | 86.00 ± 1.00 |');
    expect(text).toContain('](results-scarcity.png)');
    expect(readFileSync(join(docs, 'results-scarcity.png')).subarray(1, 4).toString()).toBe('PNG');
    expect(readFileSync(join(docs, 'results-scarcity.svg'), 'utf8')).toContain('training images');

    // Written again from the same runs: the same page, byte for byte.
    expect(spawnSync(process.execPath, [script, study, '--write', page], { encoding: 'utf8' }).status).toBe(0);
    expect(readFileSync(page, 'utf8')).toBe(text);
  });

  it('leaves a page without markers as it was, with an error that names them', () => {
    const docs = mkdtempSync(join(tmpdir(), 'report-recipe-docs-'));
    const page = join(docs, 'results.md');
    writeFileSync(page, '# No markers here\n');
    const result = spawnSync(process.execPath, [script, study, '--write', page], { encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`has no generated section: put a line '${BEGIN_MARKER}' and a line '${END_MARKER}'`);
    expect(readFileSync(page, 'utf8')).toBe('# No markers here\n');
    expect(existsSync(join(docs, 'results-scarcity.png'))).toBe(false);
  });
});

describe('replaceGeneratedSection', () => {
  it('replaces only what lies between the markers', () => {
    const page = `a\n${BEGIN_MARKER}\nold\n${END_MARKER}\nb <!-- other -->\n`;
    expect(replaceGeneratedSection(page, '\nnew table\n\n')).toBe(`a\n${BEGIN_MARKER}\n\nnew table\n\n${END_MARKER}\nb <!-- other -->\n`);
  });

  it('refuses missing, repeated or reversed markers', () => {
    expect(() => replaceGeneratedSection('text', 'x', 'page.md')).toThrow(/page\.md has no generated section/);
    expect(() => replaceGeneratedSection(`${BEGIN_MARKER}\ntext`, 'x')).toThrow(/no generated section/);
    expect(() => replaceGeneratedSection(`${BEGIN_MARKER}${BEGIN_MARKER}${END_MARKER}`, 'x')).toThrow(/2 '<!-- report:begin -->' and 1/);
    expect(() => replaceGeneratedSection(`${END_MARKER}\n${BEGIN_MARKER}`, 'x')).toThrow(/comes before/);
  });
});

// Appending to a results file while the report reads it is what the live study does: the report
// must not count a line until it is whole.
describe('a line being appended', () => {
  it('is not counted until it is complete', () => {
    const root = mkdtempSync(join(tmpdir(), 'report-recipe-append-'));
    const file = join(root, 'results.jsonl');
    writeFileSync(file, `${line('erm', 0, 2000, 0.85)}\n`);
    const whole = line('erm', 1, 2000, 0.87);
    appendFileSync(file, whole.slice(0, 100));
    expect(readStudy(root).runs.map((run: { seed: number }) => run.seed)).toEqual([0]);
    appendFileSync(file, `${whole.slice(100)}\n`);
    expect(readStudy(root).runs.map((run: { seed: number }) => run.seed)).toEqual([0, 1]);
  });
});
