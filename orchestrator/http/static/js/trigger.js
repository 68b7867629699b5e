// The "Trigger run" dialog: a form generated from the workflow's input schema, prefilled with
// its defaults (or with a previous run's input for "Run again"), and a raw JSON editor.

import { get, post, enc, ApiError } from "./api.js";
import { el, clear } from "./util.js";

const dialog = () => document.getElementById("trigger-dialog");
let current = null; // { name, schema, dirtyJson }

export async function openTrigger({ workflow = null, input = null } = {}) {
  const d = dialog();
  const select = document.getElementById("trigger-workflow");
  hideError();
  let workflows = [];
  try { workflows = await get("/api/workflows"); } catch (err) { showError(err); }
  clear(select);
  if (!workflows.length) select.append(el("option", { value: "", text: "No workflows registered" }));
  for (const wf of workflows) select.append(el("option", { value: wf.name, text: `${wf.name}  (v${wf.latest_version})` }));
  const chosen = workflow || (workflows[0] && workflows[0].name);
  if (chosen) select.value = chosen;
  select.onchange = () => loadWorkflow(select.value, null);
  if (chosen) await loadWorkflow(chosen, input);
  if (!d.open) d.showModal();
  const first = d.querySelector("#trigger-fields input, #trigger-fields select, #trigger-fields textarea");
  (first || document.getElementById("trigger-submit")).focus();
}

async function loadWorkflow(name, input) {
  const fields = clear(document.getElementById("trigger-fields"));
  const description = document.getElementById("trigger-description");
  const json = document.getElementById("trigger-json");
  hideError();
  let detail;
  try { detail = await get(`/api/workflows/${enc(name)}`); } catch (err) { showError(err); return; }
  current = { name, schema: detail.input_schema || { properties: {} }, dirtyJson: false };
  description.textContent = detail.description || "";
  description.hidden = !detail.description;
  const props = current.schema.properties || {};
  const required = new Set(current.schema.required || []);
  const values = { ...defaults(current.schema), ...(input || {}) };
  for (const [key, prop] of Object.entries(props)) fields.append(field(key, prop, values[key], required.has(key)));
  if (!Object.keys(props).length) fields.append(el("p.muted.wide", { text: "This workflow takes no input." }));
  json.value = JSON.stringify(values, null, 2);
  json.oninput = () => { current.dirtyJson = true; };
  fields.oninput = () => { if (!current.dirtyJson) json.value = JSON.stringify(collect(), null, 2); };
}

function defaults(schema) {
  const out = {};
  for (const [k, p] of Object.entries(schema.properties || {})) if (p && "default" in p) out[k] = p.default;
  return out;
}

function kindOf(prop) {
  let t = prop.type;
  if (!t && Array.isArray(prop.anyOf)) t = (prop.anyOf.find((x) => x.type && x.type !== "null") || {}).type;
  if (Array.isArray(t)) t = t.find((x) => x !== "null");
  if (prop.enum) return "enum";
  return t || "json";
}

function field(key, prop, value, required) {
  const kind = kindOf(prop);
  const label = prop.title || key;
  const hint = prop.description ? el("span.hint", { text: prop.description }) : null;
  let input;
  if (kind === "boolean") {
    input = el("input", { type: "checkbox", name: key, checked: Boolean(value) });
    return el("label.field.checkbox", {}, input, el("span", { text: label }), hint);
  }
  if (kind === "enum") {
    input = el("select", { name: key }, prop.enum.map((v) => el("option", { value: JSON.stringify(v), text: String(v) })));
    if (value !== undefined) input.value = JSON.stringify(value);
  } else if (kind === "integer" || kind === "number") {
    input = el("input", { type: "number", name: key, step: kind === "integer" ? "1" : "any" });
    if (value !== undefined && value !== null) input.value = String(value);
  } else if (kind === "string") {
    input = el("input", { type: "text", name: key, autocomplete: "off" });
    if (value !== undefined && value !== null) input.value = String(value);
  } else {
    input = el("textarea", { name: key, rows: 3, spellcheck: false });
    input.value = value === undefined ? "" : JSON.stringify(value, null, 2);
  }
  input.dataset.kind = kind;
  const wide = kind === "json" || kind === "array" || kind === "object";
  return el(`label.field${wide ? ".wide" : ""}`, {},
    el("span", {}, label, required ? el("span.req", { text: " *" }) : null, el("span.hint", { text: `  ${kind}` })),
    input, hint);
}

function collect() {
  const out = {};
  for (const input of document.querySelectorAll("#trigger-fields [name]")) {
    const kind = input.dataset.kind;
    const raw = input.value;
    if (kind === "boolean") { out[input.name] = input.checked; continue; }
    if (raw === "") continue; // omitted: the workflow's default applies
    if (kind === "integer" || kind === "number") out[input.name] = Number(raw);
    else if (kind === "string") out[input.name] = raw;
    else { try { out[input.name] = JSON.parse(raw); } catch { out[input.name] = raw; } }
  }
  return out;
}

function showError(err) {
  const box = document.getElementById("trigger-error");
  clear(box);
  box.append(el("strong", { text: err.message || String(err) }));
  const problems = (err instanceof ApiError && err.problems) || [];
  if (problems.length) box.append(el("ul", {}, problems.map((p) => el("li", { text: p }))));
  box.hidden = false;
}

function hideError() { document.getElementById("trigger-error").hidden = true; }

export function installTrigger() {
  const d = dialog();
  d.querySelector("[data-close]").addEventListener("click", () => d.close());
  document.getElementById("trigger-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    hideError();
    let input;
    if (current.dirtyJson) {
      try { input = JSON.parse(document.getElementById("trigger-json").value || "{}"); } catch (err) {
        showError(new Error(`Input JSON is not valid: ${err.message}`)); return;
      }
    } else input = collect();
    const body = { input };
    const key = document.getElementById("trigger-key").value.trim();
    if (key) body.idempotency_key = key;
    const button = document.getElementById("trigger-submit");
    button.disabled = true;
    try {
      const accepted = await post(`/api/workflows/${enc(current.name)}/runs`, body);
      d.close();
      document.getElementById("trigger-key").value = "";
      location.hash = `#/runs/${accepted.run_id}`;
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });
}
