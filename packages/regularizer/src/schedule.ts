import { ConfigError, assertNumber, type NumberRange } from './errors.js';

/** Where training stands, for schedules. */
export interface Progress {
  /** Optimizer steps taken (0-based). */
  step: number;
  /** Fractional epoch. */
  epoch: number;
}

/** The clock a schedule reads. */
export type ScheduleUnit = 'epoch' | 'step';

/**
 * A hyper-parameter that changes with training.
 * - `constant`: always `value`.
 * - `step`: `values[i]` once the clock passes `boundaries[i-1]` (values has one more entry than
 *   boundaries): multistep decay, warm-up switches.
 * - `linear`: `from` until `start`, linearly to `to` at `end`, then `to` (a ramp).
 * - `cosine`: like `linear` but along half a cosine (`from` at `start`, `to` at `end`).
 */
export type Schedule =
  | { type: 'constant'; value: number }
  | { type: 'step'; values: readonly number[]; boundaries: readonly number[]; unit?: ScheduleUnit }
  | { type: 'linear'; from: number; to: number; start: number; end: number; unit?: ScheduleUnit }
  | { type: 'cosine'; from: number; to: number; start: number; end: number; unit?: ScheduleUnit };

/** A number, a declared schedule, or any function of the training progress. */
export type Schedulable = number | Schedule | ((progress: Progress) => number);

/** Schedule constructors (units default to epochs). */
export const schedules = {
  constant: (value: number): Schedule => ({ type: 'constant', value }),
  /** Multiplies `initial` by `factor` at each milestone (PyTorch's MultiStepLR). */
  multiStep: (initial: number, milestones: readonly number[], factor = 0.1, unit: ScheduleUnit = 'epoch'): Schedule => ({
    type: 'step',
    values: [initial, ...milestones.map((_, i) => initial * factor ** (i + 1))],
    boundaries: milestones,
    unit,
  }),
  linear: (from: number, to: number, start: number, end: number, unit: ScheduleUnit = 'epoch'): Schedule => ({
    type: 'linear', from, to, start, end, unit,
  }),
  cosine: (from: number, to: number, start: number, end: number, unit: ScheduleUnit = 'epoch'): Schedule => ({
    type: 'cosine', from, to, start, end, unit,
  }),
};

/**
 * Checks a schedulable hyper-parameter once, at construction, and returns it. With a `range`,
 * every value a declared schedule can take is checked too (ramps stay between their ends), so a
 * bad schedule fails when the stack is built rather than epochs into a run; a function can only be
 * checked when it is read.
 */
export function validateSchedulable(field: string, value: unknown, range?: NumberRange): Schedulable {
  const schedulable = validateScheduleShape(field, value);
  if (range && typeof schedulable !== 'function') {
    const named: Array<[string, number]> =
      typeof schedulable === 'number' ? [[field, schedulable]]
      : schedulable.type === 'constant' ? [[`${field}.value`, schedulable.value]]
      : schedulable.type === 'step' ? schedulable.values.map((entry, index) => [`${field}.values[${index}]`, entry])
      : [[`${field}.from`, schedulable.from], [`${field}.to`, schedulable.to]];
    for (const [name, entry] of named) assertNumber(name, entry, range);
  }
  return schedulable;
}

function validateScheduleShape(field: string, value: unknown): Schedulable {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new ConfigError(field, `expected a finite number, got ${value}`);
    return value;
  }
  if (typeof value === 'function') return value as Schedulable;
  if (typeof value !== 'object' || value === null || !('type' in value)) {
    throw new ConfigError(field, `expected a number, a schedule object or a function, got ${String(value)}`);
  }
  const schedule = value as Schedule;
  const finite = (name: string, v: unknown) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${field}.${name}`, `expected a finite number, got ${String(v)}`);
  };
  switch (schedule.type) {
    case 'constant':
      finite('value', schedule.value);
      break;
    case 'step': {
      if (!Array.isArray(schedule.values) || !Array.isArray(schedule.boundaries)) {
        throw new ConfigError(field, 'a step schedule needs arrays `values` and `boundaries`');
      }
      if (schedule.values.length !== schedule.boundaries.length + 1) {
        throw new ConfigError(`${field}.values`, `needs exactly one more entry than boundaries (${schedule.boundaries.length + 1}), got ${schedule.values.length}`);
      }
      schedule.values.forEach((v, i) => finite(`values[${i}]`, v));
      schedule.boundaries.forEach((v, i) => {
        finite(`boundaries[${i}]`, v);
        if (i > 0 && v <= schedule.boundaries[i - 1]!) throw new ConfigError(`${field}.boundaries`, 'must be strictly increasing');
      });
      break;
    }
    case 'linear':
    case 'cosine':
      for (const name of ['from', 'to', 'start', 'end'] as const) finite(name, schedule[name]);
      if (schedule.end < schedule.start) throw new ConfigError(`${field}.end`, `must be ≥ start (${schedule.start}), got ${schedule.end}`);
      break;
    default:
      throw new ConfigError(`${field}.type`, `unknown schedule type ${String((schedule as { type: unknown }).type)}; known: constant, step, linear, cosine`);
  }
  if ('unit' in schedule && schedule.unit !== undefined && schedule.unit !== 'epoch' && schedule.unit !== 'step') {
    throw new ConfigError(`${field}.unit`, `expected epoch or step, got ${String(schedule.unit)}`);
  }
  return schedule;
}

/** The value of a schedulable hyper-parameter at `progress`. */
export function resolveSchedule(value: Schedulable, progress: Progress): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'function') return value(progress);
  if (value.type === 'constant') return value.value;
  const clock = (value.unit ?? 'epoch') === 'epoch' ? progress.epoch : progress.step;
  if (value.type === 'step') {
    let index = 0;
    while (index < value.boundaries.length && clock >= value.boundaries[index]!) index++;
    return value.values[index]!;
  }
  if (clock <= value.start) return value.from;
  if (clock >= value.end) return value.to;
  const fraction = (clock - value.start) / (value.end - value.start);
  const shape = value.type === 'linear' ? fraction : (1 - Math.cos(Math.PI * fraction)) / 2;
  return value.from + (value.to - value.from) * shape;
}
