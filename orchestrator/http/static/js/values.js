// A run's or a node's input or output: pretty JSON, a large value cut short on the page with
// the whole of it one click away as a download.

import { download, enc, withParams } from "./api.js";
import { el, jsonView, toast } from "./util.js";

// What the page shows of a value; the download has all of it.
const SHOWN_CHARS = 20000;

/** `value` as highlighted JSON with a Download button; `node` for a node's (or child's). */
export function valueView(value, { runId, which, node = null }) {
  const summarised = value && typeof value === "object" && value.truncated === true && "bytes" in value;
  let text;
  try { text = JSON.stringify(value, null, 2); } catch { text = String(value); }
  const large = summarised || (text && text.length > SHOWN_CHARS);
  const name = `${runId}${node ? `-${node.replace(/[[\]]/g, "-")}` : ""}-${which}.json`;
  const save = el("button.btn.btn-small", {
    type: "button", text: "Download", title: "The whole value as a JSON file",
    onclick: () => download(withParams(`/api/runs/${enc(runId)}/values/${which}`, { node }), name).catch((err) => toast(err.message, "error")),
  });
  const note = large
    ? el("span.muted", { text: summarised ? `${value.type} of ${fmtBytes(value.bytes)}: too large to show here` : `${fmtBytes(text.length)}: shown in part` })
    : null;
  return el("div.value", { dataset: { value: which } },
    el("div.value-head", {}, note, el("span.spacer"), save),
    summarised ? null : jsonView(value, SHOWN_CHARS));
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
