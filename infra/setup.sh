#!/usr/bin/env bash
# Set up a checkout: .venv/ at the repo root with sonicbus and its test tools,
# and the Kafka jars in the cache. Needs Python 3.11+, Java 17+ and Maven.
# Idempotent and quick when nothing changed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null; then python="$candidate"; break; fi
  done
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { log "Python 3.11+ is required (found $("$python" --version 2>&1))"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
stamp=".venv/.sonicbus-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing sonicbus and its dependencies into .venv (first time: torch is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.sonicbus-installed-*
  touch "$stamp"
fi
"$INFRA_DIR/kafka-fetch.sh"
log "setup complete: .venv/bin/sonicbus --help"
