/** The page: reads the form, runs one worker per training run, and draws what the worker reports. */
import { TrainingCharts, runColor } from './charts.js';
import { renderPreview } from './images.js';
import type { StartMessage, WorkerMessage } from './protocol.js';
import { DEFAULT_SETTINGS, PRESETS, applyPreset, stackLabel, validateSettings, type PresetName, type RunSettings } from './settings.js';

const form = document.querySelector<HTMLFormElement>('#settings')!;
const presetSelect = document.querySelector<HTMLSelectElement>('#preset')!;
const stackLabelElement = document.querySelector<HTMLElement>('#stack-label')!;
const trainButton = document.querySelector<HTMLButtonElement>('#train')!;
const stopButton = document.querySelector<HTMLButtonElement>('#stop')!;
const clearButton = document.querySelector<HTMLButtonElement>('#clear')!;
const statusElement = document.querySelector<HTMLElement>('#status')!;
const progressElement = document.querySelector<HTMLProgressElement>('#progress')!;
const previewElement = document.querySelector<HTMLElement>('#preview')!;
const runsBody = document.querySelector<HTMLTableSectionElement>('#runs')!;
const reliabilityCaption = document.querySelector<HTMLElement>('#reliability-caption')!;

const charts = new TrainingCharts({
  loss: document.querySelector<HTMLCanvasElement>('#loss-chart')!,
  accuracy: document.querySelector<HTMLCanvasElement>('#accuracy-chart')!,
  ece: document.querySelector<HTMLCanvasElement>('#ece-chart')!,
  reliability: document.querySelector<HTMLCanvasElement>('#reliability-chart')!,
});

/** Form fields by settings path (`rcad.alpha`): the element ids are the paths. */
const NUMBER_FIELDS = ['epochs', 'batchSize', 'learningRate', 'trainSize', 'width', 'seed', 'labelSmoothing.epsilon', 'rcad.alpha', 'rcad.lambda', 'mixup.alpha', 'entropyMin.lambda'] as const;
const CHECKBOX_FIELDS = ['labelSmoothing.enabled', 'rcad.enabled', 'mixup.enabled', 'entropyMin.enabled'] as const;
const CHOICE_FIELDS = ['backend', 'entropyMin.mode'] as const;

function field(path: string): HTMLInputElement | HTMLSelectElement {
  const element = document.getElementById(path);
  if (!(element instanceof HTMLInputElement || element instanceof HTMLSelectElement)) throw new Error(`the page has no field ${path}`);
  return element;
}

function getPath(settings: RunSettings, path: string): unknown {
  return path.split('.').reduce<unknown>((value, key) => (value as Record<string, unknown>)[key], settings);
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  const last = keys.pop()!;
  let node = target;
  for (const key of keys) node = (node[key] ??= {}) as Record<string, unknown>;
  node[last] = value;
}

function writeForm(settings: RunSettings): void {
  for (const path of NUMBER_FIELDS) field(path).value = String(getPath(settings, path));
  for (const path of CHOICE_FIELDS) field(path).value = String(getPath(settings, path));
  for (const path of CHECKBOX_FIELDS) (field(path) as HTMLInputElement).checked = getPath(settings, path) === true;
}

function readForm(): RunSettings {
  const settings: Record<string, unknown> = {};
  // An empty number box becomes NaN, which validation reports by field name.
  for (const path of NUMBER_FIELDS) setPath(settings, path, field(path).value.trim() === '' ? Number.NaN : Number(field(path).value));
  for (const path of CHOICE_FIELDS) setPath(settings, path, field(path).value);
  for (const path of CHECKBOX_FIELDS) setPath(settings, path, (field(path) as HTMLInputElement).checked);
  return settings as unknown as RunSettings;
}

function matchingPreset(settings: RunSettings): PresetName | '' {
  for (const [name, preset] of Object.entries(PRESETS) as [PresetName, (typeof PRESETS)[PresetName]][]) {
    if (
      preset.labelSmoothing === settings.labelSmoothing.enabled && preset.rcad === settings.rcad.enabled &&
      preset.mixup === settings.mixup.enabled && preset.entropyMin === settings.entropyMin.enabled
    ) return name;
  }
  return '';
}

