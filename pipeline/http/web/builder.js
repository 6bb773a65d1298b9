// The playlist builder: a form per kind of playlist (similar, text, path, alchemy, recommend)
// whose answer comes from the query service over the bus (POST /api/playlists/build), a
// list with play buttons and "Not this one" (the song joins `exclude` and the same request
// is asked again), then "Save to Navidrome" (POST /api/playlists/save) or "Download M3U8"
// (POST /api/playlists/m3u8).

import { ApiError, downloadM3u8, get, post } from "./api.js";
import { h, show, text } from "./dom.js";
import { count } from "./format.js";
import { startMixes } from "./mixes.js";
import { startPage } from "./page.js";
import { TrackPicker } from "./picker.js";
import { Player, trackRow } from "./player.js";

const $ = (id) => document.getElementById(id);
const form = $("build-form");
const player = new Player($("audio"), $("now"), $("player-error"));
const pickers = Object.fromEntries([...document.querySelectorAll("[data-picker]")]
  .map((host) => [host.dataset.picker, new TrackPicker(host)]));

const HELP = {
  similar: "Songs that sound like one song.",
  text: "Songs that match a description, and not the things you name below it.",
  path: "A walk from one song to another, each step a little closer to the end.",
  alchemy: "Songs like the first set and unlike the second, with a dash of chance.",
  recommend: "A mix from several songs, each weighed, across one or more models.",
  instant: "A playlist from one sentence: its length, the sound, what to avoid, years, tempo.",
};

const state = {
  mode: "similar",
  body: null, // the request of the list shown, without `exclude`
  exclude: [], // "Not this one" so far
  tracks: [],
  autoName: "",
};

// -- the form ----------------------------------------------------------------------------------

function setMode(mode) {
  state.mode = mode;
  for (const button of document.querySelectorAll(".modes button")) {
    button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
  }
  for (const fieldset of form.querySelectorAll("fieldset[data-mode]")) {
    show(fieldset, fieldset.dataset.mode === mode);
  }
  show($("limit-label"), mode !== "path"); // a path's length is its steps
  text($("mode-help"), HELP[mode]);
  show($("form-problem"), false);
}

const value = (name) => form.elements[name].value;
const number = (name) => Number(value(name));
const ids = (picker) => pickers[picker].tracks().map((t) => t.track_id);

class Incomplete extends Error {}

function need(condition, message) {
  if (!condition) throw new Incomplete(message);
}

/** The filters filled in, as the request's `filters` (null when none is). */
function filtersOfForm() {
  const filters = {};
  const range = (name, low, high) => {
    const [a, b] = [value(low).trim(), value(high).trim()];
    if (!a && !b) return;
    need(a && b, `Give both ends of the ${name} range, or neither.`);
    filters[name] = [Number(a), Number(b)];
  };
  range("bpm", "bpm-low", "bpm-high");
  range("energy", "energy-low", "energy-high");
  range("year", "year-low", "year-high");
  if (value("key").trim()) filters.key = value("key").trim();
  const genres = value("genre").split(",").map((g) => g.trim()).filter(Boolean);
  if (genres.length) filters.genre = genres;
  return Object.keys(filters).length ? filters : null;
}

/** The request body of the form as it is now (throws Incomplete with what is missing). */
function bodyOfForm() {
  const models = [...$("models").querySelectorAll("input:checked")].map((box) => box.value);
  need(models.length, "Choose at least one model.");
  const common = { mode: state.mode, models };
  const filters = filtersOfForm();
  if (filters) common.filters = filters;
  if (state.mode !== "path") common.limit = number("limit");
  switch (state.mode) {
    case "similar": {
      const [seed] = ids("similar-seed");
      need(seed, "Pick the song the playlist should sound like.");
      return { ...common, track_id: seed, diversity: number("similar-diversity") };
    }
    case "text": {
      const prompt = value("prompt").trim();
      need(prompt, "Describe the music you want.");
      const negative = value("negative").split("\n").map((line) => line.trim()).filter(Boolean);
      return { ...common, prompt, negative_prompts: negative };
    }
    case "path": {
      const [start] = ids("path-start");
      const [end] = ids("path-end");
      need(start && end, "Pick the song to start from and the song to end with.");
      return { ...common, start_track_id: start, end_track_id: end, steps: number("steps") };
    }
    case "alchemy": {
      const add = ids("alchemy-add");
      need(add.length, "Pick at least one song the playlist should be like.");
      return { ...common, add_track_ids: add, subtract_track_ids: ids("alchemy-subtract"),
               temperature: number("temperature"),
               random_seed: Math.floor(Math.random() * 2 ** 31) }; // "Not this one" keeps it
    }
    case "recommend": {
      const seeds = pickers["recommend-seeds"].tracks();
      need(seeds.length, "Pick at least one seed song.");
      need(seeds.every((s) => Number.isFinite(s.weight)), "Every weight is a number from -10 to 10.");
      return { ...common, seeds: seeds.map((s) => ({ track_id: s.track_id, weight: s.weight })),
               merge: value("merge"), diversity: number("recommend-diversity") };
    }
    case "instant": {
      const sentence = value("sentence").trim();
      need(sentence, "Say what you want to hear.");
      return { ...common, sentence };
    }
    default:
      throw new Incomplete(`unknown kind ${state.mode}`);
  }
}

