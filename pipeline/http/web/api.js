// Every call the page makes, with the session of /auth/session (auth.py): cookies go along
// by themselves; writes add the session's CSRF value as a header.

let csrf = "";

export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(detail);
    this.status = status;
    this.errors = errors; // a 422's list of {loc, msg}: which field each message is about
  }
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return new ApiError(response.status, body.detail);
    if (Array.isArray(body.detail)) {
      const message = body.detail.map((d) => d.msg || String(d)).join("; ");
      return new ApiError(response.status, message, body.detail);
    }
    return new ApiError(response.status, JSON.stringify(body));
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-Sonicbus-CSRF"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "not logged in");
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

export function toLogin() {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/login?next=${next}`);
}

export async function session() {
  const info = await call("GET", "/auth/session");
  csrf = info.csrf;
  return info;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);

// POST /api/playlists/m3u8 and save the answer as "<name>.m3u8" (the builder and the map).
export async function downloadM3u8(list) {
  const response = await fetch("/api/playlists/m3u8", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(list),
  });
  if (!response.ok) {
    const error = await errorOf(response);
    throw new ApiError(error.status, `No M3U8: ${error.message}`, error.errors);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `${list.name}.m3u8`;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
