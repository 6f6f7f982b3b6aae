// Calls to the noisefa API with the tab's bearer key. Every 4xx is RFC 9457 problem JSON;
// a 401 anywhere tells the app (event `noisefa:unauthorized`) to ask for a key again.
import { sleep } from "./dom.js";
import { apiKey } from "./session.js";
import { isTerminal } from "./vocabulary.js";

export const MAX_PAGE_SIZE = 500;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

async function readProblem(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText, status: response.status };
  }
}

function authHeaders(extra = {}) {
  const key = apiKey();
  if (!key) throw new ApiError(401, { title: "Not signed in", detail: "Sign in with an API key." });
  return { Authorization: `Bearer ${key}`, ...extra };
}

async function failed(response) {
  const error = new ApiError(response.status, await readProblem(response));
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("noisefa:unauthorized", { detail: error }));
  }
  return error;
}

/** `path` with the non-empty `params` as its query string. */
export function withQuery(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** The JSON answer of `method path` (`body`: a JSON text), or an ApiError. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) throw await failed(response);
  return response.status === 204 ? null : response.json();
}

/** Every item of a paginated list (`items` + `next_page_token`). */
export async function allPages(path, params = {}, signal) {
  const items = [];
  let pageToken = null;
  do {
    const page = await api(
      withQuery(path, { ...params, page_size: MAX_PAGE_SIZE, page_token: pageToken }),
      { signal },
    );
    items.push(...page.items);
    pageToken = page.next_page_token;
  } while (pageToken);
  return items;
}

export const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;
export const jobMetrics = (id, signal) => allPages(`${jobPath(id)}/metrics`, {}, signal);

/** An artifact's bytes as a blob: URL (fetched with the key; the caller revokes it). */
export async function artifactUrl(jobId, name, signal) {
  const path = `${jobPath(jobId)}/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`;
  const response = await fetch(path, { headers: authHeaders(), signal });
  if (!response.ok) throw await failed(response);
  return URL.createObjectURL(await response.blob());
}

function parseEvent(block) {
  const event = { id: null, event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = Number(value);
    else if (field === "event") event.event = value;
    else if (field === "data") event.data += value;
  }
  if (!event.data) return null;
  event.data = JSON.parse(event.data);
  return event;
}

/** Follow a job's SSE stream until its terminal state or until `signal` aborts.
 *
 * Read with fetch, since EventSource cannot send an Authorization header. A dropped stream
 * is opened again after the last event seen (`Last-Event-ID`), with backoff; a 429 waits
 * its `Retry-After`. `onEvent({id, event, data, arrivedAt})` gets every event once;
 * `arrivedAt` is the `performance.now()` its bytes came in. */
export async function followEvents(jobId, onEvent, signal) {
  let lastId = 0;
  let delayMs = 1000;
  while (!signal.aborted) {
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId) headers["Last-Event-ID"] = String(lastId);
      const response = await fetch(`${jobPath(jobId)}/events`, { headers, signal });
      if (response.status === 429) {
        delayMs = 1000 * Number(response.headers.get("Retry-After") || 5);
      } else if (!response.ok) {
        throw await failed(response);
      } else {
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const arrivedAt = performance.now();
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = parseEvent(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
            if (!event) continue;
            lastId = event.id ?? lastId;
            onEvent({ ...event, arrivedAt });
            if (event.event === "state" && isTerminal(event.data.state)) return;
          }
        }
        delayMs = 1000;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
    }
    await sleep(delayMs, signal);
    delayMs = Math.min(delayMs * 2, 15000);
  }
}

/** Whether the API takes `key`: null when it does, else the ApiError of its answer.
 * (Checked apart from `api`, so a refused candidate does not sign the tab out.) */
export async function refusalOf(key) {
  const response = await fetch("/v1/jobs?page_size=1", {
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
  });
  return response.ok ? null : new ApiError(response.status, await readProblem(response));
}
