// A Conveyor worker in Node.js, written from docs/protocol.md alone (section "The worker's side";
// the step numbers below are the doc's). It serves one task, `word_count`, of a workflow
// defined in Python (examples/polyglot.py). Run: `node worker.mjs` (see README.md).
import { createHash } from "node:crypto";
import os from "node:os";
import { pathToFileURL } from "node:url";
import { AckPolicy, DeliverPolicy, Match, connect, headers, nanos } from "nats";

// ---- the task(s) this worker serves ------------------------------------------------------------
// A task is a function of its named inputs; `params` is checked before it runs (like the Python
// worker's type hints), so bad input fails as a typed, non-retryable InputValidationError.

class NonRetryableError extends Error {
  constructor(message, details = null) {
    super(message);
    this.name = new.target.name; // `type` on the wire: what a node's `non_retryable` list matches
    this.details = details;
  }
}
class InputValidationError extends NonRetryableError {}
class OutputSerialisationError extends NonRetryableError {}
class OutputTooLarge extends NonRetryableError {}

const segmenter = new Intl.Segmenter(undefined, { granularity: "word" });

export const TASKS = {
  word_count: {
    params: { text: "string" },
    // Unicode-aware word statistics (Intl.Segmenter knows that "東京は" is two words).
    fn({ text }) {
      const words = [...segmenter.segment(text)].filter((s) => s.isWordLike).map((s) => s.segment);
      const counts = new Map();
      let longest = "";
      for (const word of words) {
        if ([...word].length > [...longest].length) longest = word; // code points, not UTF-16 units
        const key = word.toLocaleLowerCase();
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      const top = [...counts]
        .sort(([a, m], [b, n]) => n - m || (a < b ? -1 : 1)) // most frequent, then alphabetical
        .slice(0, 3)
        .map(([word, count]) => ({ word, count }));
      return { words: words.length, unique: counts.size, longest, top };
    },
  },
};

// ---- settings: the same CONVEYOR_* variables every Conveyor process reads -----------------------
const env = process.env;
const number = (name, fallback) => {
  const value = env[name] === undefined ? fallback : Number(env[name]);
  if (!Number.isFinite(value)) throw new Error(`${name}=${env[name]} is not a number`);
  return value;
};
const NS = env.CONVEYOR_NAMESPACE ?? "conveyor";
const SERVERS = env.CONVEYOR_NATS_URL ?? "nats://127.0.0.1:4222";
const PARTITIONS = number("CONVEYOR_PARTITIONS", 1);
const ACK_WAIT_S = number("CONVEYOR_TASK_ACK_WAIT", 30);
const MAX_DELIVERIES = number("CONVEYOR_TASK_MAX_DELIVERIES", 5);
const HEARTBEAT_S = number("CONVEYOR_WORKER_HEARTBEAT", 5);
const QUEUE = env.WORKER_QUEUE ?? "node";
const CONCURRENCY = number("WORKER_CONCURRENCY", 4);
const GRACE_S = number("WORKER_GRACE", 30);
// The worker's id: a subject token (it names the heartbeat subject, step 2), shown in
// `conveyor status`.
const WORKER = `${os.hostname()}-node-${process.pid}`.replace(/[^A-Za-z0-9_-]/g, "_");
const STARTED_AT = new Date().toISOString();

const log = (msg, fields = {}) => {
  const pairs = Object.entries(fields).map(([k, v]) => `${k}=${v}`);
  console.error([new Date().toISOString(), msg, ...pairs].join(" "));
};

// ---- the wire -----------------------------------------------------------------------------------

// A run's partition is crc32(run_id) % P, and every process must compute the same one: this is
// zlib's CRC-32 (IEEE 802.3, reflected; not CRC-32C) over the UTF-8 bytes, as Python's zlib.crc32.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
export function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, "utf8")) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
export const partitionOf = (runId, partitions = PARTITIONS) => crc32(runId) % partitions;

