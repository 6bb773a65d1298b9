// The operations dashboard: one overview document (GET /api/overview, then live from the
// event stream /api/events) drawn into the page; every button is a call of the HTTP API.

import { ApiError, get, post, session, toLogin } from "./api.js";
import { LagChart } from "./chart.js";
import { h, show, syncList, text } from "./dom.js";
import { DASH, ago, clock, count, duration, percent, rate } from "./format.js";

const $ = (id) => document.getElementById(id);
const STALE_MS = 20000; // no update for this long: say so
const chart = new LagChart($("chart"), $("legend"));
let lastUpdate = 0;
let stream = null;

// -- the parts of the page -------------------------------------------------------------------

function badge(state) {
  const tone = {
    running: "ok", loaded: "ok", ok: "ok", Stable: "ok", completed: "ok",
    restarting: "warn", loading: "warn", cancelled: "warn", paused: "warn",
    PreparingRebalance: "warn", CompletingRebalance: "warn",
    stopped: "bad", failed: "bad", down: "bad", Dead: "bad",
  }[state] ?? "idle";
  return tone;
}

function setBadge(node, state, label = state) {
  text(node, label);
  node.className = `badge ${badge(state)}`;
}

function stateItem() {
  return h("li", {}, h("span", { class: "badge" }), h("strong"), h("span", { class: "detail" }));
}

function renderStates(list, items) {
  syncList(list, items, (s) => s.name, stateItem, (node, s) => {
    const [state, name, detail] = node.children;
    setBadge(state, s.state);
    text(name, s.name);
    text(detail, s.detail ?? "");
    node.dataset.state = s.state;
  });
}

function renderServices(o) {
  const parts = [
    { name: "Kafka bus", state: o.bus.ok ? "ok" : "down", detail: o.bus.detail },
    { name: "Milvus", state: o.milvus.ok ? "ok" : "down", detail: o.milvus.detail },
    ...o.services,
  ];
  renderStates($("services"), parts);
}

function renderBanners(o) {
  const down = (name, part) =>
    `${name} is down: ${part.detail || "no answer"}. The figures that need it are missing; ` +
    "this page recovers by itself when it is back.";
  text($("banner-bus"), o.bus.ok ? "" : down("The Kafka bus", o.bus));
  show($("banner-bus"), !o.bus.ok);
  text($("banner-milvus"), o.milvus.ok ? "" : down("Milvus", o.milvus));
  show($("banner-milvus"), !o.milvus.ok);
}

function progressRow(testid, label) {
  return h("div", { class: "progress", "data-testid": testid },
    h("div", { class: "progress-label" },
      h("strong", { class: "name" }),
      h("span", { class: "figures", "data-testid": `${testid}-figures` })),
    h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
               "aria-label": label, "data-testid": `${testid}-bar` },
      h("span", { class: "fill" })),
    h("div", { class: "sub" },
      h("span", { class: "percent", "data-testid": `${testid}-percent` }),
      h("span", { class: "rate" }), h("span", { class: "eta" })));
}

function updateProgress(node, name, done, total, perSecond, eta) {
  const p = percent(done, total);
  node.dataset.model = name;
  text(node.querySelector(".name"), name);
  text(node.querySelector(".figures"), `${count(done)} / ${count(total)}`);
  const bar = node.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(p));
  bar.setAttribute("aria-valuetext", `${p} %`);
  bar.querySelector(".fill").style.width = `${p}%`;
  bar.classList.toggle("complete", p >= 100);
  text(node.querySelector(".percent"), `${p} %`);
  text(node.querySelector(".rate"), perSecond ? rate(perSecond) : "");
  text(node.querySelector(".eta"), p >= 100 ? "done" : eta ? `ETA ${duration(eta)}` : "");
}

function renderBacklog(o) {
  syncList($("backlog"), o.backlog, (b) => b.model, (b) => progressRow("backlog", `${b.model} embedded`),
    (node, b) => updateProgress(node, b.model, b.done, b.total, b.rate_per_s, b.eta_s));
  if (!o.backlog.length) $("backlog").replaceChildren(h("p", { class: "empty" }, "No model to show yet."));
  const paused = Boolean(o.embedding?.paused);
  const threads = o.embedding?.threads ? ` · ${o.embedding.threads} threads` : "";
  setBadge($("embedding-state"), paused ? "paused" : "running", (paused ? "paused" : "running") + threads);
  if (!busy.has("pause")) $("pause").disabled = paused;
  if (!busy.has("resume")) $("resume").disabled = !paused;
}

function groupRow() {
  // data-label: the column's name, shown beside each figure where a phone stacks the cells.
  const cell = (testid, label) => h("td", { class: "num", "data-testid": testid, "data-label": label });
  return h("tr", { "data-testid": "group-row" },
    h("th", { scope: "row", "data-testid": "group-name" },
      h("span", { class: "name" }), h("span", { class: "detail" })),
    cell("group-lag", "Lag"), cell("group-lag-seconds", "Lag (time)"), cell("group-pending", "Pending"),
    cell("group-throughput", "Throughput"), cell("group-eta", "ETA"));
}

