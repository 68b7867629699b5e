// Task log lines, read a page at a time then followed live (SSE), for one node (the side panel)
// or any set of nodes (the run page's Logs tab, with a node filter).

import { get, stream, enc, withParams } from "./api.js";
import { el, clear, fmtClock, fmtTime } from "./util.js";

const MAX_LOG_LINES = 5000;

/**
 * Follow the log lines of `runId` for `nodes` (an array of node ids or keys; empty: every
 * node) into `box`. `label(line)` says which node a line came from. Returns a stop function.
 */
export function followLogs(box, runId, nodes, label) {
  let stopped = false, close = null, count = 0;
  const logs = el("div.logs", { role: "log", "aria-label": "task logs" });
  const empty = el("div.empty", { text: "No log lines yet — they stream here as tasks write them." });
  logs.append(empty);
  clear(box).append(logs);
  const append = (lines) => {
    const stick = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
    if (lines.length && empty.isConnected) empty.remove();
    const frag = document.createDocumentFragment();
    for (const line of lines) {
      const ts = Date.parse(line.time) / 1000;
      frag.append(el("div.log-line", { dataset: { seq: line.seq, node: line.node_id } },
        el("span.log-time", { title: fmtTime(ts), text: fmtClock(ts) }),
        el(`span.log-level.l-${String(line.level).toLowerCase()}`, { text: line.level }),
        el("span.log-node", { text: label(line) }),
        el("span.log-msg", { text: line.message })));
    }
    logs.append(frag);
    count += lines.length;
    while (count > MAX_LOG_LINES && logs.firstChild) { logs.firstChild.remove(); count--; }
    if (stick) logs.scrollTop = logs.scrollHeight;
  };
  (async () => {
    let after = 0;
    try {
      const page = await get(`/api/runs/${enc(runId)}/logs`, { node: nodes, limit: 1000 });
      if (stopped) return;
      append(page.lines);
      after = page.next_after;
    } catch { /* the tail below reads from the start */ }
    if (stopped) return;
    close = stream(withParams(`/api/runs/${enc(runId)}/logs/stream`, { node: nodes, after }), { logs: append });
  })();
  return () => { stopped = true; if (close) close(); };
}

/** The Logs tab: every node's lines, or those of the nodes picked in the filter. */
export function mountRunLogs(box, runId, nodeIds) {
  const picked = new Set();
  const chips = el("div.log-filter", { role: "group", "aria-label": "Show the logs of" });
  const linesBox = el("div");
  let stop = () => {};
  const restart = () => {
    stop();
    for (const chip of chips.children) {
      const id = chip.dataset.node;
      chip.classList.toggle("active", id ? picked.has(id) : picked.size === 0);
      chip.setAttribute("aria-pressed", String(id ? picked.has(id) : picked.size === 0));
    }
    stop = followLogs(linesBox, runId, [...picked], (line) => `${line.node_id}#${line.attempt}`);
  };
  chips.append(el("button.chip-small", { type: "button", dataset: { node: "" }, text: "All nodes", onclick: () => { picked.clear(); restart(); } }));
  for (const id of nodeIds) {
    chips.append(el("button.chip-small", { type: "button", dataset: { node: id }, text: id,
      onclick: () => { if (picked.has(id)) picked.delete(id); else picked.add(id); restart(); } }));
  }
  clear(box).append(el("div.card-body", {}, chips, linesBox));
  restart();
  return () => stop();
}
