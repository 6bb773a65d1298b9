// The library: search by artist, title or album with suggestions as you type (GET
// /api/tracks?q=), the matching tracks with play buttons, and the page's player.

import { get } from "./api.js";
import { Autocomplete } from "./autocomplete.js";
import { show, text } from "./dom.js";
import { count } from "./format.js";
import { startPage } from "./page.js";
import { Player, trackRow } from "./player.js";

const $ = (id) => document.getElementById(id);
const player = new Player($("audio"), $("now"), $("player-error"));
const LIMIT = 50;

const tracks = async (query, limit) =>
  (await get(`/api/tracks?q=${encodeURIComponent(query)}&limit=${limit}`)).tracks;

function render(list, query) {
  $("results").replaceChildren(...list.map((t) => trackRow(t, player)));
  player.mark();
  const many = list.length === LIMIT ? `the first ${count(LIMIT)}` : count(list.length);
  text($("summary"), query
    ? (list.length ? `${many} track${list.length === 1 ? "" : "s"} for “${query}”` : `No track matches “${query}”.`)
    : (list.length ? `${many} track${list.length === 1 ? "" : "s"} of the library, by artist` : "The library is empty: nothing is embedded yet."));
}

async function search(query) {
  show($("problem"), false);
  try {
    render(await tracks(query, LIMIT), query);
  } catch (error) {
    text($("problem"), `Search failed: ${error.message}`);
    show($("problem"), true);
  }
  const url = query ? `?q=${encodeURIComponent(query)}` : location.pathname;
  history.replaceState(null, "", url);
}

function pick(track) {
  // A suggestion picked: that track alone, ready to play (Enter again plays it).
  $("search").value = track.title;
  render([track], track.title);
  history.replaceState(null, "", `?q=${encodeURIComponent(track.title)}`);
  $("results").querySelector("button.play")?.focus();
}

new Autocomplete($("search"), $("suggestions"), {
  suggest: (query) => tracks(query, 8),
  describe: (t) => [t.title, [t.artist, t.album].filter(Boolean).join(" · ")],
  pick,
  submit: search,
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search($("search").value.trim());
});

async function start() {
  if (!(await startPage($("problem")))) return;
  const query = new URLSearchParams(location.search).get("q") ?? "";
  $("search").value = query;
  await search(query);
}

start();
