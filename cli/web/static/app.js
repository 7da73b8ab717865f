// jrsearch search page: no build step, no dependencies. Every value from the server is
// inserted as text (textContent / attributes), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let results = [];
let retry = null; // the last search, run again after a login

// The filter panel's fields, each sent as the API's parameter of the same name.
const FILTERS = ["under", "glob", "after", "before", "near", "camera"];

function options() {
  const params = new URLSearchParams({ kind: $("kind").value, top_k: $("top_k").value || "24" });
  for (const name of FILTERS) {
    if ($(name).value.trim()) params.set(name, $(name).value.trim());
  }
  return params;
}

// A combined query (issue 24): "more like this" an item (like, like_at, like_line) and terms added
// or subtracted as rclip writes them ([W:]words, an image URL, like:ID[@S]), shown as removable chips
// and kept in the URL beside q.
let like = null; // { id, at, line, name }
let terms = []; // { sign: "add" | "subtract", text }

function queryParams() {
  const params = new URLSearchParams();
  const q = $("q").value.trim();
  if (q) params.set("q", q);
  if (like) {
    params.set("like", like.id);
    if (like.at != null) params.set("like_at", like.at);
    if (like.line != null) params.set("like_line", like.line);
  }
  for (const term of terms) params.append(term.sign, term.text);
  return params;
}

function hasQuery(params = queryParams()) {
  return params.has("q") || params.has("like") || params.has("add");
}

function readTerms(params) {
  const id = params.get("like");
  like = id && /^\d+$/.test(id) ? { id, at: params.get("like_at"), line: params.get("like_line"), name: `item ${id}` } : null;
  terms = [...params.getAll("add").map((text) => ({ sign: "add", text })),
           ...params.getAll("subtract").map((text) => ({ sign: "subtract", text }))];
  showTerms();
}

function chip(label, remove) {
  const li = document.createElement("li");
  li.className = "chip";
  const text = document.createElement("span");
  text.textContent = label;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "×";
  button.setAttribute("aria-label", `Remove ${label}`);
  button.addEventListener("click", () => { remove(); showTerms(); searchText(); });
  li.append(text, button);
  return li;
}

function showTerms() {
  const chips = [];
  if (like) {
    const where = like.at != null ? ` at ${seconds(Number(like.at))}` : like.line != null ? ` line ${like.line}` : "";
    chips.push(chip(`like ${like.name}${where}`, () => { like = null; }));
  }
  for (const term of terms) {
    chips.push(chip(`${term.sign === "add" ? "+" : "−"} ${term.text}`, () => { terms = terms.filter((t) => t !== term); }));
  }
  $("terms").replaceChildren(...chips);
}

function addTerm(sign) {
  const text = $("term").value.trim();
  if (!text) return;
  terms.push({ sign, text });
  $("term").value = "";
  showTerms();
  searchText();
}

function moreLike(result) {
  like = { id: String(result.item_id), at: result.start_s ?? null, line: result.line ?? null, name: result.name };
  terms = [];
  $("q").value = "";
  showTerms();
  searchText();
}

