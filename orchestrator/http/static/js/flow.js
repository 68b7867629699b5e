// Flow control on the run page (docs/flow-control.md): why a run or a node waits — the limit it
// is queued behind, its place in line, when a rate limit's next token frees. A separate piece:
// the run header and the node panel each call `waitingLine` with the `waiting` the API gives.

import { el, fmtClock, fmtDuration } from "./util.js";

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