function suggestedName() {
  const first = (picker) => pickers[picker].tracks()[0]?.title ?? "";
  return {
    similar: () => `Like ${first("similar-seed")}`,
    text: () => value("prompt").trim(),
    path: () => `${first("path-start")} to ${first("path-end")}`,
    alchemy: () => `Alchemy of ${first("alchemy-add")}`,
    recommend: () => `Mix from ${first("recommend-seeds")}`,
    instant: () => value("sentence").trim(),
  }[state.mode]().slice(0, 200);
}

// -- asking and showing -----------------------------------------------------------------------

async function ask(button) {
  show($("problem"), false);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  text($("summary"), "Asking the query service…");
  try {
    const answer = await post("/api/playlists/build", { ...state.body, exclude: state.exclude });
    render(answer);
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false;
    text($("problem"), `No playlist: ${error.message}`);
    show($("problem"), true);
    text($("summary"), "");
    return false;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function render(answer) {
  state.tracks = answer.tracks;
  const rows = answer.tracks.map((track) => {
    const row = trackRow(track, player, { testid: "result" });
    const title = track.title || track.track_id;
    row.append(h("button", {
      type: "button", class: "quiet small not-this", "data-testid": "not-this",
      "aria-label": `Not ${title}: ask again without it`, onclick: (e) => notThis(track, e.currentTarget),
    }, "Not this one"));
    return row;
  });
  $("results").replaceChildren(...rows);
  $("results").dataset.requestId = answer.request_id;
  player.mark();
  $("warnings").replaceChildren(...answer.warnings.map((w) => h("li", {}, w)));
  const understood = answer.plan?.understood ?? [];
  $("understood").replaceChildren(...(understood.length ? understood : ["nothing"])
    .map((line) => h("li", {}, line)));
  show($("plan"), Boolean(answer.plan));
  const n = answer.tracks.length;
  text($("result-count"), count(n));
  const left = state.exclude.length ? ` · ${count(state.exclude.length)} left out` : "";
  text($("summary"), n
    ? `${count(n)} song${n === 1 ? "" : "s"} · ${state.body.mode} · answered in ${Math.round(answer.elapsed_ms)} ms${left}`
    : "No song matches: try other songs, words or models.");
  show($("keep-form"), n > 0);
  const name = $("playlist-name");
  if (!name.value || name.value === state.autoName) name.value = state.autoName = suggestedName();
}

async function notThis(track, button) {
  const index = state.tracks.findIndex((t) => t.track_id === track.track_id);
  state.exclude = [...state.exclude, track.track_id];
  if (await ask(button)) {
    // Keep the keyboard where it was: on the song that took this one's place.
    const buttons = $("results").querySelectorAll("button.not-this");
    (buttons[Math.min(index, buttons.length - 1)] ?? $("h-results")).focus();
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    state.body = bodyOfForm();
  } catch (error) {
    if (!(error instanceof Incomplete)) throw error;
    text($("form-problem"), error.message);
    show($("form-problem"), true);
    return;
  }
  show($("form-problem"), false);
  state.exclude = [];
  await ask(form.querySelector("button[type=submit]"));
});

// -- keeping the list ---------------------------------------------------------------------------

let toastTimer = 0;
function toast(message, failed = false) {
  const node = $("toast");
  text(node, message);
  node.classList.toggle("failed", failed);
  show(node, true);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => show(node, false), 8000);
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") show($("toast"), false); // the message read: away with it
});

function kept() {
  const name = $("playlist-name").value.trim();
  if (!name) {
    toast("Give the playlist a name first.", true);
    $("playlist-name").focus();
    return null;
  }
  return { name, track_ids: state.tracks.map((t) => t.track_id) };
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) toast(error.message || String(error), true);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

$("save").addEventListener("click", (event) => busy(event.currentTarget, async () => {
  const list = kept();
  if (!list) return;
  const saved = await post("/api/playlists/save", { ...list, target: "navidrome" });
  const n = saved.tracks.length;
  const verb = saved.created ? "Saved" : "Replaced";
  toast(`${verb} “${saved.name}” in Navidrome: ${count(n)} song${n === 1 ? "" : "s"}.`);
  const missing = saved.missing.map((m) => `${m.track_id} (${m.reason})`);
  text($("save-note"), missing.length ? `Not in Navidrome, left out: ${missing.join("; ")}` : "");
  show($("save-note"), missing.length > 0);
}));

$("download").addEventListener("click", (event) => busy(event.currentTarget, async () => {
  const list = kept();
  if (!list) return;
  await downloadM3u8(list);
}));

// -- start ----------------------------------------------------------------------------------------

for (const button of document.querySelectorAll(".modes button")) {
  button.addEventListener("click", () => setMode(button.dataset.mode));
}

async function start() {
  setMode("similar");
  if (!(await startPage($("problem")))) return;
  startMixes();
  const options = await get("/api/playlists/options");
  $("models").replaceChildren(...options.models.map((model, i) =>
    h("label", { class: "check" },
      h("input", { type: "checkbox", name: "models", value: model, checked: i === 0,
                   "data-testid": `model-${model}` }), model)));
  if (!options.navidrome) {
    $("save").disabled = true;
    text($("save-note"), "Saving to Navidrome needs navidrome.url, navidrome.user and navidrome.password in sonicbus' settings.");
    show($("save-note"), true);
  }
}

start().catch((error) => {
  text($("problem"), error.message || String(error));
  show($("problem"), true);
});
