// One run: a header (status, what triggered it, timings, actions) and five tabs — the graph
// coloured live with the node panel, the timeline of every attempt, the logs of every node, the
// run's event history, and its input and output.
//
// Live: the run's events arrive over SSE. Each one is applied to the picture at once (a task
// that started turns blue, a completed one green) — the committed state can lag the event by
// the orchestrator's commit — and a throttled re-read of the run brings every node to its
// committed state. The re-read interval adapts to how long a read takes, so a run with 10,000
// mapped children is re-read less often than a small one; redraws only touch changed attributes.
// The other tabs are built when first opened and follow the same events.

import { get, post, stream, enc, ApiError } from "./api.js";
import { el, clear, pill, fmtDuration, fmtInt, throttle, debounce, toast, timeEl, TERMINAL } from "./util.js";
import { DagView } from "./dag.js";
import { NodePanel, errorBox } from "./panel.js";
import { openTrigger } from "./trigger.js";
import { confirmAction } from "./confirm.js";
import { TimelineView } from "./timeline.js";
import { EventHistory } from "./history.js";
import { mountRunLogs } from "./logs.js";
import { valueView } from "./values.js";
import { waitingLine } from "./flow.js";

// Rank of a node's progress within one attempt: an event only overrides the committed state
// when it is further along (a late re-read must not turn a green node blue again).
const RANK = { waiting: 0, queued: 0.5, dispatched: 1, running: 2, retrying: 3, succeeded: 3, failed: 3, skipped: 3, cancelled: 3 };
const BACKSTOP_MS = 3000;
const LEGEND = ["succeeded", "running", "dispatched", "retrying", "queued", "waiting", "failed", "skipped", "cancelled"];
const TABS = [["graph", "Graph"], ["timeline", "Timeline"], ["logs", "Logs"], ["events", "Events"], ["io", "Input & output"]];
const TRIGGER_KINDS = { cron: "Schedule", event: "Event", webhook: "Webhook", parent: "Parent run", cli: "CLI", api: "HTTP API", client: "Client" };

