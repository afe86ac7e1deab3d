/** The page's four charts, drawn with Chart.js; each run is one dataset so stacks can be compared. */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Tooltip,
  type ChartDataset,
} from 'chart.js';
import type { ReliabilityBin } from '@regstack/trainer';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, LinearScale, CategoryScale, Legend, Tooltip);

/** Colours of successive runs (Okabe–Ito, readable by colour-blind viewers). */
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

/** The colour of run `index`. */
export function runColor(index: number): string {
  return PALETTE[index % PALETTE.length]!;
}

type Point = { x: number; y: number };

function lineChart(canvas: HTMLCanvasElement, xTitle: string, yTitle: string, yRange: { min?: number; max?: number } = {}): Chart<'line', Point[]> {
  return new Chart(canvas, {
    type: 'line',
    data: { datasets: [] },
    options: {
      // Animating every batch would cost the main thread more than the chart is worth.
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      scales: {
        x: { type: 'linear', title: { display: true, text: xTitle } },
        y: { type: 'linear', title: { display: true, text: yTitle }, ...yRange },
      },
      plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
    },
  });
}

/** Charts of loss, validation accuracy, ECE and the final reliability diagram. */
export class TrainingCharts {
  private readonly loss: Chart<'line', Point[]>;
  private readonly accuracy: Chart<'line', Point[]>;
  private readonly ece: Chart<'line', Point[]>;
  private readonly reliability: Chart<'bar' | 'line', (number | Point)[]>;
  private pendingLossUpdate = false;

  constructor(canvases: { loss: HTMLCanvasElement; accuracy: HTMLCanvasElement; ece: HTMLCanvasElement; reliability: HTMLCanvasElement }) {
    this.loss = lineChart(canvases.loss, 'epoch', 'loss');
    this.accuracy = lineChart(canvases.accuracy, 'epoch', 'accuracy', { min: 0, max: 1 });
    this.ece = lineChart(canvases.ece, 'epoch', 'ECE', { min: 0 });
    this.reliability = new Chart(canvases.reliability, {
      type: 'bar',
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { title: { display: true, text: 'confidence bin' } },
          y: { min: 0, max: 1, title: { display: true, text: 'accuracy' } },
        },
        plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
      },
    });
  }

  /** Adds the datasets of a new run. */
  addRun(index: number, label: string): void {
    const color = runColor(index);
    const dataset = (extra: Partial<ChartDataset<'line', Point[]>> = {}): ChartDataset<'line', Point[]> => ({
      label, data: [], borderColor: color, backgroundColor: color, borderWidth: 1.5, pointRadius: 0, ...extra,
    });
    this.loss.data.datasets.push(dataset());
    this.accuracy.data.datasets.push(dataset({ pointRadius: 3 }));
    this.ece.data.datasets.push(dataset({ pointRadius: 3 }));
    this.loss.update();
    this.accuracy.update();
    this.ece.update();
  }

  /** One optimizer step's loss at fractional epoch `x`. Redraws at most once per animation frame. */
  addLoss(x: number, loss: number): void {
    this.loss.data.datasets.at(-1)?.data.push({ x, y: loss });
    if (this.pendingLossUpdate) return;
    this.pendingLossUpdate = true;
    requestAnimationFrame(() => {
      this.pendingLossUpdate = false;
      this.loss.update();
    });
  }

  /** One epoch's validation accuracy and ECE. */
  addEpoch(epoch: number, accuracy: number, ece: number): void {
    this.accuracy.data.datasets.at(-1)?.data.push({ x: epoch, y: accuracy });
    this.ece.data.datasets.at(-1)?.data.push({ x: epoch, y: ece });
    this.accuracy.update();
    this.ece.update();
  }

  /** Shows a run's reliability diagram: accuracy per confidence bin, against the diagonal of perfect calibration. */
  showReliability(bins: readonly ReliabilityBin[], label: string, index: number): void {
    const color = runColor(index);
    this.reliability.data.labels = bins.map((bin) => `${bin.lower.toFixed(2)}–${bin.upper.toFixed(2)}`);
    this.reliability.data.datasets = [
      {
        type: 'bar',
        label: `${label}: accuracy`,
        data: bins.map((bin) => (bin.count > 0 ? bin.accuracy : 0)),
        backgroundColor: `${color}99`,
        borderColor: color,
        borderWidth: 1,
      },
      {
        type: 'line',
        label: 'perfect calibration (bin midpoint)',
        data: bins.map((bin) => (bin.lower + bin.upper) / 2),
        borderColor: '#888888',
        borderDash: [4, 4],
        borderWidth: 1,
        pointRadius: 0,
      },
      {
        type: 'line',
        label: 'mean confidence',
        data: bins.map((bin) => (bin.count > 0 ? bin.confidence : Number.NaN)),
        borderColor: '#333333',
        backgroundColor: '#333333',
        borderWidth: 0,
        pointRadius: 3,
        showLine: false,
      },
    ] as ChartDataset<'bar' | 'line', number[]>[];
    this.reliability.update();
  }

  /** Removes every run. */
  clear(): void {
    for (const chart of [this.loss, this.accuracy, this.ece]) {
      chart.data.datasets = [];
      chart.update();
    }
    this.reliability.data.labels = [];
    this.reliability.data.datasets = [];
    this.reliability.update();
  }
}
