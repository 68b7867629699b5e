// Small DOM and formatting helpers. Every piece of data reaches the page through textContent
// (never innerHTML), so a run's input or a log line can never inject markup.

export const SVG_NS = "http://www.w3.org/2000/svg";

/** el("div.card", {onclick}, child, "text", ...) -> HTMLElement */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  applyAttrs(node, attrs);
  append(node, children);
  return node;
}

/** svg("rect.box", {x, y}) -> SVGElement */
export function svg(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElementNS(SVG_NS, tag);
  if (classes.length) node.setAttribute("class", classes.join(" "));
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

function applyAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    // Through the CSSOM: the pages' CSP forbids style attributes.
    else if (k === "css") Object.assign(node.style, v);
    else if (k === "text") node.textContent = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const numberFormat = new Intl.NumberFormat("en-US");
export const fmtInt = (n) => numberFormat.format(n ?? 0);

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  if (seconds < 0) seconds = 0;
  if (seconds < 0.001) return "<1 ms";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtAgo(ts, now = Date.now() / 1000) {
  if (!ts) return "–";
  const d = Math.max(0, now - ts);
  if (d < 5) return "just now";
  if (d < 60) return `${Math.floor(d)}s ago`;
  if (d < 3600) return `${Math.floor(d / 60)}m ago`;
  if (d < 86400) return `${Math.floor(d / 3600)}h ago`;
  return `${Math.floor(d / 86400)}d ago`;
}

export function fmtIn(ts, now = Date.now() / 1000) {
  if (!ts) return "–";
  const d = ts - now;
  if (d <= 1) return "now";
  if (d < 60) return `in ${Math.round(d)}s`;
  if (d < 3600) return `in ${Math.round(d / 60)}m`;
  if (d < 86400) return `in ${Math.round(d / 3600)}h`;
  return `in ${Math.round(d / 86400)}d`;
}

// One time format everywhere: ISO-like, 24-hour, with the zone it is in (the browser's, or a
// schedule's own), and the time relative to now on hover.
const formatters = new Map();
function formatter(timeZone) {
  const key = timeZone || "";
  if (!formatters.has(key)) {
    formatters.set(key, new Intl.DateTimeFormat("en-US", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23", timeZone, timeZoneName: "short",
    }));
  }
  return formatters.get(key);
}

/** `2026-03-01 14:03:07 GMT+1`: the instant `ts` (unix seconds) in `timeZone` (default: local). */
export function fmtTime(ts, timeZone = undefined) {
  if (!ts) return "–";
  const p = Object.fromEntries(formatter(timeZone).formatToParts(new Date(ts * 1000)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

/** "5m ago" or "in 2h": `ts` relative to now. */
export function fmtRelative(ts, now = Date.now() / 1000) {
  return ts > now + 1 ? fmtIn(ts, now) : fmtAgo(ts, now);
}

/** A <time> showing `ts` in the one format; hovering it tells how long ago (or until). */
export function timeEl(ts, { timeZone, clock = false } = {}) {
  if (!ts) return el("span.muted", { text: "–" });
  const node = el("time", { datetime: new Date(ts * 1000).toISOString(), text: clock ? fmtClock(ts) : fmtTime(ts, timeZone) });
  const title = () => `${fmtRelative(ts)} · ${fmtTime(ts, timeZone)}`;
  node.title = title();
  node.addEventListener("mouseenter", () => { node.title = title(); });
  return node;
}

export function fmtClock(ts) {
  const d = new Date(ts * 1000);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function pill(status, big = false) {
  return el(`span.pill.st-${status || "waiting"}${big ? ".big" : ""}`, { text: status || "unknown" });
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const NODE_DONE = new Set(["succeeded", "failed", "skipped", "cancelled"]);

/** A JSON value as highlighted, collapsed-at-size text (DOM spans, no innerHTML). */
export function jsonView(value, maxChars = 20000) {
  const pre = el("pre.json");
  let text;
  try { text = JSON.stringify(value, null, 2); } catch { text = String(value); }
  if (text === undefined) text = "null";
  const truncated = text.length > maxChars;
  if (truncated) text = text.slice(0, maxChars);
  const re = /("(?:\\.|[^"\\])*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1]) {
      pre.append(el(`span.${m[2] ? "json-key" : "json-str"}`, { text: m[1] }));
      if (m[2]) pre.append(m[2]);
    } else if (m[3]) pre.append(el("span.json-num", { text: m[3] }));
    else pre.append(el("span.json-lit", { text: m[4] }));
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  if (truncated) pre.append(el("span.muted", { text: "\n… (truncated)" }));
  return pre;
}

export function toast(message, kind = "info", ms = 4000) {
  const box = document.getElementById("toasts");
  const item = el(`div.toast${kind === "error" ? ".error" : ""}`, { text: message });
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

/**
 * Run `fn` at most once per `interval` ms, always once more after the last call (trailing),
 * so the final state is drawn. `interval` may be a function (adaptive throttling).
 */
export function throttle(fn, interval) {
  let timer = null, last = 0, pending = false, running = false;
  const wait = () => (typeof interval === "function" ? interval() : interval);
  async function fire() {
    timer = null;
    if (running) { pending = true; return; }
    running = true; pending = false; last = performance.now();
    try { await fn(); } finally {
      running = false;
      if (pending) schedule();
    }
  }
  function schedule() {
    if (timer) return;
    const delay = Math.max(0, wait() - (performance.now() - last));
    timer = setTimeout(fire, delay);
  }
  schedule.cancel = () => { if (timer) clearTimeout(timer); timer = null; pending = false; };
  schedule.now = () => { schedule.cancel(); return fire(); };
  return schedule;
}

export function debounce(fn, ms) {
  let timer = null;
  const call = (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  call.cancel = () => clearTimeout(timer);
  return call;
}
