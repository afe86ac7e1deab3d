import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRegularizers, regularizerRegistry, renamedRegularizers } from './registry.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the regularizer registry', () => {
  it('knows each plugin by one name: its command-line name is the name of its term, and it declares contract v1', () => {
    const names = Object.keys(regularizerRegistry);
    expect(names).toEqual(['rcad', 'label-smoothing', 'mixup', 'adversarial-training', 'entropy-min', 'me-ada']);
    const plugins = createRegularizers(names.map((name) => ({ name, options: {} })));
    expect(plugins.map((plugin) => plugin.name)).toEqual(names);
    expect(plugins.map((plugin) => plugin.specificationVersion)).toEqual(names.map(() => 'v1'));
  });

  it("still accepts a renamed regularizer's old name, with a notice printed once", () => {
    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((text) => {
      written.push(String(text));
      return true;
    });
    expect(renamedRegularizers).toEqual({ adversarial: 'adversarial-training' });
    const [first] = createRegularizers([{ name: 'adversarial', options: { epsilon: 0.03 } }]);
    const [second] = createRegularizers([{ name: 'adversarial', options: {} }]);
    expect([first!.name, second!.name]).toEqual(['adversarial-training', 'adversarial-training']);
    expect(written).toEqual(["regstack: 'adversarial' is now called 'adversarial-training'; the old name will stop working in a later release\n"]);
    expect(() => createRegularizers([{ name: 'adversarial', options: { epsilon: -1 } }])).toThrow(/adversarialTraining\.epsilon/);
  });
});
