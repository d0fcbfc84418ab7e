// The search page: plain browser JavaScript, no build step, nothing loaded from the internet.
// It talks only to this server's JSON API (see /docs); every failure is shown in the #error banner.
"use strict";

const $ = (id) => document.getElementById(id);
const K_CHOICES = [4, 8, 12, 24, 48, 96];
const GALLERY_SIZE = 16;

const state = {
  limits: { max_k: 100, default_k: 12, max_upload_bytes: 10 << 20 },
  query: null, // {type: "image", file} or {type: "item", item}: re-run when k changes
  seq: 0, // only the newest request may draw its results
  classifier: null, // /api/health: {classes, score, keep_rate} when the server can classify
  writable: false, // /api/health: the server was started with --writable (POST /api/items)
};

// A server started with an API key answers 401 on /api/ until it is given: the page asks for it
// once and keeps it for this tab only (sessionStorage), sent as `Authorization: Bearer KEY`.
const KEY_STORE = "vmfml-api-key";

function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

function withKey(options = {}) {
  const key = apiKey();
  if (!key) return options;
  return { ...options, headers: { ...(options.headers ?? {}), Authorization: `Bearer ${key}` } };
}

// After a 401: ask for the key unless another request already got a new one; true to retry.
function askForKey(keySent) {
  if (apiKey() !== keySent) return true;
  const key = window.prompt("This server needs an API key (ask whoever runs it):");
  if (!key || !key.trim()) return false;
  sessionStorage.setItem(KEY_STORE, key.trim());
  return true;
}

// fetch with the key, asking for it on a 401 and retrying once.
async function fetchWithKey(path, options = {}) {
  const keySent = apiKey();
  const response = await fetch(path, withKey(options));
  if (response.status !== 401 || !askForKey(keySent)) return response;
  return fetch(path, withKey(options));
}

// An <img> of an /api/ URL: an <img src> cannot send the key, so with one it is fetched.
async function showImage(img, src) {
  if (!src.startsWith("/api/") || !apiKey()) {
    img.src = src;
    return;
  }
  try {
    const response = await fetchWithKey(src);
    if (!response.ok) return;
    const url = URL.createObjectURL(await response.blob());
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
  } catch (_) {
    // The image stays empty; the searches themselves report errors.
  }
}

