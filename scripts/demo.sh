#!/usr/bin/env bash
# Sets everything up (first run only) and answers "How many casualties?" about the example article, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${QA_VENV:-.venv}"
exec "$VENV/bin/qa" ask "${1:-How many casualties?}" examples/nk_soldiers_kursk.txt
