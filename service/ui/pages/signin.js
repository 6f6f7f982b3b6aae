// Sign in: an API key, checked against the API before it is kept for this tab.
import { refusalOf } from "../api.js";
import { el } from "../dom.js";
import { storeKey } from "../session.js";

export function render(main, { message, onSignedIn }) {
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true, size: 50 });
  const alert = el("p", { id: "signin-message", role: "alert", class: message ? "error" : "" }, message || "");
  // No `name` on the input: were the script ever bypassed, the form would send nothing.
  const form = el("form", { id: "signin", "aria-label": "Sign in" },
    el("label", { for: "api-key" }, "API key"), input,
    el("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    let refusal;
    try {
      refusal = await refusalOf(key);
    } catch (error) {
      alert.className = "error";
      alert.textContent = `Could not reach the API: ${error.message}`;
      return;
    }
    if (refusal) {
      alert.className = "error";
      alert.textContent = `That API key was refused (${refusal.status}): ${refusal.message}`;
      return;
    }
    storeKey(key);
    onSignedIn();
  });
  main.append(el("h1", {}, "Sign in"),
    el("p", {}, "Paste an API key (`noisefa keys create --project NAME`; the embedded server's is in its key file). It is kept in this tab only."),
    form, alert);
  input.focus();
}