class Malformed extends Error {}
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Reads a task.dispatched event in binary mode (ce-* headers, JSON body) or structured mode.
function decodeDispatch(msg) {
  const header = (name) => msg.headers?.get(name, Match.IgnoreCase) || undefined;
  let attrs;
  let data;
  try {
    if (header("ce-specversion")) {
      const names = ["specversion", "id", "source", "type", "traceparent"];
      attrs = Object.fromEntries(names.map((name) => [name, header(`ce-${name}`)]));
      data = JSON.parse(msg.string());
    } else if ((header("content-type") ?? "").startsWith("application/cloudevents+json")) {
      attrs = JSON.parse(msg.string());
      data = attrs.data;
    } else {
      throw new Malformed("not a CloudEvent: no ce-specversion header and no structured body");
    }
  } catch (err) {
    throw err instanceof Malformed ? err : new Malformed(`body is not JSON: ${err.message}`);
  }
  if (attrs.specversion !== "1.0") throw new Malformed(`specversion ${attrs.specversion} != 1.0`);
  if (!attrs.id || !attrs.source) throw new Malformed("ce-id or ce-source is missing");
  if (attrs.type !== "io.conveyor.task.dispatched") throw new Malformed(`type is ${attrs.type}`);
  const d = data ?? {};
  const problems = [
    ...["run_id", "node_id", "task", "queue"].filter((k) => typeof d[k] !== "string"),
    ...(Number.isInteger(d.attempt) && d.attempt >= 1 ? [] : ["attempt"]),
    ...(isObject(d.input) ? [] : ["input"]),
    ...(d.timeout == null || typeof d.timeout === "number" ? [] : ["timeout"]),
  ];
  if (problems.length) throw new Malformed(`bad or missing in data: ${problems.join(", ")}`);
  const traceparent = typeof attrs.traceparent === "string" ? attrs.traceparent : undefined;
  return { ...d, traceparent };
}

// An event's identity is its source and id together (docs/protocol.md): the Nats-Msg-Id is
// the first 32 hex digits of SHA-256 over the UTF-8 source, a NUL byte and the UTF-8 id.
export function eventKey(source, id) {
  return createHash("sha256").update(`${source}\0${id}`, "utf8").digest("hex").slice(0, 32);
}

// Publishes one of our events (binary mode) and resolves with JetStream's ack. The id is
// deterministic, so a redelivered task's second result is dropped by JetStream's dedupe window.
function publishEvent(js, d, verb, data) {
  const id = `${d.run_id}:${d.node_id}:${d.attempt}:${verb}`;
  const source = `conveyor/worker/${WORKER}`;
  const h = headers();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", id);
  h.set("ce-source", source);
  h.set("ce-type", `io.conveyor.task.${verb}`);
  h.set("ce-time", new Date().toISOString());
  h.set("ce-runid", d.run_id);
  if (d.traceparent) h.set("ce-traceparent", d.traceparent); // keeps the run's trace whole
  h.set("content-type", "application/json");
  const { run_id, node_id, attempt } = d;
  const body = { run_id, node_id, attempt, worker: WORKER, ...data };
  const subject = `${NS}.evt.${partitionOf(d.run_id)}.task.${verb}.${d.run_id}`;
  const msgID = eventKey(source, id);
  return js.publish(subject, JSON.stringify(body), { msgID, headers: h, timeout: 5000 });
}

function errorInfo(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    type: e.name || "Error",
    message: e.message || e.name || "Error",
    traceback: e.stack ?? null,
    retryable: !(e instanceof NonRetryableError),
    details: e.details ?? null,
  };
}

function checkInput(name, params, input) {
  const typeOf = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);
  const problems = [
    ...Object.entries(params)
      .filter(([k, type]) => typeOf(input[k]) !== type)
      .map(
        ([k, type]) => `${k}: expected ${type}, got ${k in input ? typeOf(input[k]) : "nothing"}`,
      ),
    ...Object.keys(input)
      .filter((k) => !(k in params))
      .map((k) => `${k}: unexpected parameter`),
  ];
  const message = `input of task '${name}' is invalid: ${problems.join("; ")}`;
  if (problems.length) throw new InputValidationError(message, problems);
}

