// The live chart of the consumer groups: the last hour of samples, kept in the page (from the
// event stream; the API keeps no history), drawn as inline SVG.

import { count, duration } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WINDOW_MS = 3600 * 1000;
const MIN_SPAN_MS = 5 * 60 * 1000;
const HEIGHT = 180;
const PAD = { left: 52, right: 10, top: 10, bottom: 22 };
const COLOURS = 6; // --series-0 .. --series-5 in style.css

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceCeiling(value) {
  // A round top whose half is round too (the grid lines are at 0, half and top).
  const power = 10 ** Math.floor(Math.log10(Math.max(value, 1)));
  const step = [1, 2, 4, 6, 8, 10].find((m) => m * power >= value);
  return step * power;
}

export class LagChart {
  constructor(svg, legend) {
    this.svg = svg;
    this.legend = legend;
    this.metric = "pending";
    this.series = new Map(); // group -> [{t, pending, lag_seconds}]
    new ResizeObserver(() => this.draw()).observe(svg);
  }

  add(at, groups) {
    const t = new Date(at).getTime() || Date.now();
    for (const g of groups) {
      const points = this.series.get(g.group) ?? [];
      if (points.length && points[points.length - 1].t >= t) continue;
      points.push({ t, pending: g.pending ?? 0, lag_seconds: g.lag_seconds ?? 0 });
      this.series.set(g.group, points);
    }
    this.prune(t);
  }

  prune(now) {
    for (const [group, points] of this.series) {
      const kept = points.filter((p) => p.t >= now - WINDOW_MS);
      if (kept.length) this.series.set(group, kept);
      else this.series.delete(group);
    }
  }

  show(metric) {
    this.metric = metric;
    this.draw();
  }

  draw() {
    const width = Math.max(this.svg.clientWidth || 600, 240);
    const svg = this.svg;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    svg.setAttribute("height", HEIGHT);
    const now = Date.now();
    const label = this.metric === "pending" ? count : duration;
    let top = 0;
    for (const points of this.series.values()) {
      for (const p of points) top = Math.max(top, p[this.metric]);
    }
    top = niceCeiling(Math.max(top, this.metric === "pending" ? 4 : 10));
    // The hour once there is an hour of samples; before that, what there is (5 min at least).
    let oldest = now;
    for (const points of this.series.values()) oldest = Math.min(oldest, points[0].t);
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - oldest));
    const plotW = width - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + plotW * (1 - (now - t) / span);
    const y = (v) => PAD.top + plotH * (1 - v / top);

    for (const fraction of [0, 0.5, 1]) {
      const v = top * fraction;
      svg.append(el("line", { class: "grid", x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v) }));
      svg.append(el("text", { class: "tick", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, label(v)));
    }
    const minutes = Math.round(span / 60000);
    for (const [ago, anchor] of [[minutes, "start"], [minutes / 2, "middle"], [0, "end"]]) {
      const text = ago ? `${ago} min ago` : "now";
      svg.append(el("text", { class: "tick", x: x(now - ago * 60000), y: HEIGHT - 6, "text-anchor": anchor }, text));
    }

    this.legend.replaceChildren();
    let index = 0;
    for (const [group, points] of [...this.series].sort(([a], [b]) => a.localeCompare(b))) {
      const colour = `var(--series-${index % COLOURS})`;
      index += 1;
      const line = points.map((p) => `${x(p.t).toFixed(1)},${y(p[this.metric]).toFixed(1)}`).join(" ");
      if (points.length === 1) {
        const p = points[0];
        svg.append(el("circle", { cx: x(p.t), cy: y(p[this.metric]), r: 3, fill: colour }));
      } else {
        svg.append(el("polyline", { class: "series", points: line, stroke: colour }));
      }
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      item.append(swatch, `${group}: ${label(points[points.length - 1][this.metric])}`);
      this.legend.append(item);
    }
    if (!this.series.size) {
      svg.append(el("text", { class: "tick", x: width / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "waiting for the first samples…"));
    }
  }
}
