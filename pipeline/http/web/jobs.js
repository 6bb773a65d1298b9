// The jobs page: start a clustering, cleaning, scan or daily mixes job (POST /api/jobs), follow it live
// (GET /api/jobs/<id> every second: runs done / total, best score, stage) and cancel it, the
// last results (GET /api/jobs), the automatic playlists of the last clustering with their
// songs (its `done` event's result), and the schedules (GET/PUT /api/schedules).

import { ApiError, get, post, put } from "./api.js";
import { h, show, syncList, text } from "./dom.js";
import { DASH, ago, count, percent } from "./format.js";
import { startPage } from "./page.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const FINAL = new Set(["refused", "done", "failed", "cancelled"]);
const TONE = { done: "ok", accepted: "", progress: "", queued: "", refused: "warn", interrupted: "warn",
  cancel_requested: "warn", cancelled: "warn", failed: "bad" };
const STAGE = { queued: "Waiting for a jobs worker to take it up…", accepted: "Accepted, starting…",
  interrupted: "Its worker stopped: the next one takes it up.", cancel_requested: "Cancelling…" };

let followed = null; // the id of the job the "Running now" card follows
let timer = null;
let schedules = []; // the effective schedules as GET /api/schedules answers

function problem(node, message) {
  text(node, message || "");
  show(node, Boolean(message));
}

function toast(message) {
  const node = $("toast");
  text(node, message);
  show(node, true);
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => show(node, false), 5000);
}

function badge(node, status) {
  text(node, status.replace("_", " "));
  node.className = `badge ${TONE[status] ?? ""}`.trim();
  node.dataset.status = status;
}

// --- start a job ---------------------------------------------------------------------------

function formKind() {
  return $("start-form").elements.kind.value;
}

function showKind() {
  const kind = formKind();
  for (const node of $("start-form").querySelectorAll("[data-kind]")) show(node, node.dataset.kind === kind);
}

function params(kind) {
  // Only what was filled in: the rest stays as the server's config says.
  const found = {};
  const part = $("start-form").querySelector(`fieldset[data-kind="${kind}"]`);
  for (const input of part?.querySelectorAll("input") ?? []) {
    if (input.type === "checkbox") {
      if (input.checked) found[input.name] = true;
    } else if (input.value.trim() !== "") {
      found[input.name] = Number(input.value);
    }
  }
  return found;
}

async function startJob(event) {
  event.preventDefault();
  const kind = formKind();
  const button = $("start-form").querySelector("button[type=submit]");
  problem($("start-problem"), "");
  button.disabled = true;
  try {
    const answer = await post("/api/jobs", { kind, params: params(kind) });
    follow(answer.job_id, answer);
    toast(`Started ${answer.kind} job ${answer.job_id}.`);
    loadJobs();
  } catch (error) {
    const why = error instanceof ApiError && error.status === 409 ? "Not started: " : "";
    problem($("start-problem"), why + error.message);
  } finally {
    button.disabled = false;
  }
}

// --- follow and cancel ---------------------------------------------------------------------

function follow(jobId, first = null) {
  followed = jobId;
  clearTimeout(timer);
  show($("current-empty"), false);
  show($("current-body"), true);
  text($("current-name"), jobId);
  if (first) render(first);
  poll();
}

