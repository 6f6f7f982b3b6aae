// A job's artifacts as download buttons: fetched with the key, saved from a blob: URL.
import { api, artifactUrl, jobPath } from "../api.js";
import { el, formatBytes } from "../dom.js";

async function download(jobId, name, signal) {
  const url = await artifactUrl(jobId, name, signal);
  const link = el("a", { href: url, download: name.split("/").at(-1) });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A section listing the job's artifacts; its `refresh()` reads the list again. */
export function artifactSection(jobId, signal) {
  const list = el("ul", { class: "artifacts", id: "artifacts" });
  const section = el("section", { "aria-labelledby": "artifacts-title" },
    el("h2", { id: "artifacts-title" }, "Artifacts"), list);
  async function refresh() {
    const { items } = await api(`${jobPath(jobId)}/artifacts`, { signal });
    list.replaceChildren(...items.map((a) => el("li", {},
      el("button", { type: "button", class: "link", onclick: () => download(jobId, a.name, signal) },
        `Download ${a.name}`),
      el("span", { class: "muted" }, ` ${formatBytes(a.size)}`))));
    if (!items.length) list.append(el("li", { class: "muted" }, "None yet."));
  }
  return { section, refresh };
}

/** The job's PNG artifacts (`names`) as images, in `parent`. */
export async function showPlots(parent, jobId, names, signal) {
  for (const name of names.filter((n) => n.endsWith(".png"))) {
    const url = await artifactUrl(jobId, name, signal);
    signal.addEventListener("abort", () => URL.revokeObjectURL(url));
    parent.append(el("figure", { class: "plot" },
      el("img", { src: url, alt: `Plot ${name}` }), el("figcaption", {}, name)));
  }
}