function refreshStack(): void {
  for (const element of form.querySelectorAll('.invalid')) element.classList.remove('invalid');
  const settings = readForm();
  presetSelect.value = matchingPreset(settings);
  stackLabelElement.textContent = `Stack: ${stackLabel(settings)}`;
}

/**
 * Why the worker could not train on webgl here, or undefined where it can: it needs WebGL2 in a worker
 * (OffscreenCanvas) and float32 colour buffers. Without them TF.js falls back to half-float textures,
 * whose gradients are off by ≈10% (measured in `test/webgl.test.ts`): not worth offering.
 */
function webglUnavailableReason(): string | undefined {
  try {
    if (typeof OffscreenCanvas === 'undefined') return 'no OffscreenCanvas in workers';
    const gl = new OffscreenCanvas(1, 1).getContext('webgl2');
    if (gl === null) return 'no WebGL2';
    const floatBuffers = gl.getExtension('EXT_color_buffer_float') !== null;
    gl.getExtension('WEBGL_lose_context')?.loseContext();
    return floatBuffers ? undefined : 'no float32 colour buffers';
  } catch {
    return 'no WebGL2';
  }
}

for (const [name, preset] of Object.entries(PRESETS)) presetSelect.add(new Option(preset.title, name));
// Probing WebGL can start the browser's GPU process and take a while: not before the form is usable.
setTimeout(() => {
  const webglOption = [...field('backend').querySelectorAll('option')].find((option) => option.value === 'webgl')!;
  const reason = webglUnavailableReason();
  webglOption.dataset['detected'] = reason === undefined ? 'available' : 'unavailable';
  if (reason === undefined) return;
  webglOption.disabled = true;
  webglOption.textContent += ` — not available in this browser (${reason})`;
  if (field('backend').value === 'webgl') field('backend').value = 'wasm';
}, 0);
writeForm(DEFAULT_SETTINGS);
refreshStack();
presetSelect.addEventListener('change', () => {
  if (presetSelect.value !== '') writeForm(applyPreset(readForm(), presetSelect.value as PresetName));
  refreshStack();
});
form.addEventListener('input', (event) => {
  if (event.target !== presetSelect) refreshStack();
});

function setStatus(text: string, state: 'idle' | 'running' | 'done' | 'error'): void {
  statusElement.textContent = text;
  statusElement.dataset['state'] = state;
}

function cell(row: HTMLTableRowElement, name: string, text: string): void {
  const element = row.querySelector<HTMLElement>(`[data-field="${name}"]`)!;
  element.textContent = text;
}

function addRunRow(index: number, settings: RunSettings): HTMLTableRowElement {
  const row = runsBody.insertRow();
  row.dataset['testid'] = 'run-row';
  const fields = ['number', 'stack', 'backend', 'images', 'epochs', 'seconds-per-epoch', 'validation-accuracy', 'validation-ece', 'test-accuracy', 'test-ece', 'test-nll'];
  for (const name of fields) {
    const element = row.insertCell();
    element.dataset['field'] = name;
    element.textContent = '…';
  }
  cell(row, 'number', String(index + 1));
  row.querySelector<HTMLElement>('[data-field="number"]')!.style.borderLeft = `6px solid ${runColor(index)}`;
  cell(row, 'stack', stackLabel(settings));
  cell(row, 'backend', settings.backend);
  cell(row, 'images', String(settings.trainSize));
  cell(row, 'epochs', `0/${settings.epochs}`);
  return row;
}

let worker: Worker | null = null;
let runCount = 0;

function finish(): void {
  worker?.terminate();
  worker = null;
  trainButton.disabled = false;
  stopButton.disabled = true;
}

