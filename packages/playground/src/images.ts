/** Draws the perturbation preview onto canvases. */
import type { PerturbationPreview } from './perturbation.js';

/** On-screen pixels per image pixel. */
const SCALE = 2;

function clip01(value: number): number {
  return value < 0 ? 0 : value > 1 ? 1 : value;
}

/**
 * Paints image `index` of `values` (height × width × channels each) into a new canvas. `toColor`
 * maps one pixel's channel values to RGB in [0, 255].
 */
function imageCanvas(values: Float32Array, index: number, shape: readonly [number, number, number], toColor: (pixel: number[]) => [number, number, number]): HTMLCanvasElement {
  const [height, width, channels] = shape;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = `${width * SCALE}px`;
  canvas.style.height = `${height * SCALE}px`;
  const context = canvas.getContext('2d')!;
  const image = context.createImageData(width, height);
  const offset = index * height * width * channels;
  for (let pixel = 0; pixel < height * width; pixel++) {
    const values_ = Array.from({ length: channels }, (_, channel) => values[offset + pixel * channels + channel]!);
    const [red, green, blue] = toColor(values_);
    image.data.set([red, green, blue, 255], pixel * 4);
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

const gray = (pixel: number[]): [number, number, number] => {
  const value = pixel.length === 1 ? clip01(pixel[0]!) * 255 : 0;
  return pixel.length === 3
    ? [clip01(pixel[0]!) * 255, clip01(pixel[1]!) * 255, clip01(pixel[2]!) * 255]
    : [value, value, value];
};

/**
 * Renders the preview into `container`: for each example the clean image, the perturbed one
 * (clipped to [0,1] for display only), the step x̃ − x in blue (darker) and red (brighter) scaled
 * to its own largest magnitude, and the predictions before and after.
 */
export function renderPreview(container: HTMLElement, preview: PerturbationPreview, classNames: readonly string[], epoch: number): void {
  const { imageShape, originals, perturbed, labels } = preview;
  const valuesPerImage = imageShape[0] * imageShape[1] * imageShape[2];
  const step = new Float32Array(perturbed.length);
  for (let index = 0; index < step.length; index++) step[index] = perturbed[index]! - originals[index]!;
  const cards = labels.map((label, index) => {
    let largest = 1e-12;
    for (let value = index * valuesPerImage; value < (index + 1) * valuesPerImage; value++) largest = Math.max(largest, Math.abs(step[value]!));
    const diverging = (pixel: number[]): [number, number, number] => {
      const mean = pixel.reduce((sum, value) => sum + value, 0) / pixel.length / largest;
      return mean >= 0 ? [255, 255 * (1 - mean), 255 * (1 - mean)] : [255 * (1 + mean), 255 * (1 + mean), 255];
    };
    const card = document.createElement('figure');
    card.className = 'preview-card';
    const row = document.createElement('div');
    row.className = 'preview-row';
    const original = imageCanvas(originals, index, imageShape, gray);
    original.dataset['role'] = 'original';
    original.title = 'x';
    const moved = imageCanvas(perturbed, index, imageShape, gray);
    moved.dataset['role'] = 'perturbed';
    moved.title = 'x̃ (clipped to [0,1] for display)';
    const difference = imageCanvas(step, index, imageShape, diverging);
    difference.dataset['role'] = 'difference';
    difference.title = `x̃ − x (red: brighter, blue: darker; full colour = ${largest.toFixed(3)})`;
    row.append(original, moved, difference);
    const before = preview.originalPredictions[index]!;
    const after = preview.perturbedPredictions[index]!;
    const caption = document.createElement('figcaption');
    const name = (label_: number) => classNames[label_] ?? String(label_);
    caption.innerHTML =
      `<strong>${name(label)}</strong><br>` +
      `x: ${name(before.label)} ${(before.probability * 100).toFixed(0)}%<br>` +
      `x̃: ${name(after.label)} ${(after.probability * 100).toFixed(0)}%<br>` +
      `p(true): ${(preview.trueClassProbabilities.original[index]! * 100).toFixed(0)}% → ${(preview.trueClassProbabilities.perturbed[index]! * 100).toFixed(0)}%`;
    card.append(row, caption);
    return card;
  });
  const heading = document.createElement('p');
  heading.className = 'caption';
  heading.dataset['testid'] = 'preview-heading';
  heading.textContent = `Epoch ${epoch}, α = ${preview.alpha}. Columns: x, x̃, x̃ − x.`;
  container.replaceChildren(heading, ...cards);
}