export function mountRun(view, runId, params) {
  let run = null, dagSpec = null, dagView = null, specLoading = null, fetchMs = 50, closed = false;
  let lastEventAt = 0, lastBackstop = 0, tab = TABS.some(([id]) => id === params.get("tab")) ? params.get("tab") : "graph";
  const live = new Map(); // node id -> {attempt, status, rank}
  const mounted = new Map(); // tab -> its view (built on first show)
  const head = el("div");
  const errorSlot = el("div");
  const progress = el("div.progress-line");
  const dagBox = el("div.dag-wrap", {}, el("div.empty", {}, el("span.spinner"), " Loading run…"));
  const panelBox = el("div");
  const search = el("input.dag-search", { type: "search", placeholder: "Find a node", "aria-label": "Find a node by id", oninput: () => find(false), onkeydown: (e) => { if (e.key === "Enter") find(true); } });
  const found = el("span.muted.dag-found");
  const graphPane = el("div.run-layout", { dataset: { pane: "graph" } },
    el("div.card", {}, el("div.card-head.wrap", {}, el("h2", { text: "Graph" }), progress,
      el("div.dag-tools", {}, search, found,
        el("button.btn.btn-small", { type: "button", title: "Zoom out", text: "−", onclick: () => dagView && dagView.zoom(1 / 1.25) }),
        el("button.btn.btn-small", { type: "button", title: "Show the whole graph", text: "Fit", id: "dag-fit", onclick: () => dagView && dagView.fit(true) }),
        el("button.btn.btn-small", { type: "button", title: "Zoom in", text: "+", onclick: () => dagView && dagView.zoom(1.25) }))),
      dagBox),
    panelBox);
  const panes = { graph: graphPane };
  for (const [id] of TABS.slice(1)) panes[id] = el("div.card.run-pane", { dataset: { pane: id } });
  const tabBar = el("div.tabs.run-tabs", { role: "tablist" }, TABS.map(([id, label]) =>
    el("button.tab", { type: "button", role: "tab", dataset: { tab: id }, text: label, onclick: () => showTab(id) })));
  view.append(head, errorSlot, tabBar, ...Object.values(panes));

  const panel = new NodePanel(panelBox, runId, {
    onClose: () => select(null),
    onSelect: (key, t) => select(key, t),
  });

  function url(extra = {}) {
    const q = new URLSearchParams();
    if (tab !== "graph") q.set("tab", tab);
    if (panel.key) q.set("node", panel.key);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    const s = q.toString();
    history.replaceState(null, "", `#/runs/${runId}${s ? `?${s}` : ""}`);
  }

  function showTab(id) {
    tab = id;
    for (const b of tabBar.children) b.classList.toggle("active", b.dataset.tab === id);
    for (const [name, pane] of Object.entries(panes)) pane.hidden = name !== id;
    if (!mounted.has(id) && id !== "graph") mountTab(id);
    if (id === "timeline" && mounted.has(id)) mounted.get(id).refresh();
    if (id === "io") renderValues();
    url();
  }

  function mountTab(id) {
    if (id === "timeline") mounted.set(id, new TimelineView(panes.timeline, runId, { onSelect: (node) => { showTab("graph"); select(node); } }));
    if (id === "events") mounted.set(id, new EventHistory(panes.events, runId));
    if (id === "logs") {
      if (!dagSpec) return; // mounted once the spec is known (it names the nodes to filter)
      mounted.set(id, { stop: mountRunLogs(panes.logs, runId, dagSpec.nodes.map((n) => n.id)) });
    }
    if (id === "io") mounted.set(id, {});
  }

  function select(key, t) {
    const base = key ? key.split("[")[0] : null;
    if (dagView) { dagView.select(base); }
    graphPane.classList.toggle("with-panel", Boolean(key));
    if (key) panel.open(key, dagSpec.nodes.find((n) => n.id === base), t);
    else panel.close();
    url();
    draw();
  }

  function find(reveal) {
    if (!dagView) return;
    const ids = dagView.search(search.value);
    found.textContent = search.value.trim() ? `${ids.length} found` : "";
    if (reveal && ids.length) { select(ids[0]); dagView.reveal(ids[0]); }
  }

  async function load() {
    const t0 = performance.now();
    try {
      run = await get(`/api/runs/${enc(runId)}`, { io: false });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) { waiting(); return; }
      throw err;
    } finally {
      fetchMs = performance.now() - t0;
    }
    if (!dagSpec || dagSpec.version !== run.version || dagSpec.name !== run.workflow) await loadSpec();
    // Drop overlays the committed state has caught up with.
    for (const [id, lv] of live) {
      const node = run.nodes[id];
      if (node && (attemptOf(node) > lv.attempt || (attemptOf(node) === lv.attempt && RANK[node.status] >= lv.rank))) live.delete(id);
    }
    draw();
    if (panel.key) panel.refresh();
  }

  async function loadSpec() {
    // Two reads may overlap (an event and the backstop): build the graph once per spec.
    const specKey = `${run.workflow}@${run.version}`;
    if (!specLoading || specLoading.key !== specKey) {
      specLoading = { key: specKey, promise: get(`/api/workflows/${enc(run.workflow)}`, { version: run.version }) };
    }
    const wf = await specLoading.promise;
    if (dagSpec && dagSpec.name === wf.name && dagSpec.version === wf.version) return;
    dagSpec = { name: wf.name, version: wf.version, nodes: wf.dag.nodes, dag: wf.dag };
    if (dagView) dagView.destroy();
    dagView = new DagView(dagBox, wf.dag, { onSelect: (id) => select(panel.key === id ? null : id) });
    dagView.fit();
    if (tab === "logs" && !mounted.has("logs")) mountTab("logs");
    const wanted = params.get("node");
    if (wanted) select(wanted);
  }

  function waiting() {
    if (run) return;
    clear(dagBox).append(el("div.empty", {}, el("span.spinner"), " Waiting for the orchestrator to accept this run…"));
    clear(head).append(el("div.breadcrumb", {}, el("a", { href: "#/runs", text: "Runs" }), " / "),
      el("div.run-title", {}, el("h1", { text: runId }), pill("pending", true)));
    settle();
  }

  const refresh = throttle(() => load().catch(() => {}), () => Math.max(300, fetchMs * 5));
  const settle = debounce(() => refresh(), 1200);
  const draw = throttle(() => { if (!closed) render(); }, 120);

  function attemptOf(node) {
    const h = node.attempt_history || [];
    return h.length ? h[h.length - 1].attempt : 0;
  }

  function nodeState(id, node) {
    if (!node) return { status: "waiting" };
    let status = node.status;
    const lv = live.get(id);
    if (lv && (lv.attempt > attemptOf(node) || (lv.attempt === attemptOf(node) && lv.rank > RANK[status]))) status = lv.status;
    const spec = dagSpec.nodes.find((n) => n.id === id);
    let detail = "";
    const h = node.attempt_history || [];
    const last = h[h.length - 1];
    if (node.no_worker && status === "dispatched") detail = "no worker";
    else if (status === "succeeded" && last && last.finished_at) detail = fmtDuration(last.finished_at - (last.started_at || last.dispatched_at));
    else if (status === "failed" && node.error) detail = node.error.type;
    else if ((status === "running" || status === "retrying" || status === "dispatched") && spec && spec.max_attempts > 1 && last) {
      detail = `attempt ${Math.max(lv ? lv.attempt : 0, last.attempt) - attemptsBeforeRetry(node)}/${spec.max_attempts}`;
    }
    return { status, detail, counts: node.children || null };
  }

  function render() {
    if (!run || !dagView) return;
    const states = new Map();
    const tally = {};
    for (const n of dagSpec.nodes) {
      const st = nodeState(n.id, run.nodes[n.id]);
      states.set(n.id, st);
      if (st.counts) for (const [k, v] of Object.entries(st.counts)) { if (k !== "total") tally[k] = (tally[k] || 0) + v; }
      else tally[st.status] = (tally[st.status] || 0) + 1;
      if (st.counts && st.counts.total) {
        const seen = Object.entries(st.counts).reduce((s, [k, v]) => (k === "total" ? s : s + v), 0);
        if (st.counts.total > seen) tally.waiting = (tally.waiting || 0) + st.counts.total - seen;
      }
    }
    dagView.update(states);
    if (panel.key && states.has(panel.key)) {
      panel.setNote(run.nodes[panel.key] && run.nodes[panel.key].no_worker);
      panel.setStatus(states.get(panel.key).status);
    }
    clear(progress).append(...LEGEND.filter((s) => tally[s]).map((s) =>
      el(`span.legend-item.st-${s}`, { dataset: { status: s } }, el("i"), `${fmtInt(tally[s])} ${s}`)));
    renderHead();
  }

  let headKey = "";
  function renderHead() {
    // Rebuilt only when something shown changed: a button replaced under the pointer loses
    // the click.
    const key = JSON.stringify([run.status, run.finished_at, run.version, Boolean(run.error), run.waiting]);
    if (key === headKey) return;
    headKey = key;
    const actions = el("div.run-actions");
    if (!TERMINAL.has(run.status)) actions.append(el("button.btn.btn-danger", { type: "button", text: "Cancel run", id: "cancel-run", onclick: cancel }));
    if (run.status === "failed" || run.status === "cancelled") {
      actions.append(el("button.btn.btn-primary", { type: "button", text: "Retry", id: "retry-run", title: "Resume from the nodes that did not succeed", onclick: retry }));
    }
    actions.append(el("button.btn", { type: "button", text: "Run again", onclick: runAgain }));
    clear(head).append(
      el("div.breadcrumb", {}, el("a", { href: "#/runs", text: "Runs" }), " / ", el("a", { href: `#/runs?workflow=${enc(run.workflow)}`, text: run.workflow })),
      el("div.run-head", {},
        el("div.run-summary", {},
          el("div.run-title", {}, el("h1", { text: run.run_id }), pill(run.status, true)),
          el("div.run-meta", {},
            el("span", {}, el("b", { text: "Workflow" }), el("a", { href: `#/workflows/${enc(run.workflow)}?version=${run.version}`, text: `${run.workflow} v${run.version}` })),
            el("span.run-started", {}, el("b", { text: "Started" }), timeEl(run.created_at)),
            el("span", { id: "run-duration", title: run.resumed_at ? "Active time: the wait before its retry is not counted" : "" },
              el("b", { text: "Duration" }), fmtDuration(activeSeconds(run, Date.now() / 1000))),
            run.trigger ? triggerEl(run.trigger) : null,
            run.idempotency_key ? el("span", {}, el("b", { text: "Key" }), el("code", { text: run.idempotency_key })) : null),
          waitingLine(run.waiting)),
        actions));
    clear(errorSlot);
    if (run.error) errorSlot.append(el("div.section", {}, errorBox(run.error, { open: false })));
    if (tab === "io") renderValues();
  }

  let valuesKey = "";
  async function renderValues() {
    if (!run) return;
    const key = `${run.status}:${run.updated_at}`;
    if (key === valuesKey) return;
    valuesKey = key;
    const full = await get(`/api/runs/${enc(runId)}`, { io: true }).catch(() => null);
    if (!full) return;
    const output = TERMINAL.has(full.status) || full.output !== null
      ? valueView(full.output, { runId, which: "output" })
      : el("p.muted", { text: `None yet: the run is ${full.status}.` });
    clear(panes.io).append(el("div.io-grid", {},
      el("div.section", { dataset: { io: "input" } }, el("h3", { text: "Input" }), valueView(full.input, { runId, which: "input" })),
      el("div.section", { dataset: { io: "output" } }, el("h3", { text: "Output" }), output)));
  }

  async function cancel() {
    if (!(await confirmAction("Cancel this run?", "In-flight tasks are asked to stop and nothing new is dispatched.", "Cancel run"))) return;
    try { await post(`/api/runs/${enc(runId)}/cancel`, {}); toast("Cancellation requested"); } catch (err) { toast(err.message, "error"); }
    refresh();
  }

  async function retry() {
    try { await post(`/api/runs/${enc(runId)}/retry`, {}); toast("Retry requested: resuming from the nodes that did not succeed"); } catch (err) { toast(err.message, "error"); }
    refresh();
  }

  async function runAgain() {
    const full = await get(`/api/runs/${enc(runId)}`, { io: true }).catch(() => null);
    openTrigger({ workflow: run.workflow, input: full ? full.input : null });
  }

  function onEvents(events) {
    lastEventAt = performance.now();
    let final = false;
    for (const ev of events) {
      if (ev.type.startsWith("run.")) { if (["run.succeeded", "run.failed", "run.cancelled"].includes(ev.type)) final = true; continue; }
      if (!ev.node_id || ev.node_id.includes("[")) continue; // children show up in the counts
      const next = ev.type === "task.started" ? { status: "running", rank: 2 }
        : ev.type === "task.completed" ? { status: "succeeded", rank: 3 }
          : ev.type === "task.failed" ? { status: retriable(ev) ? "retrying" : "failed", rank: 3 } : null;
      if (!next) continue;
      const prev = live.get(ev.node_id);
      if (!prev || ev.attempt > prev.attempt || (ev.attempt === prev.attempt && next.rank >= prev.rank)) live.set(ev.node_id, { attempt: ev.attempt, ...next });
    }
    draw();
    if (final) refresh.now(); else refresh();
    settle();
    if (mounted.has("events")) mounted.get("events").more();
    if (mounted.has("timeline") && tab === "timeline") mounted.get("timeline").refresh();
  }

  function retriable(ev) {
    const spec = dagSpec && dagSpec.nodes.find((n) => n.id === ev.node_id);
    const node = run && run.nodes[ev.node_id];
    const before = node ? attemptsBeforeRetry(node) : 0;
    return Boolean(ev.error && ev.error.retryable !== false && spec && ev.attempt - before < spec.max_attempts);
  }

  // After (re)subscribing, events published before the subscription are gone (core NATS):
  // re-read now, and once more after the orchestrator's commit lag.
  const onReady = () => { refresh(); settle(); if (mounted.has("events")) mounted.get("events").more(); };
  const closeStream = stream(`/api/events?run_id=${enc(runId)}`, { ready: onReady, events: onEvents, resync: onReady });
  const ticker = setInterval(() => {
    // Backstop: a quiet running run is re-read every few seconds, so the picture converges
    // on the committed state even if an event was lost or a read raced a commit.
    const quietFor = performance.now() - lastEventAt;
    if ((!run || !TERMINAL.has(run.status)) && quietFor > BACKSTOP_MS && performance.now() - lastBackstop > BACKSTOP_MS) {
      lastBackstop = performance.now();
      refresh();
    }
    if (!run || run.finished_at) return;
    const span = document.getElementById("run-duration");
    if (span) span.lastChild.textContent = fmtDuration(activeSeconds(run, Date.now() / 1000));
  }, 1000);
  showTab(tab);
  load().catch((err) => clear(dagBox).append(el("div.empty", { text: err.message })));

  return () => {
    closed = true;
    if (dagView) dagView.destroy();
    closeStream(); clearInterval(ticker); refresh.cancel(); settle.cancel(); draw.cancel(); panel.close();
    const logs = mounted.get("logs");
    if (logs) logs.stop();
  };
}

