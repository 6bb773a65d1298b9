#!/usr/bin/env bash
# Set up, start a fresh Kafka broker and Milvus server on test ports, run ruff, every
# bench at tiny sizes (--smoke) and the whole test suite, stop the services.
# Exit status: non-zero on any failure.
# Extra arguments go to pytest (e.g. infra/test.sh -k store). `infra/test.sh --faults` also
# runs the long fault-injection tests (pytest marker `faults`, option defined in
# tests/conftest.py): a three-broker cluster (infra/kafka-cluster-start.sh, ports 39192-39197,
# started and stopped by tests/fixtures/cluster.py) with brokers and processes killed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"

bash infra/setup.sh

export SONICBUS_TEST_HOME="${SONICBUS_TEST_HOME:-${TMPDIR:-/tmp}/sonicbus-test}"
export SONICBUS_TEST_KAFKA_PORT="${SONICBUS_TEST_KAFKA_PORT:-39092}"
export SONICBUS_TEST_MILVUS_PORT="${SONICBUS_TEST_MILVUS_PORT:-39530}"
export SONICBUS_TEST_NAVIDROME_PORT="${SONICBUS_TEST_NAVIDROME_PORT:-39533}"
service_env=(SONICBUS_HOME="$SONICBUS_TEST_HOME"
  SONICBUS_KAFKA__LOCAL_PORT="$SONICBUS_TEST_KAFKA_PORT"
  SONICBUS_MILVUS__LOCAL_PORT="$SONICBUS_TEST_MILVUS_PORT")
# The real Navidrome of tests/fixtures/navidrome.py: the same folders and admin it uses.
navidrome_env=(SONICBUS_HOME="$SONICBUS_TEST_HOME"
  SONICBUS_NAVIDROME__LOCAL_PORT="$SONICBUS_TEST_NAVIDROME_PORT"
  SONICBUS_NAVIDROME__MUSIC_FOLDER="$SONICBUS_TEST_HOME/navidrome-music-$SONICBUS_TEST_NAVIDROME_PORT"
  SONICBUS_NAVIDROME_DATA="$SONICBUS_TEST_HOME/navidrome-$SONICBUS_TEST_NAVIDROME_PORT"
  SONICBUS_NAVIDROME__USER=admin SONICBUS_NAVIDROME__PASSWORD=sonicbus-test-admin)

stop_services() {
  env "${service_env[@]}" bash infra/kafka-stop.sh || true
  env "${service_env[@]}" bash infra/milvus-stop.sh || true
  env "${navidrome_env[@]}" bash infra/navidrome-stop.sh || true
}
# A previous run that was killed may have left services behind: stop them, start clean.
stop_services
rm -rf "$SONICBUS_TEST_HOME"
trap stop_services EXIT
env "${service_env[@]}" bash infra/kafka-start.sh
env "${service_env[@]}" bash infra/milvus-start.sh
bash infra/navidrome-fetch.sh >/dev/null   # built once into the cache (minutes the first time)
mkdir -p "$SONICBUS_TEST_HOME/navidrome-music-$SONICBUS_TEST_NAVIDROME_PORT"
env "${navidrome_env[@]}" bash infra/navidrome-start.sh

# Debian packages beyond Python/Java/Go: clang + lld (the plugin), chromium (browser tests).
bash infra/system-packages.sh
# The Navidrome plugin (C -> wasm32, reproducible .ndp): the tests and a bench load it.
bash plugins/navidrome/build.sh >/dev/null

.venv/bin/ruff check .
.venv/bin/lint-imports   # the import layers and no circles (.importlinter)

# Every bench at tiny sizes (--smoke: seconds each, on the services just started). A bench
# that fails, or whose last line of output is not one JSON object, fails the run.
smoke_dir="$SONICBUS_TEST_HOME/bench-smoke"
mkdir -p "$smoke_dir"
smoke_started=$SECONDS
failed_benches=()
for bench in $(grep -l '^if __name__ == "__main__":' bench/*.py); do
  name="$(basename "$bench" .py)"
  started=$SECONDS
  if .venv/bin/python "$bench" --smoke >"$smoke_dir/$name.out" 2>"$smoke_dir/$name.err" &&
    tail -n 1 "$smoke_dir/$name.out" |
    .venv/bin/python -c 'import json, sys; assert isinstance(json.load(sys.stdin), dict)' 2>/dev/null
  then
    printf 'bench smoke: %-20s ok (%d s)\n' "$name" $((SECONDS - started))
  else
    printf 'bench smoke: %-20s FAILED (%d s); its last output:\n' "$name" $((SECONDS - started))
    tail -n 15 "$smoke_dir/$name.err" "$smoke_dir/$name.out" >&2 || true
    failed_benches+=("$bench")
  fi
done
echo "bench smoke: $((SECONDS - smoke_started)) s in all (output in $smoke_dir)"
if [ "${#failed_benches[@]}" -gt 0 ]; then
  echo "bench smoke failed: ${failed_benches[*]}" >&2
  exit 1
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
echo "dashboard screenshots (tests/test_dashboard_browser.py): $SONICBUS_TEST_HOME/screenshots"
exit "$status"
