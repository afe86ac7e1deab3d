import { writeFile } from 'node:fs/promises';
import sharp from 'sharp';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { JobResult } from './job.js';

/** Renders a Vega-Lite spec to SVG (pure JS, no canvas) and PNG (through sharp's librsvg). */
export async function renderChart(spec: TopLevelSpec, basePath: string): Promise<{ svg: string; png: string }> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  await writeFile(`${basePath}.svg`, svg);
  await sharp(Buffer.from(svg), { density: 144 }).flatten({ background: '#ffffff' }).png().toFile(`${basePath}.png`);
  return { svg: `${basePath}.svg`, png: `${basePath}.png` };
}

/**
 * Validation accuracy per epoch, one line per stack (mean over seeds); the training loss instead
 * when the runs have no validation set.
 */
export function learningCurveSpec(results: readonly JobResult[]): TopLevelSpec {
  const validated = results.every((result) => result.history.every((record) => record.validation !== undefined));
  const values = results.flatMap((result) =>
    result.history.map((record) => ({
      stack: result.stack,
      seed: result.seed,
      epoch: record.epoch,
      value: validated ? record.validation!.accuracy : record.terms.total,
    })),
  );
  const measure = validated ? 'validation accuracy' : 'training loss';
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${validated ? 'Validation accuracy' : 'Training loss'} by epoch (mean over seeds)`,
    width: 420,
    height: 260,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', title: 'epoch' },
      y: { aggregate: 'mean', field: 'value', type: 'quantitative', title: measure, scale: { zero: false } },
      color: { field: 'stack', type: 'nominal', title: 'stack', legend: { labelLimit: 420 } },
    },
  };
}

/** Reliability diagram per stack: accuracy against confidence in 15 bins, with the diagonal. */
export function reliabilitySpec(results: readonly JobResult[]): TopLevelSpec {
  const values = results.flatMap((result) =>
    result.test.reliability
      .filter((bin) => bin.count > 0)
      .map((bin) => ({ stack: result.stack, seed: result.seed, confidence: bin.confidence, accuracy: bin.accuracy, count: bin.count })),
  );
  const stacks = [...new Set(results.map((r) => r.stack))];
  const diagonal = stacks.flatMap((stack) => [
    { stack, x: 0, y: 0 },
    { stack, x: 1, y: 1 },
  ]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Reliability on the test set (perfect calibration on the diagonal)',
    data: { values: [...values.map((v) => ({ ...v, kind: 'bin' })), ...diagonal.map((d) => ({ ...d, kind: 'diagonal' }))] },
    facet: { field: 'stack', type: 'nominal', title: null, sort: stacks, header: { labelLimit: 200, labelFontSize: 10 } },
    spacing: 24,
    columns: 4,
    spec: {
      width: 150,
      height: 150,
      layer: [
        {
          transform: [{ filter: "datum.kind === 'diagonal'" }],
          mark: { type: 'line', color: '#999', strokeDash: [4, 4] },
          encoding: { x: { field: 'x', type: 'quantitative' }, y: { field: 'y', type: 'quantitative' } },
        },
        {
          transform: [{ filter: "datum.kind === 'bin'" }],
          mark: { type: 'point', filled: true },
          encoding: {
            x: { field: 'confidence', type: 'quantitative', scale: { domain: [0, 1] }, title: 'confidence' },
            y: { field: 'accuracy', type: 'quantitative', scale: { domain: [0, 1] }, title: 'accuracy' },
            size: { field: 'count', type: 'quantitative', legend: null },
            color: { field: 'seed', type: 'nominal', title: 'seed' },
          },
        },
      ],
    },
  };
}
