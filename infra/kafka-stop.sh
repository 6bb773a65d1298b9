#!/usr/bin/env bash
# Stop the local Kafka broker started by kafka-start.sh (by its pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stop_pidfile "$KAFKA_DATA/kafka.pid" "Kafka on port $KAFKA_PORT"
