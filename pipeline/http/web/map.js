// The music map: every embedded track as a point (GET /api/map, compact columns), coloured by
// its top tag, kept current from /api/map/updates. Hover shows a song (/api/map/tracks), a
// click or a lasso selects, search centres on a song (/api/map/search); "Path" asks the
// playlist builder for a path between consecutive selected songs (POST /api/playlists/build,
// over the bus like any client) and draws it; the selection becomes a Navidrome playlist
// (/api/playlists/save) or an M3U8 download (/api/playlists/m3u8).

import { ApiError, downloadM3u8, get, post } from "./api.js";
import { h, show, text } from "./dom.js";
import { count } from "./format.js";
import { attachGestures } from "./gestures.js";
import { startPage } from "./page.js";
import { Scatter } from "./scatter.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 3000;
const PATH_MIN = 2;
const PATH_MAX = 10;
const PATH_STEPS = 8; // songs per leg, ends included
const PALETTE = [
  "#4f46e5", "#0e9f6e", "#d97706", "#db2777", "#0891b2", "#7c3aed", "#65a30d", "#dc2626",
  "#2563eb", "#ca8a04", "#059669", "#c026d3", "#ea580c", "#0d9488", "#9333ea", "#e11d48",
  "#4d7c0f", "#1d4ed8", "#b45309", "#be185d", "#0369a1", "#15803d", "#a21caf", "#78716c",
];
const OTHER = "#9ca3af";
const NO_TAG = 255;

const params = new URLSearchParams(location.search);
const scatter = new Scatter($("points"), $("overlay"));
const state = {
  model: params.get("model") || "",
  cursor: "",
  ids: [],
  index: new Map(),
  x: new Float32Array(0),
  y: new Float32Array(0),
  tag: new Uint8Array(0),
  tagNames: [],
  hidden: new Set(),
  selection: [], // ids, in the order picked
  path: [],
  highlight: null,
  info: new Map(), // id: {title, artist, tags}
  tool: "pan",
  firstDrawn: false,
};

// -- the points ------------------------------------------------------------------------------

function bytes(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function decode(columns) {
  const ids = columns.ids ? columns.ids.split("\n") : [];
  const qx = new Uint16Array(bytes(columns.x).buffer);
  const qy = new Uint16Array(bytes(columns.y).buffer);
  const x = new Float32Array(ids.length);
  const y = new Float32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    x[i] = (qx[i] / 65535) * 2 - 1;
    y[i] = (qy[i] / 65535) * 2 - 1;
  }
  return { ids, x, y, tag: bytes(columns.tag) };
}

function setAll(ids, x, y, tag) {
  Object.assign(state, { ids, x, y, tag, index: new Map(ids.map((id, i) => [id, i])) });
  const known = new Set(ids);
  state.selection = state.selection.filter((id) => known.has(id));
  refresh();
}

function merge(update) {
  const { ids, x, y, tag } = state;
  const nx = Array.from(x);
  const ny = Array.from(y);
  const nt = Array.from(tag);
  const nids = ids.slice();
  const changed = update.columns ? decode(update.columns) : { ids: [] };
  changed.ids.forEach((id, k) => {
    let i = state.index.get(id);
    if (i === undefined) {
      i = nids.length;
      nids.push(id);
    }
    nx[i] = changed.x[k];
    ny[i] = changed.y[k];
    nt[i] = changed.tag[k];
  });
  const gone = new Set(update.removed || []);
  const keep = nids.map((id, i) => i).filter((i) => !gone.has(nids[i]));
  setAll(keep.map((i) => nids[i]), Float32Array.from(keep, (i) => nx[i]),
         Float32Array.from(keep, (i) => ny[i]), Uint8Array.from(keep, (i) => nt[i]));
}