function start(): void {
  let settings: RunSettings;
  try {
    settings = validateSettings(readForm());
  } catch (error) {
    const path = (error as { field?: string }).field;
    if (path !== undefined) document.getElementById(path)?.classList.add('invalid');
    setStatus(error instanceof Error ? error.message : String(error), 'error');
    return;
  }
  const index = runCount++;
  const label = stackLabel(settings);
  const row = addRunRow(index, settings);
  charts.addRun(index, `#${index + 1} ${label}`);
  trainButton.disabled = true;
  stopButton.disabled = false;
  progressElement.value = 0;
  setStatus(`Run #${index + 1}: starting the ${settings.backend} backend…`, 'running');
  const epochSeconds: number[] = [];
  let classNames: readonly string[] = [];

  worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'regstack-training' });
  worker.onmessage = (event: MessageEvent<WorkerMessage>) => {
    const message = event.data;
    switch (message.type) {
      case 'ready':
        classNames = message.classNames;
        cell(row, 'backend', message.backend);
        setStatus(`Run #${index + 1} on ${message.backend}: ${message.stack}; ${message.trainSize} training, ${message.validationSize} validation, ${message.testSize} test images.`, 'running');
        break;
      case 'batch': {
        const progress = (message.epoch - 1 + message.batch / message.batches) / settings.epochs;
        progressElement.value = progress;
        charts.addLoss(message.epoch - 1 + message.batch / message.batches, message.terms['total'] ?? Number.NaN);
        const terms = Object.entries(message.terms).map(([name, value]) => `${name} ${value.toFixed(3)}`).join(', ');
        setStatus(`Run #${index + 1}: epoch ${message.epoch}/${settings.epochs}, batch ${message.batch}/${message.batches} — ${terms}`, 'running');
        break;
      }
      case 'epoch': {
        const { record } = message;
        const validation = record.validation!; // the worker always holds out a validation set
        epochSeconds.push(record.trainSeconds);
        charts.addEpoch(record.epoch, validation.accuracy, validation.ece);
        cell(row, 'epochs', `${record.epoch}/${settings.epochs}`);
        cell(row, 'seconds-per-epoch', (epochSeconds.reduce((sum, value) => sum + value, 0) / epochSeconds.length).toFixed(1));
        cell(row, 'validation-accuracy', validation.accuracy.toFixed(3));
        cell(row, 'validation-ece', validation.ece.toFixed(3));
        renderPreview(previewElement, message.preview, classNames, record.epoch);
        break;
      }
      case 'done':
        cell(row, 'validation-accuracy', message.validation.accuracy.toFixed(3));
        cell(row, 'validation-ece', message.validation.ece.toFixed(3));
        cell(row, 'test-accuracy', message.test.accuracy.toFixed(3));
        cell(row, 'test-ece', message.test.ece.toFixed(3));
        cell(row, 'test-nll', message.test.nll.toFixed(3));
        charts.showReliability(message.test.reliability, `#${index + 1} ${label}`, index);
        reliabilityCaption.textContent = `Reliability diagram of run #${index + 1} on the ${message.test.count} test images (best epoch ${message.bestEpoch}): bars are the accuracy in each confidence bin, dots the mean confidence; bars below the diagonal mean over-confidence.`;
        progressElement.value = 1;
        setStatus(`Run #${index + 1} done in ${message.totalSeconds.toFixed(1)} s: test accuracy ${message.test.accuracy.toFixed(3)}, test ECE ${message.test.ece.toFixed(3)}.`, 'done');
        finish();
        break;
      case 'error':
        if (message.field !== undefined) document.getElementById(message.field)?.classList.add('invalid');
        cell(row, 'epochs', 'failed');
        setStatus(`Run #${index + 1} failed: ${message.message}`, 'error');
        finish();
        break;
    }
  };
  worker.onerror = (event) => {
    setStatus(`Run #${index + 1} failed: ${event.message || 'the worker could not start'}`, 'error');
    finish();
  };
  const start: StartMessage = { type: 'start', settings };
  worker.postMessage(start);

  stopButton.onclick = () => {
    finish();
    cell(row, 'epochs', `${epochSeconds.length}/${settings.epochs} (stopped)`);
    setStatus(`Run #${index + 1} stopped.`, 'idle');
  };
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (worker === null) start();
});
clearButton.addEventListener('click', () => {
  if (worker !== null) stopButton.click();
  charts.clear();
  runsBody.replaceChildren();
  previewElement.replaceChildren();
  runCount = 0;
  setStatus('Idle.', 'idle');
});
