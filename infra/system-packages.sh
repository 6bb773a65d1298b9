#!/usr/bin/env bash
# Debian packages the build and the tests need beyond Python, Java and Go:
#   clang, lld   the Navidrome plugin (C -> wasm32, plugins/navidrome/build.sh)
#   chromium     the browser tests (Playwright drives Debian's chromium; no browser download)
#   fb-music-high  real music for the tests (Frozen Bubble's soundtrack, Ogg Vorbis, GPL)
# Installs the missing ones with apt-get when run as root; otherwise prints the command.
# Usage: infra/system-packages.sh [PACKAGE...]   (default: all of the above)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# package -> a file it installs, to tell whether it is there
declare -A marker=([clang]=clang [lld]=wasm-ld [chromium]=chromium)
# any_command NAME...: true when one of the commands is on PATH. (Not `compgen | grep -q`:
# grep leaving early kills compgen with SIGPIPE, which pipefail turns into "missing".)
any_command() {
  local name
  for name in "$@"; do command -v "$name" >/dev/null && return 0; done
  return 1
}
versions() { local v; for v in "" -19 -18 -17 -16 -15 -14; do printf '%s%s ' "$1" "$v"; done; }
has() {
  case "$1" in
    # shellcheck disable=SC2046
    clang) any_command $(versions clang) ;;
    # shellcheck disable=SC2046
    lld) any_command $(versions wasm-ld) || ls /usr/lib/llvm-*/bin/wasm-ld >/dev/null 2>&1 ;;
    fb-music-high) [ -f /usr/share/games/frozen-bubble/snd/introzik.ogg ] ;;
    *) command -v "${marker[$1]:-$1}" >/dev/null ;;
  esac
}

wanted=("$@")
[ "${#wanted[@]}" -gt 0 ] || wanted=(clang lld chromium fb-music-high)
missing=()
for package in "${wanted[@]}"; do has "$package" || missing+=("$package"); done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  log "missing system packages: ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}"
  exit 1
fi
log "installing Debian packages: ${missing[*]} (once)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
for package in "${missing[@]}"; do
  has "$package" || { log "$package did not install"; exit 1; }
done
