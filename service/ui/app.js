// The dashboard's entry: sign-in, then hash routes (#/jobs, #/job/ID, #/experiment/ID,
// #/compare, #/submit). No state lives on the server: every call carries the tab's key.
import { el } from "./dom.js";
import { apiKey, forgetKey, takeKeyFromFragment } from "./session.js";
import * as compare from "./pages/compare.js";
import * as experiment from "./pages/experiment.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as signin from "./pages/signin.js";
import * as submit from "./pages/submit.js";

const ROUTES = [
  [/^#\/job\/([^/?]+)$/, job, "job"],
  [/^#\/experiment\/([^/?]+)$/, experiment, "experiment"],
  [/^#\/compare$/, compare, "compare"],
  [/^#\/submit$/, submit, "submit"],
  [/^#\/jobs$/, jobs, "jobs"],
];

const main = document.getElementById("main");
const signOut = document.getElementById("sign-out");
let leavePage = new AbortController();

const navigate = (hash) => {
  if (location.hash === hash) show();
  else location.hash = hash;
};

/** The page and parameters of a `#/path?query` address (the jobs list by default). */
function route(hash) {
  const [path, query = ""] = hash.split(/\?(.*)/s);
  const params = new URLSearchParams(query);
  for (const [pattern, page, name] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      if (match[1]) params.set("id", decodeURIComponent(match[1]));
      return { page, name, params };
    }
  }
  return { page: jobs, name: "jobs", params };
}

function start() {
  leavePage.abort();
  leavePage = new AbortController();
  main.replaceChildren();
  return leavePage.signal;
}

function showSignIn(message) {
  start();
  signOut.hidden = true;
  signin.render(main, { message, onSignedIn: show });
}

async function show() {
  if (!apiKey()) return showSignIn();
  const signal = start();
  signOut.hidden = false;
  const { page, name, params } = route(location.hash || "#/jobs");
  document.body.dataset.page = name;
  delete document.body.dataset.loadedAt;
  document.querySelectorAll("[data-nav]").forEach((a) => {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  try {
    await page.render(main, params, { signal, navigate });
    document.body.dataset.loadedAt = String(performance.now());
  } catch (error) {
    if (!signal.aborted && error.status !== 401) {
      main.append(el("p", { class: "error", role: "alert" }, `Could not load this page: ${error.message}`));
    }
  }
}

window.addEventListener("noisefa:unauthorized", (event) => {
  forgetKey();
  showSignIn(`That API key was refused (${event.detail.status}): ${event.detail.message}`);
});
window.addEventListener("hashchange", () => {
  takeKeyFromFragment(); // a sign-in link pasted into an open tab
  show();
});
signOut.addEventListener("click", () => { forgetKey(); showSignIn("Signed out."); });

takeKeyFromFragment();
show();