// An output NATS cannot carry (max_payload is 1 MiB by default) would fail the same way on every
// redelivery: fail the attempt instead, as the Python worker does.
const MAX_OUTPUT_BYTES = 900 * 1024;

function checkOutput(name, output) {
  let json;
  try {
    json = JSON.stringify(output ?? null);
  } catch (err) {
    throw new OutputSerialisationError(`output of '${name}' cannot be serialised: ${err.message}`);
  }
  const size = Buffer.byteLength(json);
  if (size > MAX_OUTPUT_BYTES) {
    throw new OutputTooLarge(`output of '${name}' is ${size} bytes, over ${MAX_OUTPUT_BYTES}`);
  }
  return output ?? null;
}

// Step 7's timeout. An async task past it is reported as failed (its promise cannot be stopped
// from outside, only abandoned). A synchronous task blocks the event loop, so it can neither be
// cut off nor heartbeat while it runs: long CPU work belongs in a worker_thread.
async function runTask(name, task, d) {
  checkInput(name, task.params, d.input);
  const work = Promise.resolve().then(() => task.fn(d.input));
  if (d.timeout == null) return checkOutput(name, await work);
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`task '${name}' did not finish within its ${d.timeout}s timeout`);
      err.name = "TimeoutError"; // retryable, as the Python worker reports it
      reject(err);
    }, d.timeout * 1000);
  });
  try {
    return checkOutput(name, await Promise.race([work, deadline]));
  } finally {
    clearTimeout(timer);
  }
}

// ---- one delivery -------------------------------------------------------------------------------
async function handle(js, msg, tasks) {
  let d;
  try {
    d = decodeDispatch(msg);
  } catch (err) {
    if (!(err instanceof Malformed)) throw err;
    return park(js, msg, err.message);
  }
  const where = { run: d.run_id, node: d.node_id, attempt: d.attempt, task: d.task };
  const fail = (error) => publishEvent(js, d, "failed", { error });

  // Step 4: a message delivered this often kills (or silences) every worker that takes it, even
  // alone (step 5).
  const delivered = msg.info.deliveryCount; // JetStream's num_delivered: 1 on the first delivery
  if (delivered > MAX_DELIVERIES) {
    await fail({
      type: "WorkerLost",
      message:
        `task '${d.task}' was delivered ${delivered - 1} times and no worker finished it, ` +
        "even run alone from its 2nd delivery on (crash, kill -9, out of memory?)",
      traceback: null,
      retryable: true,
    });
    msg.term();
    return log("task keeps killing its workers; attempt failed", where);
  }
  const task = tasks[d.task];
  if (!task) {
    const message = `worker ${WORKER} has no task named '${d.task}' (it came on another's subject)`;
    await fail({ type: "UnknownTask", message, traceback: null, retryable: true });
    msg.term();
    return log("unknown task; attempt failed", where);
  }

  // Step 6: not awaited here, so the task starts at once; its ack is awaited before the result.
  const started = publishEvent(js, d, "started", {});
  started.catch(() => {}); // a lost start changes nothing that matters (the result does)
  let verb;
  let data;
  try {
    data = { output: await runTask(d.task, task, d) };
    verb = "completed";
  } catch (err) {
    data = { error: errorInfo(err) };
    verb = "failed";
  }
  // Step 8: the result must be durable before the task message goes; if it is not, the task
  // comes back later and the same deterministic id keeps a second result from counting twice.
  try {
    await started.catch(() => {});
    await publishEvent(js, d, verb, data);
  } catch (err) {
    msg.nak(2000);
    return log("could not publish the result; handed back", { ...where, error: err.message });
  }
  msg.ack();
  log(`task ${verb}`, verb === "failed" ? { ...where, error: data.error.type } : where);
}

// A message that is not a task.dispatched event goes to the DLQ with the reason, then is acked.
async function park(js, msg, reason) {
  const h = headers();
  for (const key of msg.headers?.keys() ?? []) {
    if (key.toLowerCase().startsWith("nats-")) continue; // the server would act on those again
    for (const value of msg.headers.values(key)) h.append(key, value);
  }
  h.set("Conveyor-Dlq-Reason", reason.slice(0, 500).replace(/[^\x20-\x7e]/g, "?"));
  h.set("Conveyor-Dlq-Subject", msg.subject);
  try {
    await js.publish(`${NS}.dlq.worker`, msg.data, { headers: h, timeout: 5000 });
  } catch {
    return msg.nak(2000);
  }
  msg.ack();
  log("malformed task message parked on the DLQ", { reason });
}

