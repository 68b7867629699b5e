// Flow control in the dashboard (docs/flow-control.md). On the run page: why a run or a node
// waits — the limit it is queued behind, its place in line, when a rate limit's next token frees
// (the run header and the node panel each call `waitingLine` with the `waiting` the API gives).
// The Flow page: every limit and every debounce or batch at work, with its counts per key.

import { get } from "./api.js";
import { el, clear, fmtClock, fmtDuration } from "./util.js";

/** What `waiting` says, in words (the same words as `conveyor status`). */
export function waitingText(w) {
  const key = w.key ? ` (key ${w.key})` : "";
  const what = w.reason === "rate"
    ? `Rate-limited to ${w.limit} per ${fmtDuration(w.per_s)}${key}`
    : `Queued behind the ${w.scope === "run" ? "run" : "task"} concurrency limit ${w.limit}${key}`;
  const details = [];
  if (w.position != null) details.push(`#${w.position} in line`);
  if (w.holding != null) details.push(`${w.holding} of ${w.limit} ${w.reason === "rate" ? "used in the window" : "running"}`);
  if (w.until != null) details.push(`next token at ${fmtClock(w.until)}`);
  if (w.since != null) details.push(`waiting since ${fmtClock(w.since)}`);
  return details.length ? `${what}: ${details.join(", ")}` : what;
}

/** A badge and a line for the run header or the node panel; null when nothing waits. */
export function waitingLine(w) {
  if (!w) return null;
  return el("div.flow-wait", { role: "status", dataset: { reason: w.reason } },
    el("span.pill.st-queued", { text: w.reason === "rate" ? "rate-limited" : "queued" }),
    el("span", { text: waitingText(w) }));
}

// ---- the Flow page: every limit and every debounce or batch at work, per key -----------------

const REFRESH_MS = 2000;

/** `/api/flow` as two tables, re-read every 2 s: limiters (what each key holds and queues) and
 * collectors (the events a debounce or a batch holds, and when its window closes). */
export function mountFlow(view) {
  const limits = el("tbody");
  const collecting = el("tbody");
  view.append(el("div.page-head", {}, el("h1", { text: "Flow control" })), el("div.flow-page", {},
    el("div.card", {}, el("div.card-head", {}, el("h2", { text: "Limits" })),
      el("table.table.flow-limits", {},
        el("thead", {}, el("tr", {}, ["Limit", "Of", "Key", "Holding", "Queued", "Next token"].map((h) => el("th", { text: h })))),
        limits)),
    el("div.card", {}, el("div.card-head", {}, el("h2", { text: "Debounce and batching" })),
      el("table.table.flow-collectors", {},
        el("thead", {}, el("tr", {}, ["Workflow", "Mode", "Key", "Events held", "Starts a run at"].map((h) => el("th", { text: h })))),
        collecting))));

  let stopped = false;
  let timer = null;
  async function load() {
    try {
      show(await get("/api/flow"));
    } catch { /* the live indicator and the token prompt say why */ }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }
  function show(entities) {
    clear(limits);
    clear(collecting);
    for (const f of entities) (f.kind === "limiter" ? limits : collecting).append(f.kind === "limiter" ? limitRow(f) : collectorRow(f));
    if (!limits.children.length) limits.append(emptyRow(6, "No limit holds or queues anything now."));
    if (!collecting.children.length) collecting.append(emptyRow(5, "No debounce or batch holds events now."));
  }
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

const SCOPES = { run: "run concurrency", task: "task concurrency", rate: "rate" };

function limitRow(f) {
  const limit = f.scope === "rate" ? `${f.limit} per ${fmtDuration(f.per_s)}` : `${f.limit}`;
  return el("tr", { dataset: { scope: f.scope, name: f.name, key: f.key } },
    el("td", { text: `${SCOPES[f.scope] || f.scope} ${limit}` }),
    el("td.mono", { text: f.name }),
    el("td.mono", { text: f.key || "(all)" }),
    el("td", { text: `${f.holding} of ${f.limit}` }),
    el("td", { text: `${f.waiting}` }),
    el("td", { text: f.scope === "rate" && f.timer_due != null ? fmtClock(f.timer_due) : "" }));
}

function collectorRow(f) {
  return el("tr", { dataset: { workflow: f.workflow, key: f.key } },
    el("td.mono", { text: f.workflow }),
    el("td", { text: f.mode === "debounce" ? "debouncing" : "batching" }),
    el("td.mono", { text: f.key || "(all)" }),
    el("td", { text: `${f.count}` }),
    el("td", { text: f.timer_due != null ? fmtClock(f.timer_due) : "" }));
}

function emptyRow(span, text) {
  return el("tr", {}, el("td.empty", { colSpan: span, text }));
}
