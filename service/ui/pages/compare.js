// Compare: one metric of two or more jobs on the same axes (each job's phases on its own
// time axis, pretraining dashed).
import { api, jobMetrics, jobPath } from "../api.js";
import { el } from "../dom.js";
import { colour, LiveChart } from "../charts.js";
import { phaseDash, timeAxis } from "../curves.js";

const DEFAULT_METRIC = "test_accuracy";

export async function render(main, params, { signal, navigate }) {
  const ids = (params.get("ids") || "").split(/[\s,]+/).filter(Boolean);
  const wanted = params.get("metric") || DEFAULT_METRIC;
  const idsInput = el("input", { id: "compare-ids", size: 60, value: ids.join(", "), autocomplete: "off" });
  const metricSelect = el("select", { id: "compare-metric" });
  const form = el("form", { class: "filters", "aria-label": "Jobs to compare" },
    el("label", { for: "compare-ids" }, "Job ids (two or more, comma or space separated)"), idsInput,
    el("label", { for: "compare-metric" }, "Metric"), metricSelect,
    el("button", { type: "submit" }, "Compare"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = idsInput.value.split(/[\s,]+/).filter(Boolean).join(",");
    navigate(`#/compare?ids=${encodeURIComponent(chosen)}&metric=${encodeURIComponent(metricSelect.value || wanted)}`);
  });
  const message = el("p", { role: "status", class: "muted", id: "compare-message" });
  const chartsBox = el("div", { class: "charts", id: "compare-charts" });
  main.append(el("h1", {}, "Compare jobs"), form, message, chartsBox);
  metricSelect.append(el("option", { value: wanted, selected: true }, wanted));
  if (ids.length < 2) {
    message.textContent = "Enter two or more job ids.";
    return;
  }
  const runs = await Promise.all(ids.map(async (id) => ({
    job: await api(jobPath(id), { signal }), points: await jobMetrics(id, signal),
  })));
  const names = [...new Set(runs.flatMap((r) => r.points.map((p) => p.name)))].sort();
  metricSelect.replaceChildren(...names.map((n) => el("option", { value: n, selected: n === wanted }, n)));
  const chart = new LiveChart(chartsBox, { id: "compare", title: wanted, yLabel: wanted });
  signal.addEventListener("abort", () => chart.destroy());
  runs.forEach(({ job, points }, i) => {
    const toX = timeAxis(job.spec);
    for (const p of points.filter((point) => point.name === wanted)) {
      const label = `${job.condition ? `${job.condition} ` : ""}${job.id} (${p.phase})`;
      chart.add(`${job.id}|${p.phase}`, toX(p.phase, p.epoch), p.value,
        { label, color: colour(i), dash: phaseDash(p.phase) });
    }
  });
  message.textContent = `${runs.length} jobs.`;
}
