// A search box with suggestions (the WAI-ARIA combobox pattern): typing asks `suggest(text)`
// (debounced; a newer answer wins), ArrowDown/ArrowUp move through the list, Enter picks the
// highlighted one (or submits the text), Escape closes it. Clicks pick too.

import { h, show } from "./dom.js";

export class Autocomplete {
  constructor(input, list, { suggest, describe, pick, submit, delayMs = 120 }) {
    Object.assign(this, { input, list, suggest, describe, pick, submit, delayMs });
    this.items = [];
    this.active = -1;
    this.asked = 0;
    input.addEventListener("input", () => this.schedule());
    input.addEventListener("keydown", (event) => this.key(event));
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.ask(), this.delayMs);
  }

  async ask() {
    const query = this.input.value.trim();
    const ticket = ++this.asked;
    if (!query) return this.close();
    const items = await this.suggest(query).catch(() => []);
    if (ticket !== this.asked) return; // a newer question is on its way
    this.items = items;
    this.active = -1;
    this.list.replaceChildren(...items.map((item, i) => {
      const [main, detail] = this.describe(item);
      return h("li", { id: `${this.list.id}-${i}`, role: "option", "aria-selected": "false",
                       "data-testid": "suggestion", onmousedown: (e) => { e.preventDefault(); this.choose(i); } },
        h("span", {}, main), h("span", { class: "detail" }, detail));
    }));
    if (!items.length) this.list.append(h("li", { class: "empty", role: "option", "aria-disabled": "true" }, "No match"));
    this.open(true);
  }

  open(on) {
    show(this.list, on);
    this.input.setAttribute("aria-expanded", String(on));
  }

  close() {
    this.open(false);
    this.active = -1;
    this.input.removeAttribute("aria-activedescendant");
  }

  move(step) {
    if (!this.items.length) return;
    if (this.list.hidden) this.open(true);
    this.active = (this.active + step + this.items.length) % this.items.length;
    [...this.list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === this.active)));
    const node = this.list.children[this.active];
    this.input.setAttribute("aria-activedescendant", node.id);
    node.scrollIntoView({ block: "nearest" });
  }

  choose(index) {
    const item = this.items[index];
    this.close();
    if (item) this.pick(item);
  }

  key(event) {
    if (event.key === "ArrowDown") this.move(1);
    else if (event.key === "ArrowUp") this.move(-1);
    else if (event.key === "Escape") this.close();
    else if (event.key === "Enter") {
      if (this.active >= 0 && !this.list.hidden) this.choose(this.active);
      else {
        clearTimeout(this.timer);
        this.asked++; // an answer still on its way must not reopen the list
        this.close();
        this.submit(this.input.value.trim());
      }
    } else return;
    event.preventDefault();
  }
}
