// What every page but the dashboard starts with: the session (so the API and the audio
// accept this browser), the user and the Log out button of the header, a message on failure.

import { ApiError, post, session, toLogin } from "./api.js";
import { show, text } from "./dom.js";

const $ = (id) => document.getElementById(id);

/** The session, or null (and a message in `problem`, if given) when there is none. */
export async function startPage(problem = null) {
  $("logout")?.addEventListener("click", async () => {
    await post("/auth/logout").catch(() => null);
    location.assign("/login");
  });
  let me;
  try {
    me = await session();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) toLogin();
    else if (problem) {
      text(problem, error.message || String(error));
      show(problem, true);
    }
    return null;
  }
  if (me.via !== "loopback" && $("who")) {
    text($("user"), me.user);
    show($("who"), true);
  }
  return me;
}
