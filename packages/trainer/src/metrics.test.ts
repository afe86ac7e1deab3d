import { describe, expect, it } from 'vitest';
import { MetricsAccumulator } from './metrics.js';

describe('MetricsAccumulator', () => {
  it('computes accuracy, NLL and ECE by hand on four predictions', () => {
    const log = Math.log;
    // Confidences 0.9 (correct), 0.6 (wrong), 0.95 (correct), 0.5 (correct), 2 classes.
    const probabilities = [
      [0.9, 0.1],
      [0.6, 0.4],
      [0.05, 0.95],
      [0.5, 0.5],
    ];
    const labels = [0, 1, 1, 0];
    const accumulator = new MetricsAccumulator(10);
    accumulator.add(probabilities.flat().map(log), labels.slice(0, 2), 2);
    accumulator.add(probabilities.slice(2).flat().map(log), labels.slice(2), 2);
    const result = accumulator.result();
    expect(result.count).toBe(4);
    expect(result.accuracy).toBeCloseTo(3 / 4, 12);
    expect(result.nll).toBeCloseTo(-(log(0.9) + log(0.4) + log(0.95) + log(0.5)) / 4, 6);
    // Bins (0.8,0.9]: {0.9 ✓}; (0.5,0.6]: {0.6 ✗}; (0.9,1.0]: {0.95 ✓}; (0.4,0.5]: {0.5 ✓}.
    const expectedEce = (Math.abs(1 - 0.9) + Math.abs(0 - 0.6) + Math.abs(1 - 0.95) + Math.abs(1 - 0.5)) / 4;
    expect(result.ece).toBeCloseTo(expectedEce, 6);
    expect(result.reliability.map((bin) => bin.count)).toEqual([0, 0, 0, 0, 1, 1, 0, 0, 1, 1]);
  });
});
