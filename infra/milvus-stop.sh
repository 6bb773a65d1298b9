#!/usr/bin/env bash
# Stop the embedded Milvus server started by milvus-start.sh (by its pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_pidfile "$MILVUS_DATA/milvus.pid" "Milvus on port $MILVUS_PORT"
# The server binary outlives its Python wrapper if the wrapper is killed alone:
# sweep any process still running from this data folder.
if pkill -f -- "$MILVUS_DATA/bin/milvus" 2>/dev/null; then
  sleep 1
  pkill -KILL -f -- "$MILVUS_DATA/bin/milvus" 2>/dev/null || true
  log "stopped a leftover Milvus process of $MILVUS_DATA"
fi