function renderGroups(o) {
  syncList($("groups"), o.groups, (g) => g.group, groupRow, (row, g) => {
    row.dataset.group = g.group;
    const [name, lag, seconds, pending, throughput, eta] = row.children;
    text(name.querySelector(".name"), g.group);
    const members = g.members?.length ?? 0;
    text(name.querySelector(".detail"), `${g.state} · ${members} member${members === 1 ? "" : "s"}`);
    text(lag, count(g.lag));
    lag.dataset.value = String(g.lag);
    text(seconds, duration(g.lag_seconds));
    text(pending, count(g.pending));
    pending.dataset.value = String(g.pending);
    text(throughput, rate(g.throughput));
    text(eta, g.pending === 0 ? "caught up" : duration(g.eta_s));
  });
  if (!o.groups.length && o.bus.ok) {
    $("groups").replaceChildren(h("tr", {}, h("td", { colspan: "6", class: "empty" }, "No consumer group yet.")));
  }
}

function stageItem(stage) {
  return h("li", { "data-testid": "dlq-stage" },
    h("span", { class: "name" }), h("span", { class: "count" }),
    h("button", { type: "button", class: "small", "data-action": "retry", "data-stage": stage }, "Retry"));
}

function renderDeadLetters(o) {
  const letters = o.dead_letters;
  setBadge($("dlq-total"), letters.total ? "failed" : "ok", letters.ok === false ? DASH : count(letters.total));
  const stages = Object.entries(letters.by_stage ?? {}).map(([stage, n]) => ({ stage, n }));
  syncList($("dlq-stages"), stages, (s) => s.stage, (s) => stageItem(s.stage), (node, s) => {
    node.dataset.stage = s.stage;
    text(node.querySelector(".name"), s.stage);
    text(node.querySelector(".count"), count(s.n));
    node.querySelector("button").setAttribute("aria-label", `Retry the ${s.stage} dead letters`);
  });
  if (!stages.length) {
    $("dlq-stages").replaceChildren(h("li", { class: "empty" },
      letters.ok === false ? `Cannot read them: ${letters.detail}` : "None: nothing failed."));
  }
  $("dlq-latest").replaceChildren(...(letters.latest ?? []).map((l) =>
    h("li", { "data-testid": "dlq-letter", "data-stage": l.stage },
      h("span", { class: "meta" }, `${clock(l.at)} · ${l.stage} · `, h("code", {}, l.track_id ?? DASH)),
      h("span", { class: "error", title: l.error }, l.error))));
}

function exportLinks(model) {
  return ["npz"].map((format) =>
    h("a", { href: `/api/export/${encodeURIComponent(model)}?format=${format}`, download: "",
             "data-testid": "export-link", "data-format": format,
             "aria-label": `Export ${model} as ${format}` }, format.toUpperCase()));
}

function renderCollections(o) {
  const rows = o.collections;
  syncList($("collections"), rows, (c) => c.collection,
    (c) => h("tr", { "data-testid": "collection-row" },
      h("th", { scope: "row" }, h("span", { class: "name" }), h("span", { class: "detail" })),
      h("td", { class: "num", "data-testid": "collection-rows" }), h("td", { class: "num" }),
      h("td", { class: "links" }, ...(c.model && c.role !== "state" ? exportLinks(c.model) : []))),
    (row, c) => {
      row.dataset.collection = c.collection;
      row.dataset.model = c.model ?? "";
      const [name, rowsCell, dim] = row.children;
      text(name.querySelector(".name"), c.collection);
      text(name.querySelector(".detail"), [c.model, c.role].filter(Boolean).join(" · "));
      text(rowsCell, count(c.rows));
      text(dim, count(c.dim));
    });
}

function renderModels(o) {
  renderStates($("models"), o.models);
  const select = $("reembed-model");
  const names = o.models.map((m) => m.name);
  if ([...select.options].map((opt) => opt.value).join() !== names.join()) {
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    if (names.includes(chosen)) select.value = chosen;
  }
}

function replayRow(p) {
  const row = progressRow("replay", `re-embed of ${p.replay.model}`);
  row.append(h("div", { class: "actions" },
    h("span", { class: "badge" }),
    h("button", { type: "button", class: "small", "data-action": "replay-cancel" }, "Cancel"),
    h("button", { type: "button", class: "small", "data-action": "replay-resume" }, "Resume")));
  return row;
}

function renderReplays(o) {
  syncList($("replays"), o.replays, (p) => p.replay.model, replayRow, (node, p) => {
    const status = p.replay.status;
    updateProgress(node, p.replay.model, p.processed, p.total, p.rate, p.eta_s);
    node.dataset.status = status;
    setBadge(node.querySelector(".badge"), status);
    for (const button of node.querySelectorAll("button")) button.dataset.model = p.replay.model;
    show(node.querySelector('[data-action="replay-cancel"]'), status === "running");
    show(node.querySelector('[data-action="replay-resume"]'), status === "cancelled");
  });
}