// ---- step 1: one durable consumer per task served -----------------------------------------------
// Bind it, or create it with the documented config. Streams are Conveyor's to create
// (orchestrator, `conveyor topology apply`): wait for them rather than guess.
async function bindConsumer(jsm, stream, task) {
  const durable = `task:${QUEUE}:${task}`;
  for (let waited = 0; ; waited++) {
    try {
      await jsm.consumers.info(stream, durable);
      return durable;
    } catch (err) {
      const code = err.api_error?.err_code;
      if (code === 10059) {
        // stream not found
        if (waited % 10 === 0) log(`waiting for stream ${stream} (is the orchestrator running?)`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (code !== 10014) throw err; // 10014: consumer not found, so create it
      try {
        await jsm.consumers.add(stream, {
          durable_name: durable,
          filter_subject: `${NS}.task.${QUEUE}.${task}`,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(ACK_WAIT_S * 1000),
          max_deliver: -1, // the delivery limit is ours to enforce (step 4), not the server's
          max_ack_pending: 1000,
        });
        return durable;
      } catch (addErr) {
        if (addErr.api_error?.err_code !== 10148) throw addErr; // 10148: another worker won
      }
    }
  }
}

// ---- step 2: announce this worker ---------------------------------------------------------------
function heartbeat(js, tasks, state, load) {
  const h = headers();
  const id = `${WORKER}:heartbeat:${++heartbeat.count}`;
  h.set("ce-specversion", "1.0");
  h.set("ce-id", id);
  h.set("ce-source", `conveyor/worker/${WORKER}`);
  h.set("ce-type", "io.conveyor.worker.heartbeat");
  h.set("ce-time", new Date().toISOString());
  h.set("content-type", "application/json");
  const body = {
    worker: WORKER,
    host: os.hostname(),
    pid: process.pid,
    version: `conveyor-node-example 0.1.0 (node ${process.version})`,
    serves: Object.keys(tasks).map((task) => ({ queue: QUEUE, task })),
    concurrency: CONCURRENCY,
    in_flight: load.inFlight,
    isolated: load.isolated,
    started_at: STARTED_AT,
    interval_s: HEARTBEAT_S,
    state,
  };
  return js
    .publish(`${NS}.worker.${WORKER}`, JSON.stringify(body), {
      msgID: eventKey(`conveyor/worker/${WORKER}`, id),
      headers: h,
    })
    .catch((err) => log("heartbeat not published", { error: err.message }));
}
heartbeat.count = 0;

// ---- the loop -----------------------------------------------------------------------------------
export async function serve(tasks = TASKS) {
  // Reconnect forever once connected: a NATS restart is an outage to wait out, not an exit.
  const name = `conveyor-node-worker-${QUEUE}`;
  const nc = await connect({ servers: SERVERS, name, maxReconnectAttempts: -1 });
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const stream = `${NS.toUpperCase()}_TASKS`;
  const consumers = [];
  for (const task of Object.keys(tasks)) {
    consumers.push(await js.consumers.get(stream, await bindConsumer(jsm, stream, task)));
  }

  const inflight = new Map(); // job promise -> its message
  const suspects = []; // step 5: messages waiting to run alone
  let alone = 0; // 1 while a suspect runs alone
  let stopping = false;
  // Wakes whoever waits for a change: a job ended, a suspect queued, a stop.
  let wake;
  let changed = new Promise((resolve) => (wake = resolve));
  const notify = () => {
    wake();
    changed = new Promise((resolve) => (wake = resolve));
  };
  const load = () => ({ inFlight: inflight.size + suspects.length, isolated: alone });

  // Step 7: +WPI at a third of ack_wait for every message held (running or waiting to run alone),
  // or JetStream redelivers it to another worker. A lost one only risks a redelivery.
  const beat = setInterval(() => {
    for (const msg of [...inflight.values(), ...suspects.map((s) => s.msg)]) {
      try {
        msg.working();
      } catch {}
    }
  }, (ACK_WAIT_S * 1000) / 3);
  await heartbeat(js, tasks, "running", load());
  const announce = setInterval(() => heartbeat(js, tasks, "running", load()), HEARTBEAT_S * 1000);

  const start = (msg, job) => {
    const running = job
      .catch((err) => {
        log("task handling failed; handed back", { error: err.message });
        msg.nak(2000);
      })
      .finally(() => {
        inflight.delete(running);
        notify();
      });
    inflight.set(running, msg);
  };

  // Step 5: a suspect (delivered before, without a result) runs alone in this process: once
  // nothing else runs, and nothing new starts until it is done. If it kills the process, only it
  // comes back (and step 4 fails it once its deliveries are used up).
  const isolator = (async () => {
    while (!stopping || suspects.length) {
      if (!suspects.length || inflight.size) {
        await changed;
        continue;
      }
      if (stopping) break;
      const { msg } = suspects.shift();
      alone = 1;
      log("running a task alone: its previous delivery ended without a result", {
        delivered: msg.info.deliveryCount,
      });
      start(msg, handle(js, msg, tasks));
      await [...inflight.keys()][0];
      alone = 0;
      notify();
    }
  })();

  // Step 9: SIGTERM/SIGINT stop fetching; in-flight tasks get GRACE_S to finish.
  const stop = () => {
    if (!stopping) log("stopping: finishing in-flight tasks", { in_flight: inflight.size });
    stopping = true;
    notify();
  };
  process.on("SIGTERM", stop).on("SIGINT", stop);

  // Step 3: one fetch loop per consumer, together never holding more than CONCURRENCY messages.
  let reserved = 0;
  const fetchLoop = async (consumer) => {
    while (!stopping) {
      if (suspects.length || alone || inflight.size + reserved >= CONCURRENCY) {
        await changed; // room, or the suspect's turn is over
        continue;
      }
      reserved += 1;
      try {
        // A pull is never abandoned early on stop: messages the server already sent for it
        // would sit unacked for ack_wait; it expires within a second instead, and whatever
        // arrives after the stop is nak'ed below.
        const batch = await consumer.fetch({ max_messages: 1, expires: 1000 });
        for await (const msg of batch) {
          if (stopping) {
            msg.nak(); // no delay: another worker takes it at once
          } else if (msg.info.deliveryCount > 1 && msg.info.deliveryCount <= MAX_DELIVERIES) {
            suspects.push({ msg });
            notify();
          } else {
            start(msg, handle(js, msg, tasks));
          }
        }
      } catch (err) {
        if (stopping) break;
        log("fetch failed; retrying", { error: err.message });
        await new Promise((r) => setTimeout(r, 500));
      } finally {
        reserved -= 1;
      }
    }
  };
  const tasksServed = Object.keys(tasks).map((task) => `${QUEUE}/${task}`);
  log("node worker ready", { stream, serves: tasksServed.join(",") });
  await Promise.all(consumers.map(fetchLoop));

  // Step 9: wait for in-flight work within the grace period, hand back what is still running.
  await heartbeat(js, tasks, "draining", load());
  let timer;
  const grace = new Promise((r) => (timer = setTimeout(r, GRACE_S * 1000)));
  await Promise.race([Promise.allSettled(inflight.keys()), grace]);
  clearTimeout(timer);
  for (const msg of [...inflight.values(), ...suspects.map((s) => s.msg)]) msg.nak();
  log("node worker stopped", { handed_back: inflight.size + suspects.length });
  suspects.length = 0;
  notify();
  await isolator;
  clearInterval(beat);
  clearInterval(announce);
  await heartbeat(js, tasks, "stopped", { inFlight: 0, isolated: 0 });
  await nc.drain(); // flushes the acks and naks above before closing
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  serve().then(
    () => process.exit(0),
    (err) => {
      log("node worker failed", { error: err.stack ?? err });
      process.exit(1);
    },
  );
}
