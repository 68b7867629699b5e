// The dashboard's entry point: a hash router over five pages, the token prompt, and the live
// indicator. No framework and no build step: plain ES modules served by the API itself.

import { on, setToken, get } from "./api.js";
import { clear } from "./util.js";
import { mountRuns } from "./runs.js";
import { mountRun } from "./run.js";
import { mountWorkflows, mountWorkflow } from "./workflows.js";
import { mountWorkers } from "./workers.js";
import { mountFlow } from "./flow.js";
import { installTrigger, openTrigger } from "./trigger.js";

const view = document.getElementById("view");
let unmount = () => {};

function route() {
  unmount();
  clear(view);
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "runs";
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === section);
  if (section === "runs" && parts[1]) { document.title = `Run ${parts[1]} · Conveyor`; unmount = mountRun(view, parts[1], params); }
  else if (section === "workflows" && parts[1]) { document.title = `${parts[1]} · Conveyor`; unmount = mountWorkflow(view, parts[1], params); }
  else if (section === "workflows") { document.title = "Workflows · Conveyor"; unmount = mountWorkflows(view, params); }
  else if (section === "workers") { document.title = "Workers · Conveyor"; unmount = mountWorkers(view, params); }
  else if (section === "flow") { document.title = "Flow control · Conveyor"; unmount = mountFlow(view); }
  else { document.title = "Runs · Conveyor"; unmount = mountRuns(view, params); }
}

// ---- auth: a 401 anywhere opens the token prompt once ---------------------------------------
const tokenDialog = document.getElementById("token-dialog");
on("unauthorized", () => { if (!tokenDialog.open) tokenDialog.showModal(); });
document.getElementById("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("token-error");
  setToken(document.getElementById("token-input").value.trim());
  try {
    await get("/api/workflows");
  } catch (err) {
    error.textContent = err.status === 401 ? "That token was refused." : err.message;
    error.hidden = false;
    return;
  }
  error.hidden = true;
  tokenDialog.close();
  route();
});
tokenDialog.addEventListener("cancel", (ev) => ev.preventDefault()); // nothing works without it

// ---- live indicator -------------------------------------------------------------------------
const indicator = document.getElementById("live-indicator");
const LABELS = { idle: "Idle", live: "Live", reconnecting: "Reconnecting…" };
on("live", (state) => {
  indicator.dataset.state = state;
  indicator.querySelector(".label").textContent = LABELS[state];
});

installTrigger();
document.getElementById("trigger-open").addEventListener("click", () => openTrigger());
window.addEventListener("hashchange", route);
route();
