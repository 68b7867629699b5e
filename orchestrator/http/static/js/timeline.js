// The run's timeline (a Gantt chart): one lane per node, a bar per attempt — light while queued
// (dispatch to start), coloured by its outcome while it ran — and a mapped node as one lane
// whose density bars say how many of its children ran at each moment. Zoom with the buttons,
// by dragging across the chart (the dragged span fills the view) or the mouse wheel with Ctrl;
// double-click or "Fit" shows the whole run again.

import { get, enc } from "./api.js";
import { el, clear, fmtDuration, fmtClock, fmtTime, throttle } from "./util.js";

const TICKS = 6;

export class TimelineView {
  constructor(box, runId, { onSelect } = {}) {
    this.box = box;
    this.runId = runId;
    this.onSelect = onSelect || (() => {});
    this.data = null;
    this.window = null; // [start, end] shown, in unix seconds; null: the whole run
    this.label = el("span.muted.tl-window");
    this.axis = el("div.tl-axis");
    this.lanes = el("div.tl-lanes");
    this.track = el("div.tl-body", {}, this.axis, this.lanes);
    const tools = el("div.dag-tools", {},
      el("button.btn.btn-small", { type: "button", title: "Zoom out", text: "−", onclick: () => this.zoom(2) }),
      el("button.btn.btn-small", { type: "button", title: "The whole run", text: "Fit", onclick: () => this.show(null) }),
      el("button.btn.btn-small", { type: "button", title: "Zoom in", text: "+", onclick: () => this.zoom(0.5) }));
    const legend = el("div.tl-legend", {},
      el("span", {}, el("i.tl-queued"), "queued (dispatched, not started)"),
      el("span.st-succeeded", {}, el("i"), "ran (coloured by outcome)"),
      el("span.st-running", {}, el("i"), "a mapped node's children running at once"));
    clear(box).append(el("div.card-head", {}, el("h2", { text: "Timeline" }), this.label, tools), this.track, legend);
    this.installGestures();
    this.refresh = throttle(() => this.load().catch(() => {}), 1000);
    this.refresh();
  }

  async load() {
    this.data = await get(`/api/runs/${enc(this.runId)}/timeline`);
    this.draw();
  }

  extent() {
    const d = this.data;
    const end = d.finished_at || d.now;
    return [d.created_at, Math.max(end, d.created_at + 0.001)];
  }

  show(window) { this.window = window; this.draw(); }

  zoom(factor, center = null) {
    if (!this.data) return;
    const [s, e] = this.window || this.extent();
    const c = center ?? (s + e) / 2;
    const half = Math.max(0.0005, ((e - s) * factor) / 2);
    const [lo, hi] = this.extent();
    if (factor > 1 && half * 2 >= hi - lo) { this.show(null); return; }
    this.show([c - half, c + half]);
  }

  draw() {
    if (!this.data) return;
    const [s, e] = this.window || this.extent();
    const span = e - s;
    const at = (t) => `${((100 * (t - s)) / span).toFixed(3)}%`;
    const width = (a, b) => `${Math.max(0.15, (100 * (b - a)) / span).toFixed(3)}%`;
    this.label.textContent = `${fmtTime(s)} · ${fmtDuration(span)} shown${this.window ? " (zoomed)" : ""}`;
    clear(this.axis);
    for (let i = 0; i <= TICKS; i++) {
      const t = s + (span * i) / TICKS;
      this.axis.append(el("span.tl-tick", { css: { left: `${(100 * i) / TICKS}%` }, text: i === 0 ? fmtClock(t) : `+${fmtDuration(t - s)}` }));
    }
    clear(this.lanes);
    const now = this.data.now;
    for (const lane of this.data.lanes) {
      const row = el("div.tl-track");
      if (lane.mapped) this.density(row, lane, s, e, at, width);
      for (const a of lane.attempts) {
        const start = a.started_at ?? now, end = a.finished_at ?? now;
        const queuedEnd = a.started_at ?? (a.finished_at ?? now);
        const title = attemptTitle(a);
        row.append(el("span.tl-bar.tl-queued", { css: { left: at(a.dispatched_at), width: width(a.dispatched_at, queuedEnd) }, title }));
        if (a.started_at) row.append(el(`span.tl-bar.st-${a.status}`, { css: { left: at(start), width: width(start, end) }, dataset: { attempt: a.attempt }, title }));
      }
      this.lanes.append(el("div.tl-lane", { dataset: { node: lane.node_id, status: lane.status } },
        el("button.tl-name", { type: "button", title: `${lane.node_id}: ${lane.status}`, text: lane.node_id, onclick: () => this.onSelect(lane.node_id) }),
        row));
    }
  }

  density(row, lane, s, e, at, width) {
    const d = lane.density;
    if (!d) return;
    const step = (d.end - d.start) / d.bins.length;
    const bars = el(`span.tl-density.st-${lane.status}`, { title: `${lane.children.total} children; at most ${d.peak} at once` });
    d.bins.forEach((count, i) => {
      const a = d.start + i * step, b = a + step;
      if (!count || b < s || a > e) return;
      const h = Math.max(8, Math.round((100 * count) / d.peak));
      bars.append(el("span.tl-bin", { css: { left: at(a), width: width(a, b), height: `${h}%` }, title: `${count} running` }));
    });
    row.append(bars);
  }

  installGestures() {
    let from = null, shade = null;
    const timeAt = (x) => {
      const box = this.axis.getBoundingClientRect();
      const [s, e] = this.window || this.extent();
      return s + ((x - box.left) / box.width) * (e - s);
    };
    this.track.addEventListener("pointerdown", (ev) => {
      if (!this.data || ev.target.closest("button") || ev.clientX < this.axis.getBoundingClientRect().left) return;
      from = ev.clientX;
      shade = el("div.tl-shade");
      this.track.append(shade);
      this.track.setPointerCapture(ev.pointerId);
    });
    this.track.addEventListener("pointermove", (ev) => {
      if (from === null) return;
      const box = this.track.getBoundingClientRect();
      shade.style.left = `${Math.min(from, ev.clientX) - box.left}px`;
      shade.style.width = `${Math.abs(ev.clientX - from)}px`;
    });
    this.track.addEventListener("pointerup", (ev) => {
      if (from === null) return;
      shade.remove();
      const [a, b] = [timeAt(Math.min(from, ev.clientX)), timeAt(Math.max(from, ev.clientX))];
      if (Math.abs(ev.clientX - from) > 6) this.show([a, b]);
      from = null;
    });
    this.track.addEventListener("dblclick", () => this.show(null));
    this.track.addEventListener("wheel", (ev) => {
      if (!ev.ctrlKey && !ev.metaKey) return;
      ev.preventDefault();
      this.zoom(ev.deltaY > 0 ? 1.25 : 0.8, timeAt(ev.clientX));
    }, { passive: false });
  }
}

function attemptTitle(a) {
  const queued = a.started_at ? fmtDuration(a.started_at - a.dispatched_at) : "still queued";
  const ran = a.started_at ? (a.finished_at ? fmtDuration(a.finished_at - a.started_at) : "running") : "–";
  return `attempt ${a.attempt} · ${a.status}${a.error_type ? ` (${a.error_type})` : ""} · queued ${queued} · ran ${ran}${a.worker ? ` · ${a.worker}` : ""}`;
}