// Legend: the tags by how many songs they top; a colour per tag, grey after the palette.
function legendEntries() {
  const counts = new Map();
  for (const t of state.tag) counts.set(t, (counts.get(t) || 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([tag, n], rank) => ({
    tag, n, rank,
    name: tag === NO_TAG ? "untagged" : state.tagNames[tag] || `tag ${tag}`,
    colour: tag === NO_TAG || rank >= PALETTE.length ? OTHER : PALETTE[rank],
  }));
}

function rgba(hex, alpha) {
  const v = parseInt(hex.slice(1), 16);
  return [((v >> 16) & 255) / 255, ((v >> 8) & 255) / 255, (v & 255) / 255, alpha];
}

function refresh() {
  const entries = legendEntries();
  const slotOf = new Uint8Array(256).fill(63);
  const colours = Array.from({ length: 64 }, () => rgba(OTHER, 0.8));
  entries.forEach((e) => {
    const slot = Math.min(e.rank, 62);
    slotOf[e.tag] = e.colour === OTHER ? 63 : slot;
    if (e.colour !== OTHER) colours[slot] = rgba(e.colour, state.hidden.has(e.tag) ? 0 : 0.85);
  });
  // Grey slot 63 is shared: hide it only when every grey tag is hidden.
  const greys = entries.filter((e) => e.colour === OTHER);
  if (greys.length && greys.every((e) => state.hidden.has(e.tag))) colours[63] = rgba(OTHER, 0);
  scatter.setColours(colours);
  scatter.setPoints(state.x, state.y, Uint8Array.from(state.tag, (t) => slotOf[t]));
  renderLegend(entries);
  renderSelection();
  text($("map-count"), `· ${count(state.ids.length)} songs`);
  $("stage").dataset.count = String(state.ids.length);
}

function renderLegend(entries) {
  const list = $("legend");
  list.replaceChildren(...entries.map((e) => h("li", {},
    h("button", {
      type: "button", "aria-pressed": state.hidden.has(e.tag) ? "false" : "true",
      dataset: { tag: String(e.tag) }, "data-testid": "legend-tag",
      onclick: () => {
        if (state.hidden.has(e.tag)) state.hidden.delete(e.tag);
        else state.hidden.add(e.tag);
        refresh();
      },
    }, swatch(e.colour), e.name, h("span", { class: "n" }, count(e.n))))));
}

function swatch(colour) {
  const node = h("span", { class: "swatch" });
  node.style.background = colour; // through the CSSOM: the CSP allows no inline style attribute
  return node;
}

// -- loading and following -------------------------------------------------------------------

function message(textValue) {
  text($("map-message"), textValue || "");
  show($("map-message"), Boolean(textValue));
}

async function loadMap() {
  const q = state.model ? `?model=${encodeURIComponent(state.model)}` : "";
  let doc;
  try {
    doc = await get(`/api/map${q}`);
  } catch (error) {
    message(`The map cannot be shown: ${error.message}`);
    setTimeout(loadMap, POLL_MS * 2);
    return;
  }
  state.model = doc.model;
  $("stage").dataset.state = doc.state;
  if (doc.state !== "ready") {
    message(doc.message);
    setAll([], new Float32Array(0), new Float32Array(0), new Uint8Array(0));
    setTimeout(loadMap, doc.state === "computing" ? 1500 : POLL_MS);
    return;
  }
  message("");
  state.tagNames = doc.tag_names;
  state.cursor = doc.cursor;
  const d = decode(doc.columns);
  setAll(d.ids, d.x, d.y, d.tag);
  setTimeout(follow, POLL_MS);
}

async function follow() {
  if (document.hidden) {
    setTimeout(follow, POLL_MS);
    return;
  }
  try {
    const q = `model=${encodeURIComponent(state.model)}&since=${encodeURIComponent(state.cursor)}`;
    const update = await get(`/api/map/updates?${q}`);
    if (update.reload) {
      await loadMap();
      return;
    }
    if (update.cursor !== state.cursor) {
      state.cursor = update.cursor;
      if (update.columns || update.removed.length) merge(update);
    }
  } catch (error) {
    if (!(error instanceof ApiError)) console.warn("map updates", error);
  }
  setTimeout(follow, POLL_MS);
}

scatter.onDrawn = (n) => {
  if (state.firstDrawn || !n) return;
  state.firstDrawn = true;
  requestAnimationFrame(() => { $("stage").dataset.firstRenderMs = String(Math.round(performance.now())); });
};

// -- hover, click, lasso, zoom ---------------------------------------------------------------

async function describe(id) {
  if (!state.info.has(id)) {
    const q = `model=${encodeURIComponent(state.model)}&ids=${encodeURIComponent(id)}`;
    const found = await get(`/api/map/tracks?${q}`).catch(() => ({ tracks: [] }));
    state.info.set(id, found.tracks[0] || { track_id: id, title: id, artist: "", tags: [] });
  }
  return state.info.get(id);
}

async function describeMany(ids) { // the selection's labels: a request per 100 songs
  for (let k = 0; k < ids.length; k += 100) {
    const chunk = ids.slice(k, k + 100);
    const q = `model=${encodeURIComponent(state.model)}&ids=${chunk.map(encodeURIComponent).join(",")}`;
    const found = await get(`/api/map/tracks?${q}`).catch(() => ({ tracks: [] }));
    for (const t of found.tracks) {
      state.info.set(t.track_id, t);
      relabel(t.track_id);
    }
  }
}

let tipFor = null;
async function showTip(i, px, py) {
  const tip = $("tip");
  if (i < 0) {
    tipFor = null;
    show(tip, false);
    return;
  }
  const id = state.ids[i];
  tipFor = id;
  const info = await describe(id);
  if (tipFor !== id) return;
  tip.replaceChildren(h("strong", {}, info.title || id), h("span", {}, info.artist || "unknown artist"),
    h("div", { class: "tags" }, info.tags.map((t) => t.tag).join(" · ")));
  const { w, h: height } = scatter.size;
  tip.style.left = `${Math.min(px + 14, w - 200)}px`;
  tip.style.top = `${Math.min(py + 14, height - 80)}px`;
  tip.dataset.trackId = id;
  show(tip, true);
}

function toggle(ids, add = null) {
  const chosen = new Set(state.selection);
  for (const id of ids) {
    const on = add ?? !chosen.has(id);
    if (on && !chosen.has(id)) state.selection.push(id);
    if (!on && chosen.has(id)) state.selection = state.selection.filter((s) => s !== id);
    if (on) chosen.add(id); else chosen.delete(id);
  }
  renderSelection();
}

const stage = $("stage");
const gesture = attachGestures(stage, scatter, {
  tool: () => state.tool,
  hover: (i, px, py) => showTip(i, px, py),
  click: (i) => { if (i >= 0) toggle([state.ids[i]]); },
  lassoed: (found) => {
    toggle(found.map((i) => state.ids[i]), true);
    toast(`${count(found.length)} song${found.length === 1 ? "" : "s"} added to the selection.`);
  },
});

const middle = () => [scatter.size.w / 2, scatter.size.h / 2];
$("zoom-in").addEventListener("click", () => scatter.zoomAt(...middle(), 1.6));
$("zoom-out").addEventListener("click", () => scatter.zoomAt(...middle(), 1 / 1.6));
$("zoom-reset").addEventListener("click", () => scatter.reset());
for (const button of document.querySelectorAll("[data-tool]")) {
  button.addEventListener("click", () => {
    state.tool = button.dataset.tool;
    stage.dataset.tool = state.tool;
    for (const b of document.querySelectorAll("[data-tool]")) {
      b.setAttribute("aria-pressed", String(b === button));
    }
  });
}
new ResizeObserver(() => scatter.request()).observe(stage);

// The overlay: selection rings, the highlighted song, the path, the lasso being drawn.
scatter.decorate = (ctx) => {
  const accent = getComputedStyle(document.documentElement).getPropertyValue("--text").trim() || "#000";
  const point = (id) => {
    const i = state.index.get(id);
    return i === undefined ? null : scatter.toScreen(state.x[i], state.y[i]);
  };
  ctx.lineWidth = 2;
  ctx.strokeStyle = accent;
  for (const id of state.selection) {
    const p = point(id);
    if (!p) continue;
    ctx.beginPath();
    ctx.arc(p[0], p[1], 6, 0, 2 * Math.PI);
    ctx.stroke();
  }
  const drawn = state.path.map(point).filter(Boolean);
  if (drawn.length > 1) { // a line in the text colour on a halo of the card's: apart from every tag colour
    const halo = getComputedStyle(document.documentElement).getPropertyValue("--card").trim() || "#fff";
    for (const [colour, width] of [[halo, 6], [accent, 2.5]]) {
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.beginPath();
      drawn.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
    ctx.fillStyle = accent;
    for (const [x, y] of drawn) ctx.fillRect(x - 3.5, y - 3.5, 7, 7);
  }
  $("points").dataset.path = String(drawn.length > 1 ? drawn.length : 0);
  const lit = state.highlight && point(state.highlight);
  if (lit) {
    ctx.strokeStyle = "#ef4444";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.arc(lit[0], lit[1], 12, 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (gesture.lasso && gesture.lasso.length > 1) {
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = accent;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    gesture.lasso.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.stroke();
    ctx.setLineDash([]);
  }
};

// -- search ----------------------------------------------------------------------------------

let findTimer = 0;
$("find").addEventListener("input", () => {
  clearTimeout(findTimer);
  findTimer = setTimeout(find, 200);
});
$("find-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const first = await find();
  if (first) focusOn(first.track_id);
});

async function find() {
  const q = $("find").value.trim();
  const list = $("found");
  if (!q || !state.ids.length) {
    show(list, false);
    return null;
  }
  const found = await get(`/api/map/search?model=${encodeURIComponent(state.model)}&q=${encodeURIComponent(q)}`)
    .catch((error) => ({ tracks: [], error }));
  list.replaceChildren(...(found.tracks.length ? found.tracks.map((t) => h("li", {},
    h("button", { type: "button", "data-testid": "map-found-track", onclick: () => focusOn(t.track_id) },
      `${t.artist || "?"} – ${t.title || t.track_id}`)))
    : [h("li", { class: "detail" }, found.error ? found.error.message : `Nothing on the map matches “${q}”.`)]));
  show(list, true);
  return found.tracks[0] || null;
}

function focusOn(id) {
  const i = state.index.get(id);
  show($("found"), false);
  if (i === undefined) return;
  state.highlight = id;
  stage.dataset.highlight = id;
  scatter.centreOn(state.x[i], state.y[i], 6);
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const [px, py] = scatter.toScreen(state.x[i], state.y[i]);
    showTip(i, px, py);
  }));
}

