// Everyone's daily mixes on the builder page: what the latest `daily_mixes` job wrote to
// Navidrome for each user (GET /api/mixes), and a button that runs the job now
// (POST /api/jobs, admins only; the list reloads when the job has ended).

import { ApiError, get, post } from "./api.js";
import { h, show, text } from "./dom.js";

const $ = (id) => document.getElementById(id);

function mixBlock(name, mix) {
  const songs = mix.tracks.map((t) =>
    h("li", { "data-testid": "mix-song" }, `${t.title || t.id}`,
      h("span", { class: "detail" }, t.artist ? ` — ${t.artist}` : "")));
  return h("details", { class: "mix", "data-testid": "mix", "data-name": name },
    h("summary", {}, name, h("span", { class: "badge" }, `${mix.tracks.length} songs`)),
    h("ol", { class: "tracks" }, ...songs));
}

function userBlock(entry) {
  const names = Object.keys(entry.mixes).sort();
  return h("div", { class: "mix-user", "data-testid": "mix-user", "data-user": entry.user },
    h("h3", {}, entry.user),
    ...names.map((name) => mixBlock(name, entry.mixes[name])));
}

export async function loadMixes() {
  const view = await get("/api/mixes");
  if (!view.job_id) {
    text($("mixes-summary"), "No daily mixes yet: run `sonicbus mixes`, schedule the daily_mixes job, or press Refresh now.");
    $("mix-users").replaceChildren();
    $("mix-warnings").replaceChildren();
    return view;
  }
  const when = new Date(view.at).toLocaleString();
  const total = view.users.reduce((n, u) => n + Object.keys(u.mixes).length, 0);
  text($("mixes-summary"), `${total} mixes for ${view.users.length} users, written ${when}.`);
  $("mix-warnings").replaceChildren(...view.warnings.map((w) => h("li", {}, w)));
  $("mix-users").replaceChildren(...view.users.map(userBlock));
  return view;
}

async function waitForJob(jobId) {
  for (let i = 0; i < 600; i += 1) {
    const event = await get(`/api/jobs/${encodeURIComponent(jobId)}`).catch(() => null);
    if (event && ["done", "failed", "refused", "cancelled"].includes(event.status)) return event;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return null;
}

export function startMixes() {
  const button = $("refresh-mixes");
  button.addEventListener("click", async () => {
    button.disabled = true;
    text($("mixes-summary"), "Making everyone's mixes…");
    try {
      const answer = await post("/api/jobs", { kind: "daily_mixes" });
      const event = await waitForJob(answer.job_id);
      if (event && event.status !== "done") {
        text($("mixes-summary"), `The mixes were not made: ${event.message}`);
        return;
      }
      await loadMixes();
    } catch (error) {
      const why = error instanceof ApiError && error.status === 403
        ? "only an admin can refresh the mixes" : (error.message || String(error));
      text($("mixes-summary"), `The mixes were not made: ${why}`);
    } finally {
      button.disabled = false;
    }
  });
  return loadMixes().catch((error) => {
    text($("mixes-summary"), error.message || String(error));
    show($("mixes-summary"), true);
  });
}