// The panel's summary counts the filters set, and a search (or link) with filters opens it.
function showFilters() {
  const set = FILTERS.filter((name) => $(name).value.trim()).length;
  $("filter-count").textContent = set ? ` (${set})` : "";
  if (set) $("filters").open = true;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

async function call(url, init) {
  const response = await fetch(url, { credentials: "same-origin", ...init });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 && url !== "/api/login") {
    $("login").hidden = false;
    $("token").focus();
    throw new Error("log in to search");
  }
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

async function run(label, request) {
  retry = () => run(label, request);
  say(`searching ${label} …`);
  try {
    const body = await request();
    render(body.results);
    say(`${body.results.length} results for ${label} in ${Math.round(body.took_ms)} ms`
        + (body.hint ? ` — note: ${body.hint}` : ""));
  } catch (error) {
    say(error.message, true);
  }
}

// The text search lives in the page's URL (?q=…&kind=…&top_k=… and the filters: under, glob, after,
// before, near, camera), so a search can be bookmarked and shared, and Back/Forward step through
// earlier searches.
const URL_FIELDS = ["q", "kind", "top_k", ...FILTERS];

function searchText({ remember = true } = {}) {
  const q = $("q").value.trim();
  const query = queryParams();
  showFilters();
  if (!hasQuery(query)) return;
  const params = options();
  for (const [name, value] of query) params.append(name, value);
  if (remember) {
    const url = `${location.pathname}?${params}`;
    if (`${location.pathname}${location.search}` !== url) history.pushState(null, "", url);
  }
  const label = q ? `“${q}”` : like ? `more like ${like.name}` : "the terms";
  run(`${label}${q && (like || terms.length) ? " and the terms" : ""}`, () => call(`/api/search?${params}`));
}

function searchFromUrl() {
  const params = new URLSearchParams(location.search);
  for (const name of URL_FIELDS) {
    const field = $(name);
    const value = params.get(name);
    if (name === "kind" && ![...field.options].some((option) => option.value === value)) {
      field.value = "image";
    } else {
      field.value = value ?? field.defaultValue;
    }
  }
  showFilters();
  readTerms(params);
  if (hasQuery()) searchText({ remember: false });
  else render([]);
}

function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  run(file.name, () => call(`/api/search/file?${options()}`, { method: "POST", body: form }));
}

