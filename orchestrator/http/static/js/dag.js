// The workflow as a DAG in SVG: a layered layout (one column per topological depth, given by the
// API), nodes ordered within their column by the barycentre of their neighbours to cut edge
// crossings, edges as curves. The DOM is built once per spec; `update` only changes classes and
// texts, so redrawing costs the same for a 10,000-child mapped node as for a single task (a
// mapped node is one box with counts and a progress bar — never one element per child).

import { fmtInt, svg, clear } from "./util.js";

const W = 196, H = 60, HM = 76, GAP_X = 64, GAP_Y = 24, PAD = 28;

function nodeHeight(node) { return node.mapped ? HM : H; }

export function layout(dag) {
  const columns = Array.from({ length: Math.max(dag.depth, 1) }, () => []);
  dag.nodes.forEach((n) => columns[n.depth].push(n));
  const succ = new Map(dag.nodes.map((n) => [n.id, []]));
  dag.edges.forEach((e) => succ.get(e.source).push(e.target));
  const rank = new Map();
  const renumber = (col) => col.forEach((n, i) => rank.set(n.id, i));
  columns.forEach(renumber);
  const bary = (ids, fallback) => {
    if (!ids.length) return fallback;
    return ids.reduce((s, id) => s + rank.get(id), 0) / ids.length;
  };
  // A few down-and-up sweeps settle typical workflow graphs; more rarely changes anything.
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let c = 1; c < columns.length; c++) {
      columns[c] = columns[c]
        .map((n) => [bary(n.deps, rank.get(n.id)), n])
        .sort((a, b) => a[0] - b[0]).map((x) => x[1]);
      renumber(columns[c]);
    }
    for (let c = columns.length - 2; c >= 0; c--) {
      columns[c] = columns[c]
        .map((n) => [bary(succ.get(n.id), rank.get(n.id)), n])
        .sort((a, b) => a[0] - b[0]).map((x) => x[1]);
      renumber(columns[c]);
    }
  }
  const heights = columns.map((col) => col.reduce((s, n) => s + nodeHeight(n), 0) + GAP_Y * Math.max(col.length - 1, 0));
  const tallest = Math.max(...heights, H);
  const pos = new Map();
  columns.forEach((col, c) => {
    let y = PAD + (tallest - heights[c]) / 2;
    for (const n of col) {
      pos.set(n.id, { x: PAD + c * (W + GAP_X), y, w: W, h: nodeHeight(n) });
      y += nodeHeight(n) + GAP_Y;
    }
  });
  return { pos, width: PAD * 2 + columns.length * W + (columns.length - 1) * GAP_X, height: PAD * 2 + tallest };
}

