// Jobs: the project's jobs, newest first, filtered by state, kind and parent, a page at a
// time; the page is read again every few seconds so states change in place.
import { api, withQuery } from "../api.js";
import { el, every, formatDuration, formatTime, stateBadge } from "../dom.js";
import { JOB_KINDS, JOB_STATES } from "../vocabulary.js";

const POLL_MS = 3000;
const PAGE_SIZE = 25;

export const jobLink = (job) =>
  el("a", { href: `#/${job.kind === "experiment" ? "experiment" : "job"}/${job.id}` }, job.id);

function progressText(job) {
  const p = job.progress;
  if (!p) return "";
  if (p.children_total) return `${p.children_done ?? 0}/${p.children_total} runs`;
  const epoch = p.epoch && p.epochs ? `${p.phase} ${p.epoch}/${p.epochs}` : p.phase || "";
  return p.eta_s ? `${epoch}, ETA ${formatDuration(p.eta_s)}` : epoch;
}

function select(id, label, options, value) {
  return [
    el("label", { for: id }, label),
    el("select", { id, name: id },
      el("option", { value: "" }, "any"),
      options.map((o) => el("option", { value: o, selected: o === value }, o))),
  ];
}

export function render(main, params, { signal, navigate }) {
  const filters = { state: params.get("state") || "", kind: params.get("kind") || "",
                    parent_id: params.get("parent") || "" };
  const tokens = [null]; // page tokens of the pages seen: the last is the current page's
  const form = el("form", { class: "filters", "aria-label": "Filter jobs" },
    ...select("filter-state", "State", JOB_STATES, filters.state),
    ...select("filter-kind", "Kind", JOB_KINDS, filters.kind),
    el("label", { for: "filter-parent" }, "Experiment id"),
    el("input", { id: "filter-parent", value: filters.parent_id, size: 24, autocomplete: "off" }),
    el("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(withQuery("#/jobs", {
      state: form.querySelector("#filter-state").value,
      kind: form.querySelector("#filter-kind").value,
      parent: form.querySelector("#filter-parent").value.trim(),
    }));
  });
  const body = el("tbody", { id: "jobs-body" });
  const status = el("p", { class: "muted", role: "status", id: "jobs-status" });
  const previous = el("button", { type: "button", id: "page-previous", disabled: true }, "Previous page");
  const next = el("button", { type: "button", id: "page-next", disabled: true }, "Next page");
  let nextToken = null;

  async function load() {
    const page = await api(
      withQuery("/v1/jobs", { ...filters, page_size: PAGE_SIZE, page_token: tokens.at(-1) }),
      { signal },
    );
    body.replaceChildren(...page.items.map((job) => el("tr", { dataset: { jobId: job.id, state: job.state } },
      el("td", {}, jobLink(job)),
      el("td", {}, job.kind),
      el("td", {}, stateBadge(job.state)),
      el("td", {}, job.condition || ""),
      el("td", {}, progressText(job)),
      el("td", {}, formatTime(job.created_at)))));
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "No jobs.")));
    nextToken = page.next_page_token;
    next.disabled = !nextToken;
    previous.disabled = tokens.length < 2;
    status.textContent = `Page ${tokens.length} · updated ${new Date().toLocaleTimeString()}`;
  }
  const refresh = () => load().catch((error) => {
    if (!signal.aborted) status.textContent = `Could not load jobs: ${error.message}`;
  });
  next.addEventListener("click", () => { tokens.push(nextToken); refresh(); });
  previous.addEventListener("click", () => { tokens.pop(); refresh(); });

  main.append(
    el("h1", {}, "Jobs"), form,
    el("table", { class: "jobs" },
      el("thead", {}, el("tr", {}, ["Id", "Kind", "State", "Condition", "Progress", "Created"]
        .map((h) => el("th", { scope: "col" }, h)))),
      body),
    el("div", { class: "pager" }, previous, next), status);
  refresh();
  every(POLL_MS, refresh, signal);
}
