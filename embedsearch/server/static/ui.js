// embedsearch web page: plain JavaScript, no framework, no network beyond this server.
// Every text from the server reaches the page through textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "embedsearch.apiKey";
const MODES = ["dense", "bm25", "hybrid"];
const FUSIONS = ["rrf", "convex", "dbsf"];
const SVG = "http://www.w3.org/2000/svg";
const NEIGHBOURS = 8;

const POINTS = 5000;  // default map sample size
const state = {
  collection: "", q: "", mode: "dense", fusion: "rrf", k: 10, where: "", view: "results", points: POINTS,
};
let hits = [];          // current results (ids in rank order)
let map = null;         // {collection, points, data, px, py, r, placed: Map} of the drawn map
let selected = null;    // {id, neighbours: [ids]} shown in the detail panel

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// ----------------------------------------------------------------------------- HTTP
async function api(path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "The server cannot be reached (" + e.message + ").");
  }
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (r.ok) return data;
  if (r.status === 401) {
    const had = Boolean(key);
    sessionStorage.removeItem(KEY_STORE);
    askKey(had ? "That key was not accepted; enter a key from the server's key list." : "");
  }
  throw new ApiError(r.status, messageOf(data, r));
}

function messageOf(data, r) {
  const err = data && data.error;
  if (!err) return `HTTP ${r.status} ${r.statusText}`;
  let msg = err.message || err.type;
  if (Array.isArray(err.details) && err.details.length) {
    msg += "\n" + err.details.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n");
  }
  return msg;
}

const col = (rest) => `collections/${encodeURIComponent(state.collection)}${rest || ""}`;

// ----------------------------------------------------------------------------- messages
function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

function setStatus(msg) { $("status").textContent = msg; }

function report(e) {
  if (e instanceof ApiError && e.status === 401) { showError(""); return; }
  showError(e.message || String(e));
  setStatus("");
}

// ----------------------------------------------------------------------------- auth
function askKey(note) {
  const form = $("auth");
  form.hidden = false;
  form.querySelector(".hint").textContent = note ||
    "Kept in this tab only (sessionStorage) and sent as a bearer token; never in the address.";
  $("apikey").focus();
}

$("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("apikey").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("apikey").value = "";
  $("auth").hidden = true;
  start();
});

// ----------------------------------------------------------------------------- URL state
function readUrl() {
  const p = new URLSearchParams(location.search);
  state.collection = p.get("collection") || "";
  state.q = p.get("q") || "";
  state.mode = MODES.includes(p.get("mode")) ? p.get("mode") : "dense";
  state.fusion = FUSIONS.includes(p.get("fusion")) ? p.get("fusion") : "rrf";
  const k = parseInt(p.get("k") || "10", 10);
  state.k = Number.isFinite(k) && k > 0 ? k : 10;
  state.where = p.get("where") || "";
  state.view = p.get("view") === "map" ? "map" : "results";
  const points = parseInt(p.get("points") || String(POINTS), 10);
  state.points = Number.isFinite(points) ? Math.min(20000, Math.max(2, points)) : POINTS;
  writeForm();
}

function writeUrl(push) {
  const p = new URLSearchParams();
  if (state.collection) p.set("collection", state.collection);
  if (state.q) p.set("q", state.q);
  if (state.mode !== "dense") p.set("mode", state.mode);
  if (state.mode === "hybrid") p.set("fusion", state.fusion);
  if (state.k !== 10) p.set("k", String(state.k));
  if (state.where) p.set("where", state.where);
  if (state.view === "map") p.set("view", "map");
  if (state.points !== POINTS) p.set("points", String(state.points));
  const url = "ui" + (p.toString() ? "?" + p.toString() : "");
  if (url === "ui" + location.search) return;
  (push ? history.pushState : history.replaceState).call(history, null, "", url);
}

function writeForm() {
  $("q").value = state.q;
  $("mode").value = state.mode;
  $("fusion").value = state.fusion;
  $("k").value = String(state.k);
  $("where").value = state.where;
  syncFusion();
  showView(state.view);
}

