#!/usr/bin/env bash
# Creates .venv (or $QA_VENV) and installs qa with the local llama.cpp engine, its model, the HTML/PDF/DOCX readers
# and the test tools.
# Safe to run again: what is already installed is kept, and the llama-cpp-python wheel built once for this CPU
# and these build flags is kept in ~/.cache/qa/wheels (or $QA_WHEEL_CACHE) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${QA_VENV:-.venv}"
PY="${PYTHON:-python3}"
LLAMA_CPP_VERSION="0.3.36"

# llama.cpp is compiled for this CPU (-march=native, so AVX2/AVX-512/VNNI and its repacked Q4 kernels are used)
# but without the AMX instructions: some VMs advertise AMX and then kill the process with SIGILL on its first use,
# and qa would otherwise have to load an AMX build without its repacked kernels. -mno-amx-* overrides -march=native
# whatever their order. Elsewhere (e.g. aarch64) llama.cpp's own defaults are used.
LLAMA_CMAKE_ARGS="${QA_LLAMA_CMAKE_ARGS-}"
if [ -z "$LLAMA_CMAKE_ARGS" ] && [ "$(uname -m)" = x86_64 ]; then
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip)

# pip's own wheel cache is keyed by the source archive, not by the flags or the CPU it was compiled for, so the
# wheel is kept under a key of its own: version, flags, Python, machine and CPU features.
pytag="$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
cpu="$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m)"
key="$(printf '%s\n' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" "$pytag" "$(uname -m)" "$cpu" | sha256sum | cut -c1-16)"
WHEELS="${QA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qa/wheels}/llama-cpp-python-$LLAMA_CPP_VERSION-$pytag-$key"
MARKER="$VENV/.qa-llama-cpp-build"

if [ "$(cat "$MARKER" 2>/dev/null)" = "$key" ] && "$VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
  echo "==> llama-cpp-python $LLAMA_CPP_VERSION already installed (build $key)"
else
  wheel="$(ls "$WHEELS"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    echo "==> building llama-cpp-python $LLAMA_CPP_VERSION (no wheels on PyPI: compiling llama.cpp takes about"
    echo "    5 minutes on 2 cores, once per machine; the wheel is kept in $WHEELS)"
    echo "    CMAKE_ARGS=$LLAMA_CMAKE_ARGS"
    log="$(mktemp -t qa-llama-build.XXXXXX.log)"
    out="$(mktemp -d -t qa-llama-wheel.XXXXXX)"
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
    # -v passes on the build's output; ninja's "[12/193] ... -c .../file.cpp" lines become "[12/193] file.cpp".
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "${PIP[@]}" wheel -v --no-cache-dir --no-deps -w "$out" \
        "llama-cpp-python==$LLAMA_CPP_VERSION" > "$log" 2>&1 &
    build=$!
    tail --pid="$build" -n +1 -F "$log" 2>/dev/null | awk '
      match($0, /^ *\[[0-9]+\/[0-9]+\]/) {
        step = substr($0, RSTART, RLENGTH); sub(/^ */, "", step)
        file = ""; n = split($0, words, " ")
        for (i = 1; i < n; i++) if (words[i] == "-c" || words[i] == "-o") { file = words[i + 1] }
        sub(/.*\/vendor\/llama\.cpp\//, "", file); sub(/^.*CMakeFiles\/[^\/]*\//, "", file)
        printf "    %s %s\n", step, file; fflush()
      }' &
    shown=$!
    status=0
    wait "$build" || status=$?
    wait "$shown" || true  # tail stops once the build has ended
    wheel="$(ls "$out"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)"
    if [ "$status" -ne 0 ] || [ -z "$wheel" ]; then
      tail -n 30 "$log" >&2
      echo "llama-cpp-python failed to build; full log: $log" >&2
      exit 1
    fi
    mkdir -p "$WHEELS"
    mv "$wheel" "$WHEELS/"
    wheel="$WHEELS/$(basename "$wheel")"
    rm -rf "$out" "$log"
  else
    echo "==> installing llama-cpp-python $LLAMA_CPP_VERSION from $wheel"
  fi
  "${PIP[@]}" install --quiet --force-reinstall --no-deps "$wheel"
  "${PIP[@]}" install --quiet "$wheel"  # its dependencies (numpy, jinja2, diskcache, typing-extensions)
  echo "$key" > "$MARKER"
fi

echo "==> installing qa with the local model, the document readers and test tools"
"${PIP[@]}" install --quiet --progress-bar on -e ".[local,documents,test]"
echo "==> ready: $VENV"
