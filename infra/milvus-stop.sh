#!/usr/bin/env bash
# Stop the embedded Milvus server started by milvus-start.sh (by its pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_pidfile "$MILVUS_DATA/milvus.pid" "Milvus on port $MILVUS_PORT"