function seconds(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function card(result, index) {
  const li = document.createElement("li");
  li.className = "result";
  li.tabIndex = 0;
  li.dataset.index = index;
  li.dataset.kind = result.kind;
  const top = document.createElement("div");
  top.className = "thumb";
  if (result.kind === "text") {
    top.className = "text";
    top.textContent = result.text || "";
  } else if (result.thumbnail) {
    const img = document.createElement("img");
    img.src = result.thumbnail;
    img.srcset = thumbnailSizes(result.thumbnail);
    img.sizes = CARD_SIZES;
    img.alt = result.name;
    img.loading = "lazy";
    img.onerror = () => img.replaceWith(icon("▣"));
    top.append(img);
  } else {
    top.append(icon(result.kind === "audio" ? "♪" : "▣"));
  }
  if (result.start_s != null) {
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = result.end_s != null ? `${seconds(result.start_s)}–${seconds(result.end_s)}` : seconds(result.start_s);
    top.append(time);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = result.line != null ? `${result.name}:${result.line}` : result.name;
  name.title = result.path;
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = `#${result.rank} · ${result.score.toFixed(3)}`;
  meta.append(name, score);
  const similar = document.createElement("button");
  similar.type = "button";
  similar.className = "like";
  similar.textContent = "more like this";
  similar.setAttribute("aria-label", `More like this: ${result.line != null ? `${result.name} line ${result.line}` : result.name}`
    + (result.start_s != null ? ` at ${seconds(result.start_s)}` : ""));
  similar.addEventListener("click", (event) => { event.stopPropagation(); moreLike(result); });
  meta.append(similar);
  const about = described(result);
  if (about) {
    const taken = document.createElement("div");
    taken.className = "taken";
    taken.textContent = about;
    meta.append(taken);
  }
  if (result.copies && result.copies.length) {
    const copies = document.createElement("div");
    copies.className = "copies";
    copies.textContent = `${result.copies.length + 1} copies`;
    copies.title = [result.path, ...result.copies].join("\n");
    meta.append(copies);
  }
  li.append(top, meta);
  li.addEventListener("click", () => open(index));
  return li;
}

// Thumbnails as sharp as the screen: the server makes these widths (cli/web/thumbnails.py SIZES), the
// browser picks by the card's width (two columns on a phone, about 300 px wide at most) and its pixel ratio.
const THUMBNAIL_SIZES = [256, 512, 768];
const CARD_SIZES = "(max-width: 760px) 50vw, 300px";

function thumbnailSizes(link) {
  return THUMBNAIL_SIZES.map((size) => {
    const url = new URL(link, location.href);
    url.searchParams.set("size", size);
    return `${url.pathname}${url.search} ${size}w`;
  }).join(", ");
}

// What a file says of itself, where it does: "2024-06-01 12:30 · Canon EOS R5 · 43.4600, 11.8800".
function described(result) {
  const parts = [];
  if (result.taken_at) {
    const [day, time = ""] = result.taken_at.split("T");
    const when = time ? `${day} ${time.slice(0, 5)}` : day;
    parts.push(result.taken_source === "mtime" ? `modified ${when}` : when);  // no date in the file
  }
  if (result.camera) parts.push(result.camera);
  if (result.latitude != null && result.longitude != null) {
    parts.push(`${result.latitude.toFixed(4)}, ${result.longitude.toFixed(4)}`);
  }
  return parts.join(" · ");
}

function icon(symbol) {
  const span = document.createElement("span");
  span.className = "icon";
  span.textContent = symbol;
  return span;
}

function render(list) {
  results = list;
  $("results").replaceChildren(...list.map(card));
}

function open(index) {
  const result = results[index];
  if (!result) return;
  const body = $("viewer-body");
  let element;
  if (result.kind === "text") {
    element = document.createElement("blockquote");
    element.textContent = result.text || "";
  } else if (result.kind === "image") {
    element = document.createElement("img");
    element.src = result.media;
    element.alt = result.name;
  } else {
    element = document.createElement(result.kind === "video" ? "video" : "audio");
    element.controls = true;
    element.autoplay = true;
    element.src = result.media;
    if (result.start_s != null) {
      element.addEventListener("loadedmetadata", () => { element.currentTime = result.start_s; }, { once: true });
    }
  }
  body.replaceChildren(element);
  const where = result.start_s != null ? ` at ${seconds(result.start_s)}` : result.line != null ? ` line ${result.line}` : "";
  const about = described(result);
  $("viewer-caption").textContent = `${result.path}${where} · score ${result.score.toFixed(3)}`
    + (about ? ` · ${about}` : "");
  $("viewer").hidden = false;
  $("viewer").dataset.index = index;
  for (const behind of BEHIND_VIEWER) document.querySelector(behind).inert = true;
  $("close").focus();
}

// While the viewer is open the page behind it is inert and Tab cycles through the viewer's controls;
// closing it gives focus back to the result that opened it.
const BEHIND_VIEWER = ["header", "main"];

function closeViewer() {
  if ($("viewer").hidden) return;
  $("viewer-body").replaceChildren();
  $("viewer").hidden = true;
  for (const behind of BEHIND_VIEWER) document.querySelector(behind).inert = false;
  const back = document.querySelector(`.result[data-index="${$("viewer").dataset.index}"]`);
  if (back) back.focus();
}

function keepFocusInViewer(event) {
  const controls = [...$("viewer").querySelectorAll("button, [href], input, select, [controls], [tabindex]")]
    .filter((element) => element.tabIndex >= 0 && element.getClientRects().length);
  const first = controls[0];
  const last = controls[controls.length - 1];
  const inside = $("viewer").contains(document.activeElement);
  if (event.shiftKey && (document.activeElement === first || !inside)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (document.activeElement === last || !inside)) {
    event.preventDefault();
    first.focus();
  }
}

function columns() {
  return getComputedStyle($("results")).gridTemplateColumns.split(" ").filter(Boolean).length || 1;
}

function moveFocus(event) {
  const current = document.activeElement;
  const cards = [...document.querySelectorAll(".result")];
  if (!cards.length) return;
  if (current === $("q") && event.key === "ArrowDown") {
    event.preventDefault();
    cards[0].focus();
    return;
  }
  if (!current.classList.contains("result")) return;
  const index = Number(current.dataset.index);
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[event.key];
  if (event.key === "Enter") {
    event.preventDefault();
    open(index);
  } else if (step !== undefined) {
    event.preventDefault();
    const next = index + step;
    if (next < 0 && event.key === "ArrowUp") $("q").focus();
    else if (cards[next]) cards[next].focus();
  }
}

async function login(event) {
  event.preventDefault();
  try {
    await call("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("token").value }),
    });
    $("login").hidden = true;
    $("token").value = "";
    await loadKinds().catch(() => {});
    showStatus();
    if (retry) retry();
  } catch (error) {
    say(error.message, true);
  }
}

// The kind menu lists what the server's `kind` takes (GET /api/kinds): the shipped kinds and any a
// plugin registered. The page's own four options stay until the answer comes (or without a login).
const KIND_LABELS = { image: "images", video: "videos", text: "texts", audio: "sounds" };

async function loadKinds() {
  const { kinds } = await call("/api/kinds");
  const menu = $("kind");
  const wanted = new URLSearchParams(location.search).get("kind") || menu.value;
  menu.replaceChildren(...kinds.map((name) => new Option(KIND_LABELS[name] || name, name)));
  menu.value = kinds.includes(wanted) ? wanted : "image";
}

async function showStatus({ quiet = false } = {}) {
  try {
    const info = await call("/api/status");
    const counts = indexedCounts(info);
    const described = info.with_date_taken != null
      ? ` · ${info.with_date_taken} with a date taken, ${info.with_place ?? 0} with a place` : "";
    if (!quiet) say(`${counts || "nothing indexed"}${described} · ${info.server.model}`);
    if (!info.server.audio_search) $("file").accept = "image/*";
  } catch (error) {
    say(error.message, true);
  }
}

// Files by kind, a text corpus by its captions: "6 images, 3 videos, 6 sounds, 12 captions".
function indexedCounts(info) {
  return Object.entries(info.items)
    .map(([kind, statuses]) => (kind === "text" ? [info.texts, "captions"]
      : [statuses.indexed ?? 0, KIND_LABELS[kind] || `${kind} files`]))
    .filter(([n]) => n > 0)
    .map(([n, noun]) => `${n} ${n === 1 ? noun.replace(/s$/, "") : noun}`)
    .join(", ");
}

function dropZone() {
  let depth = 0;
  const hint = $("drop-hint");
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth += 1; hint.hidden = false; });
  document.addEventListener("dragleave", () => { depth -= 1; if (depth <= 0) { depth = 0; hint.hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    hint.hidden = true;
    searchFile(e.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("submit", (e) => { e.preventDefault(); searchText(); });
  $("kind").addEventListener("change", () => { if (hasQuery()) searchText(); });
  $("terms-form").addEventListener("submit", (e) => { e.preventDefault(); addTerm("add"); });
  $("term-subtract").addEventListener("click", () => addTerm("subtract"));
  $("file").addEventListener("change", () => { searchFile($("file").files[0]); $("file").value = ""; });
  $("login-form").addEventListener("submit", login);
  $("close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) closeViewer(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeViewer();
    else if (e.key === "Tab" && !$("viewer").hidden) keepFocusInViewer(e);
    else if ($("viewer").hidden && $("login").hidden) moveFocus(e);
  });
  window.addEventListener("popstate", searchFromUrl);
  for (const name of FILTERS) $(name).addEventListener("change", showFilters);
  dropZone();
  const searchInUrl = hasQuery(new URLSearchParams(location.search));
  if (!searchInUrl) searchFromUrl();  // filters in a link without a query still fill the panel
  loadKinds().catch(() => {}).then(() => {  // without a login the status line asks for one
    showStatus({ quiet: searchInUrl });  // a search in the URL says its own line
    if (searchInUrl) searchFromUrl();
  });
});
