#!/usr/bin/env bash
# Stop the local Navidrome server started by navidrome-start.sh (by its pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_pidfile "$NAVIDROME_DATA/navidrome.pid" "Navidrome on port $NAVIDROME_PORT"
# A server (or its scanner subprocess) whose pid file was lost is still ours.
if pkill -f -- "$NAVIDROME_DATA/navidrome.toml" 2>/dev/null; then
  sleep 2
  pkill -KILL -f -- "$NAVIDROME_DATA/navidrome.toml" 2>/dev/null || true
  log "stopped a leftover Navidrome process of $NAVIDROME_DATA"
fi
