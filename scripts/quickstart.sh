#!/usr/bin/env bash
# Fresh machine to faces: install everything, compile RetinaFace for host and armv7-neon, detect.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/quickstart.py "$@"
