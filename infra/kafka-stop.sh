#!/usr/bin/env bash
# Stop the local Kafka broker started by kafka-start.sh (by its pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_pidfile "$KAFKA_DATA/kafka.pid" "Kafka on port $KAFKA_PORT"
# A broker whose pid file was lost (data folder wiped while it ran) is still ours.
if pkill -f -- "$KAFKA_DATA/server.properties" 2>/dev/null; then
  sleep 2
  pkill -KILL -f -- "$KAFKA_DATA/server.properties" 2>/dev/null || true
  log "stopped a leftover Kafka process of $KAFKA_DATA"
fi
