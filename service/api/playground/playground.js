// The clipserve playground: plain JavaScript against the HTTP API, nothing loaded from anywhere
// else. The API key (when the server has keys) stays in this tab's sessionStorage and travels as
// an Authorization header on each fetch; it is never a cookie, so no other site's page can make
// the browser use it. Everything from the server is shown with textContent, never as HTML.
"use strict";

const API = "../v1"; // the page is served at <root>/ui/
const KEY = "clipserve.apiKey";
const $ = (id) => document.getElementById(id);
const state = { collections: [], thumbUrls: [] };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

class ApiError extends Error {}

// fetch with the key; an error answer becomes one sentence from our error shape
async function call(path, body, raw = false) {
  const init = body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const response = await fetch(API + path, init);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const err = (await response.json()).error;
      message = err.message + (err.items ? ": " + err.items.map((i) => i.message).join("; ") : "");
    } catch (_) { /* not our error shape */ }
    if (response.status === 401) message += " (enter an API key at the top)";
    const error = new ApiError(message);
    error.status = response.status;
    throw error;
  }
  return raw ? response : { body: await response.json(), headers: response.headers };
}

function fail(error) {
  status(error instanceof ApiError ? error.message : "error: " + error, true);
}

// --- models, collections, label sets --------------------------------------------------------
async function loadModels() {
  const { body } = await call("/models");
  const select = $("model");
  const previous = select.value;
  select.replaceChildren(...body.data.map((m) => new Option(`${m.id} (${m.family}, ${m.dimension}-d)`, m.id)));
  if (body.data.some((m) => m.id === previous)) select.value = previous;
}

async function loadCollections() {
  const { body } = await call("/collections");
  state.collections = (await Promise.all(body.collections.map(
    (name) => call("/collections/" + encodeURIComponent(name)).then((r) => r.body).catch(() => null),
  ))).filter(Boolean);
  showCollections();
}

function showCollections() {
  const model = $("model").value;
  const select = $("collection");
  const previous = select.value;
  const mine = state.collections.filter((c) => c.model === model);
  select.replaceChildren(...mine.map((c) => new Option(c.name, c.name)));
  if (mine.some((c) => c.name === previous)) select.value = previous;
  if (!mine.length) select.append(new Option(`no collection of ${model}`, ""));
  describeCollection();
}

function currentCollection() {
  return state.collections.find((c) => c.name === $("collection").value);
}

function describeCollection() {
  const c = currentCollection();
  $("collection-info").textContent = c
    ? `${c.count} points` + (c.config.thumbnail_size ? `, thumbnails ${c.config.thumbnail_size} px` : "")
    : "";
}

async function loadLabelSets() {
  const { body } = await call("/label-sets");
  const model = $("model").value;
  const select = $("zs-label-set");
  const previous = select.value;
  const sets = body.label_sets.filter((s) => s.model === model);
  select.replaceChildren(new Option("the box below", ""),
    ...sets.map((s) => new Option(`${s.name} (${s.count} labels)`, s.name)));
  if (sets.some((s) => s.name === previous)) select.value = previous;
}

async function refresh() {
  try {
    await loadModels();
    await Promise.all([loadCollections(), loadLabelSets()]);
    status(`${$("model").options.length} model(s), ${state.collections.length} collection(s)`);
  } catch (error) {
    fail(error);
  }
}

