#!/usr/bin/env bash
# Rescan the music folder of the local Navidrome (navidrome-start.sh) and wait until the
# scan has finished, so that what changed in the folder is in its library.
# Usage: infra/navidrome-scan.sh          quick scan: new, changed and deleted files
#        infra/navidrome-scan.sh --full   full scan: re-reads the tags of every file
#        infra/navidrome-scan.sh --wait [SINCE]
#                                         start none; wait until no scan is running and one
#                                         has finished after SINCE (epoch seconds, default 0)
#        infra/navidrome-scan.sh --call ENDPOINT [curl args]
#                                         one Subsonic call as the admin; prints the XML
# By hand: GET /rest/startScan?fullScan=true|false (admin only), then poll
# /rest/getScanStatus until scanning="false" with a lastScan after the request.
# Deleted files stay in the library with missing=true (Scanner.PurgeMissing=never).
# Env: as navidrome-start.sh; SONICBUS_NAVIDROME_SCAN_TIMEOUT (3600 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

url="http://127.0.0.1:$NAVIDROME_PORT"
timeout="${SONICBUS_NAVIDROME_SCAN_TIMEOUT:-3600}"
password="${SONICBUS_NAVIDROME__PASSWORD:-}"
if [ -z "$password" ]; then
  [ -s "$NAVIDROME_PASSWORD_FILE" ] || {
    log "no admin password: set SONICBUS_NAVIDROME__PASSWORD ($NAVIDROME_PASSWORD_FILE does not exist)"
    exit 1
  }
  password="$(cat "$NAVIDROME_PASSWORD_FILE")"
fi

# subsonic ENDPOINT [curl args]: call the Subsonic API with token auth; prints the XML answer.
subsonic() {
  local salt token
  salt="$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  token="$(printf '%s%s' "$password" "$salt" | md5sum | cut -d' ' -f1)"
  curl -fs --max-time 30 -G "$url/rest/$1" --data-urlencode "u=$NAVIDROME_USER" \
    -d "t=$token" -d "s=$salt" -d v=1.16.1 -d c=sonicbus-infra "${@:2}"
}

# attr NAME XML: the value of the first attribute NAME="..." in XML (empty when none).
attr() { grep -o " $1=\"[^\"]*\"" <<<"$2" | head -n 1 | cut -d'"' -f2 || true; }

# check XML: fail with the server's message unless the call succeeded.
check() {
  if ! grep -q 'status="ok"' <<<"$1"; then
    log "Navidrome answered an error: code $(attr code "$1"): $(attr message "$1")"
    return 1
  fi
}

# wait_scan SINCE [quiet]: until no scan runs and the last one ended after SINCE; fails on a
# scan error.
wait_scan() {
  local since="$1" quiet="${2:-}" start=$SECONDS next=30 answer last
  while :; do
    answer="$(subsonic getScanStatus)" || { log "Navidrome is not answering on $url"; return 1; }
    check "$answer"
    last="$(attr lastScan "$answer")"
    if [ "$(attr scanning "$answer")" = false ] && [ -n "$last" ] &&
      awk -v a="$(date -d "$last" +%s.%N)" -v b="$since" 'BEGIN { exit !(a >= b) }'; then
      if [ -n "$(attr error "$answer")" ]; then
        log "the Navidrome scan failed: $(attr error "$answer")"
        return 1
      fi
      [ -n "$quiet" ] || log "Navidrome scan done after $((SECONDS - start)) s:" \
        "$(attr count "$answer") songs in $(attr folderCount "$answer") folders"
      return 0
    fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      log "the Navidrome scan did not finish in $timeout s; see $NAVIDROME_DATA/navidrome.log"
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$next" ]; then
      log "Navidrome still scanning: $(attr count "$answer") songs so far"
      next=$((next + 30))
    fi
    sleep 0.5
  done
}

case "${1:-}" in
  --call)
    shift
    subsonic "$@"
    ;;
  --wait)
    wait_scan "${2:-0}"
    ;;
  "" | --full)
    full=false
    [ "${1:-}" = --full ] && full=true
    # A scan already running would not see what changed since it started: let it end first.
    wait_scan 0 quiet
    since="$(date +%s.%N)"
    answer="$(subsonic startScan -d "fullScan=$full")" || { log "Navidrome is not answering on $url"; exit 1; }
    check "$answer"
    wait_scan "$since"
    ;;
  *)
    log "usage: $0 [--full | --wait [SINCE] | --call ENDPOINT [curl args]]"
    exit 2
    ;;
esac
