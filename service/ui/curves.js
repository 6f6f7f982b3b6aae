// Which metric goes on which chart, and the one time axis of a job's phases.
import { colour, LiveChart } from "./charts.js";

export const CHART_GROUPS = [
  { id: "accuracy", title: "Accuracy", yLabel: "accuracy",
    matches: (name) => name === "train_accuracy" || name === "test_accuracy" },
  { id: "loss", title: "Loss", yLabel: "loss",
    matches: (name) => name === "train_loss" || name === "test_loss" },
  { id: "alignment", title: "Alignment angle per layer", yLabel: "degrees",
    matches: (name) => name.startsWith("alignment_angle/") },
  { id: "signal", title: "Signal angle per hidden layer", yLabel: "degrees",
    matches: (name) => name.startsWith("signal_angle/") },
  { id: "eff_dim", title: "Effective dimension per layer", yLabel: "eff_dim",
    matches: (name) => name.startsWith("eff_dim/") },
  { id: "readout", title: "Readout entropy", yLabel: "nats",
    matches: (name) => name === "readout_entropy" },
];

/** `(phase, epoch) → x`: a train job's own pretraining runs at x ≤ 0, ending where training
 * starts (its last epoch is train epoch 0, as in the experiment reports). */
export function timeAxis(spec) {
  const offset = spec?.kind === "train" && spec.pretrain ? spec.pretrain.epochs || 0 : 0;
  return (phase, epoch) => (phase === "pretrain" ? epoch - offset : epoch);
}

export const phaseDash = (phase) => (phase === "pretrain" ? [6, 4] : null);

/** One LiveChart per group in `parent`, and `add(phase, epoch, name, value, arrivedAt)`
 * that puts a point on the chart its name belongs to. */
export function jobCharts(parent, spec) {
  const charts = new Map(
    CHART_GROUPS.map((group) => [group.id, new LiveChart(parent, group)]),
  );
  const toX = timeAxis(spec);
  const colours = new Map(); // one colour per metric in a chart; the phase sets the dash
  const add = (phase, epoch, name, value, arrivedAt) => {
    const group = CHART_GROUPS.find((g) => g.matches(name));
    if (!group) return;
    const names = colours.get(group.id) || colours.set(group.id, []).get(group.id);
    if (!names.includes(name)) names.push(name);
    charts.get(group.id).add(`${name}|${phase}`, toX(phase, epoch), value, {
      label: `${name} (${phase})`, dash: phaseDash(phase), arrivedAt,
      color: colour(names.indexOf(name)),
    });
  };
  const destroy = () => charts.forEach((chart) => chart.destroy());
  return { charts, add, destroy };
}

/** Mean and (sample) standard deviation per x of several runs' `{x → value}` series. */
export function meanStd(seriesList) {
  const byX = new Map();
  for (const series of seriesList) {
    for (const [x, value] of series) byX.set(x, [...(byX.get(x) || []), value]);
  }
  const out = new Map();
  for (const [x, values] of byX) {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const variance = values.length > 1
      ? values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1) : 0;
    out.set(x, { mean, std: Math.sqrt(variance), n: values.length });
  }
  return out;
}
