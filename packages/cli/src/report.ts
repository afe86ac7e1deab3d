import { writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { jobCommand, type JobResult, type JobSpec } from './job.js';
import { SUMMARY_HEADERS, formatRow, type SummaryRow } from './summary.js';

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Writes `report.html`: the table, the plots (linked images), and how each run was made. */
export async function writeReport(options: {
  directory: string;
  title: string;
  note: string;
  command: string;
  rows: readonly SummaryRow[];
  results: readonly JobResult[];
  jobs: readonly JobSpec[];
  images: { learningCurves: string; reliability: string };
  /** Runs that failed (queued sweeps), listed under the table. */
  failed?: readonly { stack: string; seed: number; reason: string }[];
}): Promise<string> {
  const { rows, jobs, images } = options;
  const first = jobs[0];
  const table = [
    `<tr>${SUMMARY_HEADERS.map((h) => `<th>${escape(h)}</th>`).join('')}</tr>`,
    ...rows.map((row) => `<tr>${formatRow(row).map((cell, i) => `<td${i === 0 ? ' class="stack"' : ''}>${escape(cell)}</td>`).join('')}</tr>`),
  ].join('\n');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escape(options.title)}</title>
<style>
 body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2rem auto; padding: 0 1rem; color: #222; }
 table { border-collapse: collapse; margin: 1rem 0; }
 th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: right; }
 th { background: #f4f4f4; } td.stack { text-align: left; font-family: ui-monospace, monospace; }
 .note { background: #fff8e1; border-left: 4px solid #f5b800; padding: .6rem 1rem; }
 code, pre { font-family: ui-monospace, monospace; font-size: 13px; } pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
 img { max-width: 100%; }
</style>
</head>
<body>
<h1>${escape(options.title)}</h1>
<p class="note">${escape(options.note)}</p>
<p>Data: <b>${escape(first?.data.name ?? '')}</b>${first?.data.trainSize ? ` (${first.data.trainSize} training images)` : ''}, model <b>${escape(first?.model.name ?? '')}</b>,
${first ? `${first.recipe.epochs} epochs, batch ${first.recipe.batchSize}, learning rate ${first.recipe.learningRate}, augmentation ${escape(first.recipe.augment)}, backend ${escape(first.backend)}` : ''}.
Test metrics are those of each run's ${first?.recipe.validation === 'none' ? 'final epoch (no hold-out: trained on all training images)' : 'best-validation epoch'}; mean ± sample standard deviation over seeds.</p>
<table>
${table}
</table>
${options.failed?.length ? `<h2>Failed runs</h2>\n<table>\n<tr><th>stack</th><th>seed</th><th>reason</th></tr>\n${options.failed.map((f) => `<tr><td class="stack">${escape(f.stack)}</td><td>${f.seed}</td><td class="stack">${escape(f.reason)}</td></tr>`).join('\n')}\n</table>` : ''}
<h2>Learning curves</h2>
<p><a href="${escape(basename(images.learningCurves))}.svg"><img src="${escape(basename(images.learningCurves))}.png" alt="learning curves by epoch for each stack"></a></p>
<h2>Reliability diagrams</h2>
<p><a href="${escape(basename(images.reliability))}.svg"><img src="${escape(basename(images.reliability))}.png" alt="reliability diagrams of each stack on the test set"></a></p>
<h2>How this was made</h2>
<pre>${escape(options.command)}</pre>
<p>Each run alone (results in <code>runs/&lt;id&gt;/result.json</code>):</p>
<pre>${jobs.map((job) => escape(jobCommand(job))).join('\n')}</pre>
</body>
</html>
`;
  const path = join(options.directory, 'report.html');
  await writeFile(path, html);
  return path;
}
