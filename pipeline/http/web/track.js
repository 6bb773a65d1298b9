// A track's page (/track/<id>): what it is, its top tags as bars, the tracks similar to it
// (the bus's answer to a `similar` request, via GET /api/tracks/<id>), and a play button.

import { get } from "./api.js";
import { h, show, text } from "./dom.js";
import { playTime } from "./format.js";
import { startPage } from "./page.js";
import { Player, trackRow } from "./player.js";

const $ = (id) => document.getElementById(id);
const player = new Player($("audio"), $("now"), $("player-error"));
const trackId = decodeURIComponent(location.pathname.replace(/^\/track\//, ""));

function fail(message) {
  text($("problem"), message);
  show($("problem"), true);
}

function renderTrack(t) {
  document.title = `${t.title} · sonicbus`;
  text($("track-title"), t.title);
  const facts = [["Artist", t.artist], ["Album", t.album], ["Length", playTime(t.duration)],
                 ["File", t.file_name], ["Model", t.model]];
  $("facts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  $("track-actions").replaceChildren(player.button(t));
  show($("track-card"), true);
}

function renderTags(tags) {
  const top = tags.length ? tags[0].score : 1;
  $("tags").replaceChildren(...tags.map(({ tag, score }) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.max(1, (100 * score) / top)}%`; // the first tag fills the bar
    return h("li", { "data-testid": "tag", dataset: { tag } },
      h("span", { class: "name" }, tag),
      h("span", { class: "bar", "aria-hidden": "true" }, fill),
      h("span", { class: "value" }, `${Math.round(100 * score)} %`));
  }));
  if (!tags.length) $("tags").append(h("li", { class: "empty" }, "No tags: the library model predicts none."));
  show($("tags-card"), true);
}

function renderSimilar(details) {
  const list = details.similar;
  $("similar-list").replaceChildren(...list.map((t) => trackRow(t, player, { testid: "similar-track" })));
  text($("similar-note"), details.similar_error
    ? `No similar tracks: ${details.similar_error}`
    : list.length ? `${list.length} nearest by ${details.track.model}, most similar first` : "No similar tracks found.");
  show($("similar-card"), true);
  player.mark();
}

async function start() {
  if (!(await startPage($("problem")))) return;
  let details;
  try {
    details = await get(`/api/tracks/${encodeURIComponent(trackId)}?similar=12`);
  } catch (error) {
    fail(error.status === 404 ? `No track with the id “${trackId}” in the library.` : `The track could not be read: ${error.message}`);
    return;
  }
  renderTrack(details.track);
  renderTags(details.top_tags);
  renderSimilar(details);
}

start();