function readForm() {
  state.q = $("q").value.trim();
  state.mode = $("mode").value;
  state.fusion = $("fusion").value;
  state.k = parseInt($("k").value, 10) || 10;
  state.where = $("where").value.trim();
}

function syncFusion() { $("fusion-label").hidden = $("mode").value !== "hybrid"; }

// ----------------------------------------------------------------------------- collections
async function loadCollections() {
  const data = await api("collections");
  const names = data.collections.map((c) => c.name);
  const select = $("collection");
  select.replaceChildren();
  const first = new Option(names.length ? "choose…" : "no collections", "");
  first.disabled = true;
  select.add(first);
  for (const n of names) select.add(new Option(n, n));
  if (state.collection && !names.includes(state.collection)) {
    select.add(new Option(state.collection + " (not found)", state.collection));
  }
  if (!state.collection && names.length === 1) state.collection = names[0];
  select.value = state.collection;
  return names;
}

// "news · 20,000 docs" in the picker (info of each collection, fetched in parallel, in the
// background: the page does not wait for it).
function labelCounts(names) {
  for (const name of names) {
    api(`collections/${encodeURIComponent(name)}`).then((info) => {
      const opt = [...$("collection").options].find((o) => o.value === name);
      if (opt) opt.textContent = `${name} · ${info.count.toLocaleString()} docs`;
    }, () => {});
  }
}

async function loadInfo() {
  $("info").textContent = "";
  if (!state.collection) return false;
  const info = await api(col());
  const idx = info.index || {};
  const recall = idx.recall_at_10 != null ? `, recall@10 ${idx.recall_at_10.toFixed(3)}` : "";
  const model = info.model || {};
  $("info").textContent =
    `${info.count.toLocaleString()} documents · ${model.name || "?"} (${model.dim}-d) · ` +
    `${idx.kind || idx.resolved || "?"} index${recall}`;
  return true;
}

// ----------------------------------------------------------------------------- search
function parseWhere() {
  if (!state.where) return undefined;
  let where;
  try {
    where = JSON.parse(state.where);
  } catch (e) {
    throw new ApiError(0, `where is not valid JSON (${e.message}); write e.g. {"topic": "music"}.`);
  }
  if (where === null || typeof where !== "object" || Array.isArray(where)) {
    throw new ApiError(0, 'where must be a JSON object, e.g. {"year": {"$gte": 2020}}.');
  }
  return where;
}

async function search(push) {
  readForm();
  if (!state.collection) { showError("Choose a collection first."); return; }
  writeUrl(push);
  if (!state.q) { renderResults([]); setStatus(""); return; }
  showError("");
  const t0 = performance.now();
  setStatus("searching…");
  try {
    const where = parseWhere();
    let found;
    if (state.mode === "dense") {
      const body = { query: state.q, k: state.k };
      if (where) body.where = where;
      found = (await api(col("/search"), body)).hits;
    } else {
      const body = { query: state.q, k: state.k, mode: state.mode };
      if (state.mode === "hybrid") body.fusion = state.fusion;
      if (where) body.where = where;
      found = (await api(col("/retrieve"), body)).passages;
    }
    renderResults(found);
    const ms = Math.round(performance.now() - t0);
    setStatus(`${found.length} result${found.length === 1 ? "" : "s"} · ${state.mode}` +
      `${state.mode === "hybrid" ? " (" + state.fusion + ")" : ""} · ${ms} ms`);
  } catch (e) {
    report(e);
    renderResults([]);
  }
  placeHits();
}

const STOP = new Set(("a an and are as at be by can do does for from has have how i in is it its " +
  "of on or that the their this to was were what when where which who why will with you your").split(" "));

function terms(q) {
  const words = (q.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1 && !STOP.has(w));
  return [...new Set(words)];
}

function matchesTerm(word, ts) {
  const w = word.toLowerCase();
  return ts.some((t) => w === t || (t.length >= 3 && w.startsWith(t)) ||
    (w.length >= 4 && t.startsWith(w)));
}

