#!/usr/bin/env bash
# Build the pinned Navidrome server from its Go module into the cache (no prebuilt
# binary is downloaded: the source comes through the Go module proxy).
# Idempotent: a built binary is reused at once. The first build takes minutes.
# Needs the Go toolchain (the version Navidrome's go.mod asks for) and gcc (cgo, SQLite).
# Env: SONICBUS_NAVIDROME_VERSION (v0.63.2), SONICBUS_CACHE_DIR. Prints the binary's path.
# Usage: infra/navidrome-fetch.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -x "$NAVIDROME_BIN" ]; then
  echo "$NAVIDROME_BIN"
  exit 0
fi
go="$(command -v go || true)"
if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
[ -n "$go" ] || { log "Go is required to build Navidrome $NAVIDROME_VERSION: install the Go toolchain (1.26+ for v0.63.x) into /usr/local/go or put it on PATH"; exit 1; }
cc="${CC:-gcc}"
command -v "$cc" >/dev/null || { log "a C compiler ($cc) is required to build Navidrome (cgo, SQLite): apt-get install -y build-essential"; exit 1; }

mkdir -p "$SONICBUS_CACHE_DIR/navidrome"
# One build at a time; a second caller waits and then finds the binary.
exec 9> "$SONICBUS_CACHE_DIR/navidrome/.build.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ -x "$NAVIDROME_BIN" ]; then
  echo "$NAVIDROME_BIN"
  exit 0
fi

start=$SECONDS
tmp="$(mktemp -d "$SONICBUS_CACHE_DIR/navidrome/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Downloaded modules stay in our cache folder (writable, so `rm -rf` removes them); the
# build cache (~400 MB) goes with the build folder.
export GOMODCACHE="$SONICBUS_CACHE_DIR/go/mod" GOCACHE="$tmp/gocache"
export GOFLAGS="-modcacherw" CGO_ENABLED=1 CC="$cc" GOWORK=off
log "building Navidrome $NAVIDROME_VERSION with $("$go" version | cut -d' ' -f3) (first time: a few minutes)"
module="github.com/navidrome/navidrome"
info="$(cd "$tmp" && "$go" mod download -json "$module@$NAVIDROME_VERSION")" || {
  log "could not download $module@$NAVIDROME_VERSION through the Go module proxy:"
  printf '%s\n' "$info" >&2
  exit 1
}
dir="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[ -d "$dir" ] || { log "no module folder in the answer of go mod download:"; printf '%s\n' "$info" >&2; exit 1; }
# The version string (`navidrome --version`, Subsonic serverVersion) is "dev" without a sha.
sha="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{7\}\).*/\1/p' | head -n 1)"
# `go install` refuses a module whose go.mod has replace directives: build a writable copy.
cp -R "$dir" "$tmp/src"
chmod -R u+w "$tmp/src"
(
  cd "$tmp/src"
  "$go" mod download
  "$go" build -tags=netgo,sqlite_fts5 \
    -ldflags="-s -w -X $module/consts.gitTag=$NAVIDROME_VERSION -X $module/consts.gitSha=${sha:-gomod}" \
    -o "$tmp/navidrome" .
) >&2
"$tmp/navidrome" --version >/dev/null
mkdir -p "$(dirname "$NAVIDROME_BIN")"
mv -f "$tmp/navidrome" "$NAVIDROME_BIN"
log "Navidrome $NAVIDROME_VERSION built in $((SECONDS - start)) s: $NAVIDROME_BIN"
echo "$NAVIDROME_BIN"
