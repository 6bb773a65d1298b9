#!/usr/bin/env bash
# Start a Navidrome server on loopback (built by navidrome-fetch.sh), or reuse the one
# running. Creates the admin user on first use, then waits until the server answers and
# the scan of the music folder that Navidrome runs at every start has finished.
# It makes no outbound calls: external services, agents, insights, plugins are off (plugins
# on only with SONICBUS_NAVIDROME_PLUGINS_FOLDER, e.g. for plugins/navidrome).
# The folder watcher is off too: after changing the music folder run infra/navidrome-scan.sh.
# Env: SONICBUS_NAVIDROME__LOCAL_PORT (4533), SONICBUS_NAVIDROME__MUSIC_FOLDER ($HOME/Music),
#      SONICBUS_NAVIDROME_DATA (data dir), SONICBUS_NAVIDROME__USER (admin),
#      SONICBUS_NAVIDROME__PASSWORD (default: generated once into $DATA/admin-password),
#      SONICBUS_NAVIDROME_VERSION (v0.63.2), SONICBUS_NAVIDROME_SCAN_TIMEOUT (3600 s),
#      SONICBUS_NAVIDROME_PLUGINS_FOLDER (plugins on, from this folder; default off),
#      SONICBUS_NAVIDROME_AGENTS (the Agents setting, e.g. "sonicbus"; default none),
#      SONICBUS_CACHE_DIR, SONICBUS_HOME.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pidfile="$NAVIDROME_DATA/navidrome.pid"
config="$NAVIDROME_DATA/navidrome.toml"
url="http://127.0.0.1:$NAVIDROME_PORT"
command -v curl >/dev/null || { log "curl is required (apt-get install -y curl)"; exit 1; }

# wait_ping: true once the server answers /ping; false when it exits or does not answer in 60 s.
wait_ping() {
  local _
  for _ in $(seq 1 120); do
    if ! pid_alive "$pidfile"; then
      log "Navidrome exited during start; last lines of its log:"
      tail -n 20 "$NAVIDROME_DATA/navidrome.log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    if curl -fsS --max-time 2 "$url/ping" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "Navidrome (pid $(cat "$pidfile")) is not answering on port $NAVIDROME_PORT; see $NAVIDROME_DATA/navidrome.log"
  return 1
}

# toml_str TEXT: TEXT escaped for a TOML basic string (the same escapes serve JSON).
toml_str() {
  local text="${1//\\/\\\\}"
  printf '%s' "${text//\"/\\\"}"
}

# ensure_admin: create the first admin (only possible while there is no user), else check
# that the configured credentials log in.
ensure_admin() {
  local body code answer
  body="$(printf '{"username":"%s","password":"%s"}' "$(toml_str "$NAVIDROME_USER")" "$(toml_str "$password")")"
  code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "$body" "$url/auth/createAdmin")"
  case "$code" in
    200) log "created the admin user '$NAVIDROME_USER'" ;;
    403) ;; # a user exists already
    *) log "creating the admin user failed (HTTP $code); see $NAVIDROME_DATA/navidrome.log"; return 1 ;;
  esac
  answer="$(SONICBUS_NAVIDROME__PASSWORD="$password" "$INFRA_DIR/navidrome-scan.sh" --call ping)" || return 1
  if ! grep -q 'status="ok"' <<<"$answer"; then
    log "user '$NAVIDROME_USER' cannot log in to the Navidrome of $NAVIDROME_DATA:" \
      "$(grep -o 'message="[^"]*"' <<<"$answer" | cut -d'"' -f2)"
    log "set SONICBUS_NAVIDROME__USER/SONICBUS_NAVIDROME__PASSWORD to its admin, or remove $NAVIDROME_DATA"
    return 1
  fi
}

