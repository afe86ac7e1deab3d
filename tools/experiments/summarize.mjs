// Prints the markdown table of docs/results-fashion-mnist-2k.md from the study's results.jsonl files:
// test accuracy, NLL and ECE at each run's best-validation epoch, mean ± sample std over seeds.
//   node tools/experiments/summarize.mjs runs/fashion-mnist-2k
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2] ?? 'runs/fashion-mnist-2k';
const runs = ['three-seeds', 'one-seed']
  .map((part) => join(root, part, 'results.jsonl'))
  .filter((file) => existsSync(file))
  .flatMap((file) => readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line)));
const byStack = new Map();
for (const run of runs) {
  const key = run.stack;
  const seen = byStack.get(key) ?? new Map();
  seen.set(run.seed, run); // a resumed comparison may append a run twice: keep one per seed
  byStack.set(key, seen);
}
const stats = (values) => {
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  const std = values.length > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (values.length - 1)) : 0;
  return { mean, std };
};
const cell = (values, scale, digits) => {
  const { mean, std } = stats(values.map((v) => v * scale));
  return values.length > 1 ? `${mean.toFixed(digits)} ± ${std.toFixed(digits)}` : mean.toFixed(digits);
};
console.log('| stack | seeds | test accuracy % | test NLL | test ECE | best epoch | s / epoch |');
console.log('|---|---|---|---|---|---|---|');
for (const [stack, seeds] of byStack) {
  const list = [...seeds.values()].sort((a, b) => a.seed - b.seed);
  console.log(
    `| \`${stack}\` | ${list.map((r) => r.seed).join(', ')} | ${cell(list.map((r) => r.test.accuracy), 100, 2)} | ${cell(list.map((r) => r.test.nll), 1, 3)} | ` +
      `${cell(list.map((r) => r.test.ece), 1, 3)} | ${list.map((r) => r.bestEpoch).join(', ')} | ${stats(list.map((r) => r.secondsPerEpoch)).mean.toFixed(0)} |`,
  );
}