// Text nodes with the query's words (and their inflections by prefix) wrapped in <mark>.
function highlighted(text, ts) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    if (!matchesTerm(m[0], ts)) continue;
    if (m.index > last) frag.append(text.slice(last, m.index));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    frag.append(mark);
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function metaList(meta, skip) {
  const ul = el("ul", "meta");
  for (const [k, v] of Object.entries(meta || {})) {
    if (skip && skip.has(k)) continue;
    const li = el("li");
    li.append(el("b", "", k + ": "), typeof v === "string" ? v : JSON.stringify(v));
    ul.append(li);
  }
  return ul;
}

const SPAN_KEYS = new Set(["source", "char_start", "char_end", "heading_path"]);
// Bookkeeping of ingested passages: shown in the document panel, not in the result list.
const PASSAGE_KEYS = new Set([...SPAN_KEYS, "content_hash", "chunker", "chunks", "tokens", "format"]);

function sourceOf(meta) {
  if (!meta || meta.source == null) return "";
  let s = String(meta.source);
  if (Array.isArray(meta.heading_path) && meta.heading_path.length) s += " § " + meta.heading_path.join(" > ");
  if (meta.char_start != null && meta.char_end != null) s += ` [${meta.char_start}:${meta.char_end}]`;
  return s;
}

function renderResults(found) {
  hits = found.map((h) => h.id);
  const list = $("results");
  list.replaceChildren();
  const ts = terms(state.q);
  found.forEach((h, i) => {
    const li = el("li", "result");
    li.tabIndex = 0;
    li.dataset.id = h.id;
    li.dataset.rank = String(i + 1);
    const head = el("div", "head");
    head.append(el("span", "rank", String(i + 1)), el("span", "score", "score " + Number(h.score).toFixed(4)),
      el("code", "id", h.id));
    for (const [stage, v] of Object.entries(h.scores || {})) {
      if (v != null && Object.keys(h.scores).length > 1) head.append(el("span", "score", `${stage} ${Number(v).toFixed(3)}`));
    }
    const src = sourceOf(h.metadata);
    if (src) head.append(el("span", "src", src));
    const text = el("p", "text");
    text.append(highlighted(h.text, ts));
    li.append(head, text);
    const meta = metaList(h.metadata, src ? PASSAGE_KEYS : null);
    if (meta.childElementCount) li.append(meta);
    list.append(li);
  });
  if (!found.length && state.q && !$("error").textContent) list.append(el("li", "empty", "No results."));
}

// ----------------------------------------------------------------------------- detail
async function openDetail(id) {
  const panel = $("detail");
  const body = $("detail-body");
  panel.hidden = false;
  $("main").classList.add("with-detail");
  if (window.matchMedia("(max-width: 720px)").matches) panel.scrollIntoView({ block: "start" });
  body.replaceChildren(el("p", "status", "loading…"));
  try {
    const doc = await api(col(`/documents/${encodeURIComponent(id)}?include_vector=true`));
    const near = await api(col("/search"), { vector: doc.vector, k: NEIGHBOURS, exclude: [id] });
    selected = { id, neighbours: near.hits.map((h) => h.id) };
    body.replaceChildren();
    const h2 = el("h2");
    h2.append(el("code", "id", doc.id));
    body.append(h2);
    const src = sourceOf(doc.metadata);
    if (src) body.append(el("p", "src", src));
    const full = el("p", "full");
    full.append(highlighted(doc.text, terms(state.q)));
    body.append(full, metaList(doc.metadata, src ? SPAN_KEYS : null));
    body.append(el("h3", "", "Nearest neighbours"));
    const ol = el("ol", "neighbours");
    for (const h of near.hits) {
      const li = el("li");
      li.tabIndex = 0;
      li.dataset.id = h.id;
      li.append(el("span", "score", Number(h.score).toFixed(3) + " "), el("code", "id", h.id),
        " " + h.text.slice(0, 160) + (h.text.length > 160 ? "…" : ""));
      ol.append(li);
    }
    body.append(ol);
  } catch (e) {
    selected = null;
    body.replaceChildren(el("p", "error", e.message));
  }
  markHits();
}

function closeDetail() {
  $("detail").hidden = true;
  $("main").classList.remove("with-detail");
  selected = null;
  markHits();
}

