// The login page: asks how to log in here (GET /auth/login), then POSTs the credentials to
// /auth/login, which sets the session cookie; on success, back to where the user was going.

const $ = (id) => document.getElementById(id);

function next() {
  const target = new URLSearchParams(location.search).get("next") ?? "/";
  // Only a path of this site: never an address elsewhere (an open redirect).
  return target.startsWith("/") && !target.startsWith("//") ? target : "/";
}

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function options() {
  const response = await fetch("/auth/login", { headers: { Accept: "application/json" } });
  const info = await response.json();
  $("how").textContent = info.detail.charAt(0).toUpperCase() + info.detail.slice(1) + ".";
  if (!info.required) {
    const here = await fetch("/auth/session");
    if (here.ok) location.replace(next()); // no login is asked for on this address
  }
  if (info.method === "password") $("user-field").hidden = true;
  if (info.method === null) {
    $("submit").disabled = true;
    for (const input of document.querySelectorAll("input")) input.disabled = true;
  }
  (info.method === "password" ? $("password") : $("user")).focus();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").hidden = true;
  $("submit").disabled = true;
  try {
    const response = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }),
    });
    if (response.ok) {
      location.replace(next());
      return;
    }
    const body = await response.json().catch(() => ({}));
    fail(typeof body.detail === "string" ? body.detail : `Login failed (${response.status}).`);
    $("password").select();
  } catch (error) {
    fail(`Cannot reach sonicbus: ${error.message}`);
  } finally {
    $("submit").disabled = false;
  }
});

options().catch((error) => fail(`Cannot reach sonicbus: ${error.message}`));
