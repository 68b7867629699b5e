// The workflow as a DAG in SVG: a layered layout (one column per topological depth, given by the
// API), nodes ordered within their column by the barycentre of their neighbours to cut edge
// crossings. Two rules keep big graphs readable: a column taller than the view is laid as a
// compact grid of sub-columns (a wide fan-out), and a graph wider than the view wraps its
// columns into bands, like lines of text (a 120-task chain) — the number of columns per band is
// the one that lets the whole graph be seen at the largest scale. "Fit" fits it all; a minimap
// shows where the view is and moves it; search finds a node by id.
//
// The DOM is built once per layout; `update` only changes classes and texts, so redrawing costs
// the same for a 10,000-child mapped node as for a single task (a mapped node is one box with
// counts and a progress bar — never one element per child).

import { fmtInt, svg, clear, el } from "./util.js";

const PAD = 28, BAND_GAP = 44, MIN_SCALE = 0.05, MAX_SCALE = 2;
// Below this scale the labels get hard to read: a graph that would be drawn smaller wraps.
const READABLE = 0.8;
const NORMAL = { W: 196, H: 60, HM: 76, GX: 64, GY: 24, compact: false };
// Many nodes: smaller boxes, so that more of them fit at a readable scale.
const COMPACT = { W: 156, H: 46, HM: 60, GX: 44, GY: 14, compact: true };
const COMPACT_FROM = 30;
const MINIMAP = { w: 200, h: 130 };

const nodeHeight = (n, size) => (n.mapped ? size.HM : size.H);

/** Columns by depth, each ordered by barycentre (a few down-and-up sweeps). */
function orderedColumns(dag) {
  const columns = Array.from({ length: Math.max(dag.depth, 1) }, () => []);
  dag.nodes.forEach((n) => columns[n.depth].push(n));
  const succ = new Map(dag.nodes.map((n) => [n.id, []]));
  dag.edges.forEach((e) => succ.get(e.source).push(e.target));
  const rank = new Map();
  const renumber = (col) => col.forEach((n, i) => rank.set(n.id, i));
  columns.forEach(renumber);
  const bary = (ids, fallback) => (ids.length ? ids.reduce((s, id) => s + rank.get(id), 0) / ids.length : fallback);
  const sweep = (c, neighbours) => {
    columns[c] = columns[c].map((n) => [bary(neighbours(n), rank.get(n.id)), n]).sort((a, b) => a[0] - b[0]).map((x) => x[1]);
    renumber(columns[c]);
  };
  for (let round = 0; round < 4; round++) {
    for (let c = 1; c < columns.length; c++) sweep(c, (n) => n.deps);
    for (let c = columns.length - 2; c >= 0; c--) sweep(c, (n) => succ.get(n.id));
  }
  return columns;
}

/** A column taller than `maxRows` boxes becomes several sub-columns (a compact grid). */
function visualColumns(columns, maxRows) {
  const out = [];
  for (const col of columns) {
    for (let i = 0; i < Math.max(col.length, 1); i += maxRows) out.push(col.slice(i, i + maxRows));
  }
  return out;
}

function extent(vcols, k, size) {
  const heights = vcols.map((col) => col.reduce((s, n) => s + nodeHeight(n, size), 0) + size.GY * Math.max(col.length - 1, 0));
  const bands = [];
  for (let i = 0; i < vcols.length; i += k) bands.push(Math.max(size.H, ...heights.slice(i, i + k)));
  const perBand = Math.min(k, vcols.length);
  return {
    heights, bands,
    width: PAD * 2 + perBand * size.W + (perBand - 1) * size.GX,
    height: PAD * 2 + bands.reduce((a, b) => a + b, 0) + BAND_GAP * (bands.length - 1),
  };
}

/** Positions of every node for a view of `view.width` x `view.height` pixels. */
export function layout(dag, view = { width: 1200, height: 640 }) {
  const size = dag.nodes.length >= COMPACT_FROM ? COMPACT : NORMAL;
  const columns = orderedColumns(dag);
  const maxRows = Math.max(3, Math.floor((view.height - 2 * PAD + size.GY) / (size.H + size.GY)));
  const vcols = visualColumns(columns, maxRows);
  // Columns per band: the count that shows the whole graph at the largest scale (ties: fewer
  // bands). A graph readable in one band stays in one: wrapping costs the reader more than a
  // slightly smaller picture.
  const scaleOf = (e) => Math.min(1, view.width / e.width, view.height / e.height);
  const whole = extent(vcols, vcols.length, size);
  let best = { k: vcols.length, scale: scaleOf(whole), e: whole };
  const wrap = scaleOf(whole) < READABLE;
  for (let k = vcols.length - 1; wrap && k >= 1; k--) {
    const e = extent(vcols, k, size);
    if (scaleOf(e) > best.scale + 1e-9) best = { k, scale: scaleOf(e), e };
  }
  const { k, e } = best;
  const pos = new Map();
  let bandTop = PAD;
  e.bands.forEach((bandHeight, b) => {
    for (let j = 0; j < k && b * k + j < vcols.length; j++) {
      const index = b * k + j;
      let y = bandTop + (bandHeight - e.heights[index]) / 2;
      for (const n of vcols[index]) {
        pos.set(n.id, { x: PAD + j * (size.W + size.GX), y, w: size.W, h: nodeHeight(n, size), band: b, top: bandTop });
        y += nodeHeight(n, size) + size.GY;
      }
    }
    bandTop += bandHeight + BAND_GAP;
  });
  return { pos, width: e.width, height: e.height, size, perBand: k, bands: e.bands.length };
}

