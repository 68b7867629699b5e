// Workflows: a card per registered workflow, and one workflow's page (DAG, versions, input
// schema, recent runs, the spec) with a Trigger button.

import { get, enc } from "./api.js";
import { el, pill, fmtAgo, fmtIn, fmtInt, fmtTime, jsonView, timeEl } from "./util.js";
import { DagView } from "./dag.js";
import { openTrigger } from "./trigger.js";

const ORDER = ["succeeded", "failed", "running", "pending", "cancelled"];

export function mountWorkflows(view) {
  const grid = el("div.wf-grid");
  view.append(el("div.page-head", {}, el("h1", { text: "Workflows" })), grid);
  get("/api/workflows").then((wfs) => {
    if (!wfs.length) grid.append(el("div.card.empty", { text: "No workflow is registered yet: `conveyor register FILE` or start a worker." }));
    for (const wf of wfs) grid.append(card(wf));
  }).catch(() => {});
  return () => {};
}

function card(wf) {
  const total = Object.values(wf.runs).reduce((a, b) => a + b, 0);
  const bar = el("div.mini-bar", { title: ORDER.filter((s) => wf.runs[s]).map((s) => `${wf.runs[s]} ${s}`).join(", ") });
  for (const s of ORDER) {
    if (!wf.runs[s]) continue;
    const seg = el(`span.st-${s}`);
    seg.style.width = `${(100 * wf.runs[s]) / total}%`;
    bar.append(seg);
  }
  return el("div.card.wf-card", { dataset: { workflow: wf.name }, onclick: () => { location.hash = `#/workflows/${wf.name}`; } },
    el("div", {}, el("span.name", { text: wf.name })),
    wf.description ? el("div.muted", { text: wf.description }) : null,
    el("div.meta", {}, el("span", { text: `v${wf.latest_version}` }), el("span", { text: `${wf.nodes} node${wf.nodes === 1 ? "" : "s"}` }),
      el("span", { text: `${fmtInt(total)} run${total === 1 ? "" : "s"}` })),
    wf.schedules || wf.triggers ? el("div.meta", {},
      wf.schedules ? el("span.tag", { title: wf.next_run_at ? fmtTime(wf.next_run_at) : "" },
        wf.paused ? "schedule paused" : `next run ${fmtIn(wf.next_run_at)}`) : null,
      wf.triggers ? el("span.tag", { text: `${wf.triggers} event trigger${wf.triggers === 1 ? "" : "s"}` }) : null) : null,
    el("div.foot", {}, total ? bar : el("span.muted", { text: "never run" }),
      wf.last_run ? el("span.muted", { title: `last run ${fmtTime(wf.last_run.created_at)}`, text: `last run ${fmtAgo(wf.last_run.created_at)}` }) : null,
      el("span.spacer"),
      el("button.btn.btn-small.btn-primary", { type: "button", text: "Trigger", onclick: (e) => { e.stopPropagation(); openTrigger({ workflow: wf.name }); } })));
}

export function mountWorkflow(view, name, params) {
  const version = params.get("version");
  const head = el("div");
  const dagBox = el("div.dag-wrap");
  const side = el("div");
  let dag = null;
  view.append(head, el("div.run-layout.with-panel", {},
    el("div.card", {}, el("div.card-head", {}, el("h2", { text: "Graph" })), dagBox), side));
  get(`/api/workflows/${enc(name)}`, { version }).then(async (wf) => {
    const select = el("select", { "aria-label": "Version", onchange: () => { location.hash = `#/workflows/${enc(name)}?version=${select.value}`; } },
      wf.versions.slice().reverse().map((v) => el("option", { value: v, text: `v${v}${v === wf.latest_version ? " (latest)" : ""}` })));
    select.value = String(wf.version);
    head.append(el("div.breadcrumb", {}, el("a", { href: "#/workflows", text: "Workflows" }), " / "),
      el("div.page-head", {}, el("h1.code-title", { text: wf.name }), select, el("div.spacer"),
        el("a.btn", { href: `#/runs?workflow=${enc(wf.name)}`, text: "All runs" }),
        el("button.btn.btn-primary", { type: "button", text: "Trigger run", onclick: () => openTrigger({ workflow: wf.name }) })));
    if (wf.description) head.append(el("p.muted", { text: wf.description }));
    dag = new DagView(dagBox, wf.dag, { showStatus: false });
    dag.fit();
    dag.update(new Map());
    side.append(schemaCard(wf), triggersCard(wf), await recentRuns(wf.name),
      el("div.card", {}, el("div.card-head", {}, el("h2", { text: "Spec" })),
        el("div.card-body", {}, el("details", {}, el("summary", { text: "Show the registered spec (JSON)" }), jsonView(wf.spec)))));
  }).catch((err) => view.append(el("div.card.empty", { text: err.message })));
  return () => { if (dag) dag.destroy(); };
}

