// Submit: start from a preset, edit the JSON, send it; the API's problem JSON is shown with
// each invalid field named.
import { api, ApiError } from "../api.js";
import { el } from "../dom.js";

export async function render(main, _params, { signal, navigate }) {
  const { items: presets } = await api("/v1/presets", { signal });
  const presetSelect = el("select", { id: "preset" }, presets.map((p, i) =>
    el("option", { value: String(i) }, `${p.name}${p.available ? "" : ` (needs ${p.missing_datasets?.join(", ")})`}`)));
  const description = el("p", { class: "muted", id: "preset-description" });
  const body = el("textarea", { id: "job-body", rows: 24, cols: 80, spellcheck: "false",
                                 "aria-describedby": "submit-problem" });
  const problem = el("div", { id: "submit-problem", role: "alert" });
  const load = () => {
    const preset = presets[Number(presetSelect.value)];
    if (!preset) return;
    body.value = JSON.stringify(preset.body, null, 2);
    description.textContent = preset.description;
  };
  presetSelect.addEventListener("change", load);
  const form = el("form", { class: "submit", "aria-label": "Submit a job" },
    el("label", { for: "preset" }, "Start from preset"), presetSelect, description,
    el("label", { for: "job-body" }, "Job body (JSON, sent to POST /v1/jobs)"),
    el("div", { class: "editor" }, body, problem),
    el("button", { type: "submit", id: "submit-job" }, "Submit job"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      JSON.parse(body.value);
    } catch (error) {
      problem.append(el("p", { class: "error" }, `Not JSON: ${error.message}`));
      return;
    }
    try {
      const job = await api("/v1/jobs", { method: "POST", body: body.value, signal });
      navigate(`#/${job.kind === "experiment" ? "experiment" : "job"}/${job.id}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      problem.append(
        el("p", { class: "error" }, `${error.problem.title || "Refused"} (${error.status}): ${error.problem.detail || ""}`),
        el("ul", { class: "field-errors" }, error.errors.map((e) =>
          el("li", { dataset: { field: e.field } }, el("code", {}, e.field), `: ${e.message}`))));
    }
  });
  main.append(el("h1", {}, "Submit a job"), form);
  load();
}