function edgePath(a, b) {
  const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x - 6, y2 = b.y + b.h / 2;
  const dx = Math.max(40, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
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
    this.items = new Map();
    this.edges = [];
    this.render();
    this.resizer = new ResizeObserver(() => { if (this.autoFit) this.fit(); });
    this.resizer.observe(this.container);
  }

  destroy() { this.resizer.disconnect(); }

  render() {
    const { pos, width, height } = layout(this.dag);
    this.size = { width, height };
    const root = svg("svg.dag", { role: "img", "aria-label": "workflow graph" });
    const defs = svg("defs", {},
      svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#b4bcc8" })));
    root.append(defs);
    const edgeLayer = svg("g");
    for (const e of this.dag.edges) {
      const path = svg("path.dag-edge", { d: edgePath(pos.get(e.source), pos.get(e.target)), "marker-end": "url(#arrow)" });
      this.edges.push({ ...e, path });
      edgeLayer.append(path);
    }
    root.append(edgeLayer);
    const nodeLayer = svg("g");
    for (const n of this.dag.nodes) {
      const p = pos.get(n.id);
      const g = svg(`g.dag-node.st-waiting`, { "data-kind": n.kind, transform: `translate(${p.x},${p.y})`, tabindex: 0, "data-node": n.id, role: "button" });
      g.append(svg("title", {}, n.mapped ? `${n.id} (mapped over ${n.map_param})` : n.id));
      if (n.mapped) {
        g.append(svg("rect.stack", { x: 8, y: -8, width: p.w, height: p.h, rx: 9 }));
        g.append(svg("rect.stack", { x: 4, y: -4, width: p.w, height: p.h, rx: 9 }));
      }
      g.append(svg("rect.halo", { x: -3, y: -3, width: p.w + 6, height: p.h + 6, rx: 11 }));
      g.append(svg("rect.box", { width: p.w, height: p.h, rx: 9 }));
      g.append(svg("rect.accent", { x: 0, y: 10, width: 4, height: p.h - 20, rx: 2 }));
      g.append(svg("text.title", { x: 16, y: 25 }, clip(n.id, p.w - 96)));
      const status = svg("text.status-text", { x: p.w - 12, y: 25, "text-anchor": "end" }, "");
      const sub = svg("text.sub", { x: 16, y: 46 }, clip(n.mapped ? `map · ${n.label}` : n.label, p.w - 40));
      g.append(status, sub);
      const item = { node: n, g, status, sub, w: p.w };
      if (n.mapped) {
        item.count = svg("text.count", { x: p.w - 12, y: 46, "text-anchor": "end" }, "");
        // Failures among thousands of children are invisible in a progress bar: a badge says so.
        item.badge = svg("g.badge", { visibility: "hidden" });
        item.badgeBox = svg("rect", { y: -9, height: 18, rx: 9 });
        item.badgeText = svg("text", { y: 4, "text-anchor": "middle" }, "");
        item.badge.append(item.badgeBox, item.badgeText);
        g.append(item.badge);
        item.barWidth = p.w - 28;
        const bar = svg("g", { transform: `translate(16, ${p.h - 16})` });
        bar.append(svg("rect.bar-bg", { width: item.barWidth, height: 6, rx: 3 }));
        item.segs = {};
        for (const s of ["succeeded", "failed", "cancelled", "running", "queued"]) {
          item.segs[s] = svg(`rect.seg-${s}`, { height: 6, width: 0 });
          bar.append(item.segs[s]);
        }
        g.append(item.count, bar);
      }
      if (!this.showStatus) status.setAttribute("visibility", "hidden");
      g.addEventListener("click", () => this.onSelect(n.id));
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); this.onSelect(n.id); } });
      this.items.set(n.id, item);
      nodeLayer.append(g);
    }
    root.append(nodeLayer);
    root.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.svg = root;
    clear(this.container).append(root);
    this.applyScale();
  }

  applyScale() {
    this.svg.setAttribute("width", Math.round(this.size.width * this.scale));
    this.svg.setAttribute("height", Math.round(this.size.height * this.scale));
  }

  zoom(factor) {
    this.autoFit = false;
    this.scale = Math.min(2, Math.max(0.2, this.scale * factor));
    this.applyScale();
  }

  fit(byUser = false) {
    if (byUser) this.autoFit = true;
    const box = this.container.getBoundingClientRect();
    const maxHeight = Math.max(280, window.innerHeight - 260);
    const s = Math.min(1, (box.width - 8) / this.size.width, maxHeight / this.size.height);
    // Below ~0.7 the labels get hard to read: scroll instead of shrinking further.
    this.scale = Math.max(0.7, s);
    this.applyScale();
  }

  /** states: Map(id -> {status, detail, counts}) — only changed attributes are written. */
  update(states) {
    for (const [id, item] of this.items) {
      const st = states.get(id) || { status: "waiting" };
      const cls = `dag-node st-${st.status}${this.selected === id ? " selected" : ""}`;
      if (item.g.getAttribute("class") !== cls) item.g.setAttribute("class", cls);
      setText(item.status, st.status);
      if (!item.node.mapped) {
        setText(item.sub, clip(st.detail ? `${item.node.label} · ${st.detail}` : item.node.label, item.w - 40));
        continue;
      }
      const c = st.counts;
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
      if (!c || !c.total) { setText(item.count, ""); continue; }
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
        const seg = item.segs[name];
        seg.setAttribute("x", x.toFixed(1));
        seg.setAttribute("width", w.toFixed(1));
        x += w;
      }
    }
    for (const e of this.edges) {
      const src = states.get(e.source);
      const cls = `dag-edge${src && src.status === "succeeded" ? " done" : ""}${this.selected && (e.source === this.selected || e.target === this.selected) ? " hl" : ""}`;
      if (e.path.getAttribute("class") !== cls) e.path.setAttribute("class", cls);
    }
  }

  select(id) { this.selected = id; }
}

function setText(node, text) {
  if (node.textContent === text) return false;
  node.textContent = text;
  return true;
}
