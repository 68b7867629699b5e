// The API client: JSON calls with the bearer token, and server-sent events read over fetch.
//
// EventSource cannot send an Authorization header, and a token in the URL would end up in
// access logs; so streams are read with fetch + a small text/event-stream parser instead,
// with reconnection (backoff) and Last-Event-ID like EventSource does.

const TOKEN_KEY = "conveyor.token";
const listeners = { unauthorized: new Set(), live: new Set() };

export function getToken() { return localStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}
export function on(event, fn) { listeners[event].add(fn); return () => listeners[event].delete(fn); }
const emit = (event, ...args) => listeners[event].forEach((fn) => fn(...args));

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.problems = (body && body.problems) || [];
  }
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

export async function request(method, path, body) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  let data = null;
  const text = await res.text();
  if (text) { try { data = JSON.parse(text); } catch { data = { detail: text }; } }
  if (res.status === 401) emit("unauthorized");
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path, params) => request("GET", withParams(path, params));
export const post = (path, body) => request("POST", path, body);

export function withParams(path, params) {
  if (!params) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

export const enc = encodeURIComponent;

// The indicator says "live" while every open stream is connected or connecting for the first
// time, and "reconnecting" while one of them has lost its connection.
let openStreams = 0, failingStreams = 0;
function reportLive() {
  const state = openStreams === 0 ? "idle" : failingStreams > 0 ? "reconnecting" : "live";
  emit("live", state);
}

/**
 * Follow a server-sent event stream. `handlers` maps event names to functions of the parsed
 * JSON data. Returns a function that closes the stream.
 */
export function stream(path, handlers) {
  const controller = new AbortController();
  let closed = false, lastId = null, failing = false, backoff = 500;
  openStreams++; reportLive();

  const setFailing = (value) => {
    if (value === failing) return;
    failing = value; failingStreams += value ? 1 : -1; reportLive();
  };

  const dispatch = (block) => {
    let event = "message", data = [], id = null;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (id !== null) lastId = id;
    if (event === "ready") { setFailing(false); backoff = 500; }
    const fn = handlers[event];
    if (!data.length || !fn) return;
    let parsed;
    try { parsed = JSON.parse(data.join("\n")); } catch { return; }
    fn(parsed);
  };

  (async () => {
    while (!closed) {
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const res = await fetch(path, { headers: headers(extra), signal: controller.signal, cache: "no-store" });
        if (res.status === 401) { emit("unauthorized"); break; }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            dispatch(block);
          }
        }
      } catch (err) {
        if (closed) break;
      }
      if (closed) break;
      setFailing(true);
      if (handlers.disconnect) handlers.disconnect();
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  })();

  return () => {
    if (closed) return;
    closed = true;
    setFailing(false);
    openStreams--; reportLive();
    controller.abort();
  };
}

/** Save what `path` answers as a file (a link cannot send the token: fetch, then a blob). */
export async function download(path, filename) {
  const res = await fetch(path, { headers: headers() });
  if (res.status === 401) emit("unauthorized");
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
