import type { JobResult } from './job.js';

/** One row of the comparison table: a stack, aggregated over its seeds. */
export interface SummaryRow {
  stack: string;
  seeds: number[];
  accuracy: { mean: number; std: number };
  nll: { mean: number; std: number };
  ece: { mean: number; std: number };
  secondsPerEpoch: number;
  /** Step time relative to the first stack's (the baseline). */
  relativeStepTime: number;
}

/** Mean and sample standard deviation (0 for one value). */
export function meanAndStd(values: readonly number[]): { mean: number; std: number } {
  const mean = values.reduce((sum, v) => sum + v, 0) / values.length;
  if (values.length < 2) return { mean, std: 0 };
  const variance = values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / (values.length - 1);
  return { mean, std: Math.sqrt(variance) };
}

/** Groups results by stack, in the order the stacks were given. */
export function summarize(results: readonly JobResult[], stackOrder: readonly string[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const stack of stackOrder) {
    const runs = results.filter((result) => result.stack === stack);
    if (runs.length === 0) continue;
    rows.push({
      stack,
      seeds: runs.map((run) => run.seed),
      accuracy: meanAndStd(runs.map((run) => run.test.accuracy)),
      nll: meanAndStd(runs.map((run) => run.test.nll)),
      ece: meanAndStd(runs.map((run) => run.test.ece)),
      secondsPerEpoch: meanAndStd(runs.map((run) => run.secondsPerEpoch)).mean,
      relativeStepTime: Number.NaN,
    });
  }
  const baseline = rows[0]?.secondsPerEpoch;
  for (const row of rows) row.relativeStepTime = baseline ? row.secondsPerEpoch / baseline : Number.NaN;
  return rows;
}

const plusMinus = ({ mean, std }: { mean: number; std: number }, scale: number, digits: number) =>
  `${(mean * scale).toFixed(digits)} ± ${(std * scale).toFixed(digits)}`;

/** Table cells, formatted: accuracy in %, NLL and ECE as numbers. */
export function formatRow(row: SummaryRow): string[] {
  return [
    row.stack,
    String(row.seeds.length),
    plusMinus(row.accuracy, 100, 2),
    plusMinus(row.nll, 1, 3),
    plusMinus(row.ece, 1, 3),
    row.secondsPerEpoch.toFixed(1),
    `${row.relativeStepTime.toFixed(2)}×`,
  ];
}

/** Column headers matching {@link formatRow}. */
export const SUMMARY_HEADERS = ['stack', 'seeds', 'test accuracy %', 'test NLL', 'test ECE', 's / epoch', 'time vs first'];
