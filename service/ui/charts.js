// Line charts on uPlot (vendor/, MIT), fed point by point. Each chart's element carries
// `data-points` (points drawn) and `data-update-latency-ms` (from the bytes of the newest
// point arriving to it being drawn), for the browser tests and for anyone measuring.
import { el } from "./dom.js";

const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
];
const HEIGHT = 240;

export class LiveChart {
  /** A titled chart appended to `parent`; `id` names it (`data-chart`). */
  constructor(parent, { id, title, xLabel = "epoch", yLabel = "" }) {
    this.title = title;
    this.xLabel = xLabel;
    this.yLabel = yLabel;
    this.series = new Map(); // key → {label, color, dash, points: Map(x → y)}
    this.bands = []; // [upper key, lower key, fill]
    this.plot = null;
    this.plotKeys = "";
    this.pendingSince = null;
    this.canvas = el("div", { class: "chart-canvas" });
    this.figure = el(
      "figure",
      { class: "chart", dataset: { chart: id, points: "0" }, "aria-label": title },
      el("figcaption", {}, title),
      this.canvas,
    );
    parent.append(this.figure);
    // Follow the figure's width (grid cells settle after the first draw, windows resize).
    this.resizer = new ResizeObserver(() => this.plot?.setSize({ width: this.width(), height: HEIGHT }));
    this.resizer.observe(this.canvas);
  }

  width() {
    return Math.max(320, this.canvas.clientWidth || 480);
  }

  /** Add (or replace) the point `(x, y)` of series `key`; drawn on the next frame. */
  add(key, x, y, { label = key, dash = null, color = null, arrivedAt = null } = {}) {
    if (y === null || y === undefined || !Number.isFinite(y)) return;
    let series = this.series.get(key);
    if (!series) {
      const colour = color || PALETTE[this.series.size % PALETTE.length];
      series = { label, color: colour, dash, points: new Map() };
      this.series.set(key, series);
    }
    series.points.set(x, y);
    const since = arrivedAt ?? performance.now();
    this.pendingSince = this.pendingSince === null ? since : Math.min(this.pendingSince, since);
    this.schedule();
  }

  /** Shade between series `upper` and `lower` (a mean ± std band). */
  band(upper, lower, fill) {
    this.bands.push([upper, lower, fill]);
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  draw() {
    const keys = [...this.series.keys()];
    const xs = [...new Set(keys.flatMap((k) => [...this.series.get(k).points.keys()]))];
    xs.sort((a, b) => a - b);
    const data = [xs, ...keys.map((k) => xs.map((x) => this.series.get(k).points.get(x) ?? null))];
    const signature = keys.join("\u0000") + JSON.stringify(this.bands);
    if (!this.plot || signature !== this.plotKeys) {
      this.plot?.destroy();
      this.plot = new uPlot(this.options(keys), data, this.canvas); // global from vendor/
      this.plotKeys = signature;
    } else {
      this.plot.setData(data);
    }
    const points = keys.reduce((n, k) => n + this.series.get(k).points.size, 0);
    this.figure.dataset.points = String(points);
    if (this.pendingSince !== null) {
      this.figure.dataset.updateLatencyMs = (performance.now() - this.pendingSince).toFixed(1);
      this.pendingSince = null;
    }
  }

  options(keys) {
    const index = (key) => keys.indexOf(key) + 1;
    return {
      width: this.width(),
      legend: { live: false }, // labels only: values show as points on the lines
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: [{ label: this.xLabel }, { label: this.yLabel, size: 60 }],
      series: [
        { label: this.xLabel },
        ...keys.map((key) => {
          const s = this.series.get(key);
          return { label: s.label, stroke: s.color, dash: s.dash || undefined, width: 2,
                   spanGaps: true, points: { size: 5 } };
        }),
      ],
      bands: this.bands
        .filter(([upper, lower]) => index(upper) && index(lower))
        .map(([upper, lower, fill]) => ({ series: [index(upper), index(lower)], fill })),
    };
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.resizer.disconnect();
    this.plot?.destroy();
  }
}

/** A translucent version of a `#rrggbb` colour, for bands. */
export function translucent(hex, alpha = 0.2) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

export const colour = (i) => PALETTE[i % PALETTE.length];
