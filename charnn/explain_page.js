// charnn explain's page: reads the JSON block written by charnn/explain_views.py and draws the views.
// Plain DOM and SVG, no library: the page must open from disk with no network.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const chars = D.ids.map((i) => D.vocab[i]);
const N = chars.length;
const SVG = "http://www.w3.org/2000/svg";
const LAYER_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

function shown(ch) { return ch === "\n" ? "\u21b5" : ch === "\t" ? "\u21e5" : ch; }
function fmt(x, d = 3) { return x === null || x === undefined ? "\u2013" : x.toFixed(d); }
function esc(s) { return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
function quoted(ch) { return ch === "\n" ? "\\n" : ch === "\t" ? "\\t" : ch === " " ? "space" : ch; }

// One span per character; a newline shows as a mark and then breaks the line.
function buildText(container) {
  const frag = document.createDocumentFragment(), spans = [];
  for (let t = 0; t < N; t++) {
    const s = document.createElement("span");
    s.textContent = shown(chars[t]);
    s.dataset.t = t;
    if (chars[t] === "\n" || chars[t] === "\t") s.className = "nl";
    spans.push(s);
    frag.appendChild(s);
    if (chars[t] === "\n") frag.appendChild(document.createElement("br"));
  }
  container.appendChild(frag);
  return spans;
}

// Colours. heat: x in [0, 1] from white to red; diverging: v in [-1, 1], blue - white - red.
function mix(a, b, x) { return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * x)).join(",")})`; }
function heat(x) {
  x = Math.max(0, Math.min(1, x));
  return x < 0.5 ? mix([255, 255, 255], [253, 200, 90], x * 2) : mix([253, 200, 90], [215, 25, 28], (x - 0.5) * 2);
}
function diverging(v) {
  v = Math.max(-1, Math.min(1, v));
  return v < 0 ? mix([255, 255, 255], [33, 102, 172], -v) : mix([255, 255, 255], [178, 24, 43], v);
}

// ---- header and tabs
const tot = D.totals;
$("meta").textContent = `${D.checkpoint}: ${D.model.kind}, ${D.model.layers} x ${D.model.hidden}; ` +
  `${N.toLocaleString()} characters of ${D.file} from character ${D.offset.toLocaleString()}` +
  (D.skipped ? ` (${D.skipped} outside the vocabulary left out: ${D.unknown})` : "");
const views = ["surprisal", "neurons", "finder", "gates", "training"];
function showView(name) {
  for (const v of views) {
    $("view-" + v).hidden = v !== name;
    $("tab-" + v).classList.toggle("active", v === name);
  }
  $("tip").hidden = true;
}
for (const v of views) $("tab-" + v).addEventListener("click", () => showView(v));

// ---- Surprisal
const HEAT_MAX = 10;  // bits at which the shade is darkest
const sSpans = buildText($("text-surprisal"));
sSpans.forEach((s, t) => { s.style.backgroundColor = t === 0 ? "#eee" : heat(D.bits[t] / HEAT_MAX); });
$("totals").innerHTML = `Bits per character on these ${tot.predicted.toLocaleString()} characters: ` +
  `<b>model ${fmt(tot.model)}</b>, ${tot.order}-gram ${fmt(tot.ngram)}, unigram ${fmt(tot.unigram)}.` +
  (tot.val_model !== null || tot.val_ngram !== null ?
    ` On the run's validation split: model ${fmt(tot.val_model)} (best), ${tot.order}-gram ${fmt(tot.val_ngram)}, ` +
    `unigram ${fmt(tot.val_unigram)}.` : "") + (D.ngram_note ? ` <small>(${esc(D.ngram_note)})</small>` : "");

function showTip(span) {
  const t = +span.dataset.t, tip = $("tip");
  if (t === 0) {
    tip.innerHTML = "The first character is only read, never predicted.";
  } else {
    const guesses = D.top[t].map((id, k) =>
      `<li class="guess${id === D.ids[t] ? " hit" : ""}">${esc(quoted(D.vocab[id]))} ${(100 * D.top_p[t][k]).toFixed(1)}%</li>`);
    tip.innerHTML = `<b>${esc(quoted(chars[t]))}</b> at ${t}: ${fmt(D.bits[t], 2)} bits` +
      (D.ngram ? ` (${D.totals.order}-gram: ${fmt(D.ngram[t], 2)} bits)` : "") +
      `<br>the model's 5 guesses here:<ol>${guesses.join("")}</ol>`;
  }
  const r = span.getBoundingClientRect();
  tip.style.left = `${window.scrollX + r.left}px`;
  tip.style.top = `${window.scrollY + r.bottom + 4}px`;
  tip.hidden = false;
}
for (const ev of ["mouseover", "click"]) {
  $("text-surprisal").addEventListener(ev, (e) => { if (e.target.dataset.t !== undefined) showTip(e.target); });
}
$("text-surprisal").addEventListener("mouseleave", () => { $("tip").hidden = true; });

