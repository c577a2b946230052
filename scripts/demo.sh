#!/usr/bin/env bash
# Install napari-unetseg with napari into a virtual environment and open the demo:
# napari with the bundled sample loaded and the plugin docked.
# Pass --headless to train on the sample in the terminal instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[napari]"
exec napari-unetseg demo "$@"