# load_password: the admin password from the environment, else the one generated on first start.
load_password() {
  password="${SONICBUS_NAVIDROME__PASSWORD:-}"
  if [ -z "$password" ]; then
    if [ ! -s "$NAVIDROME_PASSWORD_FILE" ]; then
      mkdir -p "$NAVIDROME_DATA"
      (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$NAVIDROME_PASSWORD_FILE")
      log "generated the admin password into $NAVIDROME_PASSWORD_FILE"
    fi
    password="$(cat "$NAVIDROME_PASSWORD_FILE")"
  fi
}

if pid_alive "$pidfile"; then
  # Ours, running or still starting (another caller started it): wait for it and its scan.
  load_password
  wait_ping
  ensure_admin
  SONICBUS_NAVIDROME__PASSWORD="$password" "$INFRA_DIR/navidrome-scan.sh" --wait
  log "Navidrome already running on $url (pid $(cat "$pidfile")), user '$NAVIDROME_USER'"
  exit 0
fi
if port_open "$NAVIDROME_PORT"; then
  log "port $NAVIDROME_PORT is taken by another process; set SONICBUS_NAVIDROME__LOCAL_PORT"
  exit 1
fi
[ -d "$NAVIDROME_MUSIC" ] || {
  log "music folder $NAVIDROME_MUSIC does not exist; set SONICBUS_NAVIDROME__MUSIC_FOLDER"
  exit 1
}
music="$(cd "$NAVIDROME_MUSIC" && pwd)"
"$INFRA_DIR/navidrome-fetch.sh" >/dev/null
mkdir -p "$NAVIDROME_DATA"
load_password
plugins_folder="${SONICBUS_NAVIDROME_PLUGINS_FOLDER:-}"
plugins_enabled=false
if [ -n "$plugins_folder" ]; then
  mkdir -p "$plugins_folder"
  plugins_folder="$(cd "$plugins_folder" && pwd)"
  plugins_enabled=true
fi
agents="${SONICBUS_NAVIDROME_AGENTS:-}"
# Navidrome empties Agents when external services are off: on only for configured agents
# (the built-in Last.fm, Deezer and ListenBrainz agents stay off below).
external=false
[ -z "$agents" ] || external=true
cat > "$config" <<TOML
# Written by infra/navidrome-start.sh at every start; edits are lost.
Address = "127.0.0.1"
Port = $NAVIDROME_PORT
MusicFolder = "$(toml_str "$music")"
DataFolder = "$(toml_str "$NAVIDROME_DATA")"
LogLevel = "info"
# Nothing calls out: no agents (Last.fm, Deezer, ListenBrainz), insights, gravatar,
# external artwork, login backgrounds; plugins and plugin agents only when asked for.
EnableExternalServices = $external
EnableInsightsCollector = false
Agents = "$(toml_str "$agents")"
EnableGravatar = false
EnableM3UExternalAlbumArt = false
UILoginBackgroundURL = "data:,"
EnableArtworkPrecache = false
# Local test server: no login rate limit (5 logins per 20 s by default).
AuthRequestLimit = 0

[Scanner]
Enabled = true
ScanOnStartup = true
Schedule = "0"
WatcherWait = "0s"

[LastFM]
Enabled = false

[Deezer]
Enabled = false

[ListenBrainz]
Enabled = false

[Plugins]
Enabled = $plugins_enabled
Folder = "$(toml_str "$plugins_folder")"

[Backup]
Schedule = ""
TOML
: > "$NAVIDROME_DATA/navidrome.log"
log "starting Navidrome $NAVIDROME_VERSION on $url (music $music, data $NAVIDROME_DATA)"
since="$(date +%s.%N)"
start=$SECONDS
setsid nohup "$NAVIDROME_BIN" --configfile "$config" --nobanner \
  >> "$NAVIDROME_DATA/navidrome.log" 2>&1 < /dev/null &
echo $! > "$pidfile"
if ! wait_ping || ! ensure_admin; then
  "$INFRA_DIR/navidrome-stop.sh" || true
  exit 1
fi
log "Navidrome answers after $((SECONDS - start)) s; waiting for its scan of $music"
if ! SONICBUS_NAVIDROME__PASSWORD="$password" "$INFRA_DIR/navidrome-scan.sh" --wait "$since"; then
  "$INFRA_DIR/navidrome-stop.sh" || true
  exit 1
fi
where="${SONICBUS_NAVIDROME__PASSWORD:+SONICBUS_NAVIDROME__PASSWORD}"
log "Navidrome ready after $((SECONDS - start)) s on $url (pid $(cat "$pidfile")):" \
  "user '$NAVIDROME_USER', password in ${where:-$NAVIDROME_PASSWORD_FILE}"
