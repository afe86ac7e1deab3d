// Resume after SIGKILL mid-epoch, on a CNN with batch norm, mixup, crop + flip, the two-view base
// loss and a multi-step schedule: through `train()` (a child process) and through
// `regstack train --resume` (the built binary). The resumed run must equal the uninterrupted one:
// weights, batch-norm running statistics, momentum buffers, history (timings aside), best epoch,
// test metrics; and the weights at the end must be the best-validation epoch's.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobResult } from './job.js';
import { assertBuilt, regstack, running, start, BINARY, startTypeScript, withoutTimings } from './test-processes.js';

let directory: string;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'regstack-resume-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

const CHILD = new URL('./test-resume-child.ts', import.meta.url);
const lines = (text: string) => text.split('\n').filter((line) => line.startsWith('{'));

interface Checkpoint {
  manifest: { state: { epoch: number; history: unknown[]; bestEpoch: number }; tensors: Array<{ group: string; name: string; shape: number[]; offset: number }> };
  data: Buffer;
}

async function readCheckpoint(folder: string): Promise<Checkpoint> {
  const manifest = JSON.parse(await readFile(join(folder, 'checkpoint.json'), 'utf8'));
  return { manifest, data: await readFile(join(folder, manifest.blob)) };
}

/** The float values of one group of a checkpoint, tensor by tensor. */
function group(checkpoint: Checkpoint, name: string): number[][] {
  const values = new Float32Array(checkpoint.data.buffer, checkpoint.data.byteOffset, checkpoint.data.byteLength / 4);
  return checkpoint.manifest.tensors
    .filter((entry) => entry.group === name)
    .map((entry) => Array.from(values.subarray(entry.offset, entry.offset + entry.shape.reduce((a, b) => a * b, 1))));
}

describe('resume after SIGKILL mid-epoch', () => {
  it('through train(): the resumed run equals the uninterrupted one, and ends on the best-validation weights', async () => {
    const straight = join(directory, 'api-straight');
    const killed = join(directory, 'api-killed');
    const first = await startTypeScript(CHILD, [straight]).done;
    expect(first.code, first.stderr).toBe(0);

    const victim = startTypeScript(CHILD, [killed, 'pause-at', '2 4']);
    await victim.waitFor(/^batch 2 4$/m); // 9 steps an epoch: mid-epoch 2, where the child waits
    victim.child.kill('SIGKILL');
    const ended = await victim.done;
    expect(ended.signal).toBe('SIGKILL');
    expect((await readCheckpoint(join(killed, 'checkpoint'))).manifest.state.epoch).toBe(1); // killed after epoch 1's checkpoint
    const resumed = await startTypeScript(CHILD, [killed, 'resume']).done;
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).not.toMatch(/^batch 1 /m); // epoch 1 was not trained again

    const [a, b] = await Promise.all([straight, killed].map(async (folder) => JSON.parse(await readFile(join(folder, 'out.json'), 'utf8'))));
    expect(withoutTimings(b.result)).toEqual(withoutTimings(a.result)); // history, best epoch, validation, test
    expect(b.variables).toEqual(a.variables); // every variable, batch-norm statistics included
    const [checkpointA, checkpointB] = (await Promise.all([straight, killed].map((folder) => readCheckpoint(join(folder, "checkpoint"))))) as [Checkpoint, Checkpoint];
    // The last checkpoints are byte for byte the same: last weights, running statistics, momentum buffers, best snapshot.
    expect(checkpointB.data.equals(checkpointA.data)).toBe(true);
    expect(withoutTimings(checkpointB.manifest.state)).toEqual(withoutTimings(checkpointA.manifest.state));
    const momentum = group(checkpointA, 'optimizer');
    expect(momentum.length).toBeGreaterThan(0);
    expect(momentum.some((buffer) => buffer.some((value) => value !== 0))).toBe(true);

    // The last epoch's rate is too high: an earlier epoch is the best, and its weights are restored.
    expect(a.result.bestEpoch).toBeLessThan(3);
    const best = group(checkpointA, 'best');
    const last = group(checkpointA, 'model');
    const asFloat32 = (values: number[][]) => values.map((tensor) => Array.from(Float32Array.from(tensor)));
    expect(asFloat32(a.variables)).toEqual(best);
    expect(asFloat32(a.variables)).not.toEqual(last);
    expect(a.result.validation.accuracy).toBe(a.result.history[a.result.bestEpoch - 1].validation.accuracy);
  });

  it('through regstack train --resume: the same result and checkpoint as an uninterrupted run, the dead run\'s lock taken over', async () => {
    assertBuilt();
    const args = [
      'train', '--train-size', '160', '--test-size', '100', '--model-options', 'width=2', '--batch-size', '16', '--epochs', '4',
      '--lr', '0.05', '--milestones', '1.5,2.5', '--augment', 'two-view', '--reg', 'mixup', '--seed', '4',
    ];
    const straight = join(directory, 'cli-straight');
    const killed = join(directory, 'cli-killed');
    const first = await regstack([...args, '--out', straight]);
    expect(first.code, first.stderr).toBe(0);

    const victim = start([BINARY, ...args, '--out', killed]);
    // Killed as soon as epoch 2 is reported (after its checkpoint): in epoch 3, or on a loaded
    // machine that reacts late, in epoch 4. The checkpoint on disk and the last line printed say where.
    await victim.waitFor(/"epoch":2,/);
    victim.child.kill('SIGKILL');
    const { stdout: printed } = await victim.done;
    const atKill = (await readCheckpoint(join(killed, 'checkpoint'))).manifest.state.epoch;
    expect([2, 3]).toContain(atKill);
    expect(lines(printed).map((line) => JSON.parse(line).epoch).at(-1)).toBe(atKill); // the next epoch had begun, not ended
    expect(existsSync(join(killed, 'result.json'))).toBe(false);
    const lock = JSON.parse(await readFile(join(killed, 'regstack.lock'), 'utf8'));
    expect(lock.pid).toBe(victim.child.pid);
    expect(running(lock.pid)).toBe(false);

    const again = await regstack([...args, '--out', killed]);
    expect(again.code).toBe(6); // without --resume, a folder with a run is refused
    expect(again.stderr.trim()).toBe(`regstack: ${killed}: holds a run already (a checkpoint): add --resume to continue it, or --overwrite to start over`);
    const resumed = await regstack([...args, '--resume', '--out', killed]);
    expect(resumed.code, resumed.stderr).toBe(0);
    // Only the epochs after the checkpoint were trained again.
    expect(lines(resumed.stdout).map((line) => JSON.parse(line).epoch)).toEqual([3, 4].filter((epoch) => epoch > atKill));
    expect(await readdir(killed)).not.toContain('regstack.lock');

    const [a, b] = (await Promise.all([straight, killed].map(async (folder) => JSON.parse(await readFile(join(folder, 'result.json'), 'utf8')) as JobResult))) as [JobResult, JobResult];
    expect(withoutTimings({ ...b, id: '' })).toEqual(withoutTimings({ ...a, id: '' }));
    expect(b.history).toHaveLength(4);
    const [checkpointA, checkpointB] = (await Promise.all([straight, killed].map((folder) => readCheckpoint(join(folder, "checkpoint"))))) as [Checkpoint, Checkpoint];
    expect(checkpointB.data.equals(checkpointA.data)).toBe(true);
    expect(a.validation!.accuracy).toBe(a.history[a.bestEpoch - 1]!.validation!.accuracy);
  });
});