$("detail-close").addEventListener("click", closeDetail);
$("detail-body").addEventListener("click", (ev) => {
  const li = ev.target.closest("li[data-id]");
  if (li) openDetail(li.dataset.id);
});
$("detail-body").addEventListener("keydown", (ev) => {
  const li = ev.target.closest("li[data-id]");
  if (li && ev.key === "Enter") openDetail(li.dataset.id);
});

// ----------------------------------------------------------------------------- map
async function loadMap() {
  if (!state.collection) return;
  if (map && map.collection === state.collection && map.points === state.points) {
    drawMap();
    return;
  }
  $("map").replaceChildren();
  $("legend").replaceChildren();
  $("map-caption").textContent = "computing the map: a 2-D projection and clusters of up to " +
    "5,000 documents (the first time can take a minute on a large collection; then it is cached)…";
  try {
    const data = await api(col("/map"), { max_points: state.points });
    map = { collection: state.collection, points: state.points, data, placed: new Map() };
    drawMap();
  } catch (e) {
    $("map-caption").textContent = "";
    report(e);
  }
}

// The SVG is drawn in CSS pixels (viewBox = its own size), so dots and labels keep their size
// on a phone; it is redrawn when the window is resized.
function drawMap() {
  const { data } = map;
  const svg = $("map");
  const narrow = window.matchMedia("(max-width: 720px)").matches;
  drawnWidth = svg.parentElement.clientWidth;
  const W = Math.max(300, Math.round(drawnWidth || 1000));
  const H = Math.round(narrow ? W * 1.05 : Math.min(W * 0.62, window.innerHeight * 0.72));
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pad = 14;
  const xs = data.points.map((p) => p.x), ys = data.points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const s = Math.min((W - 2 * pad) / (x1 - x0 || 1), (H - 2 * pad) / (y1 - y0 || 1));
  const ox = (W - s * (x1 - x0)) / 2, oy = (H - s * (y1 - y0)) / 2;
  const px = (x) => ox + s * (x - x0), py = (y) => H - (oy + s * (y - y0));
  const n = data.points.length;
  const r = n <= 1000 ? 4 : n <= 5000 ? 2.5 : 1.6;
  Object.assign(map, { px, py, r });
  svg.replaceChildren();
  const dots = document.createElementNS(SVG, "g");
  dots.id = "map-dots";
  data.points.forEach((p, i) => {
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("class", "pt");
    c.setAttribute("cx", px(p.x).toFixed(1));
    c.setAttribute("cy", py(p.y).toFixed(1));
    c.setAttribute("r", r);
    c.setAttribute("fill", data.legend[p.c] ? data.legend[p.c].color : "#888");
    c.dataset.id = p.id;
    c.dataset.i = i;
    dots.append(c);
  });
  const top = document.createElementNS(SVG, "g");
  top.id = "map-top";
  const labels = document.createElementNS(SVG, "g");
  svg.append(dots, labels, top); // results and the selection above the labels
  placeLabels(labels, data, px, py, W);
  $("map-caption").textContent = data.caption;
  const legend = $("legend");
  legend.replaceChildren();
  for (const entry of data.legend) {
    const li = el("li");
    const sw = el("span", "swatch");
    sw.style.background = entry.color;
    li.append(sw, `${entry.label} (${entry.size})`);
    legend.append(li);
  }
  placeHits();
}

// Results that are not in the drawn sample are placed near their nearest sampled points by
// the server (POST /map/place) and drawn dashed.
async function placeHits() {
  if (map && hits.length) {
    const drawn = new Set(map.data.points.map((p) => p.id));
    const missing = hits.filter((id) => !drawn.has(id) && !map.placed.has(id));
    if (missing.length) {
      const want = map;
      try {
        const r = await api(col("/map/place"), { max_points: want.points, ids: missing });
        for (const p of r.points) want.placed.set(p.id, p);
      } catch (_) { /* the caption says how many results are missing */ }
    }
  }
  markHits();
}

