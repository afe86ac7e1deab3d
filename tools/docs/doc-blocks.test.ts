// Every ```ts block of every README and doc compiles under --strict as a user would write it.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { allBlocks, checkBlocks, extractBlocks, formatErrors } from './doc-blocks.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const blocks = allBlocks(root);

describe('the TypeScript blocks of the READMEs and docs', () => {
  it('are found, with the preludes before their fences', () => {
    const files = new Set(blocks.map((block) => block.file));
    expect(files).toContain('README.md');
    expect(files).toContain('packages/regularizer/README.md');
    expect(files).toContain('packages/rcad/README.md');
    expect(blocks.length).toBeGreaterThanOrEqual(14);
    const [block] = extractBlocks('x.md', 'text\n<!-- prelude\ndeclare const a: number;\n-->\n```ts\nconst b = a;\n```\n```ts\nconst c = 1;\n```\n');
    expect(block).toEqual({ file: 'x.md', line: 6, prelude: 'declare const a: number;\n', code: 'const b = a;' });
    expect(extractBlocks('x.md', '```ts\nx\n```\n<!-- prelude\ndeclare const a: 1;\n-->\n\ntext\n```ts\ny\n```')[1]!.prelude).toBe('');
  });

  // The failure that started this: TF.js 4.22 declares Adam's applyGradients for NamedVariableMap, so
  // a gradient map from tf.variableGrads does not compile there; the checker must see such errors.
  const adam = {
    file: 'control.md',
    line: 10,
    prelude: "import * as tf from '@tensorflow/tfjs-core';\ndeclare const f: () => tf.Scalar;\n",
    code: "const optimizer = tf.train.adam(0.01);\nconst { grads } = tf.variableGrads(f);\noptimizer.applyGradients(grads);",
  };

  for (const resolution of ['bundler', 'node16'] as const) {
    it(`compile under --strict with moduleResolution ${resolution}`, () => {
      const errors = checkBlocks(root, [...blocks, adam], resolution);
      const control = errors.filter((error) => error.file === 'control.md');
      expect(control).toHaveLength(1);
      expect(control[0]!.line).toBe(12);
      expect(control[0]!.message).toMatch(/NamedVariableMap/);
      expect(formatErrors(errors.filter((error) => error.file !== 'control.md'), root)).toBe('');
    });
  }
});
