// Every call the page makes, with the session of /auth/session (auth.py): cookies go along
// by themselves; writes add the session's CSRF value as a header.

let csrf = "";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
    return JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
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
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
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
