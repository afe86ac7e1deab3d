// Type-checks every ```ts block of the READMEs and docs as a user's program, under `--strict`, with
// `moduleResolution: bundler` and `node16`: the forms the docs teach must compile as written.
//
// A block is a module of its own. A fragment that uses names it does not define (a `model`, a
// `batch`) declares them in an HTML comment right before its fence, which the page does not show:
//
//   <!-- prelude
//   import type { Batch, Classifier } from '@regstack/regularizer';
//   declare const model: Classifier;
//   -->
//   ```ts
//   ...
//
// The prelude only declares what the reader is told to have; everything the block teaches is in the
// block. All blocks of one resolution mode compile as one TypeScript program (fast).
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

/** One ```ts block of a markdown file. */
export interface DocBlock {
  /** The markdown file, relative to the repository root. */
  file: string;
  /** 1-based line of the block's first code line in the markdown file. */
  line: number;
  /** The prelude from the HTML comment before the fence ('' when none). */
  prelude: string;
  /** The code. */
  code: string;
}

/** A type error in a block, located in its markdown file. */
export interface DocBlockError {
  file: string;
  /** 1-based line in the markdown file (0 when the error is in the prelude). */
  line: number;
  message: string;
}

const FENCE = /^```(ts|typescript)\s*$/;
const PRELUDE = /^<!--\s*prelude\b[^\n]*\n([\s\S]*)-->$/;

/** The prelude of the HTML comment that ends `before` (only whitespace after it), or ''. */
function preludeBefore(before: string): string {
  const text = before.trimEnd();
  if (!text.endsWith('-->')) return '';
  return PRELUDE.exec(text.slice(text.lastIndexOf('<!--')))?.[1] ?? '';
}

/** The ```ts blocks of one markdown text, with their preludes. */
export function extractBlocks(file: string, markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const blocks: DocBlock[] = [];
  for (let index = 0; index < lines.length; index++) {
    if (!FENCE.test(lines[index]!)) continue;
    const end = lines.findIndex((line, at) => at > index && /^```\s*$/.test(line));
    if (end < 0) throw new Error(`${file}:${index + 1}: a \`\`\`ts block is never closed`);
    const prelude = preludeBefore(lines.slice(0, index).join('\n'));
    blocks.push({ file, line: index + 2, prelude, code: lines.slice(index + 1, end).join('\n') });
    index = end;
  }
  return blocks;
}

/** The markdown files whose blocks are checked: the root README, every package's, examples' and tools' READMEs, docs/*.md. */
export function documentationFiles(root: string): string[] {
  const files = ['README.md'];
  for (const folder of ['packages', 'tools']) {
    for (const name of readdirSync(join(root, folder))) {
      if (existsSync(join(root, folder, name, 'README.md'))) files.push(`${folder}/${name}/README.md`);
    }
  }
  for (const folder of ['examples', 'docs']) {
    if (!existsSync(join(root, folder))) continue;
    for (const name of readdirSync(join(root, folder))) if (name.endsWith('.md')) files.push(`${folder}/${name}`);
  }
  return files.filter((file) => existsSync(join(root, file)));
}

/** Compiler options of a user's strict project, as tsconfig.base.json has them, in one resolution mode. */
function compilerOptions(resolution: 'bundler' | 'node16'): ts.CompilerOptions {
  return {
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
    ...(resolution === 'bundler'
      ? { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler }
      : { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 }),
    // The packages resolve to their sources, so no build is needed first (the packed-tarball consumer
    // test checks the built declarations).
    customConditions: ['@regstack/source'],
    strict: true,
    noUncheckedIndexedAccess: true,
    esModuleInterop: true,
    skipLibCheck: true,
    isolatedModules: true,
    noEmit: true,
    types: ['node'],
  };
}

/**
 * Type-checks the blocks as one program per resolution mode: each block is a virtual module beside
 * the repository's node_modules (`.ts` for bundler, `.mts` = ESM for node16). Returns the errors.
 */
export function checkBlocks(root: string, blocks: readonly DocBlock[], resolution: 'bundler' | 'node16'): DocBlockError[] {
  const options = compilerOptions(resolution);
  const extension = resolution === 'bundler' ? '.ts' : '.mts';
  const virtual = new Map<string, { block: DocBlock; preludeLines: number; text: string }>();
  blocks.forEach((block, index) => {
    const slug = block.file.replace(/[^A-Za-z0-9]+/g, '-');
    const path = join(root, 'tools', 'docs', '__blocks__', `${slug}-${index}${extension}`);
    const prelude = block.prelude === '' ? '' : `${block.prelude.replace(/\n$/, '')}\n`;
    virtual.set(path, { block, preludeLines: prelude === '' ? 0 : prelude.split('\n').length - 1, text: `${prelude}${block.code}\nexport {};\n` });
  });
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile, getSourceFile } = host;
  host.fileExists = (path) => virtual.has(path) || fileExists.call(host, path);
  host.readFile = (path) => virtual.get(path)?.text ?? readFile.call(host, path);
  host.getSourceFile = (path, language, onError, create) => {
    const entry = virtual.get(path);
    return entry ? ts.createSourceFile(path, entry.text, language, true) : getSourceFile.call(host, path, language, onError, create);
  };
  const program = ts.createProgram({ rootNames: [...virtual.keys()], options, host });
  const errors: DocBlockError[] = [];
  for (const [path, { block, preludeLines }] of virtual) {
    const source = program.getSourceFile(path)!;
    for (const diagnostic of [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)]) {
      const at = diagnostic.start === undefined ? 0 : source.getLineAndCharacterOfPosition(diagnostic.start).line;
      const line = at < preludeLines ? 0 : block.line + at - preludeLines;
      errors.push({ file: block.file, line, message: ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n') });
    }
  }
  return errors;
}

/** `file:line: message` lines, for a test failure that points at the markdown. */
export function formatErrors(errors: readonly DocBlockError[], root: string): string {
  return errors.map((error) => `${relative(root, join(root, error.file))}:${error.line === 0 ? 'prelude' : error.line}: ${error.message}`).join('\n');
}

/** Reads the blocks of every documentation file. */
export function allBlocks(root: string): DocBlock[] {
  return documentationFiles(root).flatMap((file) => extractBlocks(file, readFileSync(join(root, file), 'utf8')));
}
