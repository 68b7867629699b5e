// Workers and queues: the workers alive now (from their heartbeats) with what they serve and
// how busy they are, a warning for every workflow whose tasks no live worker serves, and each
// task queue's backlog (waiting, running, idle pulls, the age of the oldest waiting task).
// Re-read every few seconds: heartbeats and backlogs change without run events.

import { get } from "./api.js";
import { el, clear, fmtDuration, fmtInt, timeEl } from "./util.js";

const EVERY_MS = 3000;
const PILL = { alive: "running", draining: "retrying", gone: "cancelled" };

export function mountWorkers(view) {
  const warnings = el("div");
  const workersBox = el("div.card.section", { id: "workers-card" });
  const queuesBox = el("div.card.section", { id: "queues-card" });
  view.append(el("div.page-head", {}, el("h1", { text: "Workers & queues" })), warnings, workersBox, queuesBox);
  let stopped = false, timer = null;

  async function tick() {
    await Promise.all([
      get("/api/workers").then((page) => renderWorkers(workersBox, warnings, page)).catch((err) => renderUnavailable(workersBox, "Workers", err)),
      get("/api/queues").then((page) => renderQueues(queuesBox, page)).catch((err) => renderUnavailable(queuesBox, "Queues", err)),
    ]);
    if (!stopped) timer = setTimeout(tick, EVERY_MS);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function renderUnavailable(box, title, err) {
  clear(box).append(el("div.card-head", {}, el("h2", { text: title })), el("div.empty", { text: err.message }));
}

function renderWorkers(box, warnings, page) {
  clear(warnings);
  for (const gap of page.unserved || []) {
    warnings.append(el("div.form-error.section.unserved", { dataset: { workflow: gap.workflow } },
      el("b", { text: `${gap.workflow} v${gap.version}` }), `: no live worker serves ${gap.tasks.map((t) => `${t.task} (queue ${t.queue})`).join(", ")} — its runs will wait for one.`));
  }
  const rows = page.workers.map((w) => el("tr", { dataset: { worker: w.worker, status: w.status } },
    el("td", {}, el(`span.pill.st-${PILL[w.status]}`, { text: w.status }),
      w.status === "gone" ? el("div.muted.worker-why", { text: w.state === "stopped" ? "stopped" : "no heartbeat" }) : null),
    el("td", {}, el("div.mono", { text: w.worker }), el("div.muted", { text: `${w.host}${w.pid ? ` · pid ${w.pid}` : ""} · ${w.version}` })),
    el("td", {}, w.queues.map((q) => el("span.tag", { text: q })), el("div.muted.worker-tasks", { text: w.tasks.join(", ") })),
    el("td.num", { text: `${fmtInt(w.in_flight)} / ${fmtInt(w.concurrency)}` }),
    el("td", {}, timeEl(w.last_heartbeat)),
    el("td", {}, timeEl(w.started_at))));
  clear(box).append(
    el("div.card-head", {}, el("h2", { text: "Workers" }), el("span.muted.workers-alive", { text: `${page.workers.filter((w) => w.live).length} alive` })),
    rows.length
      ? el("div.table-scroll", {}, el("table.table.workers-table", {},
        el("thead", {}, el("tr", {}, ["State", "Worker", "Serves", "In flight", "Last heartbeat", "Started"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)))
      : el("div.empty", { text: "No worker has sent a heartbeat: start one with `conveyor worker MODULE`." }));
}

function renderQueues(box, page) {
  const rows = page.queues.map((q) => el("tr", { dataset: { consumer: q.consumer, queue: q.queue || "" } },
    el("td", {}, el("div", { text: q.queue || "–" }), q.task ? el("div.muted", { text: q.task }) : null),
    el("td.mono", { text: q.consumer }),
    el("td.num", { text: fmtInt(q.pending) }),
    el("td.num", { text: `${fmtInt(q.ack_pending)}${q.max_ack_pending > 0 ? ` / ${fmtInt(q.max_ack_pending)}` : ""}` }),
    el("td.num", { text: fmtInt(q.waiting_pulls) }),
    el("td", { text: q.oldest_waiting_s === null ? "–" : fmtDuration(q.oldest_waiting_s) }),
    el("td.num", { text: fmtInt(q.redelivered) }),
    el("td", {}, timeEl(q.last_active))));
  clear(box).append(
    el("div.card-head", {}, el("h2", { text: "Queues" }),
      el("span.muted", { text: `dead letters: ${fmtInt(page.dead_letters)}` })),
    rows.length
      ? el("div.table-scroll", {}, el("table.table.queues-table", {},
        el("thead", {}, el("tr", {}, ["Queue", "Consumer", "Waiting", "Running", "Idle pulls", "Oldest waiting", "Redelivered", "Last delivery"].map((h) => el("th", { text: h })))),
        el("tbody", {}, rows)))
      : el("div.empty", { text: "No queue has a consumer yet: registering a workflow creates one per task, and so does a worker when it starts." }));
}
