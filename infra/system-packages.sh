#!/usr/bin/env bash
# Debian packages the build and the tests need beyond Python, Java and Go:
#   clang, lld   the Navidrome plugin (C -> wasm32, plugins/navidrome/build.sh)
#   chromium     the browser tests (Playwright drives Debian's chromium; no browser download)
# Installs the missing ones with apt-get when run as root; otherwise prints the command.
# Usage: infra/system-packages.sh [PACKAGE...]   (default: all of the above)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# package -> a file it installs, to tell whether it is there
declare -A marker=([clang]=clang [lld]=wasm-ld [chromium]=chromium)
has() {
  case "$1" in
    clang) compgen -c | grep -q -E '^clang(-[0-9]+)?$' ;;
    lld) compgen -c | grep -q -E '^wasm-ld(-[0-9]+)?$' || ls /usr/lib/llvm-*/bin/wasm-ld >/dev/null 2>&1 ;;
    *) command -v "${marker[$1]:-$1}" >/dev/null ;;
  esac
}

wanted=("$@")
[ "${#wanted[@]}" -gt 0 ] || wanted=(clang lld chromium)
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
