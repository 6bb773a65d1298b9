#!/usr/bin/env bash
# Set up, start a fresh Kafka broker and Milvus server on test ports, run ruff and
# the whole test suite, stop the services. Exit status: non-zero on any failure.
# Extra arguments go to pytest (e.g. infra/test.sh -k store).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"

bash infra/setup.sh

export SONICBUS_TEST_HOME="${SONICBUS_TEST_HOME:-${TMPDIR:-/tmp}/sonicbus-test}"
export SONICBUS_TEST_KAFKA_PORT="${SONICBUS_TEST_KAFKA_PORT:-39092}"
export SONICBUS_TEST_MILVUS_PORT="${SONICBUS_TEST_MILVUS_PORT:-39530}"
service_env=(SONICBUS_HOME="$SONICBUS_TEST_HOME"
  SONICBUS_KAFKA__LOCAL_PORT="$SONICBUS_TEST_KAFKA_PORT"
  SONICBUS_MILVUS__LOCAL_PORT="$SONICBUS_TEST_MILVUS_PORT")

stop_services() {
  env "${service_env[@]}" bash infra/kafka-stop.sh || true
  env "${service_env[@]}" bash infra/milvus-stop.sh || true
}
# A previous run that was killed may have left services behind: stop them, start clean.
stop_services
rm -rf "$SONICBUS_TEST_HOME"
trap stop_services EXIT
env "${service_env[@]}" bash infra/kafka-start.sh
env "${service_env[@]}" bash infra/milvus-start.sh

.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