/** What started the run: its kind, and who or what, with the parent run a link. */
function triggerEl(trigger) {
  const kind = TRIGGER_KINDS[trigger.kind] || trigger.kind;
  const by = trigger.kind === "parent" && trigger.detail && trigger.detail.run_id
    ? el("a", { href: `#/runs/${enc(trigger.detail.run_id)}`, text: trigger.by })
    : el("span", { text: trigger.by });
  return el("span.run-trigger", { title: `source ${trigger.source} · event ${trigger.event_id}` },
    el("b", { text: "Trigger" }), el(`span.tag.kind-${trigger.kind}`, { text: kind }), " ", by);
}

/** The run's active time (the API's duration_s: a manual retry's idle wait not counted),
 * carried on to `now` while the run moves. */
function activeSeconds(run, now) {
  if (run.duration_s === undefined || run.duration_s === null) return (run.finished_at || now) - run.created_at;
  return run.duration_s + (run.finished_at ? 0 : Math.max(0, now - run.updated_at));
}

/** Attempts a node had before the run's last manual retry: its retry budget starts after them. */
function attemptsBeforeRetry(node) {
  const h = node.attempt_history || [];
  const last = h.length ? h[h.length - 1].attempt : 0;
  return node.attempts_since_retry === undefined || node.attempts_since_retry === null ? 0 : Math.max(0, last - node.attempts_since_retry);
}
