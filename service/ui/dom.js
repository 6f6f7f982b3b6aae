// Small helpers to build elements without innerHTML (no markup from data, ever).

/** `el("a", {href: "#/x", class: "y"}, "text", child)`: an element with attributes
 * (`on*` functions become listeners, `dataset` an object of data- attributes) and children
 * (strings become text nodes; null and false are skipped). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const clear = (node) => node.replaceChildren();

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

export const stateBadge = (state) => el("span", { class: `state state-${state}` }, state);

/** Call `fn` every `ms` until `signal` aborts (the page was left). */
export function every(ms, fn, signal) {
  const timer = setInterval(fn, ms);
  signal.addEventListener("abort", () => clearInterval(timer));
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
  });
}
