#!/usr/bin/env bash
# Sets everything up (first run only) and runs the whole test suite, the local-model tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${QA_VENV:-.venv}"
"$VENV/bin/python" -m mypy
exec "$VENV/bin/python" -m pytest "$@"
