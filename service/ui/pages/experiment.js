// Experiment: its report table, per-condition curves with seed bands (mean ± std per epoch
// over its runs' metrics), its runs with their states, and the report's PNG plots.
import { allPages, api, jobMetrics, jobPath } from "../api.js";
import { el, every, formatTime, stateBadge } from "../dom.js";
import { colour, LiveChart, translucent } from "../charts.js";
import { meanStd, timeAxis } from "../curves.js";
import { isTerminal } from "../vocabulary.js";
import { showPlots } from "./artifacts.js";
import { jobLink } from "./jobs.js";

const POLL_MS = 3000;

function reportTable(rows) {
  if (!rows?.length) return el("p", { class: "muted" }, "The report appears when the runs end.");
  const columns = Object.keys(rows[0]);
  return el("table", { class: "report", id: "report-table" },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => el("td", {}, String(row[c])))))));
}

/** The runs' last-layer alignment angle name (the highest layer any run recorded). */
function lastLayerAngle(histories) {
  const layers = histories.flat().map((p) => /^alignment_angle\/(\d+)$/.exec(p.name))
    .filter(Boolean).map((m) => Number(m[1]));
  return layers.length ? `alignment_angle/${Math.max(...layers)}` : null;
}

/** Per-condition mean ± std of `name` over its runs, as three series and a band. */
function drawBands(chart, runsByCondition, histories, name, phases) {
  [...runsByCondition.keys()].forEach((condition, i) => {
    const runs = runsByCondition.get(condition);
    const series = runs.map((run) => {
      const toX = timeAxis(run.spec);
      return new Map((histories.get(run.id) || [])
        .filter((p) => p.name === name && phases.includes(p.phase))
        .map((p) => [toX(p.phase, p.epoch), p.value]));
    });
    const stats = meanStd(series);
    const c = colour(i);
    for (const [x, { mean, std }] of stats) {
      chart.add(`${condition}|mean`, x, mean, { label: `${condition} (mean of ${runs.length})`, color: c });
      chart.add(`${condition}|hi`, x, mean + std, { label: `${condition} +std`, color: translucent(c, 0.5) });
      chart.add(`${condition}|lo`, x, mean - std, { label: `${condition} −std`, color: translucent(c, 0.5) });
    }
    if (stats.size && !chart.bands.some(([u]) => u === `${condition}|hi`)) {
      chart.band(`${condition}|hi`, `${condition}|lo`, translucent(c, 0.15));
    }
  });
}

export async function render(main, params, { signal }) {
  const id = params.get("id");
  const job = await api(jobPath(id), { signal });
  const state = el("span", { id: "experiment-state" }, stateBadge(job.state));
  const cancel = el("button", { type: "button", id: "cancel-job", disabled: isTerminal(job.state) },
    "Cancel experiment");
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    const answer = await api(`${jobPath(id)}/cancel`, { method: "POST", signal });
    state.replaceChildren(stateBadge(answer.state));
  });
  const tableBox = el("div", { id: "report" }, reportTable(job.result?.table));
  const children = el("tbody", { id: "children-body" });
  const chartsBox = el("div", { class: "charts", id: "experiment-charts" });
  const plots = el("div", { class: "plots", id: "plots" });
  main.append(
    el("h1", {}, `Experiment ${job.id}`),
    el("p", {}, "state ", state, ` · created ${formatTime(job.created_at)}`),
    el("div", { class: "actions" }, cancel,
      el("a", { href: `#/jobs?parent=${job.id}` }, "Its runs in the jobs list")),
    el("section", { "aria-labelledby": "report-title" },
      el("h2", { id: "report-title" }, "Report"), tableBox),
    el("section", { "aria-labelledby": "bands-title" },
      el("h2", { id: "bands-title" }, "Curves per condition (mean ± std over seeds)"), chartsBox),
    el("section", { "aria-labelledby": "children-title" },
      el("h2", { id: "children-title" }, "Runs"),
      el("table", { class: "jobs" },
        el("thead", {}, el("tr", {}, ["Id", "Condition", "Seed", "State"].map((h) => el("th", { scope: "col" }, h)))),
        children)),
    el("section", { "aria-labelledby": "plots-title" }, el("h2", { id: "plots-title" }, "Plots"), plots),
  );

  const histories = new Map(); // run id → metric points (kept once the run has ended)
  let charts = [];
  async function refresh() {
    const current = await api(jobPath(id), { signal });
    state.replaceChildren(stateBadge(current.state));
    cancel.disabled = isTerminal(current.state);
    const runs = await allPages("/v1/jobs", { parent_id: id }, signal);
    runs.sort((a, b) => (a.condition || "").localeCompare(b.condition || "")
      || (a.spec.model?.seed ?? 0) - (b.spec.model?.seed ?? 0));
    children.replaceChildren(...runs.map((run) => el("tr", { dataset: { jobId: run.id, state: run.state } },
      el("td", {}, jobLink(run)), el("td", {}, run.condition || ""),
      el("td", {}, String(run.spec.model?.seed ?? "")), el("td", {}, stateBadge(run.state)))));
    for (const run of runs) {
      if (!histories.has(run.id) || !isTerminal(run.state) || !histories.get(run.id).final) {
        const points = await jobMetrics(run.id, signal);
        points.final = isTerminal(run.state);
        histories.set(run.id, points);
      }
    }
    const byCondition = new Map();
    for (const run of runs) byCondition.set(run.condition, [...(byCondition.get(run.condition) || []), run]);
    charts.forEach((chart) => { chart.destroy(); chart.figure.remove(); });
    const accuracy = new LiveChart(chartsBox, { id: "band-test_accuracy", title: "Test accuracy", yLabel: "accuracy" });
    drawBands(accuracy, byCondition, histories, "test_accuracy", ["train"]);
    charts = [accuracy];
    const angle = lastLayerAngle([...histories.values()]);
    if (angle) {
      const chart = new LiveChart(chartsBox, { id: "band-alignment", title: `${angle} (pretraining at x ≤ 0)`, yLabel: "degrees" });
      drawBands(chart, byCondition, histories, angle, ["pretrain", "train"]);
      charts.push(chart);
    }
    if (current.result?.table && !tableBox.querySelector("table")) {
      tableBox.replaceChildren(reportTable(current.result.table));
    }
    if (isTerminal(current.state) && current.result?.artifacts && !plots.childElementCount) {
      await showPlots(plots, id, current.result.artifacts, signal);
    }
    return isTerminal(current.state) && runs.every((run) => isTerminal(run.state));
  }
  let busy = false;
  let done = false;
  const tick = async () => {
    if (busy || done || signal.aborted) return;
    busy = true;
    try { done = await refresh(); } catch (error) { if (!signal.aborted) console.warn(error); }
    busy = false;
  };
  await tick();
  every(POLL_MS, tick, signal);
  signal.addEventListener("abort", () => charts.forEach((chart) => chart.destroy()));
}
