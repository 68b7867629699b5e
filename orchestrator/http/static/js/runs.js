// The runs list: counts by status, filters (workflow, status, time), keyset pages, live updates.
//
// Live: run-level events (scope=runs) patch rows at once (a new run appears as "pending" the
// moment it is requested, a finished one changes colour) and schedule a throttled re-read of
// the loaded rows and counts, which brings the rows to their committed state.

import { get, stream, withParams } from "./api.js";
import { el, clear, pill, fmtDuration, fmtInt, throttle, timeEl, TERMINAL } from "./util.js";
import { openTrigger } from "./trigger.js";

const STATUSES = ["running", "pending", "succeeded", "failed", "cancelled"];
const RANGES = { "": "Any time", 3600: "Last hour", 86400: "Last 24 hours", 604800: "Last 7 days" };
const TRIGGERS = { cron: "schedule", event: "event", webhook: "webhook", parent: "sub-run", cli: "cli", api: "api", client: "client" };
const RUN_END = { "run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled" };

export function mountRuns(view, params) {
  const state = {
    workflow: params.get("workflow") || "",
    status: params.get("status") || "",
    range: params.get("range") || "",
    rows: [], cursor: null, counts: {}, total: 0, fresh: new Set(),
  };

  const chips = el("div.chips");
  const workflowSelect = el("select", { "aria-label": "Workflow", onchange: () => setFilter({ workflow: workflowSelect.value }) },
    el("option", { value: "", text: "All workflows" }));
  const rangeSelect = el("select", { "aria-label": "Created", onchange: () => setFilter({ range: rangeSelect.value }) },
    Object.entries(RANGES).map(([v, t]) => el("option", { value: v, text: t })));
  rangeSelect.value = state.range;
  const tbody = el("tbody");
  const more = el("button.btn", { type: "button", text: "Load older runs", onclick: () => load(true) });
  const foot = el("div.table-foot", {}, more);
  const table = el("table.table.runs-table", {},
    el("thead", {}, el("tr", {}, ["Status", "Run", "Workflow", "Started", "Duration", ""].map((h) => el("th", { text: h })))),
    tbody);

  view.append(
    el("div.page-head", {}, el("h1", { text: "Runs" }), el("div.spacer"),
      el("div.filters", {}, workflowSelect, rangeSelect)),
    chips,
    el("div.card", {}, table, foot));

  function setFilter(patch) {
    Object.assign(state, patch);
    const q = withParams("", { workflow: state.workflow, status: state.status, range: state.range });
    history.replaceState(null, "", `#/runs${q}`);
    state.rows = []; state.cursor = null;
    load(false); counts();
  }

  function filterParams() {
    return {
      workflow: state.workflow || undefined,
      status: state.status || undefined,
      created_after: state.range ? Date.now() / 1000 - Number(state.range) : undefined,
    };
  }

  async function load(older) {
    const limit = older ? 50 : Math.min(Math.max(state.rows.length, 50), 500);
    const page = await get("/api/runs", { ...filterParams(), limit, cursor: older ? state.cursor : undefined });
    if (older) state.rows = state.rows.concat(page.runs);
    else {
      // Keep optimistic rows the store has not caught up with yet.
      const known = new Set(page.runs.map((r) => r.run_id));
      const pending = state.rows.filter((r) => r.optimistic && !known.has(r.run_id));
      state.rows = pending.concat(page.runs);
    }
    state.cursor = page.next_cursor;
    renderRows();
  }

  async function counts() {
    const c = await get("/api/stats/runs", { workflow: state.workflow || undefined,
      created_after: filterParams().created_after });
    state.counts = c.by_status; state.total = c.total;
    renderChips();
  }

  function renderChips() {
    clear(chips);
    const chip = (status, label, n) => el(`button.chip${state.status === status ? ".active" : ""}${status ? `.st-${status}` : ""}`,
      { type: "button", onclick: () => setFilter({ status: state.status === status ? "" : status }), "data-status": status || "all" },
      el("span.swatch"), label, el("b", { text: fmtInt(n) }));
    chips.append(chip("", "All runs", state.total));
    for (const s of STATUSES) chips.append(chip(s, s[0].toUpperCase() + s.slice(1), state.counts[s] || 0));
  }

  function renderRows() {
    clear(tbody);
    if (!state.rows.length) {
      tbody.append(el("tr", {}, el("td.empty", { colSpan: 6 }, "No runs match. ",
        el("a", { href: "#", text: "Trigger one", onclick: (e) => { e.preventDefault(); openTrigger({ workflow: state.workflow || null }); } }), ".")));
    }
    const now = Date.now() / 1000;
    for (const r of state.rows) {
      const end = r.finished_at || (TERMINAL.has(r.status) ? r.updated_at : null);
      const tr = el("tr.clickable", { dataset: { run: r.run_id, status: r.status }, onclick: () => { location.hash = `#/runs/${r.run_id}`; } },
        el("td.c-status", {}, pill(r.status)),
        el("td.c-run", {}, el("a.run-id", { href: `#/runs/${r.run_id}`, text: r.run_id }),
          r.trigger ? el(`span.tag.kind-${r.trigger.kind}`, { title: r.trigger.by, text: TRIGGERS[r.trigger.kind] || r.trigger.kind }) : null),
        el("td.c-workflow", {}, el("span", { text: r.workflow }), r.version ? el("span.muted", { text: `  v${r.version}` }) : null),
        el("td.c-started", {}, timeEl(r.created_at)),
        el("td.c-duration", { dataset: { live: end ? "" : "1" }, text: fmtDuration((end || now) - r.created_at) }),
        el("td.c-error", {}, r.error ? el(`div.err-line${r.error.type === "Cancelled" ? ".neutral" : ""}`, { title: r.error.message, text: `${r.error.type}: ${r.error.message}` }) : null));
      if (state.fresh.has(r.run_id)) tr.classList.add("flash");
      tbody.append(tr);
    }
    state.fresh.clear();
    foot.hidden = !state.cursor;
  }

  const refresh = throttle(() => Promise.all([load(false), counts()]).catch(() => {}), 1000);

  function onEvents(events) {
    let changed = false;
    for (const ev of events) {
      const row = state.rows.find((r) => r.run_id === ev.run_id);
      if (ev.type === "run.requested" && !row && !state.status && (!state.workflow || state.workflow === ev.workflow)) {
        const now = Date.now() / 1000;
        state.rows.unshift({ run_id: ev.run_id, workflow: ev.workflow, version: null, status: "pending",
          created_at: now, updated_at: now, optimistic: true });
        state.fresh.add(ev.run_id);
        changed = true;
      } else if (row && RUN_END[ev.type]) {
        row.status = RUN_END[ev.type]; row.finished_at = Date.now() / 1000;
        state.fresh.add(ev.run_id);
        changed = true;
      }
    }
    if (changed) renderRows();
    refresh();
  }

  const close = stream("/api/events?scope=runs", { ready: () => refresh(), events: onEvents, resync: () => refresh() });
  const ticker = setInterval(() => {
    const now = Date.now() / 1000;
    for (const td of tbody.querySelectorAll("td[data-live='1']")) {
      const r = state.rows.find((x) => x.run_id === td.parentElement.dataset.run);
      if (r) td.textContent = fmtDuration(now - r.created_at);
    }
  }, 1000);

  get("/api/workflows").then((wfs) => {
    for (const wf of wfs) workflowSelect.append(el("option", { value: wf.name, text: wf.name }));
    workflowSelect.value = state.workflow;
  }).catch(() => {});
  load(false).catch(() => {});
  counts().catch(() => {});
  renderChips();

  return () => { close(); clearInterval(ticker); refresh.cancel(); };
}
