import { ConfigError } from '@regstack/regularizer';

/** One regularizer as written on the command line: `rcad:alpha=1,lambda=0.2`. */
export interface RegularizerSpec {
  name: string;
  options: Record<string, number | boolean | string | null>;
}

/** A stack as written: regularizers joined by `+`, or `erm` for none. */
export interface StackSpec {
  /** The text as given, trimmed; used as the stack's label. */
  label: string;
  regularizers: RegularizerSpec[];
}

/** Parses `value` of `key=value`: numbers (incl. `8/255`), booleans, `null`, else a string. */
export function parseOptionValue(text: string): number | boolean | string | null {
  const value = text.trim();
  if (value === 'true') return true;
  if (value === 'false') return false;
  if (value === 'null') return null;
  const fraction = /^([-+]?\d*\.?\d+(?:e[-+]?\d+)?)\/(\d*\.?\d+(?:e[-+]?\d+)?)$/i.exec(value);
  if (fraction) return Number(fraction[1]) / Number(fraction[2]);
  if (value !== '' && Number.isFinite(Number(value))) return Number(value);
  return value;
}

/** Parses `key=value,key=value` into an object; `field` names the argument in errors. */
export function parseOptions(text: string, field: string): Record<string, number | boolean | string | null> {
  const options: Record<string, number | boolean | string | null> = {};
  if (text.trim() === '') return options;
  for (const part of text.split(',')) {
    const equals = part.indexOf('=');
    if (equals <= 0) throw new ConfigError(field, `expected key=value, got '${part}'`);
    const key = part.slice(0, equals).trim();
    if (key in options) throw new ConfigError(field, `option '${key}' is given twice`);
    options[key] = parseOptionValue(part.slice(equals + 1));
  }
  return options;
}

/** Parses `name` or `name:key=value,...`. */
export function parseRegularizerSpec(text: string, field = '--reg'): RegularizerSpec {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  const name = (colon < 0 ? trimmed : trimmed.slice(0, colon)).trim();
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new ConfigError(field, `'${trimmed}' does not start with a regularizer name`);
  return { name, options: colon < 0 ? {} : parseOptions(trimmed.slice(colon + 1), `${field} ${name}`) };
}

/** Parses a stack: `erm`, or regularizers joined by `+` (`rcad:alpha=0.5+label-smoothing`). */
export function parseStackSpec(text: string, field = '--stack'): StackSpec {
  const label = text.trim();
  if (label === '' || label === 'erm' || label === 'none') return { label: 'erm', regularizers: [] };
  return { label, regularizers: label.split('+').map((part) => parseRegularizerSpec(part, field)) };
}

/** Writes a stack back in the syntax {@link parseStackSpec} reads. */
export function formatStackSpec(regularizers: readonly RegularizerSpec[]): string {
  if (regularizers.length === 0) return 'erm';
  return regularizers
    .map(({ name, options }) => {
      const entries = Object.entries(options);
      return entries.length === 0 ? name : `${name}:${entries.map(([k, v]) => `${k}=${v}`).join(',')}`;
    })
    .join('+');
}
