import { ConfigError, composeRegularizers } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SETTINGS, PRESETS, applyPreset, stackLabel, validateSettings, type PresetName, type RunSettings } from './settings.js';
import { regularizersOf } from './stack.js';

function withChange(change: (settings: RunSettings) => void): RunSettings {
  const settings = structuredClone(DEFAULT_SETTINGS);
  change(settings);
  return settings;
}

function fieldOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).field;
  }
  return undefined;
}

describe('validateSettings', () => {
  it('accepts the defaults', () => {
    expect(validateSettings(structuredClone(DEFAULT_SETTINGS))).toEqual(DEFAULT_SETTINGS);
  });

  it('names the field at fault', () => {
    expect(fieldOf(() => validateSettings(withChange((s) => (s.trainSize = 505))))).toBe('trainSize');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.trainSize = 1810))))).toBe('trainSize');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.epochs = Number.NaN))))).toBe('epochs');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.batchSize = 2.5))))).toBe('batchSize');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.learningRate = 0))))).toBe('learningRate');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.rcad.alpha = -1))))).toBe('rcad.alpha');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.labelSmoothing.epsilon = 1))))).toBe('labelSmoothing.epsilon');
    expect(fieldOf(() => validateSettings(withChange((s) => (s.mixup.alpha = 0))))).toBe('mixup.alpha');
    expect(fieldOf(() => validateSettings(withChange((s) => ((s.entropyMin as { mode: string }).mode = 'up'))))).toBe('entropyMin.mode');
    expect(fieldOf(() => validateSettings(withChange((s) => ((s as { backend: string }).backend = 'webgpu'))))).toBe('backend');
    expect(fieldOf(() => validateSettings(withChange((s) => ((s.rcad as { enabled: unknown }).enabled = 'yes'))))).toBe('rcad.enabled');
    expect(fieldOf(() => validateSettings({ ...DEFAULT_SETTINGS, extra: 1 } as RunSettings))).toBe('settings.extra');
  });
});

describe('presets and stacks', () => {
  const expectedOrder: Record<PresetName, string> = {
    erm: 'base',
    'label-smoothing': 'label-smoothing → base',
    rcad: 'base → rcad',
    'rcad+label-smoothing': 'label-smoothing → base → rcad',
    mixup: 'mixup → base',
    'entropy-min': 'base → entropy-min',
  };

  it.each(Object.keys(PRESETS) as PresetName[])('preset %s builds the stack it names', (preset) => {
    const settings = applyPreset(DEFAULT_SETTINGS, preset);
    expect(composeRegularizers(regularizersOf(settings)).describe()).toBe(expectedOrder[preset]);
  });

  it('keeps hyper-parameters when switching presets and labels the stack with them', () => {
    const tuned = withChange((s) => {
      s.rcad.alpha = 0.25;
      s.labelSmoothing.epsilon = 0.05;
    });
    const settings = applyPreset(tuned, 'rcad+label-smoothing');
    expect(settings.rcad).toEqual({ enabled: true, alpha: 0.25, lambda: 0.2 });
    expect(stackLabel(settings)).toBe('LS(ε=0.05) + RCAD(α=0.25, λ=0.2)');
    expect(stackLabel(applyPreset(tuned, 'erm'))).toBe('ERM');
    expect(stackLabel(withChange((s) => {
      s.rcad.enabled = false;
      s.mixup.enabled = true;
      s.entropyMin = { enabled: true, lambda: 0.3, mode: 'maximize' };
    }))).toBe('mixup(α=0.2) + confidence penalty(λ=0.3)');
    expect(fieldOf(() => applyPreset(DEFAULT_SETTINGS, 'dropout' as PresetName))).toBe('preset');
  });

  it('passes the hyper-parameters to the plugins, which reject bad ones by their own field names', () => {
    const settings = withChange((s) => (s.rcad.lambda = -0.5));
    expect(fieldOf(() => regularizersOf(settings))).toBe('rcad.lambda');
    const all = withChange((s) => {
      s.labelSmoothing.enabled = true;
      s.mixup.enabled = true;
      s.entropyMin.enabled = true;
    });
    expect(composeRegularizers(regularizersOf(all)).describe()).toBe('mixup → label-smoothing → base → rcad → entropy-min');
  });
});