// -- selection, path, playlists --------------------------------------------------------------

function note(value) {
  text($("selection-note"), value || "");
  show($("selection-note"), Boolean(value));
}

function renderSelection() {
  const n = state.selection.length;
  text($("selection-count"), count(n));
  $("selection-count").className = `badge ${n ? "ok" : "idle"}`;
  const shown = state.selection.slice(0, 200);
  $("selection-list").replaceChildren(...shown.map((id) => h("li", { dataset: { trackId: id } }, label(id))));
  if (n > shown.length) $("selection-list").append(h("li", { class: "detail" }, `and ${count(n - shown.length)} more`));
  describeMany(shown.filter((id) => !state.info.has(id)));
  scatter.request();
}

function label(id) {
  const info = state.info.get(id);
  return info ? `${info.artist || "?"} – ${info.title || id}` : id;
}

function relabel(id) {
  for (const li of document.querySelectorAll(`li[data-track-id="${CSS.escape(id)}"]`)) text(li, label(id));
}

let toastTimer = 0;
function toast(value, failed = false) {
  const node = $("toast");
  text(node, value);
  node.classList.toggle("failed", failed);
  show(node, true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(node, false), 6000);
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    note(error.message || String(error));
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

$("clear").addEventListener("click", () => {
  state.selection = [];
  state.path = [];
  show($("path-card"), false);
  note("");
  renderSelection();
});

$("path").addEventListener("click", (event) => busy(event.currentTarget, async () => {
  const n = state.selection.length;
  if (n < PATH_MIN || n > PATH_MAX) {
    note(`A path joins ${PATH_MIN} to ${PATH_MAX} songs, in the order you picked them; ` +
      `${count(n)} ${n === 1 ? "is" : "are"} selected. ` + (n > PATH_MAX ? "Clear the selection and pick fewer." : "Pick more."));
    return;
  }
  note("");
  const path = [];
  for (let k = 0; k + 1 < n; k++) {
    const leg = await post("/api/playlists/build", {
      mode: "path", models: [state.model], start_track_id: state.selection[k],
      end_track_id: state.selection[k + 1], steps: PATH_STEPS,
    });
    for (const t of leg.tracks) {
      if (path.length && path[path.length - 1].track_id === t.track_id) continue;
      path.push(t);
      state.info.set(t.track_id, { ...(state.info.get(t.track_id) || { tags: [] }), ...t });
    }
  }
  state.path = path.map((t) => t.track_id);
  $("path-list").replaceChildren(...path.map((t) => h("li", { dataset: { trackId: t.track_id } }, label(t.track_id))));
  text($("path-count"), `· ${count(path.length)} songs`);
  show($("path-card"), true);
  const at = state.path.map((id) => state.index.get(id)).filter((i) => i !== undefined);
  if (at.length) {
    const xs = at.map((i) => state.x[i]);
    const ys = at.map((i) => state.y[i]);
    scatter.fit(Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys));
  }
}));

function playlist() {
  const name = $("playlist-name").value.trim();
  const ids = state.path.length ? state.path : state.selection;
  if (!ids.length) throw new Error("Select some songs first (click them, or drag a lasso).");
  if (!name) throw new Error("Give the playlist a name first.");
  return { name, track_ids: ids.slice(0, 1000) };
}

$("save").addEventListener("click", (event) => busy(event.currentTarget, async () => {
  const saved = await post("/api/playlists/save", { ...playlist(), target: "navidrome" });
  note("");
  toast(`Saved “${saved.name}” in Navidrome: ${count(saved.tracks.length)} songs.`);
}));

$("download").addEventListener("click", (event) => busy(event.currentTarget, async () => {
  const list = playlist();
  await downloadM3u8(list);
  note("");
}));

// -- start -----------------------------------------------------------------------------------

(async () => {
  if (!(await startPage($("map-message")))) return;
  const options = await get("/api/playlists/options").catch(() => null);
  if (options && !options.navidrome) {
    $("save").disabled = true;
    $("save").title = "Navidrome is not set up (navidrome.url)";
  }
  await loadMap();
})();
