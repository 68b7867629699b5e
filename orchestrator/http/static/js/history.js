// The run's event history: every CloudEvent of the run in the event stream, oldest first, each
// row opening to its attributes, NATS headers and data. Live: the run page calls `more()` when
// its event stream says something happened, and the next page is read from the last sequence
// shown (gap-free, however many events arrived).

import { get, enc } from "./api.js";
import { el, clear, fmtClock, fmtTime, jsonView, throttle } from "./util.js";

const PAGE = 500;
const MAX_ROWS = 5000;

export class EventHistory {
  constructor(box, runId) {
    this.runId = runId;
    this.after = 0;
    this.rows = 0;
    this.atEnd = false;
    this.filter = el("input", { type: "text", placeholder: "Filter by type or node", "aria-label": "Filter events", oninput: () => this.applyFilter() });
    this.count = el("span.muted");
    this.list = el("div.ev-list", { role: "list" });
    this.moreButton = el("button.btn.btn-small", { type: "button", text: "Load more", hidden: true, onclick: () => this.load() });
    clear(box).append(
      el("div.card-head", {}, el("h2", { text: "Events" }), this.count, el("span.spacer"), this.filter),
      this.list, el("div.table-foot", {}, this.moreButton));
    this.more = throttle(() => (this.atEnd ? this.load() : null), 500);
    this.load();
  }

  async load() {
    // One read at a time: two at once would both start after the same sequence.
    if (this.loading) { this.again = true; return; }
    this.loading = true;
    try { await this.read(); } finally {
      this.loading = false;
      if (this.again) { this.again = false; this.load(); }
    }
  }

  async read() {
    let page;
    try {
      page = await get(`/api/runs/${enc(this.runId)}/events`, { after: this.after, limit: PAGE });
    } catch { return; }
    for (const event of page.events) this.append(event);
    this.after = page.next_after;
    // At the end of what is there: new events come through `more()`; otherwise a button.
    this.atEnd = !page.more;
    this.moreButton.hidden = !page.more || this.rows >= MAX_ROWS;
    this.count.textContent = `${this.rows} event${this.rows === 1 ? "" : "s"}${page.more ? " so far" : ""}`;
    if (!this.list.firstChild) this.list.append(el("div.empty", { text: "No events of this run are in the event stream." }));
  }

  append(event) {
    if (this.rows >= MAX_ROWS) return;
    const empty = this.list.querySelector(".empty");
    if (empty) empty.remove();
    this.rows++;
    const type = (event.type || "?").replace(/^io\.conveyor\./, "");
    const ts = event.time ? Date.parse(event.time) / 1000 : null;
    const where = event.node_id ? `${event.node_id}${event.attempt ? `#${event.attempt}` : ""}` : "";
    const row = el("details.ev-row", { role: "listitem", dataset: { seq: event.seq, type } },
      el("summary", {},
        el("span.ev-seq.muted", { text: String(event.seq) }),
        el("span.ev-time", { title: ts ? fmtTime(ts) : "", text: ts ? fmtClock(ts) : "–" }),
        el(`span.ev-type.${kindClass(type)}`, { text: event.problem ? "malformed" : type }),
        el("span.ev-node.mono", { text: where }),
        el("span.ev-source.muted", { text: event.source || "" })));
    row.addEventListener("toggle", () => { if (row.open && !row.dataset.built) this.expand(row, event); });
    this.list.append(row);
    if (!this.matches(row)) row.hidden = true;
  }

  expand(row, event) {
    row.dataset.built = "1";
    const attributes = { id: event.id, type: event.type, source: event.source, subject: event.subject, time: event.time, ...event.extensions };
    row.append(el("div.ev-detail", {},
      event.problem ? el("div.form-error", { text: event.problem }) : null,
      el("h3", { text: "Attributes" }), table(attributes),
      el("h3", { text: `NATS message · ${event.nats_subject} · ${event.size} bytes` }), table(event.headers),
      el("h3", { text: "Data" }), jsonView(event.data)));
  }

  matches(row) {
    const q = this.filter.value.trim().toLowerCase();
    return !q || row.dataset.type.includes(q) || row.querySelector(".ev-node").textContent.toLowerCase().includes(q);
  }

  applyFilter() { for (const row of this.list.children) if (row.dataset.type) row.hidden = !this.matches(row); }
}

function kindClass(type) {
  if (type.endsWith("failed")) return "k-failed";
  if (type.endsWith("succeeded") || type.endsWith("completed")) return "k-ok";
  if (type.includes("cancel")) return "k-cancel";
  return "k-other";
}

function table(values) {
  return el("table.table.kv-table", {}, el("tbody", {},
    Object.entries(values).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) =>
      el("tr", {}, el("th", { text: k }), el("td.mono", { text: String(v) })))));
}
