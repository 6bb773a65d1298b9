// A track picker of the playlist builder: a search box with suggestions (autocomplete.js over
// GET /api/tracks?q=) and the tracks picked so far as chips, each with a Remove button and,
// where the mode weighs its seeds, a weight. `single` pickers hold one track: picking
// another replaces it.

import { get } from "./api.js";
import { Autocomplete } from "./autocomplete.js";
import { h } from "./dom.js";

let made = 0;

const suggest = async (query) =>
  (await get(`/api/tracks?q=${encodeURIComponent(query)}&limit=8`)).tracks;
const describe = (t) => [t.title, [t.artist, t.album].filter(Boolean).join(" · ")];

export class TrackPicker {
  /** Builds itself into `host` (an element with data-label, data-testid, optional
   *  data-single and data-weights). */
  constructor(host, { onChange = () => {} } = {}) {
    const id = `picker-${++made}`;
    this.single = host.dataset.single !== undefined;
    this.weights = host.dataset.weights !== undefined;
    this.onChange = onChange;
    this.picked = [];
    this.input = h("input", {
      id: `${id}-input`, type: "search", role: "combobox", "aria-autocomplete": "list",
      "aria-expanded": "false", "aria-controls": `${id}-list`, autocomplete: "off",
      spellcheck: "false", placeholder: "Search a title, artist or album", "data-testid": "picker-input",
    });
    this.list = h("ul", { id: `${id}-list`, class: "suggestions", role: "listbox",
                          "aria-label": "Suggestions", "data-testid": "suggestions", hidden: true });
    this.chips = h("ul", { class: "chips", "aria-label": host.dataset.label, "data-testid": "picked" });
    host.classList.add("picker");
    host.append(
      h("label", { for: this.input.id }, host.dataset.label),
      h("span", { class: "combo" }, this.input, this.list),
      this.chips);
    new Autocomplete(this.input, this.list, {
      suggest, describe,
      pick: (track) => this.add(track),
      submit: async (query) => {
        // Enter without a highlighted suggestion: the best match, if there is one.
        const [best] = query ? await suggest(query).catch(() => []) : [];
        if (best) this.add(best);
      },
    });
  }

  add(track) {
    this.input.value = "";
    if (this.single) this.picked = [];
    if (!this.picked.some((t) => t.track_id === track.track_id)) {
      this.picked.push({ ...track, weight: 1 });
    }
    this.render();
    this.input.focus();
  }

  remove(trackId) {
    this.picked = this.picked.filter((t) => t.track_id !== trackId);
    this.render();
    this.input.focus();
  }

  /** The picked tracks ({track_id, title, artist, weight}), in the order picked. */
  tracks() {
    return this.picked.map((t) => ({ ...t }));
  }

  render() {
    this.chips.replaceChildren(...this.picked.map((track) => {
      const name = track.artist ? `${track.title} by ${track.artist}` : track.title;
      const chip = h("li", { class: "chip", "data-testid": "chip", dataset: { id: track.track_id } },
        h("span", { class: "chip-name" }, track.title || track.track_id,
          track.artist ? h("span", { class: "detail" }, ` · ${track.artist}`) : null));
      if (this.weights) {
        chip.append(h("input", {
          type: "number", class: "weight", min: "-10", max: "10", step: "0.5", value: String(track.weight),
          "aria-label": `Weight of ${name}`, "data-testid": "weight",
          oninput: (event) => { track.weight = Number(event.target.value); },
        }));
      }
      chip.append(h("button", { type: "button", class: "quiet small", "aria-label": `Remove ${name}`,
                                onclick: () => this.remove(track.track_id) }, "×"));
      return chip;
    }));
    this.onChange(this.picked);
  }
}
