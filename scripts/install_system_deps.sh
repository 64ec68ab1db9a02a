#!/usr/bin/env bash
# Debian packages the PyPI path needs: a C++ toolchain and cmake to generate tf2_msgs / relocal_msgs with the
# rosidl wheels, and Mesa's EGL + llvmpipe for the headless synthetic renderer. Installs only what is missing.
set -euo pipefail
pkgs=(cmake g++ make libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} — run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
