// The one player of a page (an <audio> element on /api/audio/<id>) and the track rows that
// feed it: every list of tracks (search results, similar tracks, playlists) uses trackRow.

import { h, show, text } from "./dom.js";
import { playTime } from "./format.js";

export const audioUrl = (id) => `/api/audio/${encodeURIComponent(id)}`;
export const trackUrl = (id) => `/track/${encodeURIComponent(id)}`;

const label = (t) => (t.artist ? `${t.title} by ${t.artist}` : t.title);

export class Player {
  constructor(audio, now, error) {
    this.audio = audio;
    this.now = now;
    this.error = error;
    this.current = null;
    for (const event of ["play", "pause", "ended", "emptied"]) {
      audio.addEventListener(event, () => this.mark());
    }
    audio.addEventListener("error", () => this.explain());
  }

  /** A Play/Pause button for `track`; pressed while it plays. */
  button(track, name = "Play") {
    const button = h("button", {
      type: "button", class: "play small", "data-testid": "play", "aria-pressed": "false",
      "aria-label": `${name} ${label(track)}`, dataset: { track: track.track_id },
      onclick: () => this.toggle(track),
    }, name);
    button.dataset.name = name;
    return button;
  }

  toggle(track) {
    if (this.current?.track_id === track.track_id && !this.audio.paused) {
      this.audio.pause();
      return;
    }
    if (this.current?.track_id !== track.track_id) {
      this.current = track;
      this.audio.src = audioUrl(track.track_id);
      this.audio.dataset.track = track.track_id;
      text(this.now, `Now playing: ${label(track)}`);
      show(this.error, false);
    }
    this.audio.play().catch(() => null); // a failed load says why through "error"
  }

  mark() {
    const playing = this.current && !this.audio.paused ? this.current.track_id : null;
    for (const button of document.querySelectorAll("button.play")) {
      const on = button.dataset.track === playing;
      button.setAttribute("aria-pressed", String(on));
      text(button, on ? "Pause" : button.dataset.name);
    }
  }

  async explain() {
    // The element only says "failed": ask the server why (a 404 or a refusing Navidrome).
    let why = "the browser cannot play this file";
    try {
      const response = await fetch(this.audio.src, { headers: { Range: "bytes=0-0" } });
      if (!response.ok) why = (await response.json()).detail ?? `HTTP ${response.status}`;
    } catch {
      why = "the server did not answer";
    }
    text(this.error, `Cannot play ${this.current ? label(this.current) : "this track"}: ${why}`);
    show(this.error, true);
    this.mark();
  }
}

/** One track as a list item: a play button, its title (a link to its page), artist ·
 *  album, and its length (and score, for answers to a query). */
export function trackRow(track, player, extra = {}) {
  const meta = [track.artist, track.album].filter(Boolean).join(" · ");
  const figures = [playTime(track.duration)];
  if (track.score !== undefined) figures.push(`score ${track.score.toFixed(3)}`);
  return h("li", { class: "track", "data-testid": extra.testid ?? "track", dataset: { id: track.track_id } },
    player.button(track),
    h("span", { class: "what" },
      h("a", { href: trackUrl(track.track_id), "data-testid": "track-link" }, track.title || track.track_id),
      h("span", { class: "detail" }, meta)),
    h("span", { class: "figures" }, figures.join(" · ")));
}
