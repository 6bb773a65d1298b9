#!/usr/bin/env bash
# Build the sonicbus plugin for Navidrome: dist/plugin.wasm and dist/sonicbus.ndp (a zip of
# manifest.json and plugin.wasm). The plugin is freestanding C (sonicbus.c, no libc, no
# PDK) compiled by clang for wasm32 and linked by wasm-ld: Debian's `clang` and `lld`
# packages (infra/system-packages.sh installs them). Reproducible: the same source and
# clang version give the same bytes (no debug info, stripped), and the .ndp is written with
# a fixed date, mode and order.
# Env: CLANG (the compiler; default: the newest clang on PATH).
# Usage: plugins/navidrome/build.sh [OUT_DIR]    (default plugins/navidrome/dist)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/dist}"
log() { printf '[plugin] %s\n' "$*" >&2; }

clang="${CLANG:-}"
if [ -z "$clang" ]; then
  for candidate in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
    if command -v "$candidate" >/dev/null; then clang="$candidate"; break; fi
  done
fi
[ -n "$clang" ] || { log "clang is required to build the plugin: apt-get install -y clang lld (or bash infra/system-packages.sh)"; exit 1; }
python="$(command -v python3 || true)"
[ -n "$python" ] || { log "python3 is required to write the .ndp package"; exit 1; }

mkdir -p "$out"
tmp="$(mktemp -d "$out/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# wasm32 with no libc: the module imports only Extism's kernel and Navidrome's http_send.
if ! "$clang" --target=wasm32 -Os -std=c11 -Wall -Wextra -Werror -nostdlib -ffreestanding \
  -fno-builtin -Wl,--no-entry -Wl,--strip-all -o "$tmp/plugin.wasm" "$here/sonicbus.c" 2>"$tmp/err"; then
  cat "$tmp/err" >&2
  if grep -q -i -E 'wasm-ld|unable to execute|linker' "$tmp/err"; then
    log "the wasm linker is missing: apt-get install -y lld (or bash infra/system-packages.sh)"
  fi
  exit 1
fi
# The package: manifest.json then plugin.wasm, stored with a fixed date and mode.
"$python" - "$here/manifest.json" "$tmp/plugin.wasm" "$tmp/sonicbus.ndp" <<'PY'
import json, sys, zipfile
manifest, wasm, ndp = sys.argv[1:]
json.load(open(manifest))  # fail early on a broken manifest
with zipfile.ZipFile(ndp, "w", zipfile.ZIP_DEFLATED) as z:
    for name, path in (("manifest.json", manifest), ("plugin.wasm", wasm)):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read(), compresslevel=9)
PY
mv -f "$tmp/plugin.wasm" "$out/plugin.wasm"
mv -f "$tmp/sonicbus.ndp" "$out/sonicbus.ndp"
log "built with $("$clang" --version | head -n 1): $out/sonicbus.ndp" \
  "(sha256 $(sha256sum "$out/sonicbus.ndp" | cut -c1-16))"
echo "$out/sonicbus.ndp"