function edgePath(a, b, size) {
  const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x - 6, y2 = b.y + b.h / 2;
  if (a.band === b.band) {
    const dx = Math.max(40, (x2 - x1) / 2);
    return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }
  // Into a later band: out to the right, along the gap above the target's band, back in.
  const gap = b.top - BAND_GAP / 2, out = x1 + size.GX / 2, into = x2 - size.GX / 2 + 6;
  return `M${x1},${y1} H${out} V${gap} H${into} V${y2} H${x2}`;
}

function clip(text, px) {
  const max = Math.max(4, Math.floor(px / 7.3));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export class DagView {
  constructor(container, dag, { onSelect, showStatus = true } = {}) {
    this.container = container;
    this.dag = dag;
    this.showStatus = showStatus;
    this.onSelect = onSelect || (() => {});
    this.scale = 1;
    this.autoFit = true; // until the user zooms: then their choice stays
    this.selected = null;
    this.query = "";
    this.states = new Map();
    this.scroller = el("div.dag-scroll");
    this.minimap = el("div.dag-minimap", { hidden: true, title: "Click to move the view" });
    clear(container).append(this.scroller, this.minimap);
    this.scroller.addEventListener("scroll", () => this.drawViewport());
    // A node brought into view stays there through re-layouts (the side panel opening narrows
    // the graph) until the user moves the view.
    for (const name of ["wheel", "pointerdown"]) this.scroller.addEventListener(name, () => { this.pinned = null; });
    this.minimap.addEventListener("pointerdown", (ev) => this.onMinimap(ev));
    this.render();
    this.resizer = new ResizeObserver(() => this.onResize());
    this.resizer.observe(this.container);
  }

  destroy() { this.resizer.disconnect(); }

  viewSize() {
    const shown = this.scroller.clientWidth; // 0 while the graph's tab is hidden
    const width = Math.max(320, shown > 0 ? shown - 8 : 1200);
    const height = Math.max(280, window.innerHeight - 300); // the scroller's max-height
    return { width, height };
  }

  onResize() {
    const view = this.viewSize();
    const next = layout(this.dag, view);
    if (next.perBand !== this.shape.perBand || next.size !== this.shape.size) this.render(next);
    if (this.pinned) this.reveal(this.pinned);
    else if (this.autoFit) this.fit();
    else this.drawViewport();
  }

  render(shape = layout(this.dag, this.viewSize())) {
    this.shape = shape;
    const { pos, width, height, size } = shape;
    this.size = { width, height };
    this.items = new Map();
    this.edges = [];
    const root = svg(`svg.dag${size.compact ? ".compact" : ""}`, { role: "img", "aria-label": "workflow graph", "data-bands": shape.bands });
    root.append(svg("defs", {},
      svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#b4bcc8" }))));
    const edgeLayer = svg("g");
    for (const e of this.dag.edges) {
      const path = svg("path.dag-edge", { d: edgePath(pos.get(e.source), pos.get(e.target), size), "marker-end": "url(#arrow)" });
      this.edges.push({ ...e, path });
      edgeLayer.append(path);
    }
    const nodeLayer = svg("g");
    for (const n of this.dag.nodes) nodeLayer.append(this.nodeEl(n, pos.get(n.id), size));
    root.append(edgeLayer, nodeLayer);
    root.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.svg = root;
    clear(this.scroller).append(root);
    this.renderMinimap(pos);
    this.applyScale();
    this.update(this.states);
  }

  nodeEl(n, p, size) {
    const g = svg("g.dag-node.st-waiting", { "data-kind": n.kind, transform: `translate(${p.x},${p.y})`, tabindex: 0, "data-node": n.id, role: "button" });
    g.append(svg("title", {}, n.mapped ? `${n.id} (mapped over ${n.map_param})` : n.id));
    if (n.mapped) {
      g.append(svg("rect.stack", { x: 8, y: -8, width: p.w, height: p.h, rx: 9 }));
      g.append(svg("rect.stack", { x: 4, y: -4, width: p.w, height: p.h, rx: 9 }));
    }
    g.append(svg("rect.halo", { x: -3, y: -3, width: p.w + 6, height: p.h + 6, rx: 11 }));
    g.append(svg("rect.box", { width: p.w, height: p.h, rx: 9 }));
    g.append(svg("rect.accent", { x: 0, y: 10, width: 4, height: p.h - 20, rx: 2 }));
    const line1 = size.compact ? 19 : 25, line2 = size.compact ? 36 : 46;
    g.append(svg("text.title", { x: 14, y: line1 }, clip(n.id, p.w - (size.compact ? 78 : 96))));
    const status = svg("text.status-text", { x: p.w - 10, y: line1, "text-anchor": "end" }, "");
    const sub = svg("text.sub", { x: 14, y: line2 }, clip(n.mapped ? `map · ${n.label}` : n.label, p.w - 40));
    g.append(status, sub);
    const item = { node: n, g, status, sub, w: p.w };
    if (n.mapped) this.mappedParts(item, g, p, line2);
    if (!this.showStatus) status.setAttribute("visibility", "hidden");
    g.addEventListener("click", () => this.onSelect(n.id));
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); this.onSelect(n.id); } });
    this.items.set(n.id, item);
    return g;
  }

  mappedParts(item, g, p, line2) {
    item.count = svg("text.count", { x: p.w - 10, y: line2, "text-anchor": "end" }, "");
    // Failures among thousands of children are invisible in a progress bar: a badge says so.
    item.badge = svg("g.badge", { visibility: "hidden" });
    item.badgeBox = svg("rect", { y: -9, height: 18, rx: 9 });
    item.badgeText = svg("text", { y: 4, "text-anchor": "middle" }, "");
    item.badge.append(item.badgeBox, item.badgeText);
    item.barWidth = p.w - 28;
    const bar = svg("g", { transform: `translate(14, ${p.h - 14})` });
    bar.append(svg("rect.bar-bg", { width: item.barWidth, height: 6, rx: 3 }));
    item.segs = {};
    for (const s of ["succeeded", "failed", "cancelled", "running", "queued"]) {
      item.segs[s] = svg(`rect.seg-${s}`, { height: 6, width: 0 });
      bar.append(item.segs[s]);
    }
    g.append(item.badge, item.count, bar);
  }

  // ---- scale, fit, minimap, search ---------------------------------------------------------
  applyScale() {
    this.svg.setAttribute("width", Math.round(this.size.width * this.scale));
    this.svg.setAttribute("height", Math.round(this.size.height * this.scale));
    this.drawViewport();
  }

  zoom(factor) {
    this.autoFit = false;
    this.pinned = null;
    const s = this.scroller;
    const cx = (s.scrollLeft + s.clientWidth / 2) / this.scale, cy = (s.scrollTop + s.clientHeight / 2) / this.scale;
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    this.applyScale();
    this.centerOn(cx, cy);
  }

  /** The whole graph in view (at most full size). */
  fit(byUser = false) {
    if (byUser) { this.autoFit = true; this.pinned = null; }
    const view = this.viewSize();
    this.scale = Math.max(MIN_SCALE, Math.min(1, view.width / this.size.width, view.height / this.size.height));
    this.applyScale();
  }

  centerOn(x, y) {
    const s = this.scroller;
    s.scrollLeft = x * this.scale - s.clientWidth / 2;
    s.scrollTop = y * this.scale - s.clientHeight / 2;
    this.drawViewport();
  }

  /** Nodes whose id contains `query` stand out, the others fade; their ids, in order. */
  search(query) {
    this.query = query.trim().toLowerCase();
    const found = this.query ? this.dag.nodes.filter((n) => n.id.toLowerCase().includes(this.query)).map((n) => n.id) : [];
    this.found = new Set(found);
    this.update(this.states);
    return found;
  }

  /** Bring node `id` to the middle of the view, readable. */
  reveal(id) {
    const p = this.shape.pos.get(id);
    if (!p) return;
    this.autoFit = false;
    this.pinned = id;
    if (this.scale < 0.9) { this.scale = 1; this.applyScale(); }
    this.centerOn(p.x + p.w / 2, p.y + p.h / 2);
  }

  renderMinimap(pos) {
    const m = Math.min(MINIMAP.w / this.size.width, MINIMAP.h / this.size.height);
    this.mm = { scale: m, nodes: new Map() };
    const root = svg("svg", { width: Math.ceil(this.size.width * m), height: Math.ceil(this.size.height * m) });
    for (const n of this.dag.nodes) {
      const p = pos.get(n.id);
      const r = svg("rect.mm-node.st-waiting", { x: p.x * m, y: p.y * m, width: Math.max(1.5, p.w * m), height: Math.max(1.5, p.h * m), rx: 1 });
      this.mm.nodes.set(n.id, r);
      root.append(r);
    }
    this.mm.view = svg("rect.mm-view", { x: 0, y: 0, width: 0, height: 0 });
    root.append(this.mm.view);
    clear(this.minimap).append(root);
  }

  drawViewport() {
    if (!this.mm) return;
    const s = this.scroller, m = this.mm.scale / this.scale;
    const overflows = s.scrollWidth > s.clientWidth + 2 || s.scrollHeight > s.clientHeight + 2;
    this.minimap.hidden = !overflows;
    if (!overflows) return;
    const v = this.mm.view;
    v.setAttribute("x", s.scrollLeft * m);
    v.setAttribute("y", s.scrollTop * m);
    v.setAttribute("width", Math.min(s.clientWidth, s.scrollWidth) * m);
    v.setAttribute("height", Math.min(s.clientHeight, s.scrollHeight) * m);
  }

  onMinimap(ev) {
    const box = this.minimap.querySelector("svg").getBoundingClientRect();
    const move = (e) => this.centerOn((e.clientX - box.left) / this.mm.scale, (e.clientY - box.top) / this.mm.scale);
    move(ev);
    const stop = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", stop); };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", stop);
  }

  /** states: Map(id -> {status, detail, counts}) — only changed attributes are written. */
  update(states) {
    this.states = states;
    for (const [id, item] of this.items) {
      const st = states.get(id) || { status: "waiting" };
      const mark = this.query ? (this.found && this.found.has(id) ? " match" : " dim") : "";
      const cls = `dag-node st-${st.status}${this.selected === id ? " selected" : ""}${mark}`;
      if (item.g.getAttribute("class") !== cls) item.g.setAttribute("class", cls);
      const mm = this.mm && this.mm.nodes.get(id);
      if (mm) mm.setAttribute("class", `mm-node st-${st.status}${mark}`);
      setText(item.status, st.status);
      if (item.node.mapped) updateMapped(item, st.counts);
      else setText(item.sub, clip(st.detail ? `${item.node.label} · ${st.detail}` : item.node.label, item.w - 40));
    }
    for (const e of this.edges) {
      const src = states.get(e.source);
      const cls = `dag-edge${src && src.status === "succeeded" ? " done" : ""}${this.selected && (e.source === this.selected || e.target === this.selected) ? " hl" : ""}`;
      if (e.path.getAttribute("class") !== cls) e.path.setAttribute("class", cls);
    }
  }

  select(id) { this.selected = id; }
}

