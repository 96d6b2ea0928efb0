#!/usr/bin/env bash
# The Debian packages the test suite needs beyond Python: espeak-ng and sox speak the
# spoken-corpus tests, chromium drives the WebRTC page tests, ffmpeg-free (PyAV bundles it).
# Usage: scripts/system_packages.sh [--install]; without --install, a missing package is one
# line naming the command that installs it, and a non-zero exit.
set -euo pipefail
PACKAGES=(make python3-venv espeak-ng sox chromium)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--install" ] && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
  exit 0
fi
echo "missing system packages: sudo apt-get install -y ${missing[*]}" >&2
exit 1