// Cluster labels at each cluster's median point, biggest clusters first; a label that would
// overlap one already placed moves up or down a line, or is left out (the legend has it).
function placeLabels(group, data, px, py, W) {
  const n = data.points.length;
  const order = data.legend.map((e, i) => i).sort((a, b) => data.legend[b].size - data.legend[a].size);
  const boxes = [];
  const overlaps = (b) => boxes.some((o) => b.x < o.x + o.width + 4 && o.x < b.x + b.width + 4 &&
    b.y < o.y + o.height && o.y < b.y + b.height);
  for (const ci of order) {
    const entry = data.legend[ci];
    if (entry.label === "other" || entry.label === "(missing)" || data.legend.length < 2) continue;
    const pts = data.points.filter((p) => p.c === ci);
    if (pts.length < Math.max(3, n / 200)) continue;
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("class", "label");
    t.setAttribute("text-anchor", "middle");
    t.textContent = shortLabel(entry.label);
    const x = px(median(pts.map((p) => p.x))), y = py(median(pts.map((p) => p.y)));
    group.append(t);
    let placed = false;
    for (const dy of [0, -16, 16, -32, 32]) {
      t.setAttribute("x", x.toFixed(1));
      t.setAttribute("y", (y + dy).toFixed(1));
      let b = t.getBBox();
      const shift = b.x < 2 ? 2 - b.x : b.x + b.width > W - 2 ? W - 2 - b.x - b.width : 0;
      if (shift) { t.setAttribute("x", (x + shift).toFixed(1)); b = t.getBBox(); }
      if (!overlaps(b)) { boxes.push(b); placed = true; break; }
    }
    if (!placed) t.remove();
  }
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function shortLabel(label) { return label.length > 32 ? label.slice(0, 31) + "…" : label; }

// Outline the current results (and the selected document with its neighbours) on the map.
function markHits() {
  const svg = $("map");
  const top = $("map-top");
  if (!map || !top) return;
  top.replaceChildren();
  const byId = new Map();
  svg.querySelectorAll("circle.pt").forEach((c) => byId.set(c.dataset.id, c));
  const marks = [];
  hits.forEach((id) => marks.push([id, "hit"]));
  if (selected) {
    selected.neighbours.forEach((id) => marks.push([id, "nb"]));
    marks.push([selected.id, "sel"]);
  }
  const dim = marks.length > 0;
  svg.querySelectorAll("circle.pt").forEach((c) => c.classList.toggle("dim", dim));
  let shown = 0, placed = 0;
  for (const [id, cls] of marks) {
    let c = byId.get(id);
    const p = c ? null : map.placed.get(id);
    if (!c && !p) continue;
    if (c) {
      c = c.cloneNode(false);
      c.setAttribute("class", "pt " + cls);
    } else {
      c = document.createElementNS(SVG, "circle");
      c.setAttribute("class", `pt ${cls} placed`);
      c.setAttribute("cx", map.px(p.x).toFixed(1));
      c.setAttribute("cy", map.py(p.y).toFixed(1));
      c.setAttribute("fill", map.data.legend[p.c] ? map.data.legend[p.c].color : "#888");
      c.dataset.id = id;
      c.dataset.placed = "1";
      placed += cls === "hit" ? 1 : 0;
    }
    c.setAttribute("r", map.r + (cls === "sel" ? 5 : 3.5));
    top.append(c);
    if (cls === "hit") shown += 1;
  }
  const cap = $("map-caption");
  cap.dataset.hitsShown = String(shown);
  cap.textContent = map.data.caption;
  if (hits.length) {
    let note = shown === hits.length ? `all ${shown} results outlined` :
      `${shown} of ${hits.length} results outlined`;
    if (placed) note += ` (${placed} not in the sample: placed near their nearest sampled points, dashed)`;
    cap.append(" · ", el("b", "", note));
  }
}

function showTip(ev) {
  const c = ev.target.closest("circle");
  const tip = $("tooltip");
  if (!c || !map) { tip.hidden = true; return; }
  const p = c.dataset.placed ? map.placed.get(c.dataset.id) : map.data.points[Number(c.dataset.i)];
  if (!p) { tip.hidden = true; return; }
  const label = map.data.legend[p.c] ? map.data.legend[p.c].label : "";
  tip.replaceChildren(el("code", "", p.id), " · " + label, el("br"), p.text + (p.text.length >= 240 ? "…" : ""));
  const box = $("map").parentElement.getBoundingClientRect();
  const x = ev.clientX - box.left, y = ev.clientY - box.top;
  tip.style.left = "0px";
  tip.style.top = "0px";
  tip.hidden = false;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = (x + 14 + w <= box.width ? x + 14 : Math.max(2, x - 14 - w)) + "px";
  tip.style.top = (y + 16 + h <= box.height ? y + 16 : Math.max(2, y - 12 - h)) + "px";
}

// Redraw when the map's box changes width (window resized, document panel opened or closed).
let drawnWidth = 0, resizeTimer = 0;
new ResizeObserver(() => {
  const w = $("map").parentElement.clientWidth;
  if (!w || w === drawnWidth) return;
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (map && !$("map-view").hidden) drawMap(); }, 100);
}).observe($("map").parentElement);

