#!/usr/bin/env bash
# Creates .venv (or $QA_VENV) and installs qa with the local llama.cpp engine, its model, the HTML/PDF/DOCX readers
# and the test tools.
# Safe to run again: what is already installed is kept, and pip reuses the llama-cpp-python wheel it built before.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${QA_VENV:-.venv}"
PY="${PYTHON:-python3}"
LLAMA_CPP_VERSION="0.3.36"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip)

if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
  echo "==> llama-cpp-python $LLAMA_CPP_VERSION already installed"
else
  echo "==> installing llama-cpp-python $LLAMA_CPP_VERSION (no wheels on PyPI: the first time it compiles llama.cpp,"
  echo "    about 5 minutes on 2 cores; pip caches the wheel, so later installs take seconds)"
  log="$(mktemp -t qa-llama-build.XXXXXX.log)"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
  # -v shows the compiler's "[ NN%]" progress lines; the full log is kept in case of failure.
  if ! "${PIP[@]}" install -v "llama-cpp-python==$LLAMA_CPP_VERSION" 2>&1 | tee "$log" \
      | grep --line-buffered -E '^\s*\[ *[0-9]+%\]|^Successfully|Using cached|^Installing collected'; then
    if ! grep -q "^Successfully installed" "$log"; then
      echo "llama-cpp-python failed to build; full log: $log" >&2
      exit 1
    fi
  fi
fi

echo "==> installing qa with the local model, the document readers and test tools"
"${PIP[@]}" install --quiet --progress-bar on -e ".[local,documents,test]"
echo "==> ready: $VENV"
