#!/usr/bin/env bash
# Build the sonicbus plugin for Navidrome: dist/plugin.wasm and dist/sonicbus.ndp (a zip of
# manifest.json and plugin.wasm). Reproducible: the same sources and Go version give the
# same bytes (fixed flags, -trimpath, no build id or VCS stamp, go.sum checked, fixed zip
# timestamps and order). Modules come through the Go module proxy into the cache, as for
# infra/navidrome-fetch.sh.
# Needs Go 1.24+ (go:wasmexport); /usr/local/go/bin/go is used when go is not on PATH.
# Env: SONICBUS_CACHE_DIR (module cache in $SONICBUS_CACHE_DIR/go/mod), GO (the go command).
# Usage: plugins/navidrome/build.sh [OUT_DIR]    (default plugins/navidrome/dist)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/dist}"
cache="${SONICBUS_CACHE_DIR:-$HOME/.cache/sonicbus}"
log() { printf '[plugin] %s\n' "$*" >&2; }

go="${GO:-$(command -v go || true)}"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
[ -n "$go" ] || { log "Go 1.24+ is required to build the plugin: install it into /usr/local/go or put it on PATH"; exit 1; }
python="$(command -v python3 || true)"
[ -n "$python" ] || { log "python3 is required to write the .ndp package"; exit 1; }

start=$SECONDS
mkdir -p "$out" "$cache/go/mod"
export GOMODCACHE="$cache/go/mod" GOCACHE="${GOCACHE:-$cache/go/build}"
export GOFLAGS="-mod=readonly -modcacherw" GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOOS=wasip1 GOARCH=wasm
tmp="$(mktemp -d "$out/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$here"
  "$go" mod download
  "$go" mod verify >/dev/null
  "$go" build -buildmode=c-shared -trimpath -buildvcs=false -ldflags="-s -w -buildid=" \
    -o "$tmp/plugin.wasm" .
)
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
log "built in $((SECONDS - start)) s with $("$go" version | cut -d' ' -f3): $out/sonicbus.ndp" \
  "(sha256 $(sha256sum "$out/sonicbus.ndp" | cut -c1-16))"
echo "$out/sonicbus.ndp"
