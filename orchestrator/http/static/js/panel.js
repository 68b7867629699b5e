// The run page's side panel for one node (or one child of a mapped node): details (attempts
// with timings, error and traceback, input and output), logs streaming live, and for a mapped
// node its children a page at a time.

import { get, enc } from "./api.js";
import { el, clear, pill, fmtDuration, fmtInt, jsonView, throttle, timeEl } from "./util.js";
import { followLogs } from "./logs.js";
import { tracebackView } from "./traceback.js";
import { valueView } from "./values.js";
import { waitingLine } from "./flow.js";

export class NodePanel {
  constructor(root, runId, { onClose, onSelect }) {
    this.root = root;
    this.runId = runId;
    this.onClose = onClose;
    this.onSelect = onSelect;
    this.key = null;
    this.tab = "details";
    this.closeLogs = null;
    this.refresh = throttle(() => this.loadDetails(), 1000);
  }

  open(key, dagNode, tab) {
    if (key !== this.key) this.stopLogs();
    this.key = key;
    this.dagNode = dagNode;
    this.parent = key.includes("[") ? key.slice(0, key.indexOf("[")) : null;
    this.tab = tab || (this.parent ? "details" : this.tab === "children" && !dagNode.mapped ? "details" : this.tab);
    this.build();
    this.loadDetails();
  }

  /** What the run's detail says of this node that its own read does not (no live worker). */
  setNote(noWorker) { this.noWorker = noWorker || null; }

  /** The node's status as the run page shows it (events applied ahead of the committed state). */
  setStatus(status) {
    if (!this.key || this.parent || !this.pillBox || status === this.shownStatus) return;
    this.shownStatus = status;
    clear(this.pillBox).append(pill(status));
  }

  close() { this.stopLogs(); this.refresh.cancel(); this.key = null; clear(this.root); }

  stopLogs() { if (this.closeLogs) this.closeLogs(); this.closeLogs = null; }

  build() {
    clear(this.root);
    const n = this.dagNode;
    this.pillBox = el("span");
    const head = el("div.panel-head", {},
      this.parent ? el("div.breadcrumb", {}, el("a", { href: "#", text: `← ${this.parent}`, onclick: (e) => { e.preventDefault(); this.onSelect(this.parent, "children"); } })) : null,
      el("div.row", {}, el("h2", { text: this.key }), this.pillBox,
        el("button.close", { type: "button", "aria-label": "Close panel", text: "×", onclick: () => this.onClose() })),
      el("div.muted", { text: `${n.kind === "task" ? `task ${n.task} · queue ${n.queue}` : n.label}${n.mapped && !this.parent ? ` · mapped over ${n.map_param}` : ""}` }));
    const tabs = [["details", "Details"], ["logs", "Logs"]];
    if (n.mapped && !this.parent) tabs.push(["children", "Children"]);
    this.tabButtons = new Map();
    const bar = el("div.tabs", { role: "tablist" });
    for (const [id, label] of tabs) {
      const b = el(`button.tab${this.tab === id ? ".active" : ""}`, { type: "button", role: "tab", dataset: { tab: id }, text: label, onclick: () => this.showTab(id) });
      this.tabButtons.set(id, b);
      bar.append(b);
    }
    this.body = el("div.panel-body");
    this.root.append(el("div.card.panel", {}, head, bar, this.body));
    this.showTab(this.tab);
  }

  showTab(id) {
    this.tab = id;
    for (const [k, b] of this.tabButtons) b.classList.toggle("active", k === id);
    if (id !== "logs") this.stopLogs();
    clear(this.body);
    if (id === "details") { this.detailsBox = el("div", {}, el("div.muted", {}, el("span.spinner"), " Loading…")); this.body.append(this.detailsBox); this.renderDetails(); }
    if (id === "logs") this.startLogs();
    if (id === "children") this.startChildren();
  }

  async loadDetails() {
    if (!this.key) return;
    const key = this.key;
    try {
      const node = await get(`/api/runs/${enc(this.runId)}/nodes/${enc(key)}`);
      if (key !== this.key) return;
      this.node = node;
    } catch (err) {
      if (key !== this.key) return;
      this.node = null;
      this.nodeError = err.status === 404 ? "This node has not started yet." : err.message;
    }
    this.shownStatus = this.node ? this.node.status : "waiting";
    clear(this.pillBox).append(pill(this.shownStatus));
    if (this.tab === "details") this.renderDetails();
  }

  renderDetails() {
    if (!this.detailsBox) return;
    if (this.node === undefined) return;
    const box = clear(this.detailsBox);
    const node = this.node;
    if (!node) { box.append(el("p.muted", { text: this.nodeError || "No state yet." })); return; }
    if (node.children) { this.renderMapped(box, node); return; }
    const n = this.dagNode;
    const hist = node.attempt_history || [];
    const last = hist[hist.length - 1];
    box.append(el("dl.kv", {},
      el("dt", { text: "Status" }), el("dd", {}, pill(node.status)),
      el("dt", { text: "Attempts" }), el("dd.node-attempts", { text: attemptsText(node, hist.length, n.max_attempts) }),
      n.timeout_s ? [el("dt", { text: "Timeout" }), el("dd", { text: fmtDuration(n.timeout_s) })] : null,
      last ? [el("dt", { text: "Worker" }), el("dd.mono", { text: last.worker || "–" })] : null));
    if (this.noWorker) box.append(el("div.form-error.section", {}, this.noWorker.message, " — see ", el("a", { href: "#/workers", text: "Workers" }), "."));
    if (node.waiting) box.append(waitingLine(node.waiting));
    if (node.error) box.append(el("div.section", {}, el("h3", { text: "Error" }), errorBox(node.error)));
    if (hist.length) box.append(el("div.section", {}, el("h3", { text: "Attempts" }), attemptsTable(hist)));
    box.append(this.valueSection("Input", "input", node.input));
    if (node.status === "succeeded" || node.output !== null) box.append(this.valueSection("Output", "output", node.output));
    else box.append(el("div.section", {}, el("h3", { text: "Output" }), el("p.muted", { text: `None yet: the node is ${node.status}.` })));
  }

