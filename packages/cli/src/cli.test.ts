import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createProgram, main } from './cli.js';
import { createRegularizers } from './registry.js';
import { jobCommand, type JobResult, type JobSpec } from './job.js';
import { useBackend } from '@regstack/backend';
import { fashionMnistFiles } from '@regstack/datasets/node';

let directory: string;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'regstack-cli-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Runs the program with `args`, capturing what it writes. */
async function run(args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number | undefined }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  const previous = process.exitCode;
  process.exitCode = undefined;
  try {
    await main(['node', 'regstack', ...args]);
    return { stdout, stderr, exitCode: process.exitCode };
  } finally {
    process.exitCode = previous;
    out.mockRestore();
    err.mockRestore();
  }
}

describe('regstack command line', () => {
  it('has help for every command', () => {
    const program = createProgram();
    for (const name of ['train', 'compare', 'list']) {
      const help = program.commands.find((command) => command.name() === name)!.helpInformation();
      expect(help).toContain(`regstack ${name}`);
    }
    expect(program.commands.find((c) => c.name() === 'compare')!.helpInformation()).toContain('--stack');
  });

  it('names what exists when a regularizer or an option is unknown', async () => {
    expect(() => createRegularizers([{ name: 'dropblock', options: {} }])).toThrow(/unknown regularizer 'dropblock'; known: rcad, label-smoothing, mixup, adversarial-training, entropy-min, me-ada/);
    const result = await run(['train', '--reg', 'rcad:alpah=1', '--epochs', '1', '--out', join(directory, 'bad')]);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/rcad\.alpah: unknown option; known options: alpha, lambda, mode/);
  });

  it('prints a typed error with its cause on one line (a corrupt data file)', async () => {
    const data = join(directory, 'bad-gzip');
    await mkdir(data);
    // The gzip magic bytes, then nothing zlib can inflate.
    for (const stem of Object.values(fashionMnistFiles)) await writeFile(join(data, `${stem}.gz`), Uint8Array.from([0x1f, 0x8b, 8, 0, 0, 0]));
    const result = await run(['train', '--data', 'fashion-mnist', '--data-dir', data, '--epochs', '1', '--out', join(directory, 'bad-gzip-run')]);
    expect(result.exitCode).toBe(3); // a DataError (README: exit codes)
    expect(result.stderr).toMatch(/^regstack: \S+: \S+\.gz is a corrupt or truncated gzip file \(cause: unexpected end of file\)\n$/);
  });

  it('compare checks every stack before its first job: mix weights adding up to 1.3 fail at once, naming the stack', async () => {
    const out = join(directory, 'overweight');
    const stack = 'adversarial-training:weight=0.7+me-ada:weight=0.6';
    const result = await run(['compare', '--stack', 'erm', '--stack', stack, '--train-size', '96', '--test-size', '100', '--epochs', '1', '--workers', '1', '--out', out]);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toBe(
      `regstack: --stack: '${stack}' cannot be composed: stack: the generated-loss plugins' mix weights add up to 1.3 > 1 (adversarial-training 0.7 + me-ada 0.6); lower them so that they sum to at most 1\n`,
    );
    expect(existsSync(join(out, 'runs'))).toBe(false); // no job started, not even erm's
  });

  it('compares two stacks end to end: table, plots, report and per-run results', async () => {
    const out = join(directory, 'compare');
    const { stdout } = await run([
      'compare', '--stack', 'erm', '--stack', 'rcad:alpha=0.5+label-smoothing:epsilon=0.1',
      '--train-size', '96', '--test-size', '100', '--model-options', 'width=2', '--epochs', '1', '--batch-size', '32',
      '--lr', '0.05', '--workers', '1', '--out', out,
    ]);
    expect(stdout).toMatch(/erm\s.*│ 1 /);
    expect(stdout).toContain('rcad:alpha=0.5+label-smoothing:epsilon=0.1');
    for (const file of ['results.jsonl', 'report.html', 'learning-curves.svg', 'learning-curves.png', 'reliability.svg', 'reliability.png', 'results.json']) {
      expect(existsSync(join(out, file)), file).toBe(true);
    }
    const png = await readFile(join(out, 'reliability.png'));
    expect([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join('')).toBe('PNG');
    const results = JSON.parse(await readFile(join(out, 'results.json'), 'utf8')) as JobResult[];
    expect(results.map((r) => r.stack)).toEqual(['erm', 'rcad:alpha=0.5+label-smoothing:epsilon=0.1']);
    expect(results[0]!.test.count).toBe(100);
    expect(Object.keys(results[1]!.history[0]!.terms).sort()).toEqual(['base', 'rcad', 'total']);
    const report = await readFile(join(out, 'report.html'), 'utf8');
    expect(report).toContain('<img src="reliability.png"');
    expect(report).toContain('regstack train --data fashion-mnist-embedded');

    // Resuming reads finished runs back instead of training again.
    const again = await run(['compare', '--stack', 'erm', '--train-size', '96', '--test-size', '100', '--model-options', 'width=2', '--epochs', '1', '--batch-size', '32', '--lr', '0.05', '--workers', '1', '--resume', '--out', out]);
    expect(again.exitCode ?? 0).toBe(0);
    expect(again.stdout).toContain(`${(100 * results[0]!.test.accuracy).toFixed(2)} ± 0.00`);
    const lines = (await readFile(join(out, 'results.jsonl'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(2); // the read-back run is not appended twice
  });

  it('trains without a hold-out (--validation none): every training image, the final epoch tested, the rerun command says so', async () => {
    const out = join(directory, 'no-hold-out');
    const result = await run(['train', '--model', 'linear', '--validation', 'none', '--train-size', '96', '--test-size', '50', '--epochs', '2', '--batch-size', '10', '--out', out]);
    expect(result.exitCode ?? 0).toBe(0);
    expect(result.stderr).toContain('final epoch 2:');
    const saved = JSON.parse(await readFile(join(out, 'result.json'), 'utf8')) as JobResult;
    expect(saved.validation).toBeUndefined();
    expect(saved.steps).toBe(2 * 10); // 96 images, none held out, batch 10
    expect(saved.bestEpoch).toBe(2);
    const spec = JSON.parse(await readFile(join(out, 'job.json'), 'utf8')) as JobSpec;
    expect(jobCommand(spec)).toContain('--validation none');
    const heldOut = await run(['train', '--model', 'linear', '--train-size', '96', '--test-size', '50', '--epochs', '2', '--batch-size', '10', '--out', join(directory, 'hold-out')]);
    expect(heldOut.stderr).toContain('best epoch');
    const withHoldOut = JSON.parse(await readFile(join(directory, 'hold-out', 'result.json'), 'utf8')) as JobResult;
    expect(withHoldOut.steps).toBe(2 * 9); // 10 of 96 held out: 86 images
  });

  it('trains with worker threads for the convolutions and writes the thread count into the rerun command', async () => {
    const out = join(directory, 'threads');
    try {
      const result = await run(['train', '--threads', '2', '--train-size', '96', '--test-size', '100', '--model-options', 'width=2', '--epochs', '1', '--batch-size', '32', '--out', out]);
      expect(result.exitCode ?? 0).toBe(0);
      const spec = JSON.parse(await readFile(join(out, 'job.json'), 'utf8')) as JobSpec;
      expect(spec.threads).toBe(2);
      expect(jobCommand(spec)).toContain('--threads 2');
      expect(existsSync(join(out, 'result.json'))).toBe(true);
    } finally {
      await useBackend('wasm');
    }
  });
});
