#!/usr/bin/env bash
# Start the embedded Milvus standalone server (PyPI package `milvus`) on loopback,
# or reuse the one running. Waits until it answers a request.
# Env: SONICBUS_MILVUS__LOCAL_PORT (19530), SONICBUS_MILVUS_DATA, SONICBUS_HOME,
#      SONICBUS_PYTHON (defaults to the repo's .venv).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

python="${SONICBUS_PYTHON:-$REPO_DIR/.venv/bin/python}"
server="$(dirname "$python")/milvus-server"
pidfile="$MILVUS_DATA/milvus.pid"

ready() {
  "$python" - "$MILVUS_PORT" <<'PY' 2>/dev/null
import sys
from pymilvus import MilvusClient
MilvusClient(uri=f"http://127.0.0.1:{sys.argv[1]}", timeout=3).list_collections()
PY
}

wait_ready() {
  local i
  for i in $(seq 1 180); do
    if ! pid_alive "$pidfile"; then
      log "Milvus exited during start; last lines of its log:"
      tail -n 20 "$MILVUS_DATA/stdout.log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    if port_open "$MILVUS_PORT" && ready; then
      log "Milvus ready on 127.0.0.1:$MILVUS_PORT (pid $(cat "$pidfile"))"
      return 0
    fi
    # The wrapper stays alive when the server binary dies (it becomes a zombie).
    if [ "$i" -gt 5 ] && ps -o stat= --ppid "$(cat "$pidfile")" | grep -q '^Z'; then
      log "the Milvus server process died; last lines of its log:"
      tail -n 20 "$MILVUS_DATA/logs/milvus-stderr.log" "$MILVUS_DATA/stdout.log" >&2 || true
      return 1
    fi
    sleep 1
  done
  log "Milvus did not become ready in 180 s; see $MILVUS_DATA/stdout.log"
  return 1
}

if pid_alive "$pidfile"; then
  # Ours, already running or still starting (another caller started it): wait for it.
  wait_ready
  exit $?
fi
if port_open "$MILVUS_PORT"; then
  log "port $MILVUS_PORT is taken by another process; set SONICBUS_MILVUS__LOCAL_PORT"
  exit 1
fi
[ -x "$server" ] || { log "$server not found: run infra/setup.sh (installs the 'milvus' package)"; exit 1; }
mkdir -p "$MILVUS_DATA"
# Twice at most: the embedded server has hung recovering its data after a stop (seen in
# tests/test_embed_musicnn.py's Milvus restart, 2026-12-02); a second start is cheap.
for attempt in 1 2; do
  log "starting Milvus server on 127.0.0.1:$MILVUS_PORT (data $MILVUS_DATA, attempt $attempt)"
  setsid nohup "$server" --data "$MILVUS_DATA" --proxy-port "$MILVUS_PORT" \
    > "$MILVUS_DATA/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  if wait_ready; then
    exit 0
  fi
  # Leave nothing half-started behind (the wrapper can outlive a dead server).
  "$INFRA_DIR/milvus-stop.sh" || true
done
exit 1