// fetch + JSON, turning any error status into an Error carrying the server's `detail` sentence.
async function api(path, options = {}) {
  let response;
  try {
    response = await fetchWithKey(path, options);
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // A body that is not JSON still has a status to report.
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function currentK() {
  return Number($("k-select").value) || state.limits.default_k;
}

// Upscale tiny images (28x28 Fashion-MNIST) with crisp pixels rather than blur.
function sharpenIfTiny(img) {
  img.addEventListener("load", () => {
    if (img.naturalWidth && img.naturalWidth * 2 < img.clientWidth) img.classList.add("pixelated");
  }, { once: true });
}

function thumbImage(item, alt) {
  const img = document.createElement("img");
  showImage(img, item.thumbnail);
  img.alt = alt;
  img.loading = "lazy";
  img.decoding = "async";
  sharpenIfTiny(img);
  return img;
}

function setQueryPreview(src, info) {
  const img = $("query-preview");
  img.classList.remove("pixelated");
  showImage(img, src);
  img.hidden = false;
  sharpenIfTiny(img);
  $("drop-text").textContent = "drop or choose another image";
  $("query-info").textContent = info;
}

async function runSearch(describe, request) {
  const seq = ++state.seq;
  clearError();
  $("class-info").hidden = true;
  $("results").classList.add("loading");
  $("status").textContent = "searching…";
  try {
    const data = await request();
    if (seq !== state.seq) return;
    renderResults(data, describe);
  } catch (err) {
    if (seq !== state.seq) return;
    showError(err.message);
    // The previous query's results would read as this one's: a failed search shows none.
    $("results").replaceChildren();
    $("status").textContent = `search failed: no neighbours of ${describe}`;
  } finally {
    if (seq === state.seq) $("results").classList.remove("loading");
  }
}

// The re-ranking chosen on the page as a query string; "" keeps the server's default.
function rerankQuery() {
  const method = $("rerank-select").value;
  return method ? `rerank=${encodeURIComponent(method)}` : "";
}

function searchFile(file) {
  if (!file) return;
  if (file.size > state.limits.max_upload_bytes) {
    const mb = (state.limits.max_upload_bytes / 1048576).toFixed(1);
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the server accepts at most ${mb} MiB`);
    return;
  }
  state.query = { type: "image", file };
  setQueryPreview(URL.createObjectURL(file), `uploaded: ${file.name}`);
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  form.append("k", String(currentK()));
  const label = $("label-filter").value.trim();
  if (label) form.append("where", JSON.stringify({ label }));
  $("add-to-gallery").hidden = !state.writable;
  const url = "/api/search/image" + (rerankQuery() ? `?${rerankQuery()}` : "");
  runSearch(`“${file.name || "image"}”`, () => api(url, { method: "POST", body: form }));
  classifyFile(file, state.seq);
}

// Adds the uploaded image to the gallery (a server started with --writable), embedded there.
async function addToGallery() {
  if (state.query?.type !== "image") return;
  const file = state.query.file;
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  if (file.name) form.append("path", file.name);
  $("add-to-gallery").disabled = true;
  try {
    const added = await api("/api/items", { method: "POST", body: form });
    $("query-info").textContent = `added to the gallery as item #${added.id}`;
    $("add-to-gallery").hidden = true;
    loadHealth();
  } catch (err) {
    showError(err.message);
  } finally {
    $("add-to-gallery").disabled = false;
  }
}

// The known class of an uploaded image, or "not in the known classes" (when the server has a
// classifier: /api/health says so).
async function classifyFile(file, seq) {
  if (!state.classifier) return;
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  try {
    const data = await api("/api/classify", { method: "POST", body: form });
    if (seq === state.seq) showClass(data);
  } catch (err) {
    if (seq === state.seq) $("class-info").hidden = true;
  }
}

function showClass(data) {
  const el = $("class-info");
  el.classList.toggle("unknown", !data.known);
  el.textContent = data.known
    ? `class: ${data.class} · probability ${(100 * data.probability).toFixed(1)}%`
    : `not in the known classes (closest: ${data.class}; ${data.score_name} ${data.score.toFixed(3)} > ${data.threshold.toFixed(3)})`;
  el.hidden = false;
}

function searchItem(item) {
  state.query = { type: "item", item };
  $("add-to-gallery").hidden = true; // only an uploaded image can be added
  setQueryPreview(item.thumbnail, `gallery item #${item.id}${item.label != null ? ` · ${item.label}` : ""}`);
  const rerank = rerankQuery() ? `&${rerankQuery()}` : "";
  runSearch(`item #${item.id}`, () => api(`/api/search/item/${item.id}?k=${currentK()}${rerank}`));
}

function renderResults(data, describe) {
  const list = $("results");
  list.replaceChildren();
  data.results.forEach((hit, rank) => {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = hit.id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb-button";
    button.title = `${hit.path}\nclick to search from this image`;
    button.append(thumbImage(hit, `result ${rank + 1}: ${hit.label ?? "item " + hit.id}`));
    const meta = document.createElement("div");
    meta.className = "meta";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = hit.label ?? `#${hit.id}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(label, score);
    const rankLine = document.createElement("div");
    rankLine.className = "rank";
    rankLine.textContent = `#${rank + 1} · item ${hit.id}`;
    button.append(meta, rankLine);
    button.addEventListener("click", () => searchItem(hit));
    li.append(button);
    list.append(li);
  });
  $("status").textContent =
    `${data.results.length} neighbours of ${describe} in ${data.took_ms.toFixed(1)} ms (score = cosine similarity)`;
}

// The gallery strip scrolls sideways: fades and arrow buttons show on a side with more to see.
function setupStripScroll() {
  const strip = $("gallery");
  const wrap = document.createElement("div");
  wrap.className = "strip-wrap";
  strip.replaceWith(wrap);
  const arrow = (side, text, label) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `strip-arrow ${side}`;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    const sign = side === "left" ? -1 : 1;
    button.addEventListener("click", () =>
      strip.scrollBy({ left: sign * Math.max(strip.clientWidth * 0.8, 80), behavior: "smooth" }));
    return button;
  };
  wrap.append(arrow("left", "‹", "scroll the gallery left"), strip,
    arrow("right", "›", "scroll the gallery right"));
  const update = () => {
    const room = strip.scrollWidth - strip.clientWidth;
    wrap.classList.toggle("more-left", strip.scrollLeft > 1);
    wrap.classList.toggle("more-right", room - strip.scrollLeft > 1);
  };
  strip.addEventListener("scroll", update, { passive: true });
  window.addEventListener("resize", update);
  // Thumbnails widen the strip as they load.
  new ResizeObserver(update).observe(strip);
  strip.addEventListener("load", update, true);
  state.updateStrip = update;
}

async function loadGallery() {
  try {
    const data = await api(`/api/items/sample?n=${GALLERY_SIZE}`);
    const strip = $("gallery");
    strip.replaceChildren();
    for (const item of data.items) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb-button gallery-item";
      button.title = `${item.label ?? ""} (item ${item.id})`;
      button.append(thumbImage(item, `gallery item ${item.id}: ${item.label ?? ""}`));
      button.addEventListener("click", () => searchItem(item));
      strip.append(button);
    }
    state.updateStrip?.();
  } catch (err) {
    showError(`cannot load the gallery: ${err.message}`);
  }
}

async function loadHealth() {
  try {
    const health = await api("/api/health");
    state.limits = health.limits;
    state.classifier = health.classifier;
    state.writable = health.writable === true;
    $("index-info").textContent =
      `${health.count.toLocaleString()} images · ${health.model ?? "unknown model"} · ${health.dimension}-d embeddings`;
  } catch (err) {
    $("index-info").textContent = "server unreachable";
    showError(err.message);
  }
  const select = $("k-select");
  const choices = K_CHOICES.filter((k) => k <= state.limits.max_k);
  if (!choices.includes(state.limits.default_k)) choices.push(state.limits.default_k);
  choices.sort((a, b) => a - b);
  select.replaceChildren(...choices.map((k) => new Option(String(k), String(k), false, k === state.limits.default_k)));
}

function wireInputs() {
  $("file-input").addEventListener("change", (event) => {
    searchFile(event.target.files[0]);
    event.target.value = ""; // choosing the same file again still fires `change`
  });
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) searchFile(file);
    else showError("drop an image file (not a link or text)");
  });
  // A file dropped outside the zone would otherwise make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  window.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (file) searchFile(file);
  });
  for (const id of ["k-select", "rerank-select"]) {
    $(id).addEventListener("change", () => {
      if (state.query?.type === "image") searchFile(state.query.file);
      else if (state.query?.type === "item") searchItem(state.query.item);
    });
  }
  $("label-filter").addEventListener("change", () => {
    if (state.query?.type === "image") searchFile(state.query.file);
  });
  $("add-to-gallery").addEventListener("click", addToGallery);
  $("shuffle").addEventListener("click", loadGallery);
  $("error-close").addEventListener("click", clearError);
}

wireInputs();
setupStripScroll();
loadHealth().then(loadGallery);