function render(o) {
  renderBanners(o);
  renderServices(o);
  renderBacklog(o);
  renderGroups(o);
  renderDeadLetters(o);
  renderCollections(o);
  renderModels(o);
  renderReplays(o);
  chart.add(o.at, o.groups);
  chart.draw();
  lastUpdate = Date.now();
  text($("updated"), `updated ${clock(o.at)}`);
  $("updated").dataset.at = o.at;
}

// -- live updates --------------------------------------------------------------------------

function setLive(live, words) {
  $("live").dataset.state = live ? "live" : "reconnecting";
  text($("live-text"), words ?? (live ? "live" : "reconnecting…"));
  text($("banner-connection"), live ? "" :
    "Lost the connection to sonicbus; retrying by itself. The figures below may be old.");
  show($("banner-connection"), !live);
}

function onMessage(event) {
  try {
    render(JSON.parse(event.data));
    setLive(true);
  } catch (error) {
    console.error("cannot show this update", error);
  }
}

function connect() {
  stream?.close();
  stream = new EventSource("/api/events");
  stream.addEventListener("overview", onMessage);
  stream.onmessage = onMessage;
  stream.onerror = async (event) => {
    if (event.data) {
      // `event: error` from the server: it could not build this update; the next may work.
      setLive(false, "update failed");
      text($("banner-connection"), `The server could not build this update: ${event.data}`);
      return;
    }
    setLive(false);
    if (stream.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // Refused (a 401 after the session ended, say): find out why, then try again.
    try {
      await session();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return; // off to /login
    }
    setTimeout(connect, 3000);
  };
}

async function refresh() {
  try {
    render(await get("/api/overview"));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setLive(false);
  }
}

// -- actions -------------------------------------------------------------------------------

const busy = new Set();

function toast(message, failed = false) {
  const node = $("toast");
  text(node, message);
  node.classList.toggle("failed", failed);
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, failed ? 10000 : 5000);
}

async function act(button, key, work, said) {
  busy.add(key);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    toast(said(await work()));
  } catch (error) {
    toast(error.message || String(error), true);
  } finally {
    busy.delete(key);
    button.disabled = false;
    button.removeAttribute("aria-busy");
    await refresh();
  }
}

const ACTIONS = {
  retry: (b) => act(b, `retry-${b.dataset.stage}`,
    () => post("/api/dead-letters/retry", { stage: b.dataset.stage ?? null, limit: null }),
    (r) => `Re-published ${count(r.retried)} dead letter${r.retried === 1 ? "" : "s"} of ${b.dataset.stage}.`),
  "replay-cancel": (b) => act(b, `cancel-${b.dataset.model}`,
    () => post(`/reembed/${encodeURIComponent(b.dataset.model)}/cancel`),
    () => `Re-embed of ${b.dataset.model} cancelled: the embedders hold until you resume.`),
  "replay-resume": (b) => act(b, `resume-${b.dataset.model}`,
    () => post(`/reembed/${encodeURIComponent(b.dataset.model)}/resume`),
    () => `Re-embed of ${b.dataset.model} resumed.`),
};

function wire() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && ACTIONS[button.dataset.action]) ACTIONS[button.dataset.action](button);
  });
  $("pause").addEventListener("click", (e) => act(e.currentTarget, "pause",
    () => post("/api/embedding/pause"), () => "Embedding paused: nothing is committed until you resume."));
  $("resume").addEventListener("click", (e) => act(e.currentTarget, "resume",
    () => post("/api/embedding/resume"), () => "Embedding resumed."));
  $("reembed-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const model = form.elements.model.value;
    if (!model) return;
    const body = { model, fresh: form.elements.fresh.checked, force: form.elements.force.checked };
    act(form.querySelector("button[type=submit]"), "reembed", () => post("/reembed", body),
      (r) => `Re-embed of ${model} started: ${count(r.total ?? 0)} records to replay into ${r.collection}.`);
  });
  for (const button of document.querySelectorAll(".segmented button")) {
    button.addEventListener("click", () => {
      for (const other of document.querySelectorAll(".segmented button")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      text($("chart-caption"), button.dataset.metric === "pending"
        ? "Records pending per group, up to the last hour" : "Age of the oldest unread record per group, up to the last hour");
      chart.show(button.dataset.metric);
    });
  }
  $("logout").addEventListener("click", async () => {
    await post("/auth/logout").catch(() => null);
    location.assign("/login");
  });
  setInterval(() => {
    if (lastUpdate && Date.now() - lastUpdate > STALE_MS) setLive(false, `no update for ${ago(new Date(lastUpdate))}`);
  }, 5000);
}

async function start() {
  wire();
  let me;
  try {
    me = await session();
  } catch (error) {
    if (error.status !== 401) setLive(false, error.message);
    if (error.status === 403) {
      text($("banner-connection"), error.message);
      show($("banner-connection"), true);
    }
    return;
  }
  if (me.via !== "loopback") {
    text($("user"), me.user);
    show($("who"), true);
  }
  await refresh();
  connect();
}

start().catch((error) => {
  if (error instanceof ApiError && error.status === 401) toLogin();
  else console.error(error);
});