function schemaCard(wf) {
  const props = (wf.input_schema && wf.input_schema.properties) || {};
  const required = new Set((wf.input_schema && wf.input_schema.required) || []);
  const rows = Object.entries(props).map(([k, p]) => el("tr", {},
    el("td", {}, el("code", { text: k }), required.has(k) ? el("span.req", { text: " *" }) : null),
    el("td.muted", { text: p.type || (p.anyOf ? p.anyOf.map((x) => x.type).filter(Boolean).join(" | ") : "any") }),
    el("td", {}, "default" in p ? el("code", { text: JSON.stringify(p.default) }) : el("span.muted", { text: "–" }))));
  return el("div.card.section", {}, el("div.card-head", {}, el("h2", { text: "Input" })),
    rows.length ? el("table.table.schema-table", {}, el("thead", {}, el("tr", {}, ["Parameter", "Type", "Default"].map((h) => el("th", { text: h })))), el("tbody", {}, rows))
      : el("div.card-body.muted", { text: "No input." }));
}

function triggersCard(wf) {
  const body = el("div.card-body");
  if (!wf.schedules.length && !wf.triggers.length && !wf.notify.length) {
    body.append(el("p.muted", { text: "Runs start only when requested (API, CLI, any NATS client)." }));
  }
  if (wf.schedules.length) {
    body.append(el("h3", { text: wf.paused ? "Schedules (paused)" : "Schedules" }));
    for (const s of wf.schedules) {
      body.append(el("div.trigger-row", {},
        el("code", { text: s.cron }), el("span.muted", { text: ` ${s.timezone} · catch-up ${s.catchup}` }),
        // In the schedule's own time zone: that is the zone its cron expression speaks.
        el("ul.instants", {}, s.next_at.map((t) => el("li", { text: fmtTime(t, s.timezone) })))));
    }
  }
  if (wf.triggers.length) {
    body.append(el("h3", { text: "Event triggers" }));
    for (const f of wf.triggers) body.append(el("div.trigger-row", {}, el("code", { text: JSON.stringify(f) })));
  }
  if (wf.notify.length) {
    body.append(el("h3", { text: "Notifies" }));
    for (const n of wf.notify) {
      body.append(el("div.trigger-row", {}, el("code", { text: n.url }),
        el("span.muted", { text: ` on ${n.on.join(", ")}${n.signed ? " · signed" : ""}` })));
    }
  }
  return el("div.card.section", {}, el("div.card-head", {}, el("h2", { text: "Triggers" })), body);
}

async function recentRuns(name) {
  const page = await get("/api/runs", { workflow: name, limit: 8 });
  const body = page.runs.length ? el("table.table", {}, el("tbody", {}, page.runs.map((r) => el("tr.clickable", { onclick: () => { location.hash = `#/runs/${r.run_id}`; } },
    el("td", {}, pill(r.status)), el("td", {}, el("a.run-id", { href: `#/runs/${r.run_id}`, text: r.run_id.slice(0, 16) })), el("td.muted", {}, timeEl(r.created_at))))))
    : el("div.card-body.muted", { text: "No runs yet." });
  return el("div.card.section", {}, el("div.card-head", {}, el("h2", { text: "Recent runs" })), body);
}