// --- images: choose, drop or paste --------------------------------------------------------
function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function imageInput(dropId, fileId, previewId, onImage) {
  const drop = $(dropId);
  const take = async (file) => {
    if (!file || !file.type.startsWith("image/")) return;
    const uri = await readImage(file);
    $(previewId).src = uri;
    $(previewId).hidden = false;
    onImage(uri);
  };
  $(fileId).addEventListener("change", (e) => take(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
  return take;
}

// --- search ---------------------------------------------------------------------------------
function typedValue(text) {
  // what Qdrant's match can hold: an integer, a bool, or a keyword ("7" in quotes: a string)
  const t = text.trim();
  if (/^-?\d+$/.test(t)) return Number(t);
  if (t === "true" || t === "false") return t === "true";
  if (/^".*"$/.test(t)) return t.slice(1, -1);
  return t;
}

function addFilterRow(key = "", value = "") {
  const row = el("div", "filter");
  const k = el("input"); k.placeholder = "payload key"; k.className = "filter-key"; k.value = key;
  const v = el("input"); v.placeholder = "value"; v.className = "filter-value"; v.value = value;
  const remove = el("button", "", "×"); remove.type = "button"; remove.title = "remove";
  remove.addEventListener("click", () => row.remove());
  row.append(k, v, remove);
  $("filters").append(row);
}

// key/value rows as Qdrant's own filter JSON
function filterJson() {
  const must = [...document.querySelectorAll("#filters .filter")]
    .map((row) => [row.querySelector(".filter-key").value.trim(), row.querySelector(".filter-value").value])
    .filter(([key]) => key)
    .map(([key, value]) => ({ key, match: { value: typedValue(value) } }));
  return must.length ? { must } : undefined;
}

async function search(query, summary) {
  const c = currentCollection();
  if (!c) return status("pick a collection first (create one with PUT /v1/collections/{name})", true);
  const body = { query, limit: Number($("limit").value) || 12 };
  const filter = filterJson();
  if (filter) body.filter = filter;
  status("searching…");
  try {
    const { body: answer } = await call(`/collections/${encodeURIComponent(c.name)}/search`, body);
    $("query-summary").textContent = `${answer.results.length} results for ${summary}` +
      (filter ? ` where ${JSON.stringify(filter)}` : "");
    showHits(c, answer.results);
    status("");
  } catch (error) {
    $("query-summary").textContent = "";
    showHits(c, []);
    fail(error);
  }
}

async function thumbnail(c, hit, box) {
  let src = null;
  if (c.config.thumbnail_size) {
    try {
      const path = `/collections/${encodeURIComponent(c.name)}/points/${encodeURIComponent(hit.id)}/thumbnail`;
      const response = await call(path, undefined, true);
      src = URL.createObjectURL(await response.blob()); // an <img> cannot send the key itself
      state.thumbUrls.push(src);
    } catch (_) { /* a text point has none */ }
  }
  const url = hit.payload && hit.payload.image_url;
  if (!src && typeof url === "string" && /^(https?:\/\/|\/|data:image\/)/.test(url)) src = url;
  if (!src) return;
  const img = el("img");
  img.alt = `point ${hit.id}`;
  img.src = src;
  box.replaceChildren(img);
}

function showHits(c, hits) {
  state.thumbUrls.forEach((u) => URL.revokeObjectURL(u));
  state.thumbUrls = [];
  $("results").replaceChildren(...hits.map((hit) => {
    const card = el("div", "hit");
    card.title = "click: more like this";
    card.dataset.id = String(hit.id);
    const box = el("div", "thumb", "no image");
    card.append(box, el("div", "score", hit.score.toFixed(4)), el("div", "id", String(hit.id)));
    if (hit.payload && Object.keys(hit.payload).length) {
      card.append(el("pre", "payload", JSON.stringify(hit.payload, null, 1)));
    }
    card.addEventListener("click", () => search({ id: hit.id }, `more like point ${hit.id}`));
    thumbnail(c, hit, box);
    return card;
  }));
}

// --- zero-shot ------------------------------------------------------------------------------
let zeroShotImage = null;

async function classify() {
  if (!zeroShotImage) return status("drop, choose or paste an image first", true);
  const body = { model: $("model").value, images: [zeroShotImage] };
  const set = $("zs-label-set").value;
  if (set) {
    body.label_set = set;
    body.top_k = 10;
  } else {
    body.labels = [...new Set($("zs-labels").value.split(/[\n,]/).map((l) => l.trim()).filter(Boolean))];
    if (!body.labels.length) return status("type some labels or pick a label set", true);
    body.top_k = Math.min(body.labels.length, 20);
  }
  status("classifying…");
  try {
    const { body: answer, headers: h } = await call("/classify", body);
    const unknown = Number(h.get("X-Unknown-Tokens") || 0);
    $("zs-info").textContent = `${answer.model}` +
      (unknown ? `: ${unknown} label word(s) unknown to this model score alike` : "");
    $("zs-results").replaceChildren(...answer.results[0].map(({ label, score }) => {
      const row = el("li", "bar");
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      track.append(fill);
      row.append(el("span", "label", label), track, el("span", "value", score.toFixed(4)));
      return row;
    }));
    status("");
  } catch (error) {
    fail(error);
  }
}

// --- wiring ---------------------------------------------------------------------------------
function activePanel() {
  return document.querySelector(".panel.active").id;
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); $("api-key").blur(); });
  $("api-key").addEventListener("change", (e) => {
    const key = e.target.value.trim();
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    refresh();
  });
  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
    document.querySelectorAll(".tab, .panel").forEach((n) => n.classList.remove("active"));
    tab.classList.add("active");
    $(tab.dataset.panel).classList.add("active");
  }));
  $("model").addEventListener("change", () => { showCollections(); loadLabelSets().catch(fail); });
  $("collection").addEventListener("change", describeCollection);
  $("add-filter").addEventListener("click", () => addFilterRow());
  addFilterRow();
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("query-text").value.trim();
    if (text) search({ text }, `"${text}"`);
    else status("type a text, or drop an image", true);
  });
  const searchImage = imageInput("query-drop", "query-file", "query-preview",
    (uri) => search({ image: uri }, "the image"));
  const zeroShot = imageInput("zs-drop", "zs-file", "zs-preview", (uri) => { zeroShotImage = uri; });
  $("classify-form").addEventListener("submit", (e) => { e.preventDefault(); classify(); });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    (activePanel() === "search-panel" ? searchImage : zeroShot)(item.getAsFile());
  });
  refresh();
});
