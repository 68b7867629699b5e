// A Python traceback as a reader wants it: the exception first, then the frames of the user's own
// code, with the frames of Conveyor, the standard library and installed packages folded away
// (one click opens them), and the raw text, wrapped, for copying. A text that is not a Python
// traceback (another language's worker) is shown as it is.

import { el } from "./util.js";

// Where a frame's file is not the user's: installed packages, the standard library, Conveyor's
// worker machinery that calls the task. Paths only: the browser cannot know more.
const FRAMEWORK = [
  /[\\/](site|dist)-packages[\\/]/,
  /[\\/]lib[\\/]python\d[\d.]*[\\/]/,
  /^<frozen /,
  /[\\/]workers[\\/](attempt|runtime|context|task|logcapture)\.py$/,
];
const FRAME = /^ {2}File "(.+)", line (\d+), in (.+)$/;
const CHAINS = [
  "During handling of the above exception, another exception occurred:",
  "The above exception was the direct cause of the following exception:",
];

export const isFramework = (file) => FRAMEWORK.some((re) => re.test(file));

/** [{frames: [{file, line, func, code}], exception: "Type: message", chain}] or null. */
export function parseTraceback(text) {
  if (!text || !text.includes("Traceback (most recent call last):")) return null;
  const segments = [];
  let current = null, chain = null;
  for (const raw of text.replace(/\r\n?/g, "\n").split("\n")) {
    if (raw.startsWith("Traceback (most recent call last):")) {
      current = { frames: [], exception: [], chain };
      segments.push(current);
      chain = null;
      continue;
    }
    if (CHAINS.includes(raw.trim())) { chain = raw.trim(); continue; }
    if (!current) continue;
    const m = FRAME.exec(raw);
    if (m) { current.frames.push({ file: m[1], line: Number(m[2]), func: m[3], code: [] }); continue; }
    if (raw.startsWith("    ") && current.frames.length && !current.exception.length) {
      // The source line, and the carets under it (Python 3.11+): kept together with the frame.
      current.frames[current.frames.length - 1].code.push(raw.slice(4));
      continue;
    }
    if (raw.trim()) current.exception.push(raw);
  }
  if (!segments.length) return null;
  return segments.map((s) => ({ ...s, exception: s.exception.join("\n") }));
}

function frameEl(frame) {
  const name = frame.file.split(/[\\/]/).pop();
  return el("li.trace-frame", { title: frame.file },
    el("div", {}, el("span.trace-file", { text: `${name}:${frame.line}` }), el("span.muted", { text: ` in ${frame.func}` })),
    frame.code.length ? el("pre.trace-code", { text: frame.code.join("\n") }) : null);
}

function segmentEl(segment, label) {
  const mine = segment.frames.filter((f) => !isFramework(f.file));
  const theirs = segment.frames.filter((f) => isFramework(f.file));
  return el("div.trace-segment", {},
    label ? el("div.trace-chain.muted", { text: label }) : null,
    el("div.trace-exc", { text: segment.exception || "(no message)" }),
    // Most recent call first: where it went wrong leads.
    mine.length ? el("ol.trace-frames.user", {}, mine.slice().reverse().map(frameEl)) : null,
    theirs.length ? el("details.trace-framework", {},
      el("summary", { text: `${theirs.length} framework frame${theirs.length === 1 ? "" : "s"} (Conveyor, Python, packages)` }),
      el("ol.trace-frames", {}, theirs.slice().reverse().map(frameEl))) : null);
}

/** The traceback as a folded view, with the raw text one click away. */
export function tracebackView(text) {
  const segments = parseTraceback(text);
  const raw = el("pre.trace", { text });
  if (!segments) return el("div.trace-view", {}, raw);
  // The exception that ended the attempt (Python prints it last) comes first; what it was
  // raised from, or while handling, follows.
  const shown = segments.map((segment, i) => {
    const next = segments[i + 1];
    const label = !next ? null : next.chain === CHAINS[1] ? "Caused by" : "While handling";
    return segmentEl(segment, label);
  });
  return el("div.trace-view", {},
    shown.reverse(),
    el("details.trace-raw", {}, el("summary", { text: "Raw traceback" }), raw));
}