async function poll() {
  const jobId = followed;
  let state;
  try {
    state = await get(`/api/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    // 404: published, but no worker has answered it yet.
    state = error instanceof ApiError && error.status === 404
      ? { job_id: jobId, status: "queued" }
      : { job_id: jobId, status: "unknown", message: error.message };
  }
  if (jobId !== followed) return;
  render(state);
  if (FINAL.has(state.status)) {
    loadJobs();
    return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function render(state) {
  const p = state.progress ?? {};
  badge($("current-status"), state.status);
  text($("current-name"), `${state.kind ?? "job"} · ${state.job_id}`);
  const done = p.done ?? 0;
  const total = p.total ?? null;
  const unit = state.kind === "clustering" ? " runs" : "";
  text($("current-figures"), total === null ? (p.done ? `${count(done)}${unit}` : DASH) : `${count(done)} / ${count(total)}${unit}`);
  const share = state.status === "done" ? 100 : percent(done, total);
  $("current-bar").querySelector(".fill").style.width = `${share}%`;
  $("current-bar").setAttribute("aria-valuenow", String(share));
  $("current-bar").classList.toggle("complete", state.status === "done");
  $("current-bar").dataset.done = String(done);
  text($("current-percent"), `${share} %`);
  text($("current-best"), p.best_score === null || p.best_score === undefined ? "" : `best score ${p.best_score.toFixed(4)}`);
  const stage = FINAL.has(state.status)
    ? state.message || state.status
    : p.message || STAGE[state.status] || state.message || "";
  text($("current-stage"), stage);
  const cancellable = !FINAL.has(state.status) && !["queued", "cancel_requested", "unknown"].includes(state.status);
  show($("cancel"), cancellable);
}

async function cancel() {
  const button = $("cancel");
  button.disabled = true;
  try {
    await post(`/api/jobs/${encodeURIComponent(followed)}/cancel`);
    text($("current-stage"), STAGE.cancel_requested);
  } catch (error) {
    toast(`Not cancelled: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- last results and the automatic playlists -------------------------------------------------

function resultText(job) {
  return job.message || job.progress?.message || (job.status === "done" ? "done" : "");
}

function jobRow() {
  const row = h("tr", { "data-testid": "job" },
    h("th", { scope: "row" },
      h("button", { type: "button", class: "quiet small name", "data-testid": "follow",
        onclick: () => follow(row.dataset.key) }),
      h("span", { class: "detail" })),
    h("td", {}, h("span", { class: "badge" })),
    h("td", { class: "when" }),
    h("td", { class: "result" }));
  return row;
}

function updateJobRow(row, job) {
  text(row.querySelector(".name"), job.kind ?? "job");
  row.querySelector(".name").setAttribute("aria-label", `Follow ${job.kind ?? "job"} ${job.job_id}`);
  text(row.querySelector("th .detail"), job.job_id);
  badge(row.querySelector(".badge"), job.status);
  text(row.querySelector(".when"), ago(job.at));
  text(row.querySelector(".result"), resultText(job));
  row.dataset.status = job.status;
}

function songItem(song) {
  return h("li", { "data-testid": "song", "data-id": song.track_id },
    h("a", { href: `/track/${encodeURIComponent(song.track_id)}` }, song.title || song.track_id),
    h("span", { class: "detail" }, song.artist ? ` · ${song.artist}` : ""));
}

function renderPlaylists(jobs) {
  const last = jobs.find((j) => j.kind === "clustering" && j.status === "done" && j.result);
  const list = last?.result.playlists ?? [];
  text($("playlist-count"), last ? count(list.length) : DASH);
  if (!last) return;
  text($("playlists-summary"), `From ${last.job_id}, ${ago(last.at)}: ${last.message}`);
  const key = (p) => `${last.job_id}/${p.name}`;
  syncList($("playlists"), list, key, (p) => {
    const songs = p.songs ?? [];
    return h("li", { "data-testid": "auto-playlist", "data-name": p.name },
      h("details", { open: list.indexOf(p) === 0 },
        h("summary", {},
          h("span", { class: "name", "data-testid": "playlist-name" }, p.name),
          h("span", { class: "detail" }, ` ${count(p.tracks)} songs · ${(p.tags ?? []).join(", ")}`)),
        songs.length ? h("ol", { class: "songs", "data-testid": "songs" }, ...songs.map(songItem)) : null,
        songs.length < p.tracks
          ? h("p", { class: "detail" }, songs.length
            ? `The first ${count(songs.length)} of ${count(p.tracks)} songs; the M3U8 file and Navidrome have them all.`
            : "Its songs are in the M3U8 file and on Navidrome (this job did not list them here).")
          : null));
  }, () => {});
}

async function loadJobs() {
  let jobs;
  try {
    jobs = await get("/api/jobs?limit=20");
  } catch (error) {
    problem($("problem"), `The jobs could not be read: ${error.message}`);
    return;
  }
  problem($("problem"), "");
  syncList($("jobs"), jobs, (j) => j.job_id, jobRow, updateJobRow);
  show($("jobs-empty"), jobs.length === 0);
  renderPlaylists(jobs);
  if (followed === null) {
    const running = jobs.find((j) => !FINAL.has(j.status));
    if (running) follow(running.job_id, running);
  }
}

// --- schedules -----------------------------------------------------------------------------

function apiSchedules() {
  return schedules.filter((v) => v.source === "api").map((v) => v.schedule);
}

function scheduleRow(view) {
  const row = h("tr", { "data-testid": "schedule" },
    h("th", { scope: "row", class: "name" }), h("td", { class: "kind" }), h("td", {}, h("code", { class: "cron" })),
    h("td", { class: "source" }), h("td", { class: "num" }));
  return row;
}

function updateScheduleRow(row, view) {
  const s = view.schedule;
  text(row.querySelector(".name"), s.name);
  text(row.querySelector(".kind"), s.enabled ? s.kind : `${s.kind} (off)`);
  text(row.querySelector(".cron"), s.cron);
  text(row.querySelector(".source"), view.source === "api" ? "this page / API" : "config file");
  const cell = row.querySelector(".num");
  if (view.source === "api" && !cell.firstChild) {
    cell.append(h("button", { type: "button", class: "quiet small", "data-testid": "schedule-remove",
      "aria-label": `Remove schedule ${s.name}`, onclick: () => removeSchedule(s.name) }, "Remove"));
  } else if (view.source !== "api") {
    cell.replaceChildren();
  }
}

function renderSchedules() {
  syncList($("schedules"), schedules, (v) => `${v.source}:${v.schedule.name}`, scheduleRow, updateScheduleRow);
  show($("schedules-empty"), schedules.length === 0);
  show($("schedules-table"), schedules.length > 0);
}

async function loadSchedules() {
  try {
    schedules = await get("/api/schedules");
    renderSchedules();
  } catch (error) {
    problem($("schedule-problem"), `The schedules could not be read: ${error.message}`);
  }
}

function fieldErrors(error) {
  // A 422 of FastAPI names the field of each message: loc = ["body", index, field].
  const found = {};
  for (const e of error.errors ?? []) {
    const field = Array.isArray(e.loc) ? e.loc[e.loc.length - 1] : null;
    if (typeof field === "string") found[field] = (e.msg || "").replace(/^Value error, /, "");
  }
  return found;
}

async function saveSchedules(list) {
  schedules = await put("/api/schedules", list);
  renderSchedules();
}

async function addSchedule(event) {
  event.preventDefault();
  const form = $("schedule-form");
  const f = Object.fromEntries(["name", "kind", "cron", "enabled"].map((n) => [n, form.querySelector(`[name="${n}"]`)]));
  for (const id of ["name-error", "cron-error", "schedule-problem"]) problem($(id), "");
  const entry = { name: f.name.value.trim(), kind: f.kind.value, cron: f.cron.value.trim(), enabled: f.enabled.checked };
  const list = [...apiSchedules().filter((s) => s.name !== entry.name), entry];
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await saveSchedules(list);
    toast(`Schedule ${entry.name} saved.`);
    f.name.value = "";
    f.cron.value = "";
  } catch (error) {
    const fields = fieldErrors(error);
    if (fields.name) problem($("name-error"), fields.name);
    if (fields.cron) problem($("cron-error"), fields.cron);
    if (!fields.name && !fields.cron) problem($("schedule-problem"), `Not saved: ${error.message}`);
    (fields.cron ? f.cron : fields.name ? f.name : button).focus();
  } finally {
    button.disabled = false;
  }
}

async function removeSchedule(name) {
  problem($("schedule-problem"), "");
  try {
    await saveSchedules(apiSchedules().filter((s) => s.name !== name));
    toast(`Schedule ${name} removed.`);
  } catch (error) {
    problem($("schedule-problem"), `Not removed: ${error.message}`);
  }
}

// --- the page ------------------------------------------------------------------------------

async function start() {
  $("start-form").elements.kind.addEventListener("change", showKind);
  $("start-form").addEventListener("submit", startJob);
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", loadJobs);
  $("schedule-form").addEventListener("submit", addSchedule);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") show($("toast"), false); });
  showKind();
  if (!(await startPage($("problem")))) return;
  await Promise.all([loadJobs(), loadSchedules()]);
  document.body.dataset.ready = "true";
}

start();
