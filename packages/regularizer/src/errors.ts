/**
 * Typed errors. Every error names the field at fault, so a user can fix the call without reading
 * our source.
 */

/**
 * The registered symbol (`Symbol.for`, one per JavaScript realm) under which a regstack error lists
 * its kinds, most specific first (`['ConfigError', 'RegstackError']`). Two copies of this package in
 * one program (a plugin that bundles its own, two versions in node_modules) each have their own
 * classes, so `instanceof` fails across them; the symbol and the kind names are shared.
 */
const KINDS = Symbol.for('regstack.error');

/** Options of a regstack error: the error that caused it (ES2022 `cause`), if any. */
export interface RegstackErrorOptions {
  /** The underlying error (a file system or network error, a plugin's own), kept whole rather than pasted into the message. */
  cause?: unknown;
}

/** Base class of every error regstack throws on purpose. */
export class RegstackError extends Error {
  /** The kind this class adds to {@link RegstackError.isInstance}'s check; each subclass declares its own. */
  static readonly kind: string = 'RegstackError';
  /** The option, argument or data field at fault, e.g. `rcad.alpha` or `batch.labels`. */
  readonly field: string;
  constructor(field: string, message: string, options?: RegstackErrorOptions) {
    super(`${field}: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.field = field;
    const kinds: string[] = [];
    for (let type: unknown = new.target; typeof type === 'function'; type = Object.getPrototypeOf(type)) {
      if (Object.hasOwn(type, 'kind')) kinds.push((type as typeof RegstackError).kind);
    }
    Object.defineProperty(this, KINDS, { value: Object.freeze(kinds) });
  }

  /**
   * Whether `error` is an error of this class (or a subclass of it), also when it was thrown by
   * another copy of regstack's packages, where `instanceof` says no: `ConfigError.isInstance(error)`.
   */
  static isInstance<T extends RegstackError>(this: { readonly kind: string; prototype: T }, error: unknown): error is T {
    const kinds = (error as { [KINDS]?: unknown } | null | undefined)?.[KINDS];
    return Array.isArray(kinds) && kinds.includes(this.kind);
  }
}

/** A configuration value is invalid or unknown (an option, a hyper-parameter, a stack). */
export class ConfigError extends RegstackError {
  static override readonly kind: string = 'ConfigError';
}

/** Data are invalid: shapes or counts disagree, labels out of range, NaN inputs. */
export class DataError extends RegstackError {
  static override readonly kind: string = 'DataError';
}

/** Training diverged: the loss became NaN or Inf. */
export class DivergenceError extends RegstackError {
  static override readonly kind: string = 'DivergenceError';
}

/**
 * An error's message followed by its chain of causes, `message (cause: …; cause: …)`, on one line:
 * what a command line or a log prints, since a regstack error's message leaves out its cause.
 */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  for (let current: unknown = error; current !== undefined && current !== null && !seen.has(current); current = (current as { cause?: unknown }).cause) {
    seen.add(current);
    parts.push(current instanceof Error ? current.message : String(current));
    if (typeof current !== 'object') break;
  }
  const [message = '', ...causes] = parts;
  return causes.length === 0 ? message : `${message} (${causes.map((cause) => `cause: ${cause}`).join('; ')})`;
}

/** Throws a ConfigError for keys of `options` that are not in `allowed`, listing what exists. */
export function assertKnownOptions(owner: string, options: object | undefined, allowed: readonly string[]): void {
  if (options === undefined || options === null) return;
  if (typeof options !== 'object') throw new ConfigError(owner, `options must be an object, got ${typeof options}`);
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new ConfigError(`${owner}.${key}`, `unknown option; known options: ${allowed.join(', ')}`);
    }
  }
}

/** Bounds of a numeric option: inclusive unless stated, both optional. */
export interface NumberRange {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  maxExclusive?: boolean;
  integer?: boolean;
}

/** Throws a ConfigError unless `value` is a finite number within the range. */
export function assertNumber(field: string, value: unknown, range: NumberRange = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new ConfigError(field, `expected a finite number, got ${String(value)}`);
  }
  if (range.integer && !Number.isInteger(value)) throw new ConfigError(field, `expected an integer, got ${value}`);
  const { min, max } = range;
  if (min !== undefined && (range.minExclusive ? value <= min : value < min)) {
    throw new ConfigError(field, `must be ${range.minExclusive ? '>' : '≥'} ${min}, got ${value}`);
  }
  if (max !== undefined && (range.maxExclusive ? value >= max : value > max)) {
    throw new ConfigError(field, `must be ${range.maxExclusive ? '<' : '≤'} ${max}, got ${value}`);
  }
  return value;
}

/** Throws a ConfigError unless `value` is one of `choices`. */
export function assertChoice<T extends string>(field: string, value: unknown, choices: readonly T[]): T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new ConfigError(field, `expected one of ${choices.join(', ')}, got ${String(value)}`);
  }
  return value as T;
}

/**
 * Reads an optional closed interval `[low, high]` with low < high (a valid input range, say);
 * `null` means none. Throws a ConfigError naming the field otherwise.
 */
export function assertInterval(field: string, value: unknown): readonly [number, number] | null {
  if (value === null) return null;
  if (!Array.isArray(value) || value.length !== 2) throw new ConfigError(field, `expected [low, high] or null, got ${String(value)}`);
  const low = assertNumber(`${field}[0]`, value[0]);
  const high = assertNumber(`${field}[1]`, value[1]);
  if (!(low < high)) throw new ConfigError(field, `low must be < high, got [${low}, ${high}]`);
  return [low, high];
}