// ---- Neurons: activations arrive quantised, one base64 character a value, unit by unit
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LEVEL = new Int8Array(128);
for (let i = 0; i < B64.length; i++) LEVEL[B64.charCodeAt(i)] = i;
function activation(layer, channel, unit) {  // Float32Array (N,)
  const a = D.acts[`l${layer}.${channel}`], [lo, hi] = a.range, out = new Float32Array(N);
  for (let t = 0; t < N; t++) out[t] = lo + LEVEL[a.q.charCodeAt(unit * N + t)] * (hi - lo) / (D.levels - 1);
  return out;
}
const nSpans = buildText($("text-neurons"));
const cur = { layer: 0, channel: D.channels.includes("c") ? "c" : "h", unit: 0 };
for (let l = 0; l < D.model.layers; l++) $("layer").add(new Option(`${l}`, l));
for (const c of D.channels) $("channel").add(new Option(D.channel_names[c], c));
$("unit").max = D.model.hidden - 1;
function renderUnit() {
  $("layer").value = cur.layer;
  $("channel").value = cur.channel;
  $("unit").value = cur.unit;
  const a = activation(cur.layer, cur.channel, cur.unit), [lo, hi] = D.acts[`l${cur.layer}.${cur.channel}`].range;
  const mid = (lo + hi) / 2, half = (hi - lo) / 2;
  let sum = 0, min = Infinity, max = -Infinity;
  for (let t = 0; t < N; t++) {
    nSpans[t].style.backgroundColor = diverging((a[t] - mid) / half);
    nSpans[t].title = a[t].toFixed(2);
    sum += a[t]; min = Math.min(min, a[t]); max = Math.max(max, a[t]);
  }
  $("unit-stats").textContent = `unit ${cur.unit} of ${D.model.hidden}: mean ${fmt(sum / N, 2)}, ` +
    `from ${fmt(min, 2)} to ${fmt(max, 2)} (scale ${lo} to ${hi})`;
}
function setUnit(layer, channel, unit) {
  cur.layer = layer; cur.channel = channel;
  cur.unit = ((unit % D.model.hidden) + D.model.hidden) % D.model.hidden;
  renderUnit();
}
$("prev").addEventListener("click", () => setUnit(cur.layer, cur.channel, cur.unit - 1));
$("next").addEventListener("click", () => setUnit(cur.layer, cur.channel, cur.unit + 1));
$("layer").addEventListener("change", () => setUnit(+$("layer").value, cur.channel, cur.unit));
$("channel").addEventListener("change", () => setUnit(cur.layer, $("channel").value, cur.unit));
$("unit").addEventListener("change", () => setUnit(cur.layer, cur.channel, Math.trunc(+$("unit").value) || 0));
document.addEventListener("keydown", (e) => {
  if ($("view-neurons").hidden || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  if (e.key === "ArrowRight" || e.key === "j") setUnit(cur.layer, cur.channel, cur.unit + 1);
  else if (e.key === "ArrowLeft" || e.key === "k") setUnit(cur.layer, cur.channel, cur.unit - 1);
});
renderUnit();

// ---- Finder
(function finder() {
  const names = Object.keys(D.found);
  if (!names.length) { $("finder-tables").textContent = "No pattern varies over the characters shown."; return; }
  for (const name of names) {
    const h = document.createElement("h3");
    h.textContent = name;
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>rank</th><th>layer</th><th>shows</th><th>unit</th><th>r</th><th></th></tr></thead>";
    const body = document.createElement("tbody");
    D.found[name].forEach((f, k) => {
      const tr = document.createElement("tr");
      tr.className = "found";
      tr.innerHTML = `<td>${k + 1}</td><td>${f.layer}</td><td>${esc(D.channel_names[f.channel])}</td><td>${f.unit}</td>` +
        `<td>${f.r.toFixed(3)}</td><td style="text-align:left"><span class="bar${f.r < 0 ? " neg" : ""}" ` +
        `style="width:${Math.round(Math.abs(f.r) * 120)}px"></span></td>`;
      tr.addEventListener("click", () => { setUnit(f.layer, f.channel, f.unit); showView("neurons"); });
      body.appendChild(tr);
    });
    table.appendChild(body);
    $("finder-tables").append(h, table);
  }
})();

// ---- small SVG helpers
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function label(parent, x, y, text, anchor = "middle") { el("text", { x, y, "text-anchor": anchor }, parent).textContent = text; }

// ---- Gates: one panel per gate, x left-saturated fraction, y right-saturated fraction
(function gates() {
  const keys = Object.keys(D.saturation);
  if (!keys.length) { $("gates-panels").textContent = "A plain RNN has no gates."; return; }
  const legend = document.createElement("p");
  legend.className = "legend";
  for (let l = 0; l < D.model.layers; l++) {
    legend.innerHTML += `<span><span class="swatch" style="background:${LAYER_COLOURS[l % 6]}"></span>layer ${l}</span>`;
  }
  const panels = document.createElement("div");
  panels.className = "panels";
  const gateNames = [...new Set(keys.map((k) => k.split(".")[1]))];
  const S = 240, P = 36;  // panel size, padding
  for (const g of gateNames) {
    const svg = el("svg", { width: S + P + 10, height: S + P + 24, class: "gate-panel" });
    label(svg, P + S / 2, 14, D.channel_names[g]);
    const x = (v) => P + v * S, y = (v) => 20 + S - v * S;
    el("rect", { x: P, y: 20, width: S, height: S, fill: "none", stroke: "#999" }, svg);
    el("line", { x1: x(0), y1: y(1), x2: x(1), y2: y(0), stroke: "#ddd" }, svg);  // left + right = 1
    for (const v of [0, 0.5, 1]) { label(svg, x(v), 20 + S + 14, v); label(svg, P - 4, y(v) + 4, v, "end"); }
    label(svg, P + S / 2, 20 + S + 30, "fraction left-saturated (< 0.1)");
    for (let l = 0; l < D.model.layers; l++) {
      const s = D.saturation[`l${l}.${g}`];
      s.left.forEach((lv, u) => {
        el("circle", { cx: x(lv), cy: y(s.right[u]), r: 2.5, fill: LAYER_COLOURS[l % 6], "fill-opacity": 0.55 }, svg)
          .appendChild(document.createElementNS(SVG, "title")).textContent = `layer ${l} unit ${u}`;
      });
    }
    panels.appendChild(svg);
  }
  $("gates-panels").append(legend, panels, Object.assign(document.createElement("p"),
    { textContent: "y: fraction right-saturated (> 0.9). A dot near the top is a gate almost always open, near the right one almost always shut." }));
})();

// ---- Training curves
function training(by) {
  const box = $("training-curves");
  box.innerHTML = "";
  const tr = D.training.train, va = D.training.val;
  if (!tr.length && !va.length) { box.textContent = "No metrics.jsonl beside the checkpoint: nothing to draw."; return; }
  const xi = by === "minutes" ? 1 : 0, xs = (r) => (xi ? r[1] / 60 : r[0]);
  const W = 680, H = 340, P = 48;
  const all = tr.concat(va), refs = [[tot.val_ngram, `${tot.order}-gram`], [tot.val_unigram, "unigram"]].filter((r) => r[0] !== null);
  const x1 = Math.max(...all.map(xs)) || 1;
  const ys = all.map((r) => r[2]).concat(refs.map((r) => r[0]));
  const y0 = Math.min(...ys) - 0.1, y1 = Math.max(...ys) + 0.1;
  const X = (v) => P + (v / x1) * (W - P - 10), Y = (v) => 10 + (1 - (v - y0) / (y1 - y0)) * (H - P - 10);
  const svg = el("svg", { width: W, height: H, id: "training-chart" });
  el("rect", { x: P, y: 10, width: W - P - 10, height: H - P - 10, fill: "none", stroke: "#999" }, svg);
  for (let k = 0; k <= 4; k++) {
    const v = y0 + (k / 4) * (y1 - y0);
    label(svg, P - 4, Y(v) + 4, v.toFixed(2), "end");
    label(svg, X((k / 4) * x1), H - P + 16, (k / 4 * x1).toFixed(xi ? 1 : 0), k === 4 ? "end" : "middle");
  }
  label(svg, P + (W - P) / 2, H - 8, by === "minutes" ? "minutes of training" : "step");
  label(svg, 4, H - P + 16, "bits", "start");
  for (const [v, name] of refs) {
    el("line", { x1: P, x2: W - 10, y1: Y(v), y2: Y(v), stroke: "#888", "stroke-dasharray": "5 4" }, svg);
    label(svg, W - 14, Y(v) - 4, `${name} ${v.toFixed(2)}`, "end");
  }
  const path = (rows, colour, cls) => {
    if (!rows.length) return;
    el("polyline", { points: rows.map((r) => `${X(xs(r))},${Y(r[2])}`).join(" "), fill: "none", stroke: colour,
      "stroke-width": 1.5, class: cls }, svg);
  };
  path(tr, "#6a8fc8", "train-line");
  path(va, "#c0392b", "val-line");
  for (const r of va) el("circle", { cx: X(xs(r)), cy: Y(r[2]), r: 3, fill: "#c0392b" }, svg);
  box.appendChild(svg);
  box.appendChild(Object.assign(document.createElement("p"), { className: "legend",
    innerHTML: '<span style="color:#6a8fc8">\u2014 training loss</span><span style="color:#c0392b">\u2014\u25cf validation loss</span>' }));
}
$("x-steps").addEventListener("click", () => training("steps"));
$("x-minutes").addEventListener("click", () => training("minutes"));
training("steps");

// page.html#neurons (or any view's name) opens on that view
showView(views.includes(location.hash.slice(1)) ? location.hash.slice(1) : "surprisal");