  /** A mapped node: its children say how it goes; its output is theirs, once all are done. */
  renderMapped(box, node) {
    const c = node.children;
    const done = Object.entries(c).filter(([k]) => ["succeeded", "failed", "skipped", "cancelled"].includes(k)).reduce((s, [, v]) => s + v, 0);
    box.append(el("dl.kv", {},
      el("dt", { text: "Status" }), el("dd", {}, pill(node.status)),
      el("dt", { text: "Children" }), el("dd", { text: Object.entries(c).map(([k, v]) => `${fmtInt(v)} ${k}`).join(" · ") }),
      el("dt", { text: "Progress" }), el("dd", { text: `${fmtInt(done)} of ${fmtInt(c.total)} finished` }),
      el("dt", { text: "Mapped over" }), el("dd", {}, el("code", { text: this.dagNode.map_param || "–" }))));
    if (node.error) box.append(el("div.section", {}, el("h3", { text: "Error" }), errorBox(node.error)));
    box.append(el("p.muted", {}, "Each child has its own attempts, input and output: ",
      el("a", { href: "#", text: "see the children", onclick: (e) => { e.preventDefault(); this.showTab("children"); } }), "."));
    if (node.status === "succeeded") box.append(this.valueSection("Output (the children's, in order)", "output", node.output));
    else box.append(el("div.section", {}, el("h3", { text: "Output" }), el("p.muted", { text: "The list of the children's outputs, once every child succeeded." })));
  }

  valueSection(title, which, value) {
    return el("div.section", {}, el("h3", { text: title }), valueView(value, { runId: this.runId, which, node: this.key }));
  }

  // ---- logs ------------------------------------------------------------------------------
  startLogs() {
    const box = el("div");
    this.body.append(box);
    const key = this.key;
    this.closeLogs = followLogs(box, this.runId, [key], (line) => (line.node_id !== key ? `${line.node_id}#${line.attempt}` : `#${line.attempt}`));
  }

  // ---- children --------------------------------------------------------------------------
  startChildren() {
    const list = el("div");
    const more = el("button.btn.btn-small", { type: "button", text: "Load more", hidden: true });
    const filter = el("select", { "aria-label": "Child status" },
      ["", "failed", "running", "dispatched", "retrying", "succeeded", "cancelled"].map((s) => el("option", { value: s, text: s || "All children" })));
    let after = -1;
    const load = async (reset) => {
      if (reset) { after = -1; clear(list); }
      const page = await get(`/api/runs/${enc(this.runId)}/nodes/${enc(this.key)}/children`, { after, limit: 100, status: filter.value || undefined });
      for (const c of page.children) {
        const a = c.attempt_history[c.attempt_history.length - 1];
        const dur = a && a.finished_at ? fmtDuration(a.finished_at - (a.started_at || a.dispatched_at)) : "";
        const item = itemText(c.item);
        list.append(el("div.child-row", { dataset: { key: c.key }, onclick: () => this.onSelect(c.key, "details") },
          el("span.mono", { text: c.key }), el("span.child-item", { title: item, text: item }), el("span.muted", { text: dur }), pill(c.status)));
      }
      if (!list.firstChild) list.append(el("p.muted", { text: "No children match." }));
      after = page.next_after;
      more.hidden = after === null;
    };
    filter.onchange = () => load(true);
    more.onclick = () => load(false);
    this.body.append(el("div.filters.section", {}, filter), list, el("div.table-foot", {}, more));
    load(true).catch(() => {});
  }
}

/** A child's item as one short line (the full value is in the child's own panel). */
function itemText(item) {
  if (item === undefined || item === null) return "";
  const text = typeof item === "string" ? item : JSON.stringify(item);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

export function errorBox(error, { open = true } = {}) {
  // A cancellation is recorded as an error, but it is a decision, not a failure: no red.
  const cancelled = error.type === "Cancelled";
  const box = el(`div.error-box${cancelled ? ".neutral" : ""}`, {}, el("div", {}, el("span.etype", { text: error.type }), ": ", el("span.emsg", { text: error.message })));
  if (error.retryable === false && !cancelled) box.append(el("div.muted", { text: "not retryable" }));
  if (error.traceback) box.append(el("details.trace-box", { open }, el("summary", { text: "Traceback" }), tracebackView(error.traceback)));
  return box;
}

function attemptsTable(history) {
  return el("table.table.attempts", {},
    el("thead", {}, el("tr", {}, ["#", "Status", "Queued", "Ran", "Started"].map((h) => el("th", { text: h })))),
    el("tbody", {}, history.map((a) => el("tr", {},
      el("td", { text: String(a.attempt) }),
      el("td", {}, pill(a.status)),
      el("td", { title: "dispatch to start", text: a.started_at ? fmtDuration(a.started_at - a.dispatched_at) : "–" }),
      el("td", { text: a.finished_at ? fmtDuration(a.finished_at - (a.started_at || a.dispatched_at)) : a.started_at ? "running…" : "–" }),
      el("td.muted", {}, timeEl(a.started_at || a.dispatched_at, { clock: true }))))));
}

/** Attempts against the retry budget, which a manual retry of the run starts over. */
function attemptsText(node, all, max) {
  const since = node.attempts_since_retry ?? all;
  return since === all ? `${all} of max ${max}` : `${since} of max ${max} since the run's retry (${all} in all)`;
}