function updateMapped(item, c) {
  const failed = (c && c.failed) || 0;
  item.badge.setAttribute("visibility", failed ? "visible" : "hidden");
  if (failed) {
    const label = `${fmtInt(failed)} failed`;
    if (setText(item.badgeText, label)) {
      const w = 14 + label.length * 6.4;
      item.badgeBox.setAttribute("x", -w / 2);
      item.badgeBox.setAttribute("width", w);
      item.badge.setAttribute("transform", `translate(${item.w - w / 2 - 6}, 0)`);
    }
  }
  if (!c || !c.total) { setText(item.count, ""); return; }
  const done = c.succeeded || 0;
  if (setText(item.count, `${fmtInt(done)}/${fmtInt(c.total)}`)) {
    // The subtitle gives way to the count (about 7px a character at this size).
    const room = item.w - 44 - item.count.textContent.length * 7;
    const full = `map · ${item.node.label}`;
    setText(item.sub, clip(full.length * 7.3 <= room ? full : item.node.label, room));
  }
  let x = 0;
  const parts = {
    succeeded: c.succeeded || 0,
    failed: c.failed || 0,
    cancelled: (c.cancelled || 0) + (c.skipped || 0),
    running: c.running || 0,
    queued: (c.dispatched || 0) + (c.retrying || 0) + (c.queued || 0),
  };
  for (const [name, value] of Object.entries(parts)) {
    // A few failures among 10,000 still get a visible sliver.
    const w = value ? Math.max(2, (item.barWidth * value) / c.total) : 0;
    item.segs[name].setAttribute("x", x.toFixed(1));
    item.segs[name].setAttribute("width", w.toFixed(1));
    x += w;
  }
}

function setText(node, text) {
  if (node.textContent === text) return false;
  node.textContent = text;
  return true;
}