$("map").addEventListener("mousemove", showTip);
$("map").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
$("map").addEventListener("click", (ev) => {
  const c = ev.target.closest("circle");
  if (c) { $("tooltip").hidden = true; openDetail(c.dataset.id); }
});

// ----------------------------------------------------------------------------- views and keys
function showView(view) {
  state.view = view;
  $("results-view").hidden = view !== "results";
  $("map-view").hidden = view !== "map";
  $("tab-results").setAttribute("aria-pressed", String(view === "results"));
  $("tab-map").setAttribute("aria-pressed", String(view === "map"));
}

$("tab-results").addEventListener("click", () => { showView("results"); writeUrl(true); });
$("tab-map").addEventListener("click", () => { showView("map"); writeUrl(true); loadMap(); });
$("mode").addEventListener("change", () => { syncFusion(); if ($("q").value.trim()) search(true); });
$("fusion").addEventListener("change", () => { if ($("q").value.trim()) search(true); });
$("search").addEventListener("submit", (ev) => { ev.preventDefault(); search(true); });

$("collection").addEventListener("change", async () => {
  state.collection = $("collection").value;
  map = null;
  closeDetail();
  renderResults([]);
  showError("");
  try {
    await loadInfo();
    if ($("q").value.trim()) await search(true); else writeUrl(true);
    if (state.view === "map") loadMap();
  } catch (e) { report(e); }
});

$("results").addEventListener("click", (ev) => {
  const li = ev.target.closest("li.result");
  if (li) openDetail(li.dataset.id);
});

$("results").addEventListener("keydown", (ev) => {
  const li = ev.target.closest("li.result");
  if (!li) return;
  const items = [...$("results").querySelectorAll("li.result")];
  const i = items.indexOf(li);
  let next = null;
  if (ev.key === "ArrowDown" || ev.key === "j") next = items[Math.min(i + 1, items.length - 1)];
  else if (ev.key === "ArrowUp" || ev.key === "k") next = i === 0 ? $("q") : items[i - 1];
  else if (ev.key === "Home") next = items[0];
  else if (ev.key === "End") next = items[items.length - 1];
  else if (ev.key === "Enter") { openDetail(li.dataset.id); ev.preventDefault(); return; }
  if (next) { ev.preventDefault(); next.focus(); }
});

$("q").addEventListener("keydown", (ev) => {
  const first = $("results").querySelector("li.result");
  if (ev.key === "ArrowDown" && first) { ev.preventDefault(); first.focus(); }
});

document.addEventListener("keydown", (ev) => {
  const typing = ev.target.closest("input, textarea, select");
  if (ev.key === "/" && !typing) { ev.preventDefault(); $("q").focus(); $("q").select(); }
  else if (ev.key === "Escape") { $("tooltip").hidden = true; if (!typing) closeDetail(); }
});

window.addEventListener("popstate", () => { readUrl(); start(); });

// ----------------------------------------------------------------------------- start
async function start() {
  showError("");
  let names;
  try {
    names = await loadCollections();
  } catch (e) { report(e); return; }
  if (state.collection) {
    // The search does not wait for the collection's info line: both go out at once.
    const info = loadInfo().catch((e) => { report(e); renderResults([]); return false; });
    if (state.q) await search(false);
    if (await info && state.view === "map") loadMap();
  }
  labelCounts(names.slice(0, 50));
}

readUrl();
start();
