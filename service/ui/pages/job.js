// Job: spec, state, progress with ETA, live curves from the job's event stream,
// artifacts, cancel.
import { api, followEvents, jobPath } from "../api.js";
import { el, formatDuration, formatTime, stateBadge } from "../dom.js";
import { jobCharts } from "../curves.js";
import { isTerminal } from "../vocabulary.js";
import { artifactSection } from "./artifacts.js";

const ARTIFACT_REFRESH_MS = 2000;

function progressLine(progress) {
  if (!progress) return "No progress reported yet.";
  const parts = [];
  if (progress.phase) parts.push(progress.phase);
  if (progress.epoch && progress.epochs) parts.push(`epoch ${progress.epoch}/${progress.epochs}`);
  if (progress.step && progress.steps) parts.push(`step ${progress.step}/${progress.steps}`);
  if (progress.eta_s !== null && progress.eta_s !== undefined) {
    parts.push(`ETA ${formatDuration(progress.eta_s)}`);
  }
  return parts.join(" · ");
}

/** Fraction of the phase done, from epochs and steps (null when unknown). */
function fractionDone(p) {
  if (!p?.epochs || !p.epoch) return null;
  const within = p.steps ? (p.step || 0) / p.steps : 1;
  return Math.min(1, (p.epoch - 1 + within) / p.epochs);
}

export async function render(main, params, { signal }) {
  const jobId = params.get("id");
  const job = await api(jobPath(jobId), { signal });
  const state = el("span", { id: "job-state" }, stateBadge(job.state));
  const cancel = el("button", { type: "button", id: "cancel-job", disabled: isTerminal(job.state) },
    "Cancel job");
  const message = el("p", { role: "status", id: "job-message", class: "muted" });
  const bar = el("progress", { id: "job-progress", max: 1, "aria-label": "Phase progress" });
  const progressText = el("p", { id: "job-progress-text" });
  const showProgress = (progress) => {
    const done = fractionDone(progress);
    if (done === null) bar.removeAttribute("value");
    else bar.value = done;
    progressText.textContent = progressLine(progress);
  };
  const showState = (value, detail) => {
    state.replaceChildren(stateBadge(value));
    cancel.disabled = isTerminal(value);
    if (detail) message.textContent = detail;
  };
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const answer = await api(`${jobPath(jobId)}/cancel`, { method: "POST", signal });
      showState(answer.state, "Cancel requested.");
    } catch (error) {
      message.textContent = `Cancel failed: ${error.message}`;
      cancel.disabled = false;
    }
  });

  const chartsBox = el("div", { class: "charts", id: "job-charts" });
  const artifacts = artifactSection(jobId, signal);
  main.append(
    el("h1", {}, `Job ${job.id}`),
    el("p", {}, `${job.kind} · `, state, ` · created ${formatTime(job.created_at)}`,
      job.parent_id ? [" · run of ", el("a", { href: `#/experiment/${job.parent_id}` }, job.parent_id)] : null,
      job.condition ? ` · condition ${job.condition}` : null),
    el("div", { class: "actions" }, cancel,
      el("a", { href: `#/compare?ids=${job.id}` }, "Compare with…")),
    message,
    el("section", { "aria-labelledby": "progress-title" },
      el("h2", { id: "progress-title" }, "Progress"), bar, progressText),
    el("section", { "aria-labelledby": "curves-title" },
      el("h2", { id: "curves-title" }, "Curves"),
      el("p", { class: "muted" }, "Dashed: pretraining (x ≤ 0 when the job trains after it); solid: training."),
      chartsBox),
    artifacts.section,
    el("section", { "aria-labelledby": "spec-title" },
      el("h2", { id: "spec-title" }, "Spec"),
      el("pre", { class: "json", id: "job-spec" }, JSON.stringify(job.spec, null, 2))),
  );
  if (job.error) message.textContent = `${job.error.reason}: ${job.error.message || ""}`;
  if (job.result) {
    main.append(el("section", { "aria-labelledby": "result-title" },
      el("h2", { id: "result-title" }, "Result"),
      el("pre", { class: "json", id: "job-result" }, JSON.stringify(job.result, null, 2))));
  }
  showProgress(job.progress);
  const curves = jobCharts(chartsBox, job.spec);
  signal.addEventListener("abort", curves.destroy);
  artifacts.refresh().catch(() => {});

  let artifactTimer = null;
  const refreshArtifactsSoon = () => {
    if (artifactTimer) return;
    artifactTimer = setTimeout(() => { artifactTimer = null; artifacts.refresh().catch(() => {}); },
      ARTIFACT_REFRESH_MS);
  };
  followEvents(jobId, (event) => {
    if (event.event === "metrics") {
      const { phase, epoch, metrics } = event.data;
      for (const [name, value] of Object.entries(metrics)) {
        curves.add(phase, epoch, name, value, event.arrivedAt);
      }
      refreshArtifactsSoon();
    } else if (event.event === "progress") {
      showProgress(event.data);
    } else if (event.event === "state") {
      const { state: value, reason, message: detail } = event.data;
      showState(value, reason ? `${reason}: ${detail || ""}` : null);
      if (isTerminal(value)) artifacts.refresh().catch(() => {});
    }
  }, signal).catch((error) => { message.textContent = `Event stream: ${error.message}`; });
}
